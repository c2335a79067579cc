#!/usr/bin/env python
# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Transcribe audio files of any length with a CTC model saved by run_speech_recognition_ctc.py (or a checkpoint).

    python transcribe.py out recordings/ interview.mp3 clips.csv      # prints path<TAB>transcript lines
    python transcribe.py out/checkpoint-500 recordings/ --output transcripts.csv --device cuda --batch_seconds 300
    python transcribe.py out lecture.flac --output lecture.srt        # subtitles (.srt or .vtt)
    python transcribe.py out recordings/ --output words.json          # every word with its times and confidence
    python transcribe.py out recordings/ --lm --beam_width 50        # beam search with the saved n-gram LM
    python transcribe.py out calls/ --hotwords Kubernetes Grafana     # favour these words (beam search)
    python transcribe.py out recordings/ --onnx int8                  # the ONNX export (export_onnx.py --int8)

AUDIO is any mix of audio files, directories (searched recursively for .wav .flac .mp3 .ogg .opus) and manifests
(.csv .tsv .json .jsonl with an audio column, paths relative to the manifest). A recording longer than
--chunk_seconds is read window by window: a window ends in a pause where there is one (trimmed to the speech, as a
training clip), else at the chunk's length with --context_seconds of audio on both sides whose output is dropped.
Memory stays flat however long the recording, and no word is cut at a window's edge. Short clips run longest
first in batches of similar length; each prediction is cut at its clip's real length, so batching never changes a
transcript. --output picks the format by its extension: .tsv/.txt (default) or .csv (path, transcript), .json
(words with start, end and confidence), .srt or .vtt (with several inputs --output names a folder: one file each).
"""

import os

# Windows come in many lengths, and oneDNN would keep a compiled kernel for each (1,024 by default), so memory would
# grow with the recording; a few suffice. Set before torch is imported; a value set by the user stays.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8")

import argparse
import csv
import glob
import importlib.util
import logging
import sys
import time
from collections import Counter
from typing import Optional

import numpy as np
import torch
import transformers
from transformers import AutoFeatureExtractor, AutoModelForCTC, AutoTokenizer

from ctc_finetune.adapters import ADAPTER_FILE
from ctc_finetune.audio import AUDIO_ERRORS, AUDIO_EXTENSIONS, read_header
from ctc_finetune.batching import DataCollatorCTCWithPadding, duration_batches
from ctc_finetune.corpora import AUDIO_COLUMN_ALIASES, read_table
from ctc_finetune.export import ONNX_FILES, OnnxCTCModel
from ctc_finetune.families import (
    TORCHAUDIO_INSTALL,
    blank_token_id,
    ctc_decode,
    has_channel_axis,
    output_frames,
)
from ctc_finetune.faults import UserError, exit_on_user_error
from ctc_finetune.lm import LM_DIR, LM_INSTALL, ctc_alphabet
from ctc_finetune.longform import (
    DEFAULT_CHUNK_SECONDS,
    DEFAULT_CONTEXT_SECONDS,
    FileFrames,
    batches_of_windows,
    frame_energy,
    frame_hop,
    kept_logits,
    find_pauses,
    plan_windows,
    keep_memory_flat,
    read_window,
)
from ctc_finetune.subtitles import SUBTITLE_FORMATS, write_json, write_subtitles
from ctc_finetune.words import beam_words, greedy_words, pause_cut

logger = logging.getLogger("transcribe")

MANIFEST_EXTENSIONS = (".csv", ".tsv", ".json", ".jsonl")
LM_PACKAGES = ("pyctcdecode", "pygtrie", "kenlm")  # pygtrie is a pyctcdecode dependency that --no-deps skips
BEAM_PAUSE_SECONDS = 0.3  # a beam search of a long recording ends a stretch in a pause at least this long
BEAM_STRETCH_SECONDS = 60.0  # and looks for that pause once this much audio is buffered
GROUP_BATCHES = 8  # a long recording's windows are sorted by length within stretches of this many batches of audio


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="Directory written by the training script, or one of its checkpoint-*.")
    parser.add_argument("audio", nargs="+", help="Audio files, directories and manifests, in any mix.")
    parser.add_argument("--output", help="Write here: .csv, .json, .srt, .vtt by the extension, else TSV; a folder "
                                         "for subtitles of several inputs.")
    parser.add_argument("--batch_seconds", type=float, default=60.0,
                        help="Seconds of padded audio per forward pass (default 60); lower it if memory runs out.")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = cuda if available.")
    parser.add_argument("--lm", action="store_true", help="Beam search with the n-gram LM saved in model_dir.")
    parser.add_argument("--language",
                        help="An MMS model's language (ISO 639-3, e.g. tur): its adapter and vocabulary.")
    parser.add_argument("--beam_width", type=int, default=100,
                        help="Beams kept with --lm or --hotwords (default 100, as pyctcdecode).")
    parser.add_argument("--chunk_seconds", type=float, default=DEFAULT_CHUNK_SECONDS,
                        help=f"Audio per window of a long recording (default {DEFAULT_CHUNK_SECONDS:g} s).")
    parser.add_argument("--context_seconds", type=float, default=DEFAULT_CONTEXT_SECONDS,
                        help=f"Audio read on each side of a window, its output dropped (default "
                             f"{DEFAULT_CONTEXT_SECONDS:g} s).")
    parser.add_argument("--hotwords", nargs="+", default=[], metavar="WORD",
                        help="Words (or phrases) the beam search favours: names, jargon (needs pyctcdecode).")
    parser.add_argument("--hotwords_file", help="A text file of hotwords, one per line.")
    parser.add_argument("--hotword_weight", type=float, default=10.0,
                        help="How much the hotwords are favoured (default 10, as pyctcdecode).")
    parser.add_argument("--onnx", nargs="?", const="fp32", choices=tuple(ONNX_FILES),
                        help="Run model_dir's ONNX export in onnxruntime on the CPU: fp32 (model.onnx, the default) "
                             "or int8 (model.int8.onnx); made by export_onnx.py.")
    args = parser.parse_args(argv)
    if args.batch_seconds <= 0 or args.beam_width < 1:
        parser.error("--batch_seconds must be > 0 and --beam_width >= 1")
    if args.chunk_seconds <= 0 or args.context_seconds < 0:
        parser.error("--chunk_seconds must be > 0 and --context_seconds >= 0")
    if args.hotwords_file:
        if not os.path.isfile(args.hotwords_file):
            raise UserError(f"--hotwords_file {args.hotwords_file} does not exist; pass a text file, one hotword "
                            "a line.")
        with open(args.hotwords_file, encoding="utf-8") as f:
            args.hotwords += [line.strip() for line in f if line.strip()]
    if not os.path.isfile(os.path.join(args.model_dir, "config.json")):
        checkpoints = sorted(os.path.basename(d) for d in glob.glob(os.path.join(args.model_dir, "checkpoint-*")))
        hint = f"; pass one of its checkpoints: {', '.join(checkpoints)}" if checkpoints else ""
        raise UserError(f"{args.model_dir} is not a model directory (no config.json){hint}.")
    if args.onnx and (args.device == "cuda" or args.language):
        raise UserError("--onnx runs on the CPU, with the adapter the export was made with: drop --device cuda and "
                        "--language (or transcribe without --onnx).")
    if args.output and not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        raise UserError(f"--output {args.output}: its directory does not exist; create it or pick another path.")
    return args


def output_kind(output: Optional[str]) -> str:
    """What --output asks for: 'tsv' (also .txt and stdout), 'csv', 'json', or a subtitle format '.srt'/'.vtt'."""
    name = (output or "").lower().rstrip("/")
    for extension in SUBTITLE_FORMATS:
        if name.endswith(extension):
            return extension
    return "csv" if name.endswith(".csv") else "json" if name.endswith(".json") else "tsv"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: torch sees no CUDA GPU; pass --device cpu (or auto).")
    return torch.device(name)


def load_model(model_dir: str, device: torch.device, language: Optional[str] = None, onnx: Optional[str] = None):
    """The CTC model (eval mode, on `device`), its feature extractor and its tokenizer; with `language`, an MMS
    model's adapter and vocabulary for it; with `onnx` ("fp32" or "int8"), its ONNX export run by onnxruntime."""
    # Feature extractor and tokenizer separately: AutoProcessor would build a Wav2Vec2ProcessorWithLM when an LM
    # was saved beside the model, which fails without pyctcdecode even for greedy decoding.
    try:
        feature_extractor = AutoFeatureExtractor.from_pretrained(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as e:
        raise UserError(f"{model_dir} has no usable feature extractor or tokenizer files ({e}).") from e
    except ImportError as e:  # Granite Speech's feature extractor needs torchaudio
        raise UserError(f"{model_dir}'s feature extractor needs a missing package ({str(e).splitlines()[0][:160]}); "
                        f"for torchaudio run `{TORCHAUDIO_INSTALL}`.") from e
    if onnx:
        return OnnxCTCModel(model_dir, onnx), feature_extractor, tokenizer
    model = AutoModelForCTC.from_pretrained(model_dir)
    if language:
        files = glob.glob(os.path.join(model_dir, ADAPTER_FILE.format("*")))
        adapters = sorted(os.path.basename(p)[len("adapter."):-len(".safetensors")] for p in files)
        vocabularies = getattr(tokenizer, "vocab", {})
        if language not in adapters or language not in vocabularies or not hasattr(model, "load_adapter"):
            raise UserError(f"--language {language}: {model_dir} has no adapter and vocabulary for it; its languages: "
                            f"{', '.join(a for a in adapters if a in vocabularies) or 'none (not an MMS model)'}.")
        model.load_adapter(language)
        tokenizer.set_target_lang(language)
    return model.eval().to(device), feature_extractor, tokenizer


def load_lm_decoder(model_dir: str):
    """The pyctcdecode beam-search decoder saved in `model_dir` (or, for a checkpoint, in the run's directory)."""
    candidates = [model_dir, os.path.dirname(os.path.abspath(model_dir))]
    lm_dir = next((d for d in candidates if os.path.isfile(os.path.join(d, "alphabet.json"))
                   and os.path.isdir(os.path.join(d, LM_DIR))), None)
    if lm_dir is None:
        raise UserError(f"--lm: {model_dir} holds no n-gram language model (language_model/ and alphabet.json); "
                        "build one with the training script's --lm_text, or drop --lm for greedy decoding.")
    missing = [name for name in LM_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"--lm needs {', '.join(missing)}, optional extras: install them with `{LM_INSTALL}`.")
    from pyctcdecode import BeamSearchDecoderCTC  # the decoder Wav2Vec2ProcessorWithLM wraps (deprecated there)

    return BeamSearchDecoderCTC.load_from_dir(lm_dir)


def load_decoder(args):
    """--lm: the saved LM's beam search. --hotwords alone: None, after checking pyctcdecode is there (the beam
    search is built once the tokenizer is loaded: plain_beam_search)."""
    if args.lm:
        return load_lm_decoder(args.model_dir)
    if importlib.util.find_spec("pyctcdecode") is None or importlib.util.find_spec("pygtrie") is None:
        raise UserError(f"--hotwords needs pyctcdecode's beam search, an optional extra: install it with "
                        f"`{LM_INSTALL}`.")
    return None


def plain_beam_search(model, tokenizer):
    """A pyctcdecode beam search without a language model (for --hotwords without --lm)."""
    from pyctcdecode import build_ctcdecoder

    labels = ctc_alphabet(tokenizer, model.config.vocab_size, blank_token_id(model.config, tokenizer))
    return build_ctcdecoder(labels)


def find_audio(inputs: list[str]) -> list[str]:
    """Audio paths in input order: files as given, directories searched recursively, manifests row by row."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            paths += sorted(os.path.join(root, name) for root, _, names in os.walk(item)
                            for name in names if name.lower().endswith(AUDIO_EXTENSIONS))
        elif not os.path.isfile(item):
            raise UserError(f"{item} does not exist; pass audio files, directories or manifests.")
        elif item.lower().endswith(MANIFEST_EXTENSIONS):
            paths += manifest_paths(item)
        else:
            paths.append(item)
    if not paths:
        raise UserError(f"no audio found in {' '.join(inputs)} (directories are searched for "
                        f"{' '.join(AUDIO_EXTENSIONS)} files).")
    return paths


def manifest_paths(manifest: str) -> list[str]:
    try:
        table = read_table(manifest)
    except ValueError as e:
        raise UserError(f"cannot read manifest {manifest}: {e}") from e
    column = next((c for c in AUDIO_COLUMN_ALIASES if c in table.columns), None)
    if column is None:
        raise UserError(f"manifest {manifest} has no audio column (tried {', '.join(AUDIO_COLUMN_ALIASES)}); "
                        f"its columns are: {', '.join(map(str, table.columns))}.")
    base = os.path.dirname(manifest)
    paths = []
    for name in map(str, table[column]):
        path, in_clips = os.path.join(base, name), os.path.join(base, "clips", name)
        # A Common Voice TSV names files inside the clips/ folder beside it.
        paths.append(in_clips if not os.path.exists(path) and os.path.exists(in_clips) else path)
    return paths


def plan(paths: list[str], model, feature_extractor, args, hop: int, skipped: Counter) -> tuple[dict, list]:
    """Each readable file's (path, source rate, seconds) by input position, and its windows; unreadable, empty and
    too-short files are skipped with a warning each and counted (nothing is decoded here: headers only)."""
    rate = feature_extractor.sampling_rate
    chunk = max(round(args.chunk_seconds * rate / hop), 1) * hop
    context = round(args.context_seconds * rate / hop) * hop
    files, windows = {}, []
    for index, path in enumerate(paths):
        frames, source_rate, _, reason = read_header(path)
        samples = round(frames * rate / source_rate) if source_rate else 0
        total_frames = output_frames(model, feature_extractor, [samples])[0] if not reason else 0
        if not reason and total_frames < 1:
            reason = f"too short for the model ({samples / rate:.3f} s)"
        if reason:
            skip(path, reason, skipped)
            continue
        try:  # the energy pass decodes the whole file once (block by block)
            pauses = find_pauses(*frame_energy(path, source_rate)) if samples > chunk + context else []
        except AUDIO_ERRORS as e:
            skip(path, f"undecodable audio ({e})", skipped)
            continue
        files[index] = (path, source_rate, samples / rate)
        windows += plan_windows(index, samples, total_frames, pauses, chunk, context, hop, rate)
    return files, windows


def skip(path: str, reason: str, skipped: Counter) -> None:
    logger.warning(f"warning: skipped {path}: {reason}")
    skipped[reason.split(" (")[0]] += 1


def window_groups(windows: list, batch_seconds: float, rate: int) -> list[list[list]]:
    """The batches to run, in groups whose outputs are joined into their files together. Short clips (one window
    each): longest first in batches of similar length, a group each. The windows of long recordings: in stretches of
    about GROUP_BATCHES batches of audio, each stretch sorted by length into batches (little padding), its outputs
    joined back in file order once it is done."""
    whole = [w for w in windows if w.whole]
    batches = duration_batches([w.end - w.start for w in whole], batch_seconds * rate)
    groups = [[[whole[i] for i in batch]] for batch in reversed(batches)]
    stretch, audio = [], 0
    for window in [w for w in windows if not w.whole] + [None]:
        if window is None or (stretch and audio + window.end - window.start > GROUP_BATCHES * batch_seconds * rate):
            if stretch:
                by_length = sorted(stretch, key=lambda w: w.end - w.start)
                groups.append(batches_of_windows(by_length, batch_seconds, rate))
            stretch, audio = [], 0
        if window is not None:
            stretch.append(window)
            audio += window.end - window.start
    return groups


class Decoding:
    """What a file's frames become: greedy text and words, or (with a beam search) the beam's text and words, decoded
    stretch by stretch between pauses so that a long recording's logits are never all held."""

    def __init__(self, tokenizer, blank: int, seconds_per_frame: float, decoder=None, beam_width=None,
                 hotwords=(), hotword_weight=10.0):
        self.tokenizer, self.blank, self.seconds_per_frame = tokenizer, blank, seconds_per_frame
        delimiter = getattr(tokenizer, "word_delimiter_token", None)  # character vocabularies' word boundary
        self.boundary = tokenizer.convert_tokens_to_ids(delimiter) if delimiter else None
        self.decoder, self.beam = decoder, {"beam_width": beam_width, "hotwords": list(hotwords) or None,
                                            "hotword_weight": hotword_weight, "prune_history": True}
        self.pause_frames = max(round(BEAM_PAUSE_SECONDS / seconds_per_frame), 1)
        self.stretch_frames = round(BEAM_STRETCH_SECONDS / seconds_per_frame)

    def search(self, frames: FileFrames, final: bool) -> None:
        """Beam-search the buffered logits up to their last pause (all of them at the file's end)."""
        if self.decoder is None or (not final and frames.buffered() < self.stretch_frames):
            return
        ids, probs = frames.frames()
        start = len(ids) - frames.buffered()
        cut = None if final else pause_cut(ids[start:], self.blank, self.pause_frames)
        if not final and cut is None:
            return
        logits = frames.take_logits(cut)
        (text, _, offsets, *_) = self.decoder.decode_beams(logits, **self.beam)[0] if len(logits) else ("", 0, [])
        frames.texts.append(text)
        frames.words += beam_words(offsets, ids, probs, self.blank, start, self.seconds_per_frame)

    def record(self, frames: FileFrames) -> dict:
        """The file's {"path", "text", "duration", "words"}."""
        ids, probs = frames.frames()
        if self.decoder is None:
            text = ctc_decode(self.tokenizer, ids.tolist(), self.blank)
            words = greedy_words(ids, probs, self.tokenizer, self.blank, self.seconds_per_frame)
        else:
            text, words = " ".join(t for t in frames.texts if t), frames.words
        return {"path": frames.path, "text": text, "duration": round(frames.seconds, 3), "words": words}


def transcribe(paths: list[str], model, feature_extractor, tokenizer, args, decoder=None) -> tuple[dict, Counter]:
    """Every readable file's record (path, text, duration, words) by input position, and the skips by reason."""
    rate = feature_extractor.sampling_rate
    hop, skipped = frame_hop(model, feature_extractor), Counter()
    files, windows = plan(paths, model, feature_extractor, args, hop, skipped)
    batch_seconds = args.batch_seconds
    if not feature_extractor.return_attention_mask:  # group-norm models (wav2vec2-base) take padding as signal
        logger.info("This model takes no attention mask, so each clip runs alone (padding would change its output)")
        batch_seconds = 0.0
    collate = DataCollatorCTCWithPadding(feature_extractor, channel_axis=has_channel_axis(feature_extractor))
    decoding = Decoding(tokenizer, blank_token_id(model.config, tokenizer), hop / rate, decoder, args.beam_width,
                        args.hotwords, args.hotword_weight)
    frames, records, failed, short = {}, {}, set(), set()
    # The fewest samples the model makes a frame of (the same for every window: found once, not per window)
    counts = output_frames(model, feature_extractor, np.arange(1, rate // 2 + 1))  # up to half a second
    fewest = 1 + int(np.argmax(counts >= 1)) if (counts >= 1).any() else len(counts) + 1
    keep_memory_flat()
    for group in window_groups(windows, batch_seconds, rate):
        done, ends = [], []
        for batch in group:
            read = []
            for window in batch:
                path, source_rate, seconds = files[window.file]
                if window.file in failed:
                    continue
                try:
                    audio, start, complete = read_window(path, window, source_rate, rate)
                except AUDIO_ERRORS as e:
                    failed.add(window.file)
                    skip(path, f"undecodable audio ({e})", skipped)
                    continue
                if not complete:
                    short.add(window.file)
                if len(audio) >= fewest:
                    read.append((window, audio, start))
                elif window.last:  # nothing left for the model (a file cut short): the file ends with what it gave
                    ends.append(window)
            kept = kept_logits([w for w, _, _ in read], [a for _, a, _ in read], [s for _, _, s in read], model,
                               feature_extractor, collate, hop) if read else []
            done += [(window, audio, *out) for (window, audio, _), out in zip(read, kept)]
        for window, audio, first_frame, window_logits in sorted(done, key=lambda d: (d[0].file, d[0].start)):
            if window.file in failed:  # a later window of it failed to decode: the file is skipped
                frames.pop(window.file, None)
                continue
            path, _, seconds = files[window.file]
            file_frames = frames.setdefault(window.file, FileFrames(path, seconds, decoding.blank, decoding.boundary,
                                                                    keep_logits=decoder is not None))
            file_frames.add(first_frame, window_logits, audio)
            if window.last:
                ends.append(window)
            else:
                decoding.search(file_frames, final=False)
        for window in ends:
            file_frames = frames.pop(window.file, None)
            if window.file not in failed:
                finish(window.file, file_frames, files, decoding, records, skipped, window.file in short)
    return records, skipped


def finish(index: int, file_frames: Optional[FileFrames], files: dict, decoding: Decoding, records: dict,
           skipped: Counter, cut_short: bool) -> None:
    """A file whose last window is done: its record, or a counted skip when it held no sound at all."""
    path, _, seconds = files[index]
    if file_frames is None:  # not one window had audio for the model
        skip(path, "truncated audio (nothing where its header says)", skipped)
        return
    if file_frames.peak == 0.0:
        skip(path, "silent audio (every sample is zero)", skipped)
        return
    decoding.search(file_frames, final=True)
    if cut_short:
        held = file_frames.next_frame * decoding.seconds_per_frame
        logger.warning(f"warning: {path} is cut short: its header says {seconds:,.1f} s, it holds about "
                       f"{held:,.1f} s; transcribed what it holds")
        file_frames.seconds = held
    records[index] = decoding.record(file_frames)


def write_outputs(records: list[dict], output: Optional[str], several: bool) -> None:
    """The transcripts in the format --output's extension names (TSV on stdout without --output)."""
    kind = output_kind(output)
    rows = [(r["path"], r["text"]) for r in records]
    if kind in SUBTITLE_FORMATS:
        for record, path in zip(records, subtitle_paths(records, output, several)):
            write_subtitles(path, record["words"])
    elif kind == "json":
        write_json(output, records)
    elif output is None:
        sys.stdout.writelines(f"{path}\t{text}\n" for path, text in rows)
    else:
        with open(output, "w", newline="", encoding="utf-8") as f:
            if kind == "csv":
                csv.writer(f).writerows([("path", "transcript"), *rows])
            else:  # plain TSV: read_table reads .tsv files without quote handling
                f.writelines(f"{path}\t{text}\n" for path, text in [("path", "transcript"), *rows])


def subtitle_paths(records: list[dict], output: str, several: bool) -> list[str]:
    """Where each file's subtitles go: --output itself for one input; else --output is a folder, one file per input
    named after it (numbered when two inputs share a name)."""
    if not several:
        return [output]
    extension = output_kind(output)
    os.makedirs(output, exist_ok=True)
    names, paths = Counter(), []
    for record in records:
        stem = os.path.splitext(os.path.basename(record["path"]))[0]
        names[stem] += 1
        name = f"{stem}{extension}" if names[stem] == 1 else f"{stem}-{names[stem]}{extension}"
        paths.append(os.path.join(output, name))
    return paths


def main(argv=None) -> list[tuple[str, str]]:
    args = parse_args(argv)
    # 1. Check the inputs (cheap, so mistakes show before the model loads)
    paths = find_audio(args.audio)
    device = torch.device("cpu") if args.onnx else pick_device(args.device)
    decoder = load_decoder(args) if args.lm or args.hotwords else None
    # 2. Load the model
    model, feature_extractor, tokenizer = load_model(args.model_dir, device, args.language, args.onnx)
    if decoder is None and (args.lm or args.hotwords):
        decoder = plain_beam_search(model, tokenizer)
    how = (f"beam search{' with the n-gram LM' if args.lm else ''}{' and hotwords' if args.hotwords else ''} "
           f"(width {args.beam_width})" if decoder else "greedy decoding")
    runtime = f" (ONNX {args.onnx}, onnxruntime)" if args.onnx else ""
    logger.info(f"Transcribing {len(paths):,} file(s) with {args.model_dir}{runtime} on {device}, {how}")
    # 3. Transcribe: short clips longest first in batches of similar length, long recordings window by window
    start = time.perf_counter()
    records, skipped = transcribe(paths, model, feature_extractor, tokenizer, args, decoder)
    wall = time.perf_counter() - start
    if not records:
        raise UserError(f"none of the {len(paths):,} audio files could be transcribed (see the warnings above).")
    # 4. Write the transcripts in input order, then the speed
    ordered = [records[i] for i in sorted(records)]
    write_outputs(ordered, args.output, several=len(paths) > 1)
    audio_seconds = sum(r["duration"] for r in ordered)
    reasons = "".join(f", {n:,} {reason}" for reason, n in skipped.items())
    logger.info(f"Transcribed {len(ordered):,} clips ({audio_seconds:,.1f} s of audio, {sum(skipped.values()):,} "
                f"skipped{reasons}) in {wall:,.1f} s: real-time factor {wall / audio_seconds:.3f} (wall / audio)")
    return [(r["path"], r["text"]) for r in ordered]


def cli(command=None) -> None:
    """Run main() (or another command's, as export_onnx.py's); a user mistake ends with one `error:` line and
    USER_ERROR_EXIT (CTC_DEBUG=1 shows the traceback)."""
    logging.basicConfig(format="%(message)s", level=logging.INFO, stream=sys.stderr)
    transformers.utils.logging.disable_progress_bar()  # stderr carries only our lines and real warnings
    try:
        (command or main)()
    except UserError as e:
        exit_on_user_error(e)


if __name__ == "__main__":
    cli()
