# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""LoRA (steps 3 and 6), through peft: low-rank adapters on the encoder's attention and feed-forward projections
(per family, LORA_TARGETS), the CTC head trained fully; at the end the adapters are merged into a plain checkpoint
(what AutoModelForCTC, pipeline() and transcribe.py load without peft), and saved alone beside it."""

import logging
import os

import torch

from .families import ctc_head_name
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


def lora_targets(model_type: str, given=None) -> list[str]:
    """--lora_target_modules, else the family's attention and feed-forward projections."""
    if given:
        return list(given)
    if model_type not in LORA_TARGETS:
        raise UserError(f"no default LoRA targets for {model_type} models; name them with --lora_target_modules "
                        "(module name suffixes, e.g. q_proj v_proj).")
    return list(LORA_TARGETS[model_type])


def add_lora(model, model_args):
    """The model wrapped by peft with LoRA adapters (rank --lora_rank) on its targets and a fully trained CTC head;
    everything else frozen. Returns the PeftModel and the log's description."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise UserError(f"--lora_rank uses the peft package; run `{LORA_INSTALL}`.") from e
    targets = lora_targets(model.config.model_type, model_args.lora_target_modules)
    # Batch norms (Parakeet's and LASR's convolution modules) update their statistics in training: they go with the
    # head into the adapter, so that it alone reproduces the merged model
    norms = [n for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    config = LoraConfig(r=model_args.lora_rank, lora_alpha=model_args.lora_alpha or 2 * model_args.lora_rank,
                        lora_dropout=model_args.lora_dropout, target_modules=targets,
                        modules_to_save=[ctc_head_name(model), *norms], bias="none")
    total = sum(p.numel() for p in model.parameters())
    try:
        model.get_input_embeddings()
    except NotImplementedError:  # peft looks for weights tied to the input embeddings, which speech models lack;
        model.get_input_embeddings = torch.nn.Identity  # Granite raises instead of answering "none"
    try:
        model = get_peft_model(model, config)
    except ValueError as e:  # no module of the model matches a target
        raise UserError(f"--lora_target_modules {' '.join(targets)}: {str(e).splitlines()[0][:200]}") from e
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    adapted = sum(1 for n, _ in model.named_modules() if n.endswith(".lora_A"))
    with_norms = f" (and {len(norms)} batch norms)" if norms else ""
    return model, (f"LoRA rank {config.r} (alpha {config.lora_alpha:g}, dropout {config.lora_dropout:g}) on "
                   f"{adapted:,} modules ({', '.join(targets)}) and the CTC head{with_norms} in full: {trained:,} of "
                   f"{total:,} parameters trainable ({trained / total:.2%})")


def is_lora(model) -> bool:
    return hasattr(model, "peft_config")


def unwrap_lora(model):
    """The transformers model inside a LoRA-wrapped one (the model itself otherwise)."""
    return model.get_base_model() if is_lora(model) else model


def merge_lora(model, output_dir: str, should_save: bool):
    """Save the adapter alone (output_dir/lora_adapter, loadable with peft), then return the base model with the
    adapters merged into its weights: a plain model, what the run saves and evaluates."""
    if should_save:
        model.save_pretrained(os.path.join(output_dir, ADAPTER_DIR))
    merged = model.merge_and_unload()
    head = ctc_head_name(merged)
    if any(k.startswith(head + ".") for k in getattr(merged, "_tied_weights_keys", None) or {}):
        # Granite ties its CTC head to the encoder's mid-layer projection (encoder.out). LoRA trained a copy of the
        # head and left encoder.out as it was, so they are saved apart, as they were trained.
        merged.config.tie_word_embeddings = False
    logger.info(f"LoRA: adapters merged into the model; the adapter alone is in {output_dir}/{ADAPTER_DIR}")
    return merged
