# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""The transcription engine: a trained model loaded once (PyTorch or its ONNX export), and audio of any length turned
into text, words with their times and confidence, and segments. transcribe.py, export_onnx.py, serve.py (whose
batcher runs `forward` on the windows of many requests at once) and bench/ call it; so will an aligner.

    engine = Engine("out", EngineOptions(device="cpu"))
    result = engine.transcribe("interview.mp3")          # or samples: engine.transcribe(array, sampling_rate=44100)
    results, skipped = engine.transcribe_many(paths)     # many files, batched together

Short clips run longest first in batches of similar length, each prediction cut at its clip's real length, so
batching never changes a transcript. A recording longer than `chunk_seconds` is read window by window (longform.py):
a window ends in a pause where there is one, else at the chunk's length with `context_seconds` of audio on both
sides whose output is dropped. Memory stays flat however long the recording. Decoding is greedy, or a beam search
(pyctcdecode) with the n-gram LM saved beside the model and/or hotwords, run stretch by stretch between pauses."""

import copy
import dataclasses
import glob
import importlib.util
import logging
import os
import tempfile
from collections import Counter
from typing import Optional, Union

import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoModelForCTC, AutoTokenizer

from .adapters import ADAPTER_FILE
from .audio import AUDIO_ERRORS, read_header, write_array
from .batching import DataCollatorCTCWithPadding, duration_batches
from .families import TORCHAUDIO_INSTALL, blank_token_id, ctc_decode, has_channel_axis, output_frames
from .faults import UserError
from .lm import LM_DIR, LM_INSTALL, ctc_alphabet
from .longform import (DEFAULT_CHUNK_SECONDS, DEFAULT_CONTEXT_SECONDS, FileFrames, batches_of_windows, find_pauses,
                       frame_energy, frame_hop, keep_memory_flat, kept_logits, plan_windows, read_window)
from .onnx_runtime import ONNX_FILES, OnnxCTCModel
from .subtitles import cues
from .words import beam_words, greedy_words, pause_cut

logger = logging.getLogger(__name__)

LM_PACKAGES = ("pyctcdecode", "pygtrie", "kenlm")  # pygtrie is a pyctcdecode dependency that --no-deps skips
BEAM_PAUSE_SECONDS = 0.3  # a beam search of a long recording ends a stretch in a pause at least this long
BEAM_STRETCH_SECONDS = 60.0  # and looks for that pause once this much audio is buffered
GROUP_BATCHES = 8  # a long recording's windows are sorted by length within stretches of this many batches of audio


@dataclasses.dataclass
class EngineOptions:
    """How the engine runs and decodes (transcribe.py's flags of the same names)."""

    batch_seconds: float = 60.0  # padded audio per forward pass
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS  # the longest window of a long recording
    context_seconds: float = DEFAULT_CONTEXT_SECONDS  # audio read on each side of a cut, its output dropped
    device: str = "auto"  # auto, cpu or cuda
    onnx: Optional[str] = None  # run the ONNX export: "fp32" or "int8"
    language: Optional[str] = None  # an MMS model's adapter and vocabulary
    lm: bool = False  # beam search with the n-gram LM saved beside the model
    beam_width: int = 100
    hotwords: tuple = ()  # words the beam search favours
    hotword_weight: float = 10.0

    def __post_init__(self):
        self.hotwords = tuple(self.hotwords)
        if self.batch_seconds <= 0 or self.beam_width < 1:
            raise UserError("--batch_seconds must be > 0 and --beam_width >= 1.")
        if self.chunk_seconds <= 0 or self.context_seconds < 0:
            raise UserError("--chunk_seconds must be > 0 and --context_seconds >= 0.")
        if self.device not in ("auto", "cpu", "cuda") or (self.onnx and self.onnx not in ONNX_FILES):
            raise UserError(f"device is auto, cpu or cuda, and onnx one of {', '.join(ONNX_FILES)}; got "
                            f"{self.device} and {self.onnx}.")
        if self.onnx and (self.device == "cuda" or self.language):
            raise UserError("--onnx runs on the CPU, with the adapter the export was made with: drop --device cuda "
                            "and --language (or transcribe without --onnx).")

    @property
    def beam_search(self) -> bool:
        return self.lm or bool(self.hotwords)


@dataclasses.dataclass
class Transcript:
    """One input's transcription: its text, its words ({"word", "start", "end", "confidence"}, seconds) and its
    duration; segments are the words grouped as subtitle cues (split at pauses)."""

    path: str
    text: str
    duration: float
    words: list

    @property
    def segments(self) -> list[dict]:
        """{"start", "end", "text"} per stretch of words between pauses (a subtitle cue's words)."""
        return [{"start": c["start"], "end": c["end"], "text": " ".join(c["lines"])} for c in cues(self.words)]

    def as_dict(self) -> dict:
        """transcribe.py's JSON record: {"path", "text", "duration", "words"}."""
        return {"path": self.path, "text": self.text, "duration": self.duration, "words": self.words}


def check_model_dir(model_dir: str) -> None:
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        checkpoints = sorted(os.path.basename(d) for d in glob.glob(os.path.join(model_dir, "checkpoint-*")))
        hint = f"; pass one of its checkpoints: {', '.join(checkpoints)}" if checkpoints else ""
        raise UserError(f"{model_dir} is not a model directory (no config.json){hint}.")


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
    except (OSError, ValueError, TypeError) as e:  # TypeError: a CTC tokenizer with no vocab.json to open
        raise UserError(f"{model_dir} has no usable feature extractor or tokenizer files ({e}); pass a trained model "
                        "folder (run_speech_recognition_ctc.py's --output_dir: vocab.json beside config.json).") from e
    except ImportError as e:  # Granite Speech's feature extractor needs torchaudio
        raise UserError(f"{model_dir}'s feature extractor needs a missing package ({str(e).splitlines()[0][:160]}); "
                        f"for torchaudio run `{TORCHAUDIO_INSTALL}`.") from e
    if onnx:
        return OnnxCTCModel(model_dir, onnx), feature_extractor, tokenizer
    try:
        model = AutoModelForCTC.from_pretrained(model_dir)
    except OSError as e:  # a folder with the config and vocabulary but no weights (a run that never saved)
        raise UserError(f"{model_dir} has no usable weights ({str(e).splitlines()[0]}); pass a trained model folder "
                        "(run_speech_recognition_ctc.py's --output_dir after training, or a checkpoint).") from e
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
    check_lm_packages("--lm", LM_PACKAGES)
    from pyctcdecode import BeamSearchDecoderCTC  # the decoder Wav2Vec2ProcessorWithLM wraps (deprecated there)

    return BeamSearchDecoderCTC.load_from_dir(lm_dir)


def check_lm_packages(flag: str, packages) -> None:
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"{flag} needs {', '.join(missing)}, optional extras: install them with `{LM_INSTALL}`.")


def plain_beam_search(model, tokenizer):
    """A pyctcdecode beam search without a language model (for hotwords without the LM)."""
    from pyctcdecode import build_ctcdecoder

    labels = ctc_alphabet(tokenizer, model.config.vocab_size, blank_token_id(model.config, tokenizer))
    return build_ctcdecoder(labels)


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

    def with_hotwords(self, hotwords, decoder=None) -> "Decoding":
        """The same decoding favouring other hotwords (one request's, in a server), with `decoder` as its beam search
        where it has none."""
        other = copy.copy(self)
        other.decoder = self.decoder or decoder
        other.beam = {**self.beam, "hotwords": list(hotwords) or None}
        return other

    def record(self, frames: FileFrames) -> Transcript:
        ids, probs = frames.frames()
        if self.decoder is None:
            text = ctc_decode(self.tokenizer, ids.tolist(), self.blank)
            words = greedy_words(ids, probs, self.tokenizer, self.blank, self.seconds_per_frame)
        else:
            text, words = " ".join(t for t in frames.texts if t), frames.words
        return Transcript(frames.path, text, round(frames.seconds, 3), words)


class Engine:
    """A model loaded once from `model_dir` (an output_dir or a checkpoint), with its options, ready to transcribe."""

    def __init__(self, model_dir: str, options: Optional[EngineOptions] = None):
        self.model_dir, self.options = model_dir, options or EngineOptions()
        opts = self.options
        check_model_dir(model_dir)
        self.device = torch.device("cpu") if opts.onnx else pick_device(opts.device)
        decoder = load_lm_decoder(model_dir) if opts.lm else None
        if opts.hotwords and not opts.lm:
            check_lm_packages("--hotwords", ("pyctcdecode", "pygtrie"))
        self.model, self.feature_extractor, self.tokenizer = load_model(model_dir, self.device, opts.language,
                                                                        opts.onnx)
        if decoder is None and opts.hotwords:
            decoder = plain_beam_search(self.model, self.tokenizer)
        self.sampling_rate = self.feature_extractor.sampling_rate
        self.hop = frame_hop(self.model, self.feature_extractor)
        self.decoding = Decoding(self.tokenizer, blank_token_id(self.model.config, self.tokenizer),
                                 self.hop / self.sampling_rate, decoder, opts.beam_width, opts.hotwords,
                                 opts.hotword_weight)
        self.collate = DataCollatorCTCWithPadding(self.feature_extractor,
                                                  channel_axis=has_channel_axis(self.feature_extractor))
        # The fewest samples the model makes a frame of (the same for every window: found once, not per window)
        counts = output_frames(self.model, self.feature_extractor, np.arange(1, self.sampling_rate // 2 + 1))
        self.fewest = 1 + int(np.argmax(counts >= 1)) if (counts >= 1).any() else len(counts) + 1
        # Group-norm models (wav2vec2-base) take padding as signal: each clip runs alone
        self.batch_seconds = opts.batch_seconds if self.feature_extractor.return_attention_mask else 0.0

    def describe(self) -> str:
        """The model, runtime, device and decoding, for one log line."""
        opts = self.options
        how = (f"beam search{' with the n-gram LM' if opts.lm else ''}{' and hotwords' if opts.hotwords else ''} "
               f"(width {opts.beam_width})" if self.decoding.decoder else "greedy decoding")
        runtime = f" (ONNX {opts.onnx}, onnxruntime)" if opts.onnx else ""
        alone = "; the model takes no attention mask, so each clip runs alone" if not self.batch_seconds else ""
        return f"{self.model_dir}{runtime} on {self.device}, {how}{alone}"

    def forward(self, windows: list, audios: list[np.ndarray], starts: list[int]) -> list[tuple[int, torch.Tensor]]:
        """One forward pass over windows read by read_window (of one file or of many): each window's first kept frame
        and its kept logits (longform.kept_logits)."""
        return kept_logits(windows, audios, starts, self.model, self.feature_extractor, self.collate, self.hop)

    def transcribe(self, audio: Union[str, np.ndarray], sampling_rate: Optional[int] = None) -> Transcript:
        """One input: a path, or samples (mono or [samples, channels], float or int16) at `sampling_rate` (default:
        the model's, self.sampling_rate; others are resampled). Audio that cannot be transcribed (unreadable,
        silent, too short) is a UserError that says why."""
        results, skipped = self.transcribe_many([audio], sampling_rate)
        if results[0] is None:
            raise UserError(f"cannot transcribe {audio if isinstance(audio, str) else 'the audio'}: "
                            f"{', '.join(skipped)}.")
        return results[0]

    def transcribe_many(self, inputs: list, sampling_rate: Optional[int] = None
                        ) -> tuple[list[Optional[Transcript]], Counter]:
        """Every input's Transcript, in input order (None for one skipped with a warning), and the skips by reason.
        Inputs are paths or arrays of samples at `sampling_rate` (as in transcribe); all are batched together."""
        rate = sampling_rate or self.sampling_rate
        with tempfile.TemporaryDirectory(prefix="ctc-engine-") as work:
            try:
                paths = [a if isinstance(a, str) else write_array(a, rate, os.path.join(work, f"{i}.wav"))
                         for i, a in enumerate(inputs)]
            except ValueError as e:
                raise UserError(str(e)) from e
            records, skipped = Run(self, paths).run()
        results = [records.get(i) for i in range(len(paths))]
        for result, given in zip(results, inputs):
            if result is not None and not isinstance(given, str):
                result.path = "<array>"
        return results, skipped


class Run:
    """One call's files: their windows planned from headers and energy, read batch by batch through the model, the
    frames joined per file and decoded as each file's last window is done. A server runs one per request, with the
    request's own `decoding` (hotwords), and its windows go through the server's batcher instead of run()."""

    def __init__(self, engine: Engine, paths: list[str], decoding: Optional[Decoding] = None):
        self.engine, self.paths, self.decoding = engine, paths, decoding or engine.decoding
        self.skipped, self.records, self.frames = Counter(), {}, {}
        self.reasons = []  # every skip's full reason, in order
        self.failed, self.short = set(), set()
        self.files, self.windows = self.plan()

    def skip(self, path: str, reason: str) -> None:
        logger.warning(f"warning: skipped {path}: {reason}")
        self.skipped[reason.split(" (")[0]] += 1
        self.reasons.append(reason)

    def plan(self) -> tuple[dict, list]:
        """Each readable file's (path, source rate, seconds) by input position, and its windows; unreadable, empty
        and too-short files are skipped with a warning each and counted (nothing is decoded here but the energy of
        recordings long enough to be cut)."""
        engine, opts = self.engine, self.engine.options
        rate, hop = engine.sampling_rate, engine.hop
        chunk = max(round(opts.chunk_seconds * rate / hop), 1) * hop
        context = round(opts.context_seconds * rate / hop) * hop
        files, windows = {}, []
        for index, path in enumerate(self.paths):
            frames, source_rate, _, reason = read_header(path)
            samples = round(frames * rate / source_rate) if source_rate else 0
            total_frames = output_frames(engine.model, engine.feature_extractor, [samples])[0] if not reason else 0
            if not reason and total_frames < 1:
                reason = f"too short for the model ({samples / rate:.3f} s)"
            if reason:
                self.skip(path, reason)
                continue
            try:  # the energy pass decodes the whole file once (block by block)
                pauses = find_pauses(*frame_energy(path, source_rate)) if samples > chunk + context else []
            except AUDIO_ERRORS as e:
                self.skip(path, f"undecodable audio ({e})")
                continue
            files[index] = (path, source_rate, samples / rate)
            windows += plan_windows(index, samples, total_frames, pauses, chunk, context, hop, rate)
        return files, windows

    def run(self) -> tuple[dict, Counter]:
        """Every readable file's Transcript by input position, and the skips by reason."""
        keep_memory_flat()
        for group in window_groups(self.windows, self.engine.batch_seconds, self.engine.sampling_rate):
            done, ends = [], []
            for batch in group:
                done += self.run_batch(batch, ends)
            for window, audio, first_frame, window_logits in sorted(done, key=lambda d: (d[0].file, d[0].start)):
                self.add(window, audio, first_frame, window_logits, ends)
            for window in ends:
                file_frames = self.frames.pop(window.file, None)
                if window.file not in self.failed:
                    self.finish(window.file, file_frames)
        return self.records, self.skipped

    def run_batch(self, batch: list, ends: list) -> list[tuple]:
        """A batch of windows read and run through the model: (window, audio, first kept frame, kept logits) each.
        A file's last window with no audio left for the model goes to `ends`."""
        read = self.read(batch, ends)
        kept = self.engine.forward([w for w, _, _ in read], [a for _, a, _ in read], [s for _, _, s in read]) \
            if read else []
        return [(window, audio, *out) for (window, audio, _), out in zip(read, kept)]

    def read(self, batch: list, ends: list) -> list[tuple]:
        """The windows' audio: (window, audio, where it starts in the file) for each one the model can take; a
        file's last window with no audio left for the model goes to `ends`, an undecodable one skips its file."""
        engine, read = self.engine, []
        for window in batch:
            path, source_rate, _ = self.files[window.file]
            if window.file in self.failed:
                continue
            try:
                audio, start, complete = read_window(path, window, source_rate, engine.sampling_rate)
            except AUDIO_ERRORS as e:
                self.failed.add(window.file)
                self.skip(path, f"undecodable audio ({e})")
                continue
            if not complete:
                self.short.add(window.file)
            if len(audio) >= engine.fewest:
                read.append((window, audio, start))
            elif window.last:  # nothing left for the model (a file cut short): the file ends with what it gave
                ends.append(window)
        return read

    def add(self, window, audio: np.ndarray, first_frame: int, logits: torch.Tensor, ends: list) -> None:
        """A window's kept frames joined to its file's; a beam search runs on what a pause closes."""
        if window.file in self.failed:  # a later window of it failed to decode: the file is skipped
            self.frames.pop(window.file, None)
            return
        path, _, seconds = self.files[window.file]
        decoding = self.decoding
        file_frames = self.frames.setdefault(window.file, FileFrames(path, seconds, decoding.blank, decoding.boundary,
                                                                     keep_logits=decoding.decoder is not None))
        file_frames.add(first_frame, logits, audio)
        if window.last:
            ends.append(window)
        else:
            decoding.search(file_frames, final=False)

    def finish(self, index: int, file_frames: Optional[FileFrames]) -> None:
        """A file whose last window is done: its record, or a counted skip when it held no sound at all."""
        path, _, seconds = self.files[index]
        if file_frames is None:  # not one window had audio for the model
            self.skip(path, "truncated audio (nothing where its header says)")
            return
        if file_frames.peak == 0.0:
            self.skip(path, "silent audio (every sample is zero)")
            return
        decoding = self.decoding
        decoding.search(file_frames, final=True)
        if index in self.short:
            held = file_frames.next_frame * decoding.seconds_per_frame
            logger.warning(f"warning: {path} is cut short: its header says {seconds:,.1f} s, it holds about "
                           f"{held:,.1f} s; transcribed what it holds")
            file_frames.seconds = held
        self.records[index] = decoding.record(file_frames)
