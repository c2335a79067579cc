# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""The model (step 3): a checkpoint (or a config) loaded for CTC, with a fresh head where the vocabulary
changed, its attention kernel, and the front end frozen."""

import functools
import logging
import os
from typing import Optional

from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForCTC, AutoTokenizer

from .adapters import DEFAULT_ADAPTER_DIM, attach_language_adapter
from .checkpoints import damaged_file
from .families import (
    TORCHAUDIO_INSTALL,
    configure_model,
    ctc_head_name,
    freeze_front_end,
    has_spec_augment,
    output_frames,
    set_ctc_vocabulary,
)
from .faults import UserError
from .vocabulary import has_ctc_head, hub_kwargs

logger = logging.getLogger(__name__)

def checkpoint_vocab(source: str, hub: dict) -> Optional[dict]:
    """The vocabulary of the tokenizer saved with a checkpoint, or None when it has none."""
    try:
        return AutoTokenizer.from_pretrained(source, **hub).get_vocab()
    except (OSError, ValueError, TypeError):
        return None


def attention_kernel(config) -> str:
    """The attention kernel a loaded model runs ("sdpa", "eager", ...): transformers records it only in a private
    config attribute."""
    return getattr(config, "_attn_implementation", None) or "eager"


def with_attention(load, attn_implementation: str):
    """Call `load` with the attention kernel asked for; a model without it (WavLM and SEW-D have no SDPA) gets eager."""
    try:
        return load(attn_implementation=attn_implementation)
    except (ValueError, ImportError) as e:
        if attn_implementation == "eager":
            raise
        logger.info(f"Model: no {attn_implementation} attention here ({str(e).splitlines()[0][:120]}); using eager")
        return load(attn_implementation="eager")


def load_model(model_args, data_args, tokenizer, training: bool = True):
    """Load config, feature extractor and CTC model; a missing or mis-sized CTC head is freshly initialised. With
    --target_language, MMS language adapters: new ones to train, or the language's saved one to evaluate."""
    hub = hub_kwargs(model_args, data_args)
    source = model_args.model_name_or_path or model_args.config_name
    try:
        config = AutoConfig.from_pretrained(source, **hub)
        feature_extractor = AutoFeatureExtractor.from_pretrained(source, **hub)
    except (OSError, ValueError) as e:
        raise UserError(
            f"could not load a model config from {source!r} ({type(e).__name__}: {str(e).splitlines()[0]}); "
            "pass a local directory with config.json and preprocessor_config.json, or check the hub id and network."
        ) from e
    except ImportError as e:  # a feature extractor needing a package we do not install (Granite Speech: torchaudio)
        fix = f"run `{TORCHAUDIO_INSTALL}`" if "torchaudio" in str(e) else "install it"
        raise UserError(f"the feature extractor of {source} needs a package that is missing "
                        f"({str(e).strip().splitlines()[0][:160]}); {fix}.") from e
    for flag in configure_model(config, model_args):
        logger.warning(f"Model: --{flag} does nothing here: {config.model_type} models have no such setting")
    language = data_args.target_language
    if language and not hasattr(config, "adapter_attn_dim"):
        raise UserError(f"--target_language: {config.model_type} models have no language adapters (MMS adapters are "
                        "a wav2vec2 feature, e.g. facebook/mms-1b-all); fine-tune without --target_language.")
    if model_args.adapter_attn_dim and not language:
        raise UserError("--adapter_attn_dim sizes MMS language adapters: add --target_language (e.g. tur).")
    if language and training:
        config.adapter_attn_dim = model_args.adapter_attn_dim or config.adapter_attn_dim or DEFAULT_ADAPTER_DIM
    if not has_spec_augment(config):
        logger.warning(f"Model: {config.model_type} models have no SpecAugment; --mask_* flags do nothing")
    # The checkpoint's own head and ids stay when the tokenizer is the checkpoint's; any other vocabulary needs a new head
    shipped_vocab = checkpoint_vocab(source, hub) if model_args.model_name_or_path else None
    own_vocab = shipped_vocab == tokenizer.get_vocab()
    evaluate_adapter = language and not training  # the language's CTC head comes with its adapter
    if not (own_vocab and has_ctc_head(config)) and not evaluate_adapter:
        set_ctc_vocabulary(config, tokenizer)
    config.pad_token_id = tokenizer.pad_token_id  # as upstream: the tokenizer's pad is the blank CTC tokenizers drop
    if model_args.config_name:
        model = with_attention(functools.partial(
            AutoModelForCTC.from_config, config, trust_remote_code=data_args.trust_remote_code
        ), model_args.attn_implementation)
        logger.info(f"Model: random weights from the config in {model_args.config_name} (training from scratch)")
    else:
        damaged = damaged_file(source) if os.path.isdir(source) else None
        if damaged:
            raise UserError(f"{damaged} is truncated or corrupt ({os.path.getsize(damaged):,} bytes, shorter than its "
                            "header says): copy or download it again, or train it again.")
        model, info = with_attention(functools.partial(
            AutoModelForCTC.from_pretrained, source, config=config, ignore_mismatched_sizes=True,
            output_loading_info=True, **hub
        ), model_args.attn_implementation)
        head = ctc_head_name(model)
        why = None
        if any(k.startswith(head) for k in info["missing_keys"]):
            why = "it has no CTC head"
        elif any(head in str(k) for k in info["mismatched_keys"]):
            why = "its CTC head has another vocabulary size"
        elif shipped_vocab is not None and not own_vocab:
            why = "its CTC head was trained on another vocabulary"  # same size, other tokens: rows mean nothing
            for module in getattr(model, head).modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        if why and not evaluate_adapter:
            logger.info(f"Model: new CTC head for {len(tokenizer):,} tokens ({why} in {source})")
    if language:
        frozen = attach_language_adapter(model, language, training, source)
    else:
        frozen = "--freeze_feature_encoder " + (freeze_front_end(model) if model_args.freeze_feature_encoder
                                                else "froze nothing")
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    rate = feature_extractor.sampling_rate
    logger.info(f"Model: {config.model_type}, {n_params:,} parameters ({n_train:,} trainable; {frozen}), "
                f"{attention_kernel(model.config)} attention, "
                f"{output_frames(model, feature_extractor, [100 * rate])[0] / 100:g} output frames per second")
    return feature_extractor, model
