# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Training schedules (steps 5 and 6): head-first training (--freeze_encoder_steps, fairseq's
freeze_finetune_updates) and the tri-stage learning rate (--lr_scheduler_type tri_stage: transformers'
warmup_stable_decay with fairseq's phase shares)."""

import logging
from dataclasses import dataclass, field

from transformers import TrainerCallback

from .distributed import find_unused_parameters
from .families import ctc_head_name
from .faults import UserError

logger = logging.getLogger(__name__)

TRI_STAGE = "tri_stage"
TRI_STAGE_RATIOS = (0.1, 0.4, 0.5)  # fairseq's wav2vec 2.0 fine-tuning: warm-up, hold, decay
TRI_STAGE_SCHEDULER = "warmup_stable_decay"  # transformers' three-phase schedule, which tri_stage configures
TRI_STAGE_MIN_LR_RATIO = 0.05  # fairseq's final_lr_scale: the rate starts (warm-up) and ends (decay) at 5% of the peak


@dataclass
class ScheduleArguments:
    """Head-first training: only the CTC head trains for the first steps."""

    _argument_group_name = "Schedules (ctc_finetune/schedules.py)"

    freeze_encoder_steps: int = field(
        default=0, metadata={"help": "Train only the CTC head for the first N steps, then the whole encoder."}
    )

    def __post_init__(self):
        if self.freeze_encoder_steps < 0:
            raise UserError(f"--freeze_encoder_steps takes a number of steps, got {self.freeze_encoder_steps}.")


def schedule_callbacks(args: ScheduleArguments, model, training_args) -> list:
    """The trainer's callbacks for head-first training (whose frozen encoder DDP must know about), if asked."""
    if not args.freeze_encoder_steps:
        return []
    find_unused_parameters(training_args, "--freeze_encoder_steps")
    return [HeadFirst(model, args.freeze_encoder_steps)]


def tri_stage_steps(ratios, total_steps: int) -> tuple[int, int]:
    """Warm-up and decay steps of a tri-stage schedule over `total_steps` (the hold takes the rest)."""
    warmup, _, decay = (r / sum(ratios) for r in ratios)
    return round(warmup * total_steps), round(decay * total_steps)


def tri_stage_kwargs(ratios, total_steps: int) -> dict:
    """lr_scheduler_kwargs of warmup_stable_decay for fairseq's tri-stage shares (e.g. 0.1 warm-up, 0.4 hold, 0.5
    decay); the warm-up steps come from the same shares (see tri_stage_steps)."""
    return {"num_decay_steps": tri_stage_steps(ratios, total_steps)[1], "min_lr_ratio": TRI_STAGE_MIN_LR_RATIO,
            "decay_type": "cosine"}


class HeadFirst(TrainerCallback):
    """--freeze_encoder_steps N: for the first N optimizer steps only the CTC head trains; then everything that was
    trainable before (the whole encoder, minus a front end --freeze_feature_encoder froze) trains.

    The encoder's parameters stop requiring gradients, so backward stops at the head: those steps cost little more
    than a forward pass. A run resumed past step N never freezes; one resumed before it freezes until N."""

    def __init__(self, model, steps: int):
        head = ctc_head_name(model)
        self.steps = steps
        # (a LoRA-wrapped model's names start base_model.model.: the head is a component of the name)
        self.encoder = [p for n, p in model.named_parameters() if p.requires_grad and head not in n.split(".")]
        self.frozen = False

    def set_frozen(self, frozen: bool, step: int) -> None:
        for p in self.encoder:
            p.requires_grad_(not frozen)
        self.frozen = frozen
        count = sum(p.numel() for p in self.encoder)
        logger.info(f"Head-first: {'froze' if frozen else 'unfroze'} the encoder ({count:,} parameters) at step {step}"
                    + (f"; only the CTC head trains until step {self.steps}" if frozen else ""))

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step < self.steps:
            self.set_frozen(True, state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.frozen and state.global_step >= self.steps:
            self.set_frozen(False, state.global_step)
