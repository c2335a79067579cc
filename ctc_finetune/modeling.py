# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""The model (step 3): a checkpoint (or a config) loaded for CTC, with a new head where the vocabulary changed (the
rows of the tokens both vocabularies share carried over), its attention kernel, and the front end frozen; and the
trained model saved at the end of step 6 (merged LoRA adapters, an MMS language's adapter file)."""

import functools
import json
import logging
import os
from typing import Optional

import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForCTC, AutoTokenizer
from transformers.utils import cached_file

from .adapters import attach_language_adapter, configure_language_adapter, save_language_adapter
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
from .lora import add_lora, is_lora, save_merged_lora
from .vocabulary import has_ctc_head, hub_kwargs

logger = logging.getLogger(__name__)


def checkpoint_tokenizer(source: str, hub: dict):
    """The tokenizer saved with a checkpoint, or None when it has none."""
    try:
        return AutoTokenizer.from_pretrained(source, **hub)
    except (OSError, ValueError, TypeError):
        return None


def checkpoint_tensors(source: str, prefix: str, hub: dict) -> dict:
    """The checkpoint's saved tensors whose names contain `prefix` (one module's weights), read from its safetensors
    file or shards without loading the rest; {} when it has none we can read (a .bin-only checkpoint)."""
    def find(name):
        return cached_file(source, name, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False, **hub)

    index = find("model.safetensors.index.json")
    if index:
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        files = {os.path.join(os.path.dirname(index), v) for k, v in weight_map.items() if prefix in k}
    else:
        files = {find("model.safetensors")} - {None}
    tensors = {}
    for path in files:
        with safe_open(path, framework="pt") as f:
            tensors.update({k: f.get_tensor(k) for k in f.keys() if prefix in k})
    return tensors


def head_row_map(old_tokenizer, new_tokenizer, old_blank: Optional[int] = None) -> dict[int, int]:
    """New token id -> old token id for the tokens both vocabularies share (by their text), the unknown token and the
    blank, whatever each calls them ("<pad>" or "[PAD]"). The new blank is the new pad token; the old one is
    `old_blank` (OmniASR's own blank_token_id) or else the old pad token."""
    old = old_tokenizer.get_vocab()
    rows = {new_id: old[token] for token, new_id in new_tokenizer.get_vocab().items() if token in old}
    for role in ("unk_token_id", "pad_token_id"):
        new_id, old_id = getattr(new_tokenizer, role), getattr(old_tokenizer, role)
        if role == "pad_token_id" and old_blank is not None:
            old_id = old_blank
        if new_id is not None and old_id is not None:
            rows[new_id] = old_id
    return rows


def carry_head_rows(model, saved: dict, rows: dict[int, int]) -> int:
    """Copy the saved CTC head's rows into the new head's (each parameter, whose first axis is the vocabulary) for
    the tokens in `rows` (new id -> old id); the other rows keep their fresh weights. Nothing is copied unless every
    parameter of the head has a saved counterpart of its shape (not another hidden size). Returns the rows carried."""
    head = ctc_head_name(model)
    params = dict(getattr(model, head).named_parameters())
    sources = {name: next((t for k, t in saved.items() if k.endswith(f"{head}.{name}")), None) for name in params}
    if any(t is None or t.shape[1:] != params[name].shape[1:] for name, t in sources.items()):
        return 0
    pairs = [(n, o) for n, o in rows.items() if all(n < p.shape[0] for p in params.values())
             and all(o < t.shape[0] for t in sources.values())]
    if not pairs:
        return 0
    new, old = (torch.tensor(ids, dtype=torch.long) for ids in zip(*pairs))
    with torch.no_grad():
        for name, param in params.items():
            param[new] = sources[name][old].to(param.dtype)
    return len(pairs)


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


def new_head(model, why: str, source: str, shipped, tokenizer, old_blank, hub: dict) -> None:
    """A checkpoint's CTC head replaced (`why`): the rows of the tokens it shares with the `shipped` tokenizer carried
    over (--carry_ctc_head_rows; None: none), logged."""
    carried = 0
    if shipped is not None and has_ctc_head(model.config):
        carried = carry_head_rows(model, checkpoint_tensors(source, ctc_head_name(model), hub),
                                  head_row_map(shipped, tokenizer, old_blank))
    kept = f"; {carried:,} rows of the tokens both vocabularies share carried over" if carried else ""
    logger.info(f"Model: new CTC head for {len(tokenizer):,} tokens ({why} in {source}{kept})")


def load_model(model_args, data_args, tokenizer, training: bool = True, lora=None, adapters=None):
    """Load config, feature extractor and CTC model; a missing or mis-sized CTC head is freshly initialised. With
    --target_language, MMS language adapters: new ones to train, or the language's saved one to evaluate. With `lora`
    (lora.LoraArguments) of a rank, in training: LoRA adapters; `adapters`: adapters.AdapterArguments."""
    config, feature_extractor = load_config(model_args, data_args)
    language = adapters.target_language if adapters is not None else None
    if language:
        configure_language_adapter(config, language, adapters.adapter_attn_dim, training)
    source, hub = model_args.model_name_or_path or model_args.config_name, hub_kwargs(model_args, data_args)
    # The checkpoint's own head and ids stay when the tokenizer is the checkpoint's; any other vocabulary needs a new
    # head. An evaluated language adapter brings its own CTC head.
    shipped = checkpoint_tokenizer(source, hub) if model_args.model_name_or_path else None
    shipped_vocab = shipped.get_vocab() if shipped is not None else None
    own_vocab = shipped_vocab == tokenizer.get_vocab()
    old_blank = getattr(config, "blank_token_id", None)  # before a new vocabulary resets it
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
            new_head(model, why, source, shipped if model_args.carry_ctc_head_rows else None, tokenizer, old_blank,
                     hub)
    if language:
        frozen = attach_language_adapter(model, language, training, source)
    else:
        frozen = "--freeze_feature_encoder " + (freeze_front_end(model) if model_args.freeze_feature_encoder
                                                else "froze nothing")
    logger.info(f"Model: {describe_model(model, feature_extractor, frozen)}")
    if lora is not None and lora.lora_rank and training:  # the encoder frozen, adapters on its projections
        model, described = add_lora(model, lora, train_front_end=not model_args.freeze_feature_encoder)
        logger.info(f"Model: {described}")
    return feature_extractor, model


def save_model(trainer, base_source: Optional[str], hub: dict) -> None:
    """The trained model saved to output_dir (step 6): a LoRA run's adapter alone and merged into a plain model of
    `base_source`; a model with an MMS language adapter (--target_language), also the language's adapter file."""
    language = getattr(trainer.model, "target_lang", None)
    if is_lora(trainer.model):
        save_merged_lora(trainer, base_source, hub)
    else:
        trainer.save_model()
    if language and trainer.args.should_save:
        save_language_adapter(trainer.model, trainer.args.output_dir, language)
