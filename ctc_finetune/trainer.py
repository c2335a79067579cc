# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""The Trainer (steps 5 to 8): CTCTrainer with the CTC specifics of training and evaluation, its audio
throughput counter, and CPU memory reuse."""

import ctypes
import logging
import os
import sys
import time
from collections import Counter
from typing import Optional

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from .augment import KINDS
from .batching import DurationBatchSampler
from .columns import LABEL_PAD_ID, LENGTH_COLUMN, is_stream
from .families import output_frames
from .faults import DiskFull, UserError, is_disk_full
from .distributed import CpuFsdp
from .lora import split_adapter_groups
from .preprocessing import scan_column
from .schedules import tri_stage_kwargs, tri_stage_steps
from .shards import StreamBatches, log_stream

logger = logging.getLogger(__name__)

MALLOC_MMAP_MAX, MALLOC_TRIM_THRESHOLD = -4, -1  # glibc mallopt parameters (malloc.h)
CHECKPOINT_DISK_FULL_FIX = ("free some space, keep fewer checkpoints (--save_total_limit), or choose another "
                            "--output_dir; then run the same command: it resumes from the previous checkpoint")


def check_report_to(report_to) -> None:
    """Before any work (step 0): every --report_to integration is installed (the Trainer would stop only after
    preprocessing)."""
    from transformers.integrations import get_available_reporting_integrations, get_reporting_integration_callbacks
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    # A callback built without its package can fail again in its __del__ (MLflowCallback): check the package first.
    missing = [name for name in report_to or [] if name in INTEGRATION_TO_CALLBACK
               and name not in get_available_reporting_integrations()]
    if missing:
        raise UserError(f"--report_to: {', '.join(missing)} is not installed; pip install {' '.join(missing)}, or pass "
                        "--report_to none.")
    for callback in get_reporting_integration_callbacks(report_to):
        try:
            callback()
        except (RuntimeError, ImportError) as e:
            raise UserError(f"--report_to: {str(e).strip()} Or pass --report_to none.") from e


def reuse_cpu_memory(training_args) -> None:
    """On CPU, keep freed memory in the process (glibc) instead of unmapping every big tensor after each step.

    Each step allocates activations of hundreds of MB; glibc hands blocks that big back to the kernel when freed,
    and the kernel zeroes fresh pages again at the next step: measured here, a third of the step time went there.
    """
    if (not training_args.reuse_cpu_memory or training_args.device.type != "cpu"
            or not sys.platform.startswith("linux")):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl): nothing to tune
        return
    libc.mallopt(MALLOC_MMAP_MAX, 0)  # big blocks come from the heap, not from fresh mappings
    libc.mallopt(MALLOC_TRIM_THRESHOLD, 2**30)  # and stay there once freed (up to 1 GiB of free heap kept)
    logger.info("CPU memory: freed blocks are kept for reuse (--reuse_cpu_memory; higher peak RSS, faster steps)")


def training_state_bytes(model, optimizer) -> int:
    """What this process holds of the training state: its weights and optimizer states, and gradients where still held
    (the Trainer frees them after each step); under FSDP its shards only."""
    def local(t):
        t = getattr(t, "_local_tensor", t)  # a DTensor's shard
        return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0

    total = sum(local(p) + (local(p.grad) if p.grad is not None else 0) for p in model.parameters())
    if optimizer is not None:
        total += sum(local(v) for s in optimizer.state.values() for v in s.values())
    return total


class AudioThroughput(TrainerCallback):
    """Counts the audio of each training batch; logs per epoch the hours, padding share and audio seconds per second
    (of this process), the share of clips each kind of augmentation changed, and once how long the process took to
    its first training step (the set-up cost)."""

    def __init__(self, sampling_rate: int):
        self.rate = sampling_rate
        self.totals = np.zeros(3)  # real samples, padded batch samples, seconds
        self.epoch = np.zeros(3)
        self.augmented = np.zeros(1 + len(KINDS))  # augmented clips seen, and how many each kind changed
        self.start = time.perf_counter()
        self.first_step = None  # seconds from the process's start to the end of its first training step
        self.peak_rss = None  # GB, this process's peak resident memory up to the end of training (before saving)

    def on_step_end(self, args, state, control, **kwargs):
        if self.first_step is None:
            import psutil  # an accelerate dependency

            self.first_step = round(time.time() - psutil.Process().create_time(), 1)
            logger.info(f"First training step done {self.first_step:.1f} s after the process started")

    def on_train_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        import resource

        self.peak_rss = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)  # Linux: kilobytes
        self.state_bytes = training_state_bytes(model, optimizer) if model is not None else None

    def add(self, real: int, padded: int, augmented=None) -> None:
        self.epoch[:2] += (real, padded)
        if augmented is not None:
            self.augmented += augmented.cpu().numpy()

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.epoch[:], self.start = 0, time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.epoch[2] = time.perf_counter() - self.start
        self.totals += self.epoch
        stats = self.summary(self.epoch)
        shares = self.augmented_shares()
        augmented = "".join(f", {kind} {share:.0%}" for kind, share in shares.items())
        logger.info(f"Epoch {state.epoch:.2f}: {stats['audio_hours']:.3f} h of audio, padding "
                    f"{stats['padding_fraction']:.1%}, {stats['audio_seconds_per_second']:,.1f} audio s/s"
                    + (f"; of {int(self.augmented[0]):,} augmented clips so far{augmented}" if shares else ""))

    def augmented_shares(self) -> dict:
        """The share of augmented clips each kind changed ({} when nothing is augmented)."""
        clips = self.augmented[0]
        return {k: round(float(n / clips), 4) for k, n in zip(KINDS, self.augmented[1:]) if n} if clips else {}

    def summary(self, counts=None) -> dict:
        real, padded, seconds = self.totals if counts is None else counts
        return {"audio_hours": round(real / self.rate / 3600, 4),
                "padding_fraction": round(1 - real / padded, 4) if padded else 0.0,
                "audio_seconds_per_second": round(real / self.rate / seconds, 2) if seconds else 0.0,
                **({"seconds_to_first_step": self.first_step} if counts is None and self.first_step else {}),
                **({"peak_rss_gb": self.peak_rss} if counts is None and self.peak_rss else {}),
                **({"state_gb": round(self.state_bytes / 1e9, 3)} if counts is None and getattr(
                    self, "state_bytes", None) else {}),
                **({f"augmented_{k}_share": v for k, v in self.augmented_shares().items()} if counts is None else {})}


class CTCTrainer(CpuFsdp, Trainer):
    """Trainer whose evaluation yields greedy CTC ids, each cut to its clip's real number of output frames.

    Taking the argmax here keeps eval memory small for big vocabularies, and marking frames past a clip's end with
    -100 stops padding (within a batch, and the Trainer's own padding across batches) from being decoded as text.
    predict_ctc keeps the logits too, for an n-gram LM's beam search. Evaluation keeps the split's order (see
    sort_longest_first).

    The methods named with an underscore override Trainer internals (no public hook does these things); each says why.
    """

    def __init__(self, *args, adapter_learning_rate: Optional[float] = None, **kwargs):
        # --lora_learning_rate: the LoRA adapters' own; the rest keeps --learning_rate (see create_optimizer)
        self.adapter_learning_rate = adapter_learning_rate
        super().__init__(*args, **kwargs)
        feature_extractor = self.processing_class.feature_extractor
        self.throughput = AudioThroughput(feature_extractor.sampling_rate)
        self.add_callback(self.throughput)
        self.streamed = {"clips": 0, "dropped": Counter(), "shards": set()}  # what a streamed training split gave
        self.keep_logits = False  # set by predict_ctc for one prediction pass

    def get_train_dataloader(self):
        if is_stream(self.train_dataset):  # this process's shards, batched in its workers; not re-split by accelerate
            batches = StreamBatches(self.train_dataset, self.args.per_device_train_batch_size, self.data_collator)
            return DataLoader(batches, batch_size=None, num_workers=self.args.dataloader_num_workers,
                              pin_memory=self.args.dataloader_pin_memory,
                              prefetch_factor=self.args.dataloader_prefetch_factor)
        if self.args.max_batch_duration is None:
            return super().get_train_dataloader()
        rate = self.processing_class.feature_extractor.sampling_rate
        # A clip slowed down by speed perturbation, or padded, grows: batches are sized for the longest it can become
        augmenter = getattr(self.data_collator, "augmenter", None)
        lengths = scan_column(self.train_dataset, LENGTH_COLUMN)
        sampler = DurationBatchSampler(augmenter.longest(lengths) if augmenter is not None else lengths,
                                       self.args.max_batch_duration * rate, self.args.seed)
        loader = DataLoader(
            self.train_dataset, batch_sampler=sampler, collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers,
            prefetch_factor=self.args.dataloader_prefetch_factor,
        )
        return self.accelerator.prepare(loader)

    def _get_train_sampler(self, train_dataset=None):
        # --group_by_length: the Trainer would read the lengths through the dataset's format (decoding every clip of
        # an on-the-fly split); ours come from the header scan's Arrow column.
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        lengths = scan_column(train_dataset or self.train_dataset, LENGTH_COLUMN).tolist()
        return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                    lengths=lengths)

    def training_step(self, model, inputs, num_items_in_batch=None):
        stream = inputs.pop("stream", None)
        if stream is not None:
            self.streamed["clips"] += len(stream["clips"])
            self.streamed["dropped"].update(stream["dropped"])
            self.streamed["shards"].update(clip.split("/")[0] for clip in stream["clips"])
        lengths, augmented = inputs.pop("input_lengths", None), inputs.pop("augmented", None)
        if lengths is not None:  # samples, padded as frames
            self.throughput.add(int(lengths.sum()), lengths.numel() * int(lengths.max()), augmented)
        try:
            loss = super().training_step(model, inputs, num_items_in_batch)
        except torch.OutOfMemoryError as e:
            raise UserError(
                f"out of memory at step {self.state.global_step + 1} on {self.describe_batch(lengths)}; use smaller "
                "batches (--max_batch_duration, or --per_device_train_batch_size with more "
                "--gradient_accumulation_steps), --gradient_checkpointing, or drop long clips with "
                "--max_duration_in_seconds. Earlier checkpoints are kept."
            ) from e
        if not torch.isfinite(loss):  # the Trainer would average it away (logging_nan_inf_filter) and go on
            raise UserError(
                f"the training loss became {loss.item()} at step {self.state.global_step + 1}; likely causes: fp16 "
                "overflow (use --bf16, or a lower --learning_rate), clips too short for their transcripts "
                "(--ctc_zero_infinity), or a learning rate too high. Earlier checkpoints are kept."
            )
        return loss

    def describe_batch(self, lengths) -> str:
        """'a batch of 8 clips, 61.2 s of audio (longest 9.8 s)', for the out-of-memory errors."""
        seconds = lengths.double() / self.processing_class.feature_extractor.sampling_rate if lengths is not None \
            else torch.zeros(1)
        return f"a batch of {seconds.numel()} clips, {seconds.sum():.1f} s of audio (longest {seconds.max():.1f} s)"

    def model_bytes(self) -> float:
        """About what a checkpoint takes: the weights, and the optimizer's two moments (Adam) per trained weight."""
        weights = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return weights + 2 * 4 * sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def save_model(self, output_dir=None, _internal_call=False):
        try:
            if self.cpu_fsdp:
                return self.save_cpu_fsdp_model(output_dir or self.args.output_dir)
            super().save_model(output_dir, _internal_call)
        except Exception as e:
            if not is_disk_full(e):
                raise
            raise DiskFull("the model to", output_dir or self.args.output_dir, self.model_bytes(),
                           CHECKPOINT_DISK_FULL_FIX if self.is_in_train else "free some space or choose another "
                           "--output_dir") from e

    def train(self, *args, **kwargs):
        # A full disk while a checkpoint is written (its weights, optimizer or scheduler state): one line. The partial
        # folder has no trainer_state.json, which the Trainer writes last, so a rerun skips and removes it and resumes
        # from the checkpoint before (checkpoints.last_complete_checkpoint).
        try:
            return super().train(*args, **kwargs)
        except Exception as e:
            if isinstance(e, DiskFull) or not is_disk_full(e):
                raise
            path = os.path.join(self.args.output_dir, f"checkpoint-{self.state.global_step}")
            raise DiskFull("checkpoint", path, self.model_bytes(), CHECKPOINT_DISK_FULL_FIX) from e

    def data_metrics(self) -> dict:
        """What the training split gave, for train_results.json: its clips; a streamed split's are counted as it
        went, with its drops, and logged per process."""
        if is_stream(self.train_dataset):
            return log_stream(self.streamed, self.args)
        return {"train_samples": len(self.train_dataset)}

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.adapter_learning_rate is not None:
            split_adapter_groups(optimizer, model or self.model, self.adapter_learning_rate)
        return optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        # --lr_scheduler_type tri_stage: warmup_stable_decay with phases in shares of the steps, known only here
        if self.args.tri_stage_ratios and self.lr_scheduler is None:
            self.args.warmup_steps = tri_stage_steps(self.args.tri_stage_ratios, num_training_steps)[0]
            self.args.lr_scheduler_kwargs = {**tri_stage_kwargs(self.args.tri_stage_ratios, num_training_steps),
                                             **(self.args.lr_scheduler_kwargs or {})}
        return super().create_scheduler(num_training_steps, optimizer)

    def _get_eval_sampler(self, eval_dataset):
        # The split's own order (sort_longest_first); with --group_by_length the Trainer would shuffle it in groups.
        return torch.utils.data.SequentialSampler(eval_dataset)

    def predict_ctc(self, ds: datasets.Dataset, key: str, keep_logits: bool = False):
        """trainer.predict (ids, labels and metrics in one pass); with `keep_logits`, predictions are (ids, logits)."""
        self.keep_logits = keep_logits
        try:
            return self.predict(ds, metric_key_prefix=key)
        finally:
            self.keep_logits = False

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        input_lengths = inputs.pop("input_lengths", None)
        try:
            loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        except torch.OutOfMemoryError as e:  # evaluation runs longest first: the first batch is the largest
            raise UserError(
                f"out of memory evaluating {self.describe_batch(input_lengths)}; lower --per_device_eval_batch_size "
                "(down to 1) or evaluate in half precision (--bf16_full_eval or --fp16_full_eval); evaluation keeps "
                "every clip, so one too long for the device even alone must be cut or left out of the split. "
                "Checkpoints and any saved model are kept: evaluate with --model_name_or_path OUTPUT_DIR --do_eval."
            ) from e
        if logits is None:
            return loss, logits, labels
        logits = logits[0] if isinstance(logits, tuple) else logits
        pred_ids = logits.argmax(-1)
        if input_lengths is not None:
            frames = torch.as_tensor(output_frames(self.accelerator.unwrap_model(model),
                                                   self.processing_class.feature_extractor, input_lengths.cpu()),
                                     device=pred_ids.device)
            beyond = torch.arange(pred_ids.shape[1], device=pred_ids.device)[None, :] >= frames[:, None]
            pred_ids = pred_ids.masked_fill(beyond, LABEL_PAD_ID)
        if self.keep_logits:
            return loss, (pred_ids, logits.float()), labels
        return loss, pred_ids, labels
