# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Model selection (steps 5 and 6), on the selection metric (--metric_for_best_model, of one of the eval sets):
checkpoint averaging (--average_checkpoints N averages the weights of the N best checkpoints, evaluates the average,
and makes it the final model only if it beats the best single checkpoint, else that checkpoint is, as ESPnet, icefall
and NeMo do), KeepBest (keeps those N checkpoints through --save_total_limit's rotation) and EarlyStopping."""

import glob
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from typing import Optional

import torch
from safetensors.torch import load_file
from transformers import EarlyStoppingCallback, TrainerCallback

from .faults import UserError

logger = logging.getLogger(__name__)


@dataclass
class SelectionArguments:
    """Model selection on --metric_for_best_model: the N best checkpoints averaged, and early stopping."""

    _argument_group_name = "Model selection (ctc_finetune/selection.py)"

    average_checkpoints: int = field(
        default=0,
        metadata={"help": "At the end, average the N best checkpoints by --metric_for_best_model; the average is the "
                          "final model only if it beats the best checkpoint. Needs an evaluation at each save."},
    )
    early_stopping_patience: Optional[int] = field(
        default=None,
        metadata={"help": "Stop when --metric_for_best_model has not improved for N evaluations in a row."},
    )

    def __post_init__(self):
        if self.average_checkpoints < 0 or (self.early_stopping_patience is not None
                                            and self.early_stopping_patience < 1):
            raise UserError("--average_checkpoints takes a number of checkpoints (e.g. 5), --early_stopping_patience "
                            "a number of evaluations (e.g. 3).")


def configure_selection(args: SelectionArguments, training_args, eval_sets: list[str], eval_metrics: list[str]):
    """Before any work: the selection metric. --metric_for_best_model wer (or cer, loss) names the first eval set's,
    'test-other_wer' another's (`eval_sets`: the sets' names in metric keys, when there are several);
    --average_checkpoints and --early_stopping_patience need it and an evaluation at each checkpoint."""
    train = training_args
    if not (train.metric_for_best_model or args.average_checkpoints or args.early_stopping_patience):
        return
    if train.eval_strategy == "no" or not train.do_eval:
        raise UserError("--metric_for_best_model, --average_checkpoints and --early_stopping_patience select on "
                        "evaluations during training: add --do_eval and --eval_strategy steps (with --eval_steps).")
    metric = (train.metric_for_best_model or eval_metrics[0]).removeprefix("eval_")
    if len(eval_sets) > 1 and not any(metric.startswith(name + "_") for name in eval_sets):
        metric = f"{eval_sets[0]}_{metric}"  # the first eval set's
    measured = metric.rsplit("_", 1)[-1]
    if measured not in (*eval_metrics, "loss"):
        raise UserError(f"--metric_for_best_model {metric}: {measured} is not computed; add it to --eval_metrics "
                        f"(now {' '.join(eval_metrics)}).")
    train.metric_for_best_model, train.greater_is_better = f"eval_{metric}", False  # error rates, loss: lower wins
    if args.average_checkpoints and train.save_strategy == "no":
        raise UserError("--average_checkpoints averages saved checkpoints: add --save_strategy steps (and "
                        "--save_steps, a multiple of --eval_steps).")


def selection_callbacks(args: SelectionArguments, training_args) -> list:
    """The trainer's callbacks for selection: early stopping, and KeepBest, which rotates the checkpoints instead
    of the Trainer when they are averaged."""
    callbacks = [EarlyStopping(args.early_stopping_patience)] if args.early_stopping_patience else []
    if args.average_checkpoints:
        callbacks.append(KeepBest(args.average_checkpoints, training_args.save_total_limit))
        training_args.save_total_limit = None
    return callbacks


def finish_selection(trainer, args: SelectionArguments) -> dict:
    """After training: the N best checkpoints averaged when asked (see average_checkpoints); its figures."""
    return average_checkpoints(trainer, args.average_checkpoints) if args.average_checkpoints else {}


def checkpoint_scores(output_dir: str, log_history: list[dict], metric: str) -> dict[str, float]:
    """Each checkpoint folder of output_dir with the selection metric of the evaluation at its step (folders without
    one are left out)."""
    at_step = {entry["step"]: entry[metric] for entry in log_history if metric in entry}
    scores = {}
    for path in glob.glob(os.path.join(output_dir, "checkpoint-*")):
        match = re.fullmatch(r"checkpoint-(\d+)", os.path.basename(path))
        if match and int(match.group(1)) in at_step and os.path.isdir(path):
            scores[path] = at_step[int(match.group(1))]
    return scores


def step_of(path: str) -> int:
    return int(os.path.basename(path).split("-")[1])


def best_checkpoints(scores: dict[str, float], n: int, greater_is_better: bool) -> list[str]:
    """The n best checkpoints, best first (on a tie, the later one)."""
    sign = -1 if greater_is_better else 1
    return sorted(scores, key=lambda p: (sign * scores[p], -step_of(p)))[:n]


def checkpoint_weights(path: str) -> dict[str, torch.Tensor]:
    """A checkpoint's full weights from its safetensors file(s) (one, or the shards of a big model)."""
    files = sorted(glob.glob(os.path.join(path, "model*.safetensors")))
    if not files:
        raise UserError(f"--average_checkpoints: {path} holds no model*.safetensors (an FSDP sharded checkpoint?); "
                        "save full weights (--save_safetensors, and with FSDP --fsdp_config "
                        "'{\"state_dict_type\": \"FULL_STATE_DICT\"}'), or drop --average_checkpoints.")
    weights = {}
    for f in files:
        weights.update(load_file(f))
    return weights


def average_weights(paths: list[str]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the checkpoints' floating-point weights (others, e.g. counters, from the first)."""
    first = checkpoint_weights(paths[0])
    total = {k: (v.double() if v.is_floating_point() else v) for k, v in first.items()}
    for path in paths[1:]:
        for k, v in checkpoint_weights(path).items():
            if v.is_floating_point():
                total[k] += v.double()
    return {k: (v / len(paths)).to(first[k].dtype) if v.is_floating_point() else v for k, v in total.items()}


def load_weights(model, weights: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    if unexpected or [k for k in missing if k not in tied]:
        raise RuntimeError(f"checkpoint weights do not fit the model: missing {missing[:3]}, unexpected "
                           f"{unexpected[:3]}")


class EarlyStopping(EarlyStoppingCallback):
    """transformers' early stopping, for several eval sets too: the Trainer evaluates them one at a time, and only
    the set holding the selection metric counts (the others are not a missing metric)."""

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        if args.metric_for_best_model in metrics:
            super().on_evaluate(args, state, control, metrics, **kwargs)


class KeepBest(TrainerCallback):
    """Checkpoint rotation for --average_checkpoints N: the N best checkpoints by the selection metric and the last
    one (to resume from) are never deleted; others go, oldest first, beyond `limit` (--save_total_limit, which
    the recipe hands to this callback instead of the Trainer)."""

    def __init__(self, n: int, limit):
        self.n, self.limit = n, limit

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not self.limit:
            return
        folders = sorted((p for p in glob.glob(os.path.join(args.output_dir, "checkpoint-*"))
                          if re.fullmatch(r"checkpoint-\d+", os.path.basename(p))), key=step_of)
        scores = checkpoint_scores(args.output_dir, state.log_history, args.metric_for_best_model)
        keep = {*best_checkpoints(scores, self.n, args.greater_is_better), *folders[-1:]}
        for path in folders:
            if len(folders) <= max(self.limit, len(keep)):
                break
            if path not in keep:
                shutil.rmtree(path, ignore_errors=True)
                folders.remove(path)


def average_checkpoints(trainer, n: int) -> dict:
    """Average the n best checkpoints into trainer.model, evaluate it on the eval set(s), and keep it only if its
    selection metric beats the best checkpoint's; otherwise load that checkpoint. Returns both figures, which
    checkpoints went in, and which was kept."""
    args = trainer.args
    metric = args.metric_for_best_model  # e.g. eval_wer or eval_validation_wer
    scores = checkpoint_scores(args.output_dir, trainer.state.log_history, metric)
    if len(scores) < 2:
        logger.warning(f"Averaging: {len(scores)} evaluated checkpoint(s) in {args.output_dir}, nothing to average "
                       "(save and evaluate more often: --save_steps, --eval_steps)")
        return {}
    paths = best_checkpoints(scores, n, args.greater_is_better)
    best, best_score = paths[0], scores[paths[0]]
    model = trainer.accelerator.unwrap_model(trainer.model)
    load_weights(model, average_weights(paths))
    prefix = "averaged"
    averaged = trainer.evaluate(metric_key_prefix=prefix)[prefix + metric[len("eval"):]]
    better = averaged > best_score if args.greater_is_better else averaged < best_score
    if not better:
        load_weights(model, checkpoint_weights(best))
    names = [os.path.basename(p) for p in paths]
    kept = "average" if better else os.path.basename(best)
    logger.info(f"Averaging: {len(paths)} best checkpoints ({', '.join(names)}) averaged: {metric} {averaged:.4f}; "
                f"the best, {os.path.basename(best)}: {best_score:.4f}; the final model is "
                f"{'the average' if better else 'that checkpoint'}")
    return {"averaged_checkpoints": ",".join(names), f"averaged_{metric}": averaged,
            f"best_checkpoint_{metric}": best_score, "final_model": kept}
