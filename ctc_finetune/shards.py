# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""WebDataset tar shards and the streamed training split they give: reading them (step 1), one shard set per
process, each clip scanned, decoded and checked as training reads it (step 4), and the batches the DataLoader workers
build from it (step 6). The recipe's preprocess step sends a streamed split here instead of to preprocessing."""

import functools
import itertools
import json
import logging
import os
import tarfile
from collections import Counter
from typing import Optional

import datasets
import pyarrow as pa
import torch
from datasets.distributed import split_dataset_by_node

from .audio import AUDIO_EXTENSIONS
from .augment import fastest_speeds
from .columns import (AUDIO_COLUMN, CLIP_ID_COLUMN, DROP_COLUMN, FASTEST_SPEED_COLUMN, LENGTH_COLUMN,
                      MIN_FRAMES_COLUMN, RAW_TEXT_COLUMN, TARGET_TEXT_COLUMN)
from .faults import UserError
from .preprocessing import ClipForm, drop_reasons, featurize_batch, scan_batch

logger = logging.getLogger(__name__)

SHARD_AUDIO_EXTENSIONS = tuple(e[1:] for e in AUDIO_EXTENSIONS)  # a shard's audio members: KEY.flac, KEY.wav, ...
STREAM_SHUFFLE_BUFFER = 1_000  # clips a streamed split is shuffled within (after its shards are shuffled)


def shard_fields(tar_path: str) -> tuple[str, str, Optional[dict]]:
    """The audio and transcript members of a shard's clips ('flac', 'txt'), from its first clip; and that clip's
    parsed JSON when the transcript is in KEY.json."""
    fields, key, parsed = {}, None, None
    try:
        with tarfile.open(tar_path) as tar:
            for member in tar:
                name = os.path.basename(member.name)
                if not member.isfile() or "." not in name:
                    continue
                stem, extension = name.split(".", 1)
                if key is not None and stem != key:
                    break
                key, fields[extension.lower()] = stem, member
                if extension.lower() == "json":
                    parsed = json.load(tar.extractfile(member))
    except (tarfile.TarError, OSError, ValueError) as e:
        raise UserError(f"{tar_path}: not a readable tar shard ({e}); rewrite it with tools/make_shards.py.") from e
    audio = [f for f in fields if f in SHARD_AUDIO_EXTENSIONS]
    text = [f for f in ("txt", "json") if f in fields]
    if not audio or not text:
        raise UserError(
            f"{tar_path}: its first clip {key!r} has members {', '.join(sorted(fields)) or 'none'}; a shard pairs "
            f"KEY.{'|'.join(SHARD_AUDIO_EXTENSIONS)} with KEY.txt or KEY.json "
            "(write shards with tools/make_shards.py)."
        )
    return audio[0], text[0], parsed


def load_shards(tars: list[str], stream: bool, cache_dir):
    """WebDataset tar shards, read by the datasets library's `webdataset` builder: streamed (the training split) or
    read once into Arrow (evaluation). Columns: `audio` ({'path': 'SHARD/KEY.EXT', 'bytes': the file}), and `text`
    from KEY.txt, or every field of KEY.json."""
    audio, text, first_json = shard_fields(tars[0])
    string = datasets.Value("string")
    # Explicit features: the builder would type the audio member as datasets.Audio, whose encoding needs torchcodec.
    fields = datasets.Features({audio: datasets.Value("binary"), "__key__": string, "__url__": string})
    if text == "txt":
        columns = {RAW_TEXT_COLUMN: string}
    else:
        columns = dict(datasets.Features.from_arrow_schema(pa.Table.from_pylist([first_json]).schema))
    fields[text] = string if text == "txt" else columns
    ds = datasets.load_dataset("webdataset", data_files={"shards": tars}, split="shards", streaming=stream,
                               features=fields, cache_dir=cache_dir)

    def to_columns(clip: dict) -> dict:
        path = f"{os.path.basename(clip['__url__'])}/{clip['__key__']}.{audio}"
        row = {AUDIO_COLUMN: {"bytes": clip[audio], "path": path}}
        row.update({RAW_TEXT_COLUMN: clip["txt"]} if text == "txt" else (clip["json"] or {}))
        return row

    out = datasets.Features({AUDIO_COLUMN: {"bytes": datasets.Value("binary"), "path": string}, **columns})
    return ds.map(to_columns, remove_columns=list(fields), features=out)


def this_process_stream(ds: datasets.IterableDataset, training_args) -> datasets.IterableDataset:
    """The training stream as this process reads it: its own shards under DDP, reshuffled each epoch (the shard order,
    then within a buffer of clips). Stops on flags a stream cannot honour."""
    if training_args.max_steps <= 0:
        raise UserError("the training split is streamed from tar shards, which have no length: give --max_steps.")
    if training_args.max_batch_duration is not None:
        raise UserError("--max_batch_duration needs every clip's length up front, which streamed tar shards do not "
                        "give; use --per_device_train_batch_size.")
    world, shards = training_args.world_size, ds.n_shards
    if shards % world:
        logger.warning(f"{shards} training shards do not divide among {world} processes: each process reads every "
                       f"shard and keeps every {world}th clip. Write a multiple of {world} shards to read each once.")
    ds = split_dataset_by_node(ds, rank=training_args.process_index, world_size=world)
    if ds.n_shards < max(training_args.dataloader_num_workers, 1):
        logger.warning(f"{ds.n_shards} shards per process for {training_args.dataloader_num_workers} DataLoader "
                       "workers: some workers will idle; write more shards (tools/make_shards.py --clips_per_shard).")
    logger.info(f"Streaming [train]: {shards:,} tar shards, {ds.n_shards:,} for each of {world} process(es), "
                f"shuffled within {STREAM_SHUFFLE_BUFFER:,} clips")
    return ds.shuffle(seed=training_args.seed, buffer_size=STREAM_SHUFFLE_BUFFER)


def decode_stream_batch(batch: dict, *, form, encode, frames, limits: dict, speeds=()) -> dict:
    """Stream map function (run in the DataLoader workers): what scan_batch, featurize_batch and drop_reasons make of
    each clip, in one pass. Dropped clips stay, with their reason, for StreamBatches to count. `encode`, `frames` and
    `limits` are those of preprocessing (LabelEncoder, clip_limits); `form`: what is kept of each clip
    (preprocessing.ClipForm); `speeds`: for each clip's fastest speed factor (augment.fastest_speeds)."""
    scanned = scan_batch(batch, encode=encode, sampling_rate=form.feature_extractor.sampling_rate)
    decoded = featurize_batch({AUDIO_COLUMN: batch[AUDIO_COLUMN], LENGTH_COLUMN: scanned[LENGTH_COLUMN]}, form=form)
    reasons = [scan or decode for scan, decode in zip(scanned[DROP_COLUMN], decoded[DROP_COLUMN])]
    scanned.update(decoded, **{DROP_COLUMN: reasons})
    lengths = scanned[LENGTH_COLUMN]
    reasons = drop_reasons(scanned, frames(lengths), masked_frames=frames(lengths, before_adapter=True), train=True,
                           **limits)
    if speeds:
        scanned[FASTEST_SPEED_COLUMN] = fastest_speeds(lengths, scanned[MIN_FRAMES_COLUMN], frames,
                                                       limits["mask_time_frames"], speeds).tolist()
    return {**scanned, DROP_COLUMN: reasons.tolist()}


def decode_stream(ds: datasets.IterableDataset, feature_extractor, encode, frames, limits: dict, augmenter=None):
    """The streamed split as training reads it: nothing is read now; each clip is scanned, decoded and checked
    (decode_stream_batch) when a DataLoader worker reaches it. With an `augmenter` (augment.Augmenter), each clip's
    waveform is kept for it."""
    form = ClipForm(feature_extractor, waveform=augmenter is not None)
    decode = functools.partial(decode_stream_batch, form=form, encode=encode, frames=frames, limits=limits,
                               speeds=augmenter.speeds if augmenter else ())
    return ds.map(decode, batched=True, batch_size=16, remove_columns=[AUDIO_COLUMN, TARGET_TEXT_COLUMN])


def stream_report(ds: datasets.IterableDataset, key: str, text_stats: dict) -> dict:
    """The data report of a streamed split: its shards and text (clips, hours and drops are counted as training reads
    them, by StreamBatches and log_stream)."""
    logger.info(f"Data [{key}]: streamed from {ds.n_shards:,} tar shards per process; clips, hours and drops are "
                f"counted as training reads them; {text_stats['vocabulary']}")
    return {"streamed_shards": ds.n_shards, **text_stats}


class StreamBatches(torch.utils.data.IterableDataset):
    """Training batches from a streamed split (tar shards), without end: epoch after epoch, each reshuffled, until
    --max_steps. Clips the stream marked for dropping are left out; each batch carries `stream`: its clip ids and the
    drop reasons met since the previous batch, for the trainer to count. Runs in the DataLoader workers, which
    datasets gives shards of their own."""

    def __init__(self, ds: datasets.IterableDataset, batch_size: int, collator):
        self.ds, self.batch_size, self.collator = ds, batch_size, collator

    def __iter__(self):
        batch, dropped = [], Counter()
        for epoch in itertools.count():
            self.ds.set_epoch(epoch)
            read = kept = 0
            for clip in self.ds:
                read += 1
                if clip[DROP_COLUMN]:
                    dropped[clip[DROP_COLUMN]] += 1
                    continue
                kept += 1
                batch.append(clip)
                if len(batch) == self.batch_size:
                    yield {**self.collator(batch), "stream": {"clips": [c[CLIP_ID_COLUMN] for c in batch],
                                                              "dropped": dict(dropped)}}
                    batch, dropped = [], Counter()
            if read == 0:  # a worker without shards (more workers than shards): the others go on
                return
            if kept == 0:
                raise RuntimeError(f"every clip of this DataLoader worker's shards was dropped ({dict(dropped)})")


def log_stream(streamed: dict, training_args) -> dict:
    """One line per process on what its training stream gave: clips, shards, drops; returns this process's counts."""
    dropped = dict(streamed["dropped"])
    summary = ", ".join(f"{n:,} {r}" for r, n in dropped.items()) or "none"
    # all print it
    logger.warning(f"Streamed [train] process {training_args.process_index}/{training_args.world_size}: "
                   f"{streamed['clips']:,} clips trained on from shards {', '.join(sorted(streamed['shards']))}; "
                   f"dropped: {summary}")
    return {"train_samples": streamed["clips"], "train_clips_dropped": sum(dropped.values())}
