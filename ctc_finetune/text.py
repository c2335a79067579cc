# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Transcripts (step 2): normalisation, the transcripts of a split, and the character (or phoneme) inventory a
vocabulary is built from."""

import functools
import logging
import re
from typing import Optional

import datasets

from .columns import (CACHE_VERSION, RAW_TEXT_COLUMN, STREAM_TEXT_CLIPS, TARGET_TEXT_COLUMN, derived_fingerprint,
                      is_stream)

logger = logging.getLogger(__name__)


def chars_to_ignore_regex(chars: Optional[list[str]]) -> Optional[str]:
    """A regex character class matching each given character literally (upstream forgot to escape them)."""
    if not chars:
        return None
    return "[" + "".join(re.escape(c) for c in chars) + "]"


def normalize_text(text: str, ignore_regex: Optional[str], case: str = "lower") -> str:
    """Delete ignored characters, fold case ('lower' or 'upper') and collapse runs of spaces."""
    text = text or ""
    if ignore_regex:
        text = re.sub(ignore_regex, "", text)
    text = text.upper() if case == "upper" else text.lower()
    return " ".join(text.split())


def normalize_batch(batch: dict, *, ignore_regex: Optional[str], case: str) -> dict:
    """datasets.map function: normalise the transcripts of one batch."""
    return {TARGET_TEXT_COLUMN: [normalize_text(t, ignore_regex, case) for t in batch[RAW_TEXT_COLUMN]]}


def map_text(ds, function, desc: str, key_parts: list, **kwargs):
    """datasets.map of a text function, cached under derived_fingerprint (the caches downstream are keyed on it); a
    stream maps lazily."""
    if is_stream(ds):
        return ds.map(function, batched=True, **{k: v for k, v in kwargs.items() if k != "num_proc"})
    return ds.map(function, batched=True, desc=desc, new_fingerprint=derived_fingerprint(ds, *key_parts), **kwargs)


@functools.lru_cache(maxsize=8)
def transcripts(ds) -> list[str]:
    """The normalised transcripts of a split, for the vocabulary, the text report and the LM. Of a streamed split,
    those of its first STREAM_TEXT_CLIPS clips: reading them all would read the whole corpus before training."""
    if not is_stream(ds):
        return ds[TARGET_TEXT_COLUMN]
    texts = [row[TARGET_TEXT_COLUMN] for row in ds.select_columns([TARGET_TEXT_COLUMN]).take(STREAM_TEXT_CLIPS)]
    logger.info(f"Read the transcripts of the first {len(texts):,} streamed clips "
                "(for the vocabulary and text report)")
    return texts


def normalize_transcripts(raw, data_args, training_args, case: str) -> datasets.DatasetDict:
    """Replace the text column by the normalised `target_text`."""
    regex = chars_to_ignore_regex(data_args.chars_to_ignore)
    normalize = functools.partial(normalize_batch, ignore_regex=regex, case=case)
    with training_args.main_process_first(desc="text normalisation"):
        return datasets.DatasetDict({
            key: map_text(ds, normalize, f"normalising {key} text", [regex, case, CACHE_VERSION],
                          remove_columns=[RAW_TEXT_COLUMN])
            for key, ds in raw.items()
        })


def text_units(text: str, word_delimiter_token: str, phonemes: bool) -> list[str]:
    """The tokens of a transcript: characters (a space is the delimiter), or space-separated phonemes."""
    return text.split() if phonemes else [word_delimiter_token if c == " " else c for c in text]


def build_vocab(texts, word_delimiter_token: str, unk_token: str, pad_token: str, phonemes: bool = False):
    """Vocabulary as upstream: the delimiter (even in a corpus of one-word clips), sorted units, then unk and pad."""
    units = {u for text in texts for u in text_units(text, word_delimiter_token, phonemes)} - {word_delimiter_token}
    tokens = [word_delimiter_token, *sorted(units), unk_token, pad_token]
    return {token: i for i, token in enumerate(tokens)}


def vocabulary_case(vocab) -> str:
    """'upper' when the tokenizer's letters are all upper-case (e.g. wav2vec2-base-960h), else 'lower'."""
    letters = [c for token in vocab for c in token if c.isalpha() and len(token) == 1]
    return "upper" if letters and all(c.isupper() for c in letters) else "lower"
