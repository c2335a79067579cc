# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Batching (step 5): padding clips into tensors, and duration-capped batches of similar-length clips (for
training, and for transcribe.py)."""

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .augment import KINDS
from .columns import FASTEST_SPEED_COLUMN, LABELS_COLUMN, LABEL_PAD_ID, LENGTH_COLUMN, WAVEFORM_COLUMN
from .families import extract_features, model_input_names

logger = logging.getLogger(__name__)


def duration_batches(lengths, max_total: float) -> list[list[int]]:
    """Clip indices in batches of similar length, each at most `max_total` long once padded (its longest clip times
    its size; a clip longer than that makes a batch alone), from the shortest batch to the longest."""
    lengths = np.asarray(lengths)
    batches, batch = [], []
    for i in np.argsort(lengths, kind="stable"):  # ascending: each new clip is the batch's longest
        if batch and lengths[i] * (len(batch) + 1) > max_total:
            batches.append(batch)
            batch = []
        batch.append(int(i))
    return batches + [batch] if batch else batches


class DurationBatchSampler:
    """Batches of similar-length clips, each holding at most `max_samples` samples of padded audio.

    The batches are formed once, from the clips sorted by length (so padding is tiny and memory per step is bounded),
    and dealt out in a new random order each epoch (seeded by `seed` and the epoch: deterministic, and resumable).
    Under DDP, accelerate hands whole batches to the processes, every process the same number.
    """

    def __init__(self, lengths, max_samples: float, seed: int):
        self.batches = duration_batches(lengths, max_samples)
        self.seed, self.epoch = seed, 0
        # Under DDP accelerate wraps this in a BatchSamplerShard, which has no set_epoch; accelerate's loader then
        # passes the epoch to the wrapped batch sampler's `.sampler` only.
        self.sampler = self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for b in np.random.default_rng([self.seed, self.epoch]).permutation(len(self.batches)):
            yield self.batches[b]


@dataclass
class DataCollatorCTCWithPadding:
    """Pad inputs along time (with the feature extractor's padding value) and labels (with -100) into tensors.

    `input_lengths` (samples per clip, whatever the model reads) rides along so evaluation can cut predictions to each
    clip's real length and training can count padding; CTCTrainer removes it before the forward pass.

    Clips holding a waveform (augmented training clips, see augment) are played through `augmenter` and featurized
    here, in the DataLoader workers; `augmented` then rides along too: the batch's clips, and how many each kind of
    augmentation changed (augment.KINDS), for the trainer to count.
    """

    feature_extractor: object
    channel_axis: bool = False  # the model reads [batch, 1, samples] (see has_channel_axis)
    augmenter: Optional[object] = None  # augment.Augmenter

    def play(self, features: list[dict], input_name: str) -> tuple[list[dict], torch.Tensor]:
        """Waveform rows augmented and featurized; returns them and the counts [clips, *KINDS]."""
        counts, played = np.zeros(1 + len(KINDS), np.int64), []
        factor = self.augmenter.draw_speed([f.get(FASTEST_SPEED_COLUMN) for f in features]) if self.augmenter else 1.0
        padding = self.augmenter.draw_padding() if self.augmenter else 0  # one of each a batch: little padding
        for f in features:
            audio = np.asarray(f[WAVEFORM_COLUMN], dtype=np.float32)
            if len(audio) and self.augmenter is not None:
                audio, changed = self.augmenter(audio, factor, padding)
                counts += [1, *(changed[k] for k in KINDS)]
            inputs = extract_features(self.feature_extractor, audio) if len(audio) else np.zeros(0, np.float32)
            rest = {k: v for k, v in f.items() if k not in (WAVEFORM_COLUMN, FASTEST_SPEED_COLUMN)}
            played.append({**rest, input_name: inputs, LENGTH_COLUMN: len(audio)})
        return played, torch.from_numpy(counts)

    def __call__(self, features: list[dict]) -> dict:
        input_name, mask_name = model_input_names(self.feature_extractor)
        augmented = None
        if WAVEFORM_COLUMN in features[0]:
            features, augmented = self.play(features, input_name)
        readable = [f for f in features if len(f[input_name])]
        if len(readable) < len(features):  # only with --preprocess_on_the_fly: a file failed to decode just now
            logger.warning(f"Skipped {len(features) - len(readable)} clip(s) of this batch that failed to decode")
            if not readable:
                raise RuntimeError("every clip of a batch failed to decode; rerun without --preprocess_on_the_fly")
            features = readable
        inputs = [np.asarray(f[input_name], dtype=np.float32) for f in features]  # [samples] or [frames, features]
        frames = torch.tensor([len(x) for x in inputs])
        width = int(frames.max())
        values = np.full((len(inputs), width, *inputs[0].shape[1:]), self.feature_extractor.padding_value, np.float32)
        for row, x in zip(values, inputs):
            row[: len(x)] = x
        samples = [int(f.get(LENGTH_COLUMN, len(x))) for f, x in zip(features, inputs)]
        batch = {input_name: torch.from_numpy(values[:, None] if self.channel_axis else values),
                 "input_lengths": torch.tensor(samples)}
        if LABELS_COLUMN in features[0]:
            labels = np.full((len(features), max(len(f[LABELS_COLUMN]) for f in features)), LABEL_PAD_ID, np.int64)
            for label_row, f in zip(labels, features):
                label_row[: len(f[LABELS_COLUMN])] = f[LABELS_COLUMN]
            batch[LABELS_COLUMN] = torch.from_numpy(labels)
        if self.feature_extractor.return_attention_mask:  # group-norm models (e.g. wav2vec2-base) were pretrained on
            batch[mask_name] = (torch.arange(width)[None, :] < frames[:, None]).long()  # zero padding, no mask
        if augmented is not None:
            batch["augmented"] = augmented
        return batch
