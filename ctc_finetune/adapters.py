# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""MMS language adapters (--target_language): one vocabulary per language in vocab.json (step 2), fresh
adapters to train or a saved one to evaluate (step 3), and adapter.LANG.safetensors (step 6)."""

import glob
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

from transformers import AutoTokenizer

from .faults import UserError

logger = logging.getLogger(__name__)

DEFAULT_ADAPTER_DIM = 16  # upstream's --adapter_attn_dim (MMS's adapters)
ADAPTER_FILE = "adapter.{}.safetensors"  # a language's MMS adapter and CTC head, as Wav2Vec2ForCTC.load_adapter reads


@dataclass
class AdapterArguments:
    """MMS language adapters: a base model frozen, small adapters and a CTC head trained per language."""

    _argument_group_name = "MMS language adapters (ctc_finetune/adapters.py)"

    target_language: Optional[str] = field(
        default=None,
        metadata={"help": "Train an MMS language adapter for this language (ISO 639-3, e.g. tur): the base model "
                          "stays frozen, vocab.json keeps one vocabulary per language, adapter.LANG.safetensors is "
                          "saved."},
    )
    overwrite_lang_vocab: bool = field(
        default=False, metadata={"help": "With --target_language: rebuild that language's vocabulary if it exists."}
    )
    adapter_attn_dim: Optional[int] = field(
        default=None,
        metadata={"help": "With --target_language: size of the MMS attention adapters (the checkpoint's, else "
                          f"{DEFAULT_ADAPTER_DIM}); only they and the CTC head train."},
    )

    def __post_init__(self):
        if self.adapter_attn_dim and not self.target_language:
            raise UserError("--adapter_attn_dim sizes MMS language adapters: add --target_language (e.g. tur).")


def language_vocabularies(path_or_source: Optional[str], hub: dict) -> dict:
    """The per-language vocabularies ({lang: {token: id}}) of an MMS-style vocab.json file or of a checkpoint's
    tokenizer; {} when there is none or it is a plain one."""
    if path_or_source is None:
        return {}
    try:
        if os.path.isfile(path_or_source):
            with open(path_or_source, encoding="utf-8") as f:
                vocab = json.load(f)
        else:
            vocab = getattr(AutoTokenizer.from_pretrained(path_or_source, **hub), "vocab", None)
    except (OSError, ValueError, TypeError):
        return {}
    nested = isinstance(vocab, dict) and vocab and all(isinstance(v, dict) for v in vocab.values())
    return dict(vocab) if nested else {}


def add_language_vocab(languages: dict, language: str, vocab: dict, overwrite: bool) -> tuple[dict, str]:
    """An MMS-style vocab.json ({lang: {token: id}}) with `language`'s vocabulary added, or kept when it is there
    (unless `overwrite`); the other languages untouched. Returns it and what happened, for the log."""
    if language in languages and not overwrite:
        return languages, f"kept the existing {language} vocabulary (--overwrite_lang_vocab to rebuild it)"
    return ({**languages, language: vocab},
            f"{'rebuilt' if language in languages else 'added'} the {language} vocabulary")


def write_language_vocab(vocab_path: str, language: str, vocab: dict, checkpoint: Optional[str], hub: dict,
                         overwrite: bool) -> None:
    """Write `language`'s vocabulary into the MMS-style vocab.json at `vocab_path`, beside the other languages there
    (or, on a first run, the checkpoint's)."""
    languages = (language_vocabularies(vocab_path, hub) if os.path.isfile(vocab_path)
                 else language_vocabularies(checkpoint, hub))
    languages, done = add_language_vocab(languages, language, vocab, overwrite)
    os.makedirs(os.path.dirname(os.path.abspath(vocab_path)), exist_ok=True)
    with open(vocab_path, "w", encoding="utf-8") as f:
        json.dump(languages, f, ensure_ascii=False, indent=1)
    logger.info(f"Vocabulary: {done} ({len(languages[language]):,} tokens), {len(languages):,} language(s) in "
                f"{vocab_path}")


def set_tokenizer_language(tokenizer, language: str, source: str) -> None:
    """Point an MMS-style tokenizer (one vocabulary per language) at `language`; stop if it has none for it."""
    languages = getattr(tokenizer, "vocab", {})
    if language not in languages or not hasattr(tokenizer, "set_target_lang"):
        known = ", ".join(sorted(languages)[:40]) if isinstance(languages, dict) else ""
        raise UserError(f"--target_language {language}: the tokenizer of {source} has no vocabulary for it "
                        f"(it has: {known or 'one vocabulary, no languages'}).")
    tokenizer.set_target_lang(language)


def configure_language_adapter(config, language: str, adapter_attn_dim: Optional[int], training: bool) -> None:
    """Check that the family has MMS adapters, and size new ones (--adapter_attn_dim, the checkpoint's, or 16)."""
    if not hasattr(config, "adapter_attn_dim"):
        raise UserError(f"--target_language: {config.model_type} models have no language adapters (MMS adapters are "
                        "a wav2vec2 feature, e.g. facebook/mms-1b-all); fine-tune without --target_language.")
    if training:
        config.adapter_attn_dim = adapter_attn_dim or config.adapter_attn_dim or DEFAULT_ADAPTER_DIM


def adapter_weights(model) -> dict:
    """A Wav2Vec2ForCTC's MMS adapter and CTC head weights by name: what load_adapter reads back. transformers lists
    them only through a private method, the one its own save and load use."""
    return model._get_adapters()


def attach_language_adapter(model, language: str, training: bool, source: str) -> str:
    """--target_language: fresh MMS attention adapters and CTC head to train, the base model frozen; or, to evaluate,
    the language's saved adapter (adapter.LANG.safetensors beside the model). The model keeps the language as
    `target_lang`, as transformers' own from_pretrained(target_lang=...) does: saving and the model card read it there.
    Returns what it did, for the log."""
    model.target_lang = language
    if training:
        model.init_adapter_layers()
        model.freeze_base_model()
        # Also mark the conv feature encoder frozen: freeze_base_model leaves it asking for gradients of its input
        # (for gradient checkpointing), which doubled the step time and tripled the memory of an adapter step.
        model.freeze_feature_encoder()
        for weight in adapter_weights(model).values():
            weight.requires_grad = True
        return f"trains new {language} adapters (adapter_attn_dim {model.config.adapter_attn_dim}) and CTC head only"
    try:
        model.load_adapter(language)
    except (OSError, ValueError) as e:
        files = glob.glob(os.path.join(source, ADAPTER_FILE.format("*")))
        found = sorted(os.path.basename(p)[len("adapter."):-len(".safetensors")] for p in files)
        raise UserError(f"--target_language {language}: no {ADAPTER_FILE.format(language)} for {source} "
                        f"(adapters there: {', '.join(found) or 'none'}).") from e
    return f"uses the {language} adapter"


def save_language_adapter(model, directory: str, language: str) -> str:
    """Write the language's adapter and CTC head weights as adapter.LANG.safetensors, which load_adapter reads."""
    from safetensors.torch import save_file

    path = os.path.join(directory, ADAPTER_FILE.format(language))
    weights = {name: weight.detach().cpu().contiguous() for name, weight in adapter_weights(model).items()}
    save_file(weights, path, metadata={"format": "pt"})
    logger.info(f"Adapter: {len(weights)} tensors of the {language} adapter and CTC head saved to {path}")
    return path
