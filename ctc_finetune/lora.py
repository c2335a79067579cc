# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""LoRA (steps 3 and 6), through peft: low-rank adapters (or DoRA) on the encoder's attention and feed-forward
projections (per family, LORA_TARGETS), the CTC head and the modules named by --lora_modules_to_save trained fully;
at the end the adapters are merged into a plain checkpoint (what AutoModelForCTC, pipeline() and transcribe.py load
without peft), and saved alone beside it."""

import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import torch

from .families import answer_no_input_embeddings, ctc_head_name, front_end_path
from .faults import UserError

logger = logging.getLogger(__name__)

LORA_INSTALL = "pip install 'peft>=0.21'"
ADAPTER_DIR = "lora_adapter"  # the adapter alone, beside the merged model: PeftModel.from_pretrained(base, this)
# The attention's query and value projections (the LoRA paper's choice) and the feed-forward projections of each
# family's encoder layers (module name suffixes, as peft's target_modules takes them); the README lists them. Rank 16
# then trains 1.75% of wav2vec2-large (with keys and outputs too: 2.25%).
WAV2VEC2_TARGETS = ("q_proj", "v_proj", "intermediate_dense", "output_dense")
CONFORMER_TARGETS = ("linear_q", "linear_v", "intermediate_dense", "output_dense")
FASTCONFORMER_TARGETS = ("q_proj", "v_proj", "linear1", "linear2")
LORA_TARGETS = {
    "wav2vec2": WAV2VEC2_TARGETS, "hubert": WAV2VEC2_TARGETS, "wavlm": WAV2VEC2_TARGETS,
    "unispeech": WAV2VEC2_TARGETS, "unispeech-sat": WAV2VEC2_TARGETS, "sew": WAV2VEC2_TARGETS,
    "data2vec-audio": WAV2VEC2_TARGETS, "omniasr_ctc": WAV2VEC2_TARGETS,
    "sew-d": ("query_proj", "value_proj", "intermediate.dense", "output.dense"),
    "wav2vec2-conformer": CONFORMER_TARGETS, "wav2vec2-bert": CONFORMER_TARGETS,
    "parakeet_ctc": FASTCONFORMER_TARGETS, "lasr_ctc": FASTCONFORMER_TARGETS,
    "granite_speech5_ctc": FASTCONFORMER_TARGETS,
}


@dataclass
class LoraArguments:
    """LoRA through peft: adapters on the encoder, the CTC head trained fully, merged into a plain model at the end."""

    _argument_group_name = "LoRA (ctc_finetune/lora.py)"

    lora_rank: int = field(
        default=0, metadata={"help": "Train LoRA adapters of this rank (e.g. 16) instead of the whole encoder."}
    )
    lora_alpha: Optional[float] = field(default=None, metadata={"help": "LoRA scaling alpha (default 2 x rank)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA adapters' input."})
    lora_target_modules: Optional[list[str]] = field(
        default=None,
        metadata={"help": "Module name suffixes that get adapters (default: the family's attention and "
                          "feed-forward projections, see docs/scaling.md)."},
    )
    lora_use_dora: bool = field(
        default=False, metadata={"help": "With --lora_rank: DoRA (weight-decomposed LoRA, peft's use_dora)."}
    )
    lora_modules_to_save: Optional[list[str]] = field(
        default=None,
        metadata={"help": "With --lora_rank: module name suffixes trained in full beside the CTC head (e.g. "
                          "feature_projection layer_norm final_layer_norm pos_conv_embed; see docs/scaling.md)."},
    )
    lora_learning_rate: Optional[float] = field(
        default=None,
        metadata={"help": "With --lora_rank: the adapters' learning rate; --learning_rate stays that of what trains "
                          "in full (the CTC head, the front end). Default: --learning_rate for both."},
    )

    def __post_init__(self):
        if self.lora_rank < 0 or not 0 <= self.lora_dropout < 1:
            raise UserError("--lora_rank must be a positive rank (e.g. 16), --lora_dropout between 0 and 1.")
        if (self.lora_learning_rate is not None or self.lora_modules_to_save or self.lora_use_dora) \
                and not self.lora_rank:
            raise UserError("--lora_learning_rate, --lora_modules_to_save and --lora_use_dora shape a LoRA run: add "
                            "--lora_rank, or drop them.")


def lora_targets(model_type: str, given=None) -> list[str]:
    """--lora_target_modules, else the family's attention and feed-forward projections."""
    if given:
        return list(given)
    if model_type not in LORA_TARGETS:
        raise UserError(f"no default LoRA targets for {model_type} models; name them with --lora_target_modules "
                        "(module name suffixes, e.g. q_proj v_proj).")
    return list(LORA_TARGETS[model_type])


def modules_named(model, suffixes, inside=()) -> list[str]:
    """The paths of the model's modules whose name ends with one of `suffixes` (--lora_modules_to_save; whole
    dotted components), outermost only, less those in or around a module of `inside`. An unmatched suffix is an
    error."""
    found = []
    for suffix in suffixes:
        paths = [n for n, _ in model.named_modules() if n == suffix or n.endswith("." + suffix)]
        if not paths:
            raise UserError(f"--lora_modules_to_save {suffix}: no module of this {model.config.model_type} model is "
                            "named so; module names are printed by `print(model)`.")
        found += paths
    outer = [n for n in dict.fromkeys(found) if not any(n.startswith(o + ".") for o in found)]
    return [n for n in outer if not any(n == i or n.startswith(i + ".") or i.startswith(n + ".") for i in inside)]


def add_lora(model, args: LoraArguments, train_front_end: bool = False):
    """The model wrapped by peft with LoRA adapters (rank --lora_rank) on its targets and a fully trained CTC head
    (and front end, with `train_front_end`: --freeze_feature_encoder False); everything else frozen. Returns the
    PeftModel and the log's description."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise UserError(f"--lora_rank uses the peft package; run `{LORA_INSTALL}`.") from e
    targets = lora_targets(model.config.model_type, args.lora_target_modules)
    full, front_end, norms = trained_in_full(model, args, train_front_end)
    config = LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha or 2 * args.lora_rank,
                        lora_dropout=args.lora_dropout, target_modules=targets, modules_to_save=full,
                        bias="none", use_dora=args.lora_use_dora)
    total = sum(p.numel() for p in model.parameters())
    answer_no_input_embeddings(model)
    none = model.get_input_embeddings() is None
    if none:  # peft looks for weights tied to the input embeddings (a module's parameters): an empty module here
        model.get_input_embeddings = torch.nn.Identity
    try:
        wrapped = get_peft_model(model, config)
    except ValueError as e:  # no module of the model matches a target
        raise UserError(f"--lora_target_modules {' '.join(targets)}: {str(e).splitlines()[0][:200]}") from e
    finally:
        if none:
            model.get_input_embeddings = lambda: None
    trained = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    adapted = sum(1 for n, _ in wrapped.named_modules() if n.endswith(".lora_A"))
    with_front = f", the front end ({front_end})" if front_end else ""
    extra = len(full) - 1 - bool(front_end) - len(norms)
    with_norms = f", {extra} modules named by --lora_modules_to_save" if extra else ""
    with_norms += f" (and {len(norms)} batch norms)" if norms else ""
    kind = "DoRA" if config.use_dora else "LoRA"
    return wrapped, (f"{kind} rank {config.r} (alpha {config.lora_alpha:g}, dropout {config.lora_dropout:g}) on "
                     f"{adapted:,} modules ({', '.join(targets)}) and the CTC head{with_front}{with_norms} in full: "
                     f"{trained:,} of {total:,} parameters trainable ({trained / total:.2%})")


def trained_in_full(model, args: LoraArguments, train_front_end: bool) -> tuple[list[str], Optional[str], list[str]]:
    """What trains in full beside the adapters: the CTC head, the front end (`train_front_end`), the modules
    --lora_modules_to_save names, and the batch norms; and of them, the front end's path and the norms."""
    # Batch norms (Parakeet's and LASR's convolution modules) update their statistics in training: they go with the
    # head into the adapter, so that it alone reproduces the merged model
    norms = [n for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    # --freeze_feature_encoder False: the convolutional front end trains in full too, as without LoRA (a few % of
    # the weights: 1.3% of wav2vec2-large); new voices and recording conditions reach it first
    front_end = front_end_path(model) if train_front_end else None
    if front_end:
        norms = [n for n in norms if not n.startswith(front_end + ".")]
    full = [ctc_head_name(model), *([front_end] if front_end else [])]
    full += modules_named(model, args.lora_modules_to_save or [], inside=full)
    norms = [n for n in norms if not any(n.startswith(f + ".") for f in full)]
    full += norms
    return full, front_end, norms


def split_adapter_groups(optimizer, model, adapter_lr: float) -> None:
    """Give the LoRA adapters' weights their own learning rate (`adapter_lr`), in param groups of their own; the
    weights trained in full (head, front end, batch norms) keep theirs. Before the first step, so the scheduler
    scales each group from its own rate. Logged with the counts."""
    names = {id(p): n for n, p in model.named_parameters()}
    groups, adapters = [], 0
    for group in optimizer.param_groups:
        lora = [p for p in group["params"] if ".lora_" in names.get(id(p), "")]
        rest = [p for p in group["params"] if ".lora_" not in names.get(id(p), "")]
        adapters += sum(p.numel() for p in lora)
        groups += [{**group, "params": params, "lr": lr, "initial_lr": lr}
                   for params, lr in ((lora, adapter_lr), (rest, group["lr"])) if params]
    optimizer.param_groups[:] = groups
    logger.info(f"LoRA: the adapters ({adapters:,} weights) train at learning rate {adapter_lr:g}, what trains in "
                f"full at {groups[-1]['lr']:g}")


def is_lora(model) -> bool:
    return hasattr(model, "peft_config")


def unwrap_lora(model):
    """The transformers model inside a LoRA-wrapped one (the model itself otherwise)."""
    return model.get_base_model() if is_lora(model) else model


def untie_trained_head(merged):
    """The merged model, its CTC head saved apart from a module it was tied to (see merge_lora)."""
    head = ctc_head_name(merged)
    if any(k.startswith(head + ".") for k in getattr(merged, "_tied_weights_keys", None) or {}):
        # Granite ties its CTC head to the encoder's mid-layer projection (encoder.out). LoRA trained a copy of the
        # head and left encoder.out as it was, so they are saved apart, as they were trained.
        merged.config.tie_word_embeddings = False
    return merged


def save_merged_lora(trainer, base_source: str, hub: dict) -> None:
    """The end of a LoRA run: the adapter alone in output_dir/lora_adapter (loadable with peft), and output_dir's
    model with the adapters merged into its weights, a plain checkpoint.

    Unsharded, the trained model is merged in place and stays the one evaluated. Under FSDP the shards cannot be
    merged in place: the adapter is gathered and saved, and the main process merges it into the checkpoint it
    started from (`base_source`); evaluation then runs on the sharded model, the same weights."""
    args = trainer.args
    adapter_dir = os.path.join(args.output_dir, ADAPTER_DIR)
    if not trainer.is_fsdp_enabled:
        if args.should_save:
            trainer.model.save_pretrained(adapter_dir)
        trainer.model = trainer.model_wrapped = untie_trained_head(trainer.model.merge_and_unload())
        trainer.save_model()
    else:
        from peft import PeftModel
        from transformers import AutoConfig, AutoModelForCTC

        trainer.save_model(adapter_dir)  # every rank gathers its shards
        if args.should_save:
            config = AutoConfig.from_pretrained(args.output_dir)
            base = AutoModelForCTC.from_pretrained(base_source, config=config, ignore_mismatched_sizes=True, **hub)
            merged = untie_trained_head(PeftModel.from_pretrained(base, adapter_dir).merge_and_unload())
            merged.save_pretrained(args.output_dir)
        trainer.accelerator.wait_for_everyone()
    logger.info(f"LoRA: adapters merged into the model saved in {args.output_dir}; the adapter alone is in "
                f"{adapter_dir}")
