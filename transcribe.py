#!/usr/bin/env python
# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Transcribe audio files with a CTC model saved by run_speech_recognition_ctc.py (or any of its checkpoints).

    python transcribe.py out recordings/ interview.mp3 clips.csv      # prints path<TAB>transcript lines
    python transcribe.py out/checkpoint-500 recordings/ --output transcripts.csv --device cuda --batch_seconds 300
    python transcribe.py out recordings/ --lm --beam_width 50        # beam search with the saved n-gram LM

AUDIO is any mix of audio files, directories (searched recursively for .wav .flac .mp3 .ogg .opus) and manifests
(.csv .tsv .json .jsonl with an audio column, paths relative to the manifest). Clips run longest first in batches of
similar length; each prediction is cut at its clip's real length, so batching never changes a transcript. Each clip is
transcribed whole: split recordings longer than a few minutes first.
"""

import argparse
import csv
import glob
import importlib.util
import logging
import os
import sys
import time
from typing import Optional

import soundfile as sf
import torch
import transformers
from transformers import AutoFeatureExtractor, AutoModelForCTC, AutoTokenizer

from ctc_finetune.adapters import ADAPTER_FILE
from ctc_finetune.audio import AUDIO_EXTENSIONS, load_audio
from ctc_finetune.batching import DataCollatorCTCWithPadding, duration_batches
from ctc_finetune.columns import LENGTH_COLUMN
from ctc_finetune.corpora import AUDIO_COLUMN_ALIASES, read_table
from ctc_finetune.families import (
    TORCHAUDIO_INSTALL,
    blank_token_id,
    ctc_decode,
    extract_features,
    has_channel_axis,
    model_input_names,
    output_frames,
)
from ctc_finetune.faults import UserError, exit_on_user_error
from ctc_finetune.lm import LM_DIR, LM_INSTALL

logger = logging.getLogger("transcribe")

MANIFEST_EXTENSIONS = (".csv", ".tsv", ".json", ".jsonl")
LM_PACKAGES = ("pyctcdecode", "pygtrie", "kenlm")  # pygtrie is a pyctcdecode dependency that --no-deps skips


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="Directory written by the training script, or one of its checkpoint-*.")
    parser.add_argument("audio", nargs="+", help="Audio files, directories and manifests, in any mix.")
    parser.add_argument("--output", help="Write transcripts here (CSV if the name ends in .csv, else TSV).")
    parser.add_argument("--batch_seconds", type=float, default=60.0,
                        help="Seconds of padded audio per forward pass (default 60); lower it if memory runs out.")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = cuda if available.")
    parser.add_argument("--lm", action="store_true", help="Beam search with the n-gram LM saved in model_dir.")
    parser.add_argument("--language",
                        help="An MMS model's language (ISO 639-3, e.g. tur): its adapter and vocabulary.")
    parser.add_argument("--beam_width", type=int, default=100,
                        help="Beams kept with --lm (default 100, as pyctcdecode).")
    args = parser.parse_args(argv)
    if args.batch_seconds <= 0 or args.beam_width < 1:
        parser.error("--batch_seconds must be > 0 and --beam_width >= 1")
    if not os.path.isfile(os.path.join(args.model_dir, "config.json")):
        checkpoints = sorted(os.path.basename(d) for d in glob.glob(os.path.join(args.model_dir, "checkpoint-*")))
        hint = f"; pass one of its checkpoints: {', '.join(checkpoints)}" if checkpoints else ""
        raise UserError(f"{args.model_dir} is not a model directory (no config.json){hint}.")
    if args.output and not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        raise UserError(f"--output {args.output}: its directory does not exist; create it or pick another path.")
    return args


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: torch sees no CUDA GPU; pass --device cpu (or auto).")
    return torch.device(name)


def load_model(model_dir: str, device: torch.device, language: Optional[str] = None):
    """The CTC model (eval mode, on `device`), its feature extractor and its tokenizer; with `language`, an MMS
    model's adapter and vocabulary for it."""
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


def read_durations(paths: list[str]) -> dict[int, float]:
    """Seconds per readable clip (from the file header, nothing decoded), keyed by input position."""
    durations = {}
    for index, path in enumerate(paths):
        try:
            durations[index] = sf.info(path).duration
        except (RuntimeError, OSError) as e:  # soundfile's LibsndfileError is a RuntimeError
            logger.warning(f"warning: skipped {path}: unreadable audio ({e})")
    return durations


def length_batches(durations: dict[int, float], batch_seconds: float) -> list[list[int]]:
    """Clip indices in batches of similar length whose padded length stays under `batch_seconds`, longest first."""
    indices = sorted(durations)
    batches = duration_batches([durations[i] for i in indices], batch_seconds)
    return [[indices[j] for j in batch] for batch in reversed(batches)]


@torch.inference_mode()
def transcribe_batch(paths: list[str], model, feature_extractor, tokenizer, collate, decoder=None, beam_width=None):
    """Transcripts for one batch of clips (None for a clip that fails to decode), and the seconds of audio read.

    `collate`: the training script's collator, which pads each clip's own features and builds the mask."""
    rate = feature_extractor.sampling_rate
    name, _ = model_input_names(feature_extractor)
    features = {}
    for i, path in enumerate(paths):
        try:
            audio = load_audio(path, rate)
            if output_frames(model, feature_extractor, [len(audio)])[0] < 1:
                logger.warning(f"warning: skipped {path}: too short for the model ({len(audio) / rate:.3f} s)")
                continue
            features[i] = {name: extract_features(feature_extractor, audio), LENGTH_COLUMN: len(audio)}
        except (RuntimeError, OSError, ValueError) as e:
            logger.warning(f"warning: skipped {path}: undecodable audio ({e})")
    texts = [None] * len(paths)
    if not features:
        return texts, 0.0
    batch = collate(list(features.values()))
    samples = batch.pop("input_lengths")
    logits = model(**{k: v.to(model.device) for k, v in batch.items()}).logits.float().cpu()
    frames = output_frames(model, feature_extractor, samples)  # output frames of each clip's real audio
    blank = blank_token_id(model.config, tokenizer)
    for i, clip_logits, n in zip(features, logits, frames):
        if decoder is not None:
            texts[i] = decoder.decode(clip_logits[:n].numpy(), beam_width=beam_width)
        else:
            texts[i] = ctc_decode(tokenizer, clip_logits[:n].argmax(-1).tolist(), blank)
    return texts, float(samples.sum()) / rate


def write_transcripts(rows: list[tuple[str, str]], output) -> None:
    if output is None:
        sys.stdout.writelines(f"{path}\t{text}\n" for path, text in rows)
        return
    with open(output, "w", newline="", encoding="utf-8") as f:
        if output.lower().endswith(".csv"):
            csv.writer(f).writerows([("path", "transcript"), *rows])
        else:  # plain TSV: read_table reads .tsv files without quote handling
            f.writelines(f"{path}\t{text}\n" for path, text in [("path", "transcript"), *rows])


def main(argv=None) -> list[tuple[str, str]]:
    args = parse_args(argv)
    # 1. Check the inputs (cheap, so mistakes show before the model loads)
    paths = find_audio(args.audio)
    device = pick_device(args.device)
    decoder = load_lm_decoder(args.model_dir) if args.lm else None
    # 2. Load the model
    model, feature_extractor, tokenizer = load_model(args.model_dir, device, args.language)
    how = f"beam search with the n-gram LM (width {args.beam_width})" if decoder else "greedy decoding"
    logger.info(f"Transcribing {len(paths):,} file(s) with {args.model_dir} on {device}, {how}")
    # 3. Transcribe, longest clips first, in batches of similar length
    start = time.perf_counter()
    durations = read_durations(paths)
    batch_seconds = args.batch_seconds
    if not feature_extractor.return_attention_mask:  # group-norm models (wav2vec2-base) take padding as signal
        logger.info("This model takes no attention mask, so each clip runs alone (padding would change its output)")
        batch_seconds = 0.0
    texts, audio_seconds = {}, 0.0
    collate = DataCollatorCTCWithPadding(feature_extractor, channel_axis=has_channel_axis(feature_extractor))
    for batch in length_batches(durations, batch_seconds):
        batch_texts, seconds = transcribe_batch([paths[i] for i in batch], model, feature_extractor, tokenizer,
                                                collate, decoder, args.beam_width)
        texts.update((i, t) for i, t in zip(batch, batch_texts) if t is not None)
        audio_seconds += seconds
    wall = time.perf_counter() - start
    if not texts:
        raise UserError(f"none of the {len(paths):,} audio files could be transcribed (see the warnings above).")
    # 4. Write the transcripts in input order, then the speed
    rows = [(paths[i], texts[i]) for i in sorted(texts)]
    write_transcripts(rows, args.output)
    logger.info(f"Transcribed {len(rows):,} clips ({audio_seconds:,.1f} s of audio, {len(paths) - len(rows):,} "
                f"skipped) in {wall:,.1f} s: real-time factor {wall / audio_seconds:.3f} (wall / audio)")
    return rows


def cli() -> None:
    """Run main(); a user mistake ends with one `error:` line and USER_ERROR_EXIT (CTC_DEBUG=1 shows the traceback)."""
    logging.basicConfig(format="%(message)s", level=logging.INFO, stream=sys.stderr)
    transformers.utils.logging.disable_progress_bar()  # stderr carries only our lines and real warnings
    try:
        main()
    except UserError as e:
        exit_on_user_error(e)


if __name__ == "__main__":
    cli()
