# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Phoneme mode (--phoneme_language, a flag of vocabulary.VocabularyArguments; step 2): transcripts phonemized with
espeak-ng."""

import functools
import importlib.util
import logging
from typing import Optional

import datasets

from .columns import CACHE_VERSION, TARGET_TEXT_COLUMN
from .faults import UserError
from .text import map_text, transcripts

logger = logging.getLogger(__name__)

PHONEME_INSTALL = "bash tools/install_extras.sh phoneme"  # apt-get install espeak-ng; pip install phonemizer


def phonemizer_available() -> bool:
    """Whether phoneme mode can run here: the phonemizer package and espeak-ng."""
    if importlib.util.find_spec("phonemizer") is None:
        return False
    from phonemizer.backend import EspeakBackend

    return EspeakBackend.is_available()


def check_phonemizer(language: Optional[str]) -> None:
    """Before any work: phoneme mode needs phonemizer with espeak-ng, and a language espeak-ng knows."""
    if language is None:
        return
    if importlib.util.find_spec("phonemizer") is None:
        raise UserError(f"--phoneme_language needs the phonemizer package and espeak-ng: run `{PHONEME_INSTALL}`.")
    from phonemizer.backend import EspeakBackend

    if not phonemizer_available():
        raise UserError(f"--phoneme_language needs espeak-ng (apt-get install espeak-ng): run `{PHONEME_INSTALL}`.")
    if language not in EspeakBackend.supported_languages():
        raise UserError(f"--phoneme_language {language}: espeak-ng does not know it; "
                        "`espeak-ng --voices` lists codes.")


def phonemize_batch(batch: dict, *, language: str, word_delimiter_token: Optional[str]) -> dict:
    """datasets.map function: transcripts to espeak-ng phonemes, as Wav2Vec2PhonemeCTCTokenizer.phonemize does it
    (phonemes separated by spaces, words by the delimiter token when the tokenizer has one, language flags removed)."""
    from phonemizer.backend import EspeakBackend
    from phonemizer.separator import Separator

    backend = EspeakBackend(language, language_switch="remove-flags")
    word = f"{word_delimiter_token} " if word_delimiter_token else ""
    phones = backend.phonemize(batch[TARGET_TEXT_COLUMN], separator=Separator(phone=" ", word=word, syllable=""))
    return {TARGET_TEXT_COLUMN: [" ".join(p.split()) for p in phones]}


def phonemize_transcripts(splits, language: str, data_args, training_args,
                          word_delimiter_token: Optional[str]) -> datasets.DatasetDict:
    """Phoneme mode: replace the normalised transcripts by phonemes of `language`, once (cached) and in parallel."""
    phonemize = functools.partial(phonemize_batch, language=language, word_delimiter_token=word_delimiter_token)
    with training_args.main_process_first(desc="phonemization"):
        out = datasets.DatasetDict({
            key: map_text(ds, phonemize, f"phonemizing {key} text",
                          [language, word_delimiter_token, CACHE_VERSION], batch_size=500,
                          num_proc=data_args.preprocessing_num_workers)
            for key, ds in splits.items()
        })
    for key, ds in out.items():
        logger.info(f"Phonemized [{key}] ({language}): {transcripts(splits[key])[0]!r} -> "
                    f"{transcripts(ds)[0]!r}")
    return out
