# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Preprocessing (step 4): scan every file's header, drop unusable clips (counted per reason), decode and
extract features into a cache (or at access time), and the data report."""

import dataclasses
import functools
import json
import logging
import os
from collections import Counter
from typing import Optional

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute
import torch
from transformers import Wav2Vec2CTCTokenizer

from .audio import AUDIO_ERRORS, TRUNCATION_TOLERANCE, audio_source, load_audio, read_header
from .augment import fastest_speeds
from .columns import (
    AUDIO_COLUMN,
    CACHE_VERSION,
    CHANNELS_COLUMN,
    CLIP_ID_COLUMN,
    DROP_COLUMN,
    FASTEST_SPEED_COLUMN,
    LABELS_COLUMN,
    LENGTH_COLUMN,
    MIN_FRAMES_COLUMN,
    SOURCE_RATE_COLUMN,
    TARGET_TEXT_COLUMN,
    WAVEFORM_COLUMN,
    derived_fingerprint,
)
from .edges import trim_to_speech, trims
from .families import decode_labels, extract_features, model_input_names, output_frames
from .faults import DiskFull, UserError, is_disk_full

logger = logging.getLogger(__name__)

CTC_INFEASIBLE = "transcript too long for the audio (CTC)"  # the drop reason of labels needing more output frames
# stop when more of the training clips than this are CTC-infeasible: the vocabulary is wrong
MAX_INFEASIBLE_SHARE = 0.2
NUM_LOGGED_SAMPLES = 3  # random training examples logged before training


def ctc_min_frames(label_ids: list[int]) -> int:
    """Output frames CTC needs for a label: one per token plus a blank between repeated tokens."""
    return len(label_ids) + sum(a == b for a, b in zip(label_ids, label_ids[1:]))


def encode_labels(tokenizer, text: str, phonemes: bool = False) -> list[int]:
    """Label ids of a transcript: its phonemes, or what the tokenizer makes of it, without special tokens (no </s>)."""
    return (tokenizer.convert_tokens_to_ids(text.split()) if phonemes
            else tokenizer(text, add_special_tokens=False).input_ids)


class LabelEncoder:
    """encode_labels for one tokenizer, as a function of the text. For our character tokenizer it is a dictionary
    lookup per character, which is what Wav2Vec2CTCTokenizer does, 40 times faster (the header scan of a large corpus
    spent most of its time there); texts holding a multi-character token such as [UNK] go through the tokenizer.
    A class rather than a closure, so that datasets can send it to its worker processes."""

    def __init__(self, tokenizer, phonemes: bool = False):
        self.tokenizer, self.phonemes = tokenizer, phonemes
        self.lookup = type(tokenizer) is Wav2Vec2CTCTokenizer and not tokenizer.do_lower_case and not phonemes
        if self.lookup:
            self.ids = {**tokenizer.encoder, **tokenizer.added_tokens_encoder}
            self.unk, self.delimiter = tokenizer.encoder.get(tokenizer.unk_token), tokenizer.word_delimiter_token
            self.long_tokens = [t for t in self.ids if len(t) > 1]

    def __call__(self, text: str) -> list[int]:
        if not self.lookup or any(t in text for t in self.long_tokens):
            return encode_labels(self.tokenizer, text, self.phonemes)
        return [self.ids.get(c, self.unk) for c in text.replace(" ", self.delimiter)]


def scan_batch(batch: dict, *, encode, sampling_rate: int) -> dict:
    """datasets.map function: facts from each file's header (no decoding) and label ids (`encode`: a LabelEncoder);
    bad clips get a reason."""
    out = {LENGTH_COLUMN: [], SOURCE_RATE_COLUMN: [], CHANNELS_COLUMN: [], LABELS_COLUMN: [], MIN_FRAMES_COLUMN: [],
           DROP_COLUMN: [], CLIP_ID_COLUMN: []}
    for cell, text in zip(batch[AUDIO_COLUMN], batch[TARGET_TEXT_COLUMN]):
        frames, rate, channels, reason = read_header(audio_source(cell))
        if not reason and not text:
            reason = "empty transcript"
        labels = encode(text) if text else []
        out[LENGTH_COLUMN].append(round(frames * sampling_rate / rate) if rate else 0)
        out[SOURCE_RATE_COLUMN].append(rate)
        out[CHANNELS_COLUMN].append(channels)
        out[LABELS_COLUMN].append(labels)
        out[MIN_FRAMES_COLUMN].append(ctc_min_frames(labels))
        out[DROP_COLUMN].append(reason)
        out[CLIP_ID_COLUMN].append(str(cell.get("path") if isinstance(cell, dict) else cell))
    return out


def empty_features(feature_extractor) -> np.ndarray:
    """A model input of no frames, shaped like a real one: what a clip that fails to decode is stored as."""
    return extract_features(feature_extractor, np.zeros(feature_extractor.sampling_rate, np.float32))[:0]


@dataclasses.dataclass(frozen=True)
class ClipForm:
    """What a split keeps of each decoded clip, chosen once per split in preprocess: the model's input features, or,
    for a training split that is augmented, the waveform itself, which the collator (batching) plays through the
    Augmenter and featurizes as batches are made."""

    feature_extractor: object
    waveform: bool = False

    @property
    def column(self) -> str:
        return WAVEFORM_COLUMN if self.waveform else model_input_names(self.feature_extractor)[0]

    @property
    def kind(self) -> str:
        return "waveforms" if self.waveform else "features"

    def cut(self, audio: np.ndarray) -> np.ndarray:
        """The decoded clip as the model hears it: with --trim_silence, cut to its speech (edges), as transcription
        cuts it; else as it is."""
        if trims(self.feature_extractor):
            return trim_to_speech(audio, self.feature_extractor.sampling_rate)[0]
        return audio

    def of(self, clip: np.ndarray) -> np.ndarray:
        return clip if self.waveform else extract_features(self.feature_extractor, clip)

    def empty(self) -> np.ndarray:
        """What a clip that failed to decode is stored as: an input of no frames, shaped like a real one."""
        return np.zeros(0, np.float32) if self.waveform else empty_features(self.feature_extractor)


def featurize_batch(batch: dict, *, form: ClipForm, one_thread: bool = False) -> dict:
    """datasets.map function: decode and resample each clip, kept in its `form` (features, or the waveform for
    augmentation as batches are made); truncated or corrupt files get a reason."""
    if one_thread:  # a forked worker: torch's OpenMP pool, copied mid-state from the parent, would deadlock
        torch.set_num_threads(1)
    rate = form.feature_extractor.sampling_rate
    out = {form.column: [], LENGTH_COLUMN: [], DROP_COLUMN: []}
    for cell, expected in zip(batch[AUDIO_COLUMN], batch[LENGTH_COLUMN]):
        reason, audio, features = "", np.zeros(0, dtype=np.float32), None
        clip = audio
        try:
            audio = load_audio(audio_source(cell), rate)
            clip = form.cut(audio)
            features = form.of(clip)
        except AUDIO_ERRORS:
            reason = "undecodable audio"
        if not reason and len(audio) < TRUNCATION_TOLERANCE * expected:
            reason = "truncated audio"
        out[form.column].append(features if not reason else form.empty())
        out[LENGTH_COLUMN].append(len(clip))  # what the model reads: evaluation cuts its predictions to it
        out[DROP_COLUMN].append(reason)
    return out


def featurize_on_access(batch: dict, *, form: ClipForm) -> dict:
    """Dataset transform for --preprocess_on_the_fly: decode in the DataLoader workers, store nothing, and give each
    clip in its `form`. A file that fails to decode gives an empty input, which the collator skips with a warning."""
    if AUDIO_COLUMN not in batch:  # a read of other columns only
        return batch
    rate = form.feature_extractor.sampling_rate
    batch = dict(batch)
    features, lengths = [], []
    for cell in batch.pop(AUDIO_COLUMN):
        try:
            clip = form.cut(load_audio(audio_source(cell), rate))
            features.append(form.of(clip))
            lengths.append(len(clip))
        except AUDIO_ERRORS:
            features.append(form.empty())
            lengths.append(0)
    batch[form.column] = features
    if trims(form.feature_extractor) and LENGTH_COLUMN in batch:  # the header's length was the uncut clip's
        batch[LENGTH_COLUMN] = lengths
    return batch


def drop_reasons(scanned: dict, output_frames: np.ndarray, *, train: bool, min_len: float, max_len: float,
                 mask_time_frames: int, masked_frames: Optional[np.ndarray] = None) -> np.ndarray:
    """Why each clip is dropped ("" = kept): scan reasons, then (train only) duration bounds and CTC feasibility.

    `masked_frames`: the frames SpecAugment masks, where they differ from the output frames (an adapter subsamples).

    Eval keeps every readable clip, so WER covers the whole split; SpecAugment and the loss only matter in training.
    """
    reasons = np.asarray(scanned[DROP_COLUMN], dtype=object)
    if not train:
        return reasons
    lengths = np.asarray(scanned[LENGTH_COLUMN])
    masked_frames = output_frames if masked_frames is None else masked_frames
    checks = (
        (lengths <= min_len, "shorter than --min_duration_in_seconds"),
        (lengths >= max_len, "longer than --max_duration_in_seconds"),
        (masked_frames < mask_time_frames, "too short for SpecAugment's --mask_time_length"),
        (output_frames < np.asarray(scanned[MIN_FRAMES_COLUMN]), CTC_INFEASIBLE),
    )
    for failed, reason in checks:
        reasons[(reasons == "") & failed] = reason
    return reasons


def check_ctc_fit(reasons: np.ndarray, frames_per_second: float, vocab_size: int) -> None:
    """Stop before training when the model's frame rate cannot align a large share of the training transcripts."""
    too_long = int((reasons == CTC_INFEASIBLE).sum())
    usable = too_long + int((reasons == "").sum())
    if usable and too_long / usable > MAX_INFEASIBLE_SHARE:
        raise UserError(
            f"{too_long:,} of {usable:,} training clips ({too_long / usable:.0%}) have transcripts too long for this "
            f"model's {frames_per_second:g} output frames per second with a {vocab_size:,}-token vocabulary "
            "(CTC needs a frame per token); training on the rest would not learn the task. Use fewer, longer tokens: "
            "a subword vocabulary (--vocab_type bpe), or the checkpoint's own subword tokenizer "
            "(--tokenizer_name_or_path); or a model with more output frames per second."
        )


def cache_rows(files: list[str]) -> int:
    """Rows in a set of cache files; -1 when one is unreadable (truncated by a kill, or a disk error)."""
    try:
        return sum(len(datasets.Dataset.from_file(f)) for f in files)
    except (pa.ArrowException, OSError, ValueError):
        return -1


def cached_map(ds: datasets.Dataset, function, key_parts: list, name: str, cache_root: str, data_args,
               needed_bytes: float = 0) -> datasets.Dataset:
    """datasets.map into a cache file named by the input's fingerprint and `key_parts`; reused by later runs once
    checked whole (a damaged one is rebuilt). `needed_bytes`: about what it takes on disk, for a full-disk error."""
    key = derived_fingerprint(ds, name, *key_parts)
    path = os.path.join(cache_root, f"{name}-{key}.arrow")
    workers = data_args.preprocessing_num_workers or 1
    shards = [path] if workers == 1 else [f"{path[:-6]}_{i:05d}_of_{workers:05d}.arrow" for i in range(workers)]
    existing = [path] if os.path.isfile(path) else shards if all(os.path.isfile(p) for p in shards) else []
    if existing and not data_args.overwrite_cache:
        if cache_rows(existing) == len(ds):
            logger.info(f"{name}: reusing the cache in {cache_root} (--overwrite_cache to redo it)")
        else:  # a map's output has a row per input row: fewer, or none readable, is a damaged file
            logger.warning(f"{name}: the cache {existing[0]} is unreadable or incomplete (truncated?): rebuilding it")
            for f in existing:
                os.remove(f)
    os.makedirs(cache_root, exist_ok=True)
    try:
        return ds.map(
            function, batched=True, batch_size=16, num_proc=data_args.preprocessing_num_workers,
            cache_file_name=path, load_from_cache_file=not data_args.overwrite_cache, new_fingerprint=key, desc=name,
        )
    except Exception as e:
        if is_disk_full(e):
            raise DiskFull("the preprocessing cache in", cache_root, needed_bytes,
                           "free some space, point --cache_dir at a bigger disk, or use "
                           "--preprocess_on_the_fly") from e
        raise


def log_drops(key: str, reasons: np.ndarray, ds: datasets.Dataset, stage: str) -> dict[str, int]:
    """One line per split and stage: kept/dropped counts per reason and the first few files dropped."""
    counts = Counter(r for r in reasons if r)
    for reason, n in counts.items():
        first = [str(audio_source(ds[int(i)][AUDIO_COLUMN])) for i in np.flatnonzero(reasons == reason)[:3]]
        logger.warning(f"Dropped [{key}] {n:,} clips, {reason}: {', '.join(first)}{' ...' if n > 3 else ''}")
    logger.info(f"{stage} [{key}]: {int((reasons == '').sum()):,} clips kept, {sum(counts.values()):,} dropped")
    return dict(counts)


def scan_table(ds: datasets.Dataset, *names: str) -> pa.Table:
    """Columns of the header scan (lengths, rates, labels, clip ids) as an Arrow table, read past the dataset's format
    (with --preprocess_on_the_fly its transform would decode every clip's audio for each read), and without making a
    Python object per value (millions of them for the labels of a large corpus)."""
    return ds.select_columns(list(names)).with_format("arrow")[:]


def scan_column(ds: datasets.Dataset, name: str) -> np.ndarray:
    """One column of the header scan (see scan_table) as an array."""
    return scan_table(ds, name)[name].to_numpy(zero_copy_only=False)


def check_drops(kept: datasets.DatasetDict, dropped: dict, data_args) -> None:
    """Stop when a split is empty, or (--strict_data) when any clip was dropped for bad input."""
    for key, ds in kept.items():
        summary = ", ".join(f"{n:,} {r}" for r, n in dropped[key].items()) or "none"
        if len(ds) == 0:
            raise UserError(
                f"no {key} clips left (dropped: {summary}); check the audio paths, the transcript column and "
                "--min/max_duration_in_seconds."
            )
        bad = {r: n for r, n in dropped[key].items() if not r.startswith(("shorter than --", "longer than --"))}
        if data_args.strict_data and bad:
            raise UserError(f"--strict_data: {key} clips dropped ({summary}); fix or remove them, or drop the flag.")


def sort_longest_first(ds: datasets.Dataset) -> datasets.Dataset:
    """An evaluation split in the order it is scored: longest clips first, so batches hold similar lengths (little
    padding; an OOM shows at once). transcribe_split returns the transcripts in this order."""
    return ds.select(np.argsort(-scan_column(ds, LENGTH_COLUMN), kind="stable"))


def clip_limits(model, feature_extractor, data_args) -> tuple:
    """What drop_reasons checks training clips against: `frames(samples, before_adapter=False)`, the model's output
    frames for clips of so many samples, and the duration and SpecAugment limits (in samples and frames)."""
    rate = feature_extractor.sampling_rate
    spec_augment = getattr(model.config, "mask_time_prob", 0) > 0
    limits = {"min_len": data_args.min_duration_in_seconds * rate, "max_len": data_args.max_duration_in_seconds * rate,
              "mask_time_frames": model.config.mask_time_length if spec_augment else 0}
    return functools.partial(output_frames, model, feature_extractor), limits


def scan_and_filter(splits, encode, frames, limits, rate: int, cache_root: str, data_args, training_args,
                    speeds=None):
    """Read every file's header, drop unusable clips (counted per reason), and return what is kept and why not.
    `encode`: the LabelEncoder; `frames` and `limits`: from clip_limits; `rate`: the model's sampling rate; `speeds`:
    --speed_perturbation's factors, for which each training clip gets the fastest CTC can still align."""
    key_parts = [encode.tokenizer.get_vocab(), rate, encode.phonemes, CACHE_VERSION]
    scan = functools.partial(scan_batch, encode=encode, sampling_rate=rate)
    kept, dropped = datasets.DatasetDict(), {}
    with training_args.main_process_first(desc="scanning audio headers"):
        for key, ds in splits.items():
            scanned = cached_map(ds, scan, key_parts, f"scan-{key}", cache_root, data_args, 1000 * len(ds))
            columns = scanned.select_columns([LENGTH_COLUMN, MIN_FRAMES_COLUMN, DROP_COLUMN]).to_dict()
            lengths = columns[LENGTH_COLUMN]
            reasons = drop_reasons(columns, frames(lengths), masked_frames=frames(lengths, before_adapter=True),
                                   train=key == "train", **limits)
            dropped[key] = log_drops(key, reasons, scanned, "Scanned")
            if key == "train":
                check_ctc_fit(reasons, frames([100 * rate])[0] / 100, len(encode.tokenizer))
            if key == "train" and speeds:  # per clip, the fastest factor CTC can still align
                fastest = fastest_speeds(lengths, columns[MIN_FRAMES_COLUMN], frames, limits["mask_time_frames"],
                                         speeds)
                scanned = scanned.add_column(FASTEST_SPEED_COLUMN, fastest.tolist())
            kept[key] = scanned.select(np.flatnonzero(reasons == "")).remove_columns([DROP_COLUMN, MIN_FRAMES_COLUMN])
    check_drops(kept, dropped, data_args)
    return kept, dropped


def featurize(kept, data_args, training_args, feature_extractor, dropped, cache_root,
              augmented: bool = False) -> tuple[datasets.DatasetDict, dict]:
    """Decode every kept clip into cached features, or (--preprocess_on_the_fly) set up decoding at access time.
    Returns them and the drop counts per split and reason: the scan's `dropped` plus the clips that failed to
    decode."""
    dropped = {key: dict(reasons) for key, reasons in dropped.items()}
    forms = {key: ClipForm(feature_extractor, waveform=key == "train" and augmented) for key in kept}
    if data_args.preprocess_on_the_fly:
        return datasets.DatasetDict({k: (ds if k == "train" else sort_longest_first(ds)).with_transform(
            functools.partial(featurize_on_access, form=forms[k])) for k, ds in kept.items()}), dropped
    key_parts = [feature_extractor.to_dict(), TRUNCATION_TOLERANCE, CACHE_VERSION]
    vectorized = datasets.DatasetDict()
    with training_args.main_process_first(desc="decoding audio"):
        for key, ds in kept.items():
            featurize_fn = functools.partial(featurize_batch, form=forms[key],
                                             one_thread=(data_args.preprocessing_num_workers or 1) > 1)
            samples = float(scan_column(ds, LENGTH_COLUMN).sum())  # float32 features: about 4 bytes per sample
            name = f"{forms[key].kind}-{key}"
            ds = cached_map(ds, featurize_fn, key_parts, name, cache_root, data_args, 4 * samples)
            reasons = np.asarray(ds[DROP_COLUMN], dtype=object)
            for reason, n in log_drops(key, reasons, ds, "Decoded").items():
                dropped[key][reason] = dropped[key].get(reason, 0) + n
            ds = ds.select(np.flatnonzero(reasons == "")).remove_columns([DROP_COLUMN, AUDIO_COLUMN])
            if key != "train":
                ds = sort_longest_first(ds)
            # Features read as numpy arrays (zero-copy from Arrow), not as Python lists of floats
            vectorized[key] = ds.with_format("numpy", columns=[forms[key].column], output_all_columns=True)
    check_drops(vectorized, dropped, data_args)
    return vectorized, dropped


def log_samples(vectorized: datasets.DatasetDict, tokenizer, sampling_rate: int, seed: int) -> None:
    """Three random training examples as the model will see them: duration and the decoded label."""
    ds = vectorized.get("train")
    if ds is None:
        return
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(ds), size=min(NUM_LOGGED_SAMPLES, len(ds)), replace=False)
    scanned = scan_table(ds.select(picked), LABELS_COLUMN, LENGTH_COLUMN).to_pydict()
    for i, labels, length in zip(picked, scanned[LABELS_COLUMN], scanned[LENGTH_COLUMN]):
        logger.info(f"Sample {int(i)} of train: {length / sampling_rate:.2f} s, "
                    f"label {decode_labels(tokenizer, labels)!r}")


def save_json(obj: dict, name: str, training_args) -> None:
    """Write `name` into output_dir (on the process that saves)."""
    if training_args.should_save:
        os.makedirs(training_args.output_dir, exist_ok=True)
        with open(os.path.join(training_args.output_dir, name), "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=1)


def data_report(ds_dict: datasets.DatasetDict, dropped: dict, text_stats: dict, sampling_rate: int) -> dict:
    """Log one compact line per split (clips, hours, durations, rates, channels, characters, drops); return it all."""
    report = {}
    for key, ds in ds_dict.items():
        columns = scan_table(ds, LENGTH_COLUMN, SOURCE_RATE_COLUMN, CHANNELS_COLUMN, LABELS_COLUMN)
        seconds = columns[LENGTH_COLUMN].to_numpy() / sampling_rate
        label_tokens = pa.compute.sum(pa.compute.list_value_length(columns[LABELS_COLUMN])).as_py() or 0
        r = report[key] = {
            "clips": len(ds),
            "hours": round(float(seconds.sum()) / 3600, 4),
            "seconds_min_median_max": [round(float(f(seconds)), 2) for f in (np.min, np.median, np.max)],
            "sampling_rates": sorted(pa.compute.unique(columns[SOURCE_RATE_COLUMN]).to_pylist()),
            "channels": sorted(pa.compute.unique(columns[CHANNELS_COLUMN]).to_pylist()),
            "label_tokens_per_second": round(label_tokens / max(float(seconds.sum()), 1e-9), 2),
            **text_stats[key],
            "dropped": dropped[key],
        }
        logger.info(
            f"Data [{key}]: {r['clips']:,} clips, {r['hours']:.2f} h, seconds min/median/max "
            f"{'/'.join(map(str, r['seconds_min_median_max']))}, rates {r['sampling_rates']} Hz, channels "
            f"{r['channels']}, {r['distinct']} {'phonemes' if ' ' in r['characters'] else 'characters'} "
            f"{r['characters'][:100]!r}, "
            f"{r['unknown_character_share']:.2%} unknown; {r['vocabulary']}, labels {r['label_tokens_per_second']} "
            f"tokens per second of audio; dropped {sum(r['dropped'].values()):,}"
        )
    return report


def log_cache_files(vectorized: datasets.DatasetDict) -> dict:
    """--preprocessing_only: where the features are cached (a later run with the same settings reuses them)."""
    files = {k: ds.cache_files for k, ds in vectorized.items() if isinstance(ds, datasets.Dataset)}
    logger.info(f"Preprocessing done; cache files: {files}")
    return {}
