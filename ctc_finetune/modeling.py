# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""The model (step 3): a checkpoint (or a config) loaded for CTC, with a fresh head where the vocabulary
changed, its attention kernel, and the front end frozen."""

import functools
import logging
import os
from typing import Optional

from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForCTC, AutoTokenizer

from .adapters import attach_language_adapter, configure_language_adapter
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
from .lora import add_lora
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
    """Call `load` with the attention kernel asked for; a model without it (WavLM and SEW-D have no SDPA) gets
    eager."""
    try:
        return load(attn_implementation=attn_implementation)
    except (ValueError, ImportError) as e:
        if attn_implementation == "eager":
            raise
        logger.info(f"Model: no {attn_implementation} attention here ({str(e).splitlines()[0][:120]}); using eager")
        return load(attn_implementation="eager")


def load_config(model_args, data_args):
    """The checkpoint's (or --config_name's) config, with our regularisation and CTC flags written in, and its
    feature extractor."""
    source = model_args.model_name_or_path or model_args.config_name
    hub = hub_kwargs(model_args, data_args)
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
    if not has_spec_augment(config):
        logger.warning(f"Model: {config.model_type} models have no SpecAugment; --mask_* flags do nothing")
    return config, feature_extractor


def reset_ctc_head(model) -> None:
    """Fresh weights for a CTC head of the right size that was trained on another vocabulary (its rows mean
    nothing)."""
    for module in getattr(model, ctc_head_name(model)).modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()


def load_pretrained(source: str, config, other_vocab: bool, model_args, hub: dict):
    """The checkpoint's weights for CTC; a missing, mis-sized or (`other_vocab`) foreign CTC head is freshly
    initialised. Returns the model and why its head is new (None when it is the checkpoint's)."""
    damaged = damaged_file(source) if os.path.isdir(source) else None
    if damaged:
        raise UserError(f"{damaged} is truncated or corrupt ({os.path.getsize(damaged):,} bytes, shorter than its "
                        "header says): copy or download it again, or train it again.")
    model, info = with_attention(functools.partial(
        AutoModelForCTC.from_pretrained, source, config=config, ignore_mismatched_sizes=True,
        output_loading_info=True, **hub
    ), model_args.attn_implementation)
    head = ctc_head_name(model)
    if any(k.startswith(head) for k in info["missing_keys"]):
        return model, "it has no CTC head"
    if any(head in str(k) for k in info["mismatched_keys"]):
        return model, "its CTC head has another vocabulary size"
    if other_vocab:  # same size, other tokens
        reset_ctc_head(model)
        return model, "its CTC head was trained on another vocabulary"
    return model, None


def describe_model(model, feature_extractor, frozen: str) -> str:
    """'wav2vec2, 4,012 parameters (... trainable; what was frozen), sdpa attention, 50 output frames per second'."""
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    rate = feature_extractor.sampling_rate
    return (f"{model.config.model_type}, {n_params:,} parameters ({n_train:,} trainable; {frozen}), "
            f"{attention_kernel(model.config)} attention, "
            f"{output_frames(model, feature_extractor, [100 * rate])[0] / 100:g} output frames per second")


def load_model(model_args, data_args, tokenizer, training: bool = True):
    """Load config, feature extractor and CTC model; a missing or mis-sized CTC head is freshly initialised. With
    --target_language, MMS language adapters: new ones to train, or the language's saved one to evaluate."""
    config, feature_extractor = load_config(model_args, data_args)
    language = data_args.target_language
    if language:
        configure_language_adapter(config, language, model_args.adapter_attn_dim, training)
    source, hub = model_args.model_name_or_path or model_args.config_name, hub_kwargs(model_args, data_args)
    # The checkpoint's own head and ids stay when the tokenizer is the checkpoint's; any other vocabulary needs a new
    # head. An evaluated language adapter brings its own CTC head.
    shipped_vocab = checkpoint_vocab(source, hub) if model_args.model_name_or_path else None
    own_vocab = shipped_vocab == tokenizer.get_vocab()
    evaluate_adapter = language and not training
    if not (own_vocab and has_ctc_head(config)) and not evaluate_adapter:
        set_ctc_vocabulary(config, tokenizer)
    config.pad_token_id = tokenizer.pad_token_id  # as upstream: the tokenizer's pad is the blank CTC tokenizers drop
    if model_args.config_name:
        model = with_attention(functools.partial(
            AutoModelForCTC.from_config, config, trust_remote_code=data_args.trust_remote_code
        ), model_args.attn_implementation)
        logger.info(f"Model: random weights from the config in {model_args.config_name} (training from scratch)")
    else:
        model, why = load_pretrained(source, config, shipped_vocab is not None and not own_vocab, model_args, hub)
        if why and not evaluate_adapter:
            logger.info(f"Model: new CTC head for {len(tokenizer):,} tokens ({why} in {source})")
    if language:
        frozen = attach_language_adapter(model, language, training, source)
    else:
        frozen = "--freeze_feature_encoder " + (freeze_front_end(model) if model_args.freeze_feature_encoder
                                                else "froze nothing")
    logger.info(f"Model: {describe_model(model, feature_extractor, frozen)}")
    if model_args.lora_rank and training:  # LoRA: the encoder frozen, adapters on its projections, the head trained
        model, lora = add_lora(model, model_args)
        logger.info(f"Model: {lora}")
    return feature_extractor, model
