# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""The tokenizer (step 2): the one given, the checkpoint's own when it covers the transcripts, or a new
vocabulary built from them (characters, phonemes, or bpe/unigram subword pieces), and the text report. The
vocabulary's flags (--vocab_type, --vocab_size, --phoneme_language) are VocabularyArguments."""

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import datasets
import transformers
from transformers import AutoConfig, AutoTokenizer, Wav2Vec2CTCTokenizer, Wav2Vec2PhonemeCTCTokenizer

from .adapters import set_tokenizer_language, write_language_vocab
from .columns import SUBWORD_FILE, VOCAB_FILE, is_eval
from .families import is_character_tokenizer
from .faults import UserError
from .phonemes import check_phonemizer, phonemize_transcripts
from .text import build_vocab, normalize_transcripts, text_units, transcripts, vocabulary_case

logger = logging.getLogger(__name__)

VOCAB_TYPES = ("char", "bpe", "unigram")
DEFAULT_SUBWORD_SIZE = 256  # --vocab_size for bpe/unigram: short labels for 8x models, yet every piece seen often
# a checkpoint's tokenizer is kept when at most this share of training labels is unknown
KEEP_TOKENIZER_MAX_UNK = 0.001


@dataclass
class VocabularyArguments:
    """The vocabulary built from the transcripts: characters (as the example), subword pieces, or phonemes."""

    _argument_group_name = "Vocabulary: subword pieces or phonemes (ctc_finetune/vocabulary.py)"

    vocab_type: str = field(
        default="char",
        metadata={"help": "Vocabulary built from the transcripts: 'char' (as the Hugging Face example), or subword "
                          "pieces trained on them, 'bpe' or 'unigram' (SentencePiece-style, words marked by ▁)."},
    )
    vocab_size: Optional[int] = field(
        default=None, metadata={"help": f"Pieces of a bpe/unigram vocabulary (default {DEFAULT_SUBWORD_SIZE})."}
    )
    phoneme_language: Optional[str] = field(
        default=None,
        metadata={"help": "Train on phonemes: espeak-ng language code (tr, it, sv, en-us) of the transcripts; the "
                          "default metric becomes per."},
    )

    def __post_init__(self):
        if self.vocab_type not in VOCAB_TYPES:
            raise UserError(f"--vocab_type {self.vocab_type} is not one of {', '.join(VOCAB_TYPES)}.")
        if self.vocab_size is not None and (self.vocab_type == "char" or self.vocab_size < 1):
            raise UserError(f"--vocab_size {self.vocab_size}: give a positive size, with --vocab_type bpe or unigram.")
        if self.vocab_type != "char" and self.phoneme_language:
            raise UserError("--vocab_type bpe/unigram builds subword pieces of words: phoneme mode keeps phonemes; "
                            "drop one of --vocab_type and --phoneme_language.")
        check_phonemizer(self.phoneme_language)


def hub_kwargs(model_args, data_args) -> dict:
    """The hub arguments of every from_pretrained call: the cache, and whether remote code may run."""
    return {"cache_dir": model_args.cache_dir, "trust_remote_code": data_args.trust_remote_code}  # token: HF_TOKEN


def load_existing_tokenizer(model_args, data_args, training_args, language: Optional[str]):
    """The tokenizer given by --tokenizer_name_or_path, or the fine-tuned model's one when not training; else None."""
    source = model_args.tokenizer_name_or_path or (None if training_args.do_train else model_args.model_name_or_path)
    if source is None and not training_args.do_train:
        raise UserError("evaluating a model trained from --config_name needs --tokenizer_name_or_path.")
    if source is None:
        return None
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **hub_kwargs(model_args, data_args))
    except (OSError, ValueError) as e:
        raise UserError(
            f"no tokenizer could be loaded from {source} ({type(e).__name__}); pass --tokenizer_name_or_path, "
            "or --do_train to build a vocabulary from the data."
        ) from e
    if language:
        set_tokenizer_language(tokenizer, language, source)
    logger.info(f"Tokenizer: reused from {source} ({len(tokenizer):,} tokens{f', {language}' if language else ''})")
    return tokenizer


def has_ctc_head(config) -> bool:
    """Whether a checkpoint was saved with a CTC head (a `...ForCTC` architecture), rather than as a bare encoder."""
    return any(a.endswith("ForCTC") for a in config.architectures or [])


def clear_vocabulary(training_args, language: Optional[str]) -> None:
    """A fresh start (--do_train --overwrite_output_dir) builds its vocabulary anew: output_dir's vocab.json and
    subword tokenizer are deleted first, but for --target_language, whose per-language vocab.json gains a language."""
    out = training_args.output_dir
    if language or not (training_args.do_train and training_args.overwrite_output_dir and os.path.isdir(out)):
        return
    with training_args.main_process_first(desc="clearing the vocabulary"):  # only the main process deletes
        for name in (VOCAB_FILE, SUBWORD_FILE) if training_args.should_save else ():
            if os.path.isfile(os.path.join(out, name)):
                os.remove(os.path.join(out, name))


def shipped_tokenizer(model_args, data_args, training_args, vocab: VocabularyArguments, language: Optional[str]):
    """When fine-tuning a checkpoint that ships a CTC head and a tokenizer, and no other vocabulary is given or already
    built in output_dir: that tokenizer, to keep with its head if it covers the transcripts. Else None."""
    source = model_args.model_name_or_path
    if (not training_args.do_train or source is None or model_args.tokenizer_name_or_path or vocab.phoneme_language
            or vocab.vocab_type != "char" or language
            or os.path.isfile(os.path.join(training_args.output_dir, VOCAB_FILE))):
        return None
    hub = hub_kwargs(model_args, data_args)
    try:
        if not has_ctc_head(AutoConfig.from_pretrained(source, **hub)):
            return None
        return AutoTokenizer.from_pretrained(source, **hub)
    except (OSError, ValueError, TypeError):
        return None  # no tokenizer files (a bare encoder), or no config at all (load_model says)


def unknown_token_share(tokenizer, texts) -> float:
    """The share of label tokens the tokenizer encodes as unknown (0 for tokenizers without an unknown token)."""
    texts = [t for t in texts if t]
    ids = [i for row in tokenizer(texts, add_special_tokens=False).input_ids for i in row] if texts else []
    return (sum(i == tokenizer.unk_token_id for i in ids) / max(len(ids), 1)
            if tokenizer.unk_token_id is not None else 0.0)


def describe_vocabulary(tokenizer) -> str:
    """'characters, 31 tokens', 'phonemes, 50 tokens' or 'subword pieces, 256 tokens', for the log and data report."""
    kind = ("phonemes" if isinstance(tokenizer, Wav2Vec2PhonemeCTCTokenizer) else
            "characters" if is_character_tokenizer(tokenizer) else "subword pieces")
    return f"{kind}, {len(tokenizer):,} tokens"


def choose_tokenizer(raw, model_args, data_args, training_args, vocab: VocabularyArguments, adapters):
    """Pick the tokenizer and normalise (or phonemize) the transcripts for it: the tokenizer given, else the
    checkpoint's own when it covers the normalised training text (returned), else None: build_tokenizer makes a
    vocabulary from the text. A fresh start first clears output_dir's old vocabulary."""
    language = adapters.target_language
    clear_vocabulary(training_args, language)
    tokenizer = load_existing_tokenizer(model_args, data_args, training_args, language)
    shipped = shipped_tokenizer(model_args, data_args, training_args, vocab, language) if tokenizer is None else None
    case = vocabulary_case((tokenizer or shipped).get_vocab()) if (tokenizer or shipped) is not None else "lower"
    text = normalize_transcripts(raw, data_args, training_args, case)
    if shipped is not None:
        share = unknown_token_share(shipped, transcripts(text["train"]))
        if share <= KEEP_TOKENIZER_MAX_UNK:
            logger.info(f"Tokenizer: the checkpoint's own ({len(shipped):,} tokens, {share:.2%} of the training "
                        "labels unknown), kept with its CTC head")
            return shipped, text
        logger.info(f"Tokenizer: the checkpoint's own leaves {share:.1%} of the training labels unknown; building a "
                    "new vocabulary from the transcripts (and a new CTC head)")
        if case != "lower":
            text = normalize_transcripts(raw, data_args, training_args, "lower")
    if vocab.phoneme_language:  # phonemized once here (cached, parallel), not by the tokenizer per clip
        # A given phoneme tokenizer may have no word delimiter (e.g. facebook/wav2vec2-xlsr-53-espeak-cv-ft).
        delimiter = tokenizer.init_kwargs.get("word_delimiter_token") if tokenizer else data_args.word_delimiter_token
        text = phonemize_transcripts(text, vocab.phoneme_language, data_args, training_args, delimiter)
    return tokenizer, text


def train_subword_vocab(texts: list[str], kind: str, size: int, unk_token: str, pad_token: str):
    """A SentencePiece-style `kind` ('bpe' or 'unigram') vocabulary of about `size` pieces trained on the transcripts
    with the tokenizers library: words marked by `▁`, unk first, pad (the CTC blank) second."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    alphabet = {c for text in texts for c in text if c != " "} | {"▁"}
    if size < len(alphabet) + 2:
        raise UserError(f"--vocab_size {size} is under the text's {len(alphabet)} characters (with ▁) plus unk and "
                        f"pad: pass at least {len(alphabet) + 2}, or --vocab_type char.")
    special = [unk_token, pad_token]
    if kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token=unk_token))
        trainer = trainers.BpeTrainer(vocab_size=size, special_tokens=special, initial_alphabet=sorted(alphabet),
                                      show_progress=False)
    else:
        tokenizer = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(vocab_size=size, special_tokens=special, unk_token=unk_token,
                                          initial_alphabet=sorted(alphabet), show_progress=False)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def build_subword_tokenizer(vocab: VocabularyArguments, data_args, training_args, splits: datasets.DatasetDict):
    """--vocab_type bpe/unigram: train the vocabulary once (main process), save it in output_dir, load it everywhere.

    It is wrapped as a ParakeetTokenizer: a CTC tokenizer (repeats merged, pad dropped as the blank) that
    AutoTokenizer and AutoProcessor load back from output_dir. An existing one there is reused, as vocab.json is.
    """
    path = os.path.join(training_args.output_dir, SUBWORD_FILE)
    special = {"unk_token": data_args.unk_token, "pad_token": data_args.pad_token}
    with training_args.main_process_first(desc="vocabulary"):
        if training_args.should_save and not os.path.isfile(path):
            texts = [t for key in vocabulary_splits(splits) for t in transcripts(splits[key]) if t]
            size = vocab.vocab_size or DEFAULT_SUBWORD_SIZE
            trained = train_subword_vocab(texts, vocab.vocab_type, size, **special)
            lowered = ("" if trained.get_vocab_size() >= size
                       else f" (lowered from {size:,}: the text supports no more)")
            transformers.ParakeetTokenizer(tokenizer_object=trained, **special).save_pretrained(
                training_args.output_dir
            )
            logger.info(f"Vocabulary: {vocab.vocab_type}, {trained.get_vocab_size():,} pieces{lowered} trained on "
                        f"{len(texts):,} transcripts{'' if vocab.vocab_size else ' (the default --vocab_size)'}, "
                        f"written to {path}")
        else:
            logger.info(f"Vocabulary: reusing {path}")
    return AutoTokenizer.from_pretrained(training_args.output_dir)


def build_tokenizer(model_args, data_args, training_args, splits: datasets.DatasetDict, vocab: VocabularyArguments,
                    adapters):
    """A character (or phoneme) tokenizer over the train and eval transcripts; an existing vocab.json is reused.
    With --target_language the vocab.json holds one vocabulary per language (the checkpoint's, or output_dir's)."""
    if vocab.vocab_type != "char":
        return build_subword_tokenizer(vocab, data_args, training_args, splits)
    special = {
        "word_delimiter_token": data_args.word_delimiter_token,
        "unk_token": data_args.unk_token,
        "pad_token": data_args.pad_token,
    }
    vocab_path = os.path.join(training_args.output_dir, VOCAB_FILE)
    language = adapters.target_language
    with training_args.main_process_first(desc="vocabulary"):
        if training_args.should_save and language:
            texts = (t for key in vocabulary_splits(splits) for t in transcripts(splits[key]))
            write_language_vocab(vocab_path, language, build_vocab(texts, **special), model_args.model_name_or_path,
                                 hub_kwargs(model_args, data_args), adapters.overwrite_lang_vocab)
        elif training_args.should_save and not os.path.isfile(vocab_path):
            texts = (t for key in vocabulary_splits(splits) for t in transcripts(splits[key]))
            tokens = build_vocab(texts, **special, phonemes=bool(vocab.phoneme_language))
            os.makedirs(training_args.output_dir, exist_ok=True)
            with open(vocab_path, "w", encoding="utf-8") as f:
                json.dump(tokens, f, ensure_ascii=False, indent=1)
            logger.info(f"Vocabulary: {len(tokens):,} tokens built from the transcripts, written to {vocab_path}")
        else:
            logger.info(f"Vocabulary: reusing {vocab_path}")
    if vocab.phoneme_language:  # phonemizes raw text itself when used elsewhere; decoding needs no phonemizer
        return Wav2Vec2PhonemeCTCTokenizer(vocab_path, **special, phonemizer_lang=vocab.phoneme_language)
    # The CTC character tokenizer does not depend on the model type (upstream has none for WavLM and SEW).
    return Wav2Vec2CTCTokenizer(vocab_path, **special, **({"target_lang": language} if language else {}))


def vocabulary_splits(splits) -> list[str]:
    """The splits whose transcripts a new vocabulary is built from: train and the eval set(s), as upstream."""
    return [key for key in splits if key == "train" or is_eval(key)]


def text_report(splits: datasets.DatasetDict, tokenizer, data_args, phonemes: bool = False) -> dict:
    """Character (or phoneme) inventory and unknown share per split; warn on eval-only ones, stop when too many
    unknown."""
    vocab = tokenizer.get_vocab()
    counts = {
        k: Counter(u for t in transcripts(ds) for u in text_units(t, data_args.word_delimiter_token, phonemes))
        for k, ds in splits.items()
    }
    evaluated = set().union(*(counts[k] for k in counts if is_eval(k)))
    if "train" in counts and evaluated:
        eval_only = sorted(evaluated - set(counts["train"]))
        if eval_only:
            logger.warning(f"Characters only in the eval text (never trained): {' '.join(eval_only)}")
    stats = {}
    for key, counter in counts.items():
        if is_character_tokenizer(tokenizer):
            unknown = Counter({c: n for c, n in counter.items() if c not in vocab})
            share = sum(unknown.values()) / max(sum(counter.values()), 1)
        else:  # a subword tokenizer: the share of label tokens that come out unknown, and the characters to blame
            unknown = Counter({c: n for c, n in counter.items()
                               if c != data_args.word_delimiter_token and unknown_token_share(tokenizer, [c]) > 0})
            share = unknown_token_share(tokenizer, transcripts(splits[key]))
        stats[key] = {"characters": (" " if phonemes else "").join(sorted(counter)), "distinct": len(counter),
                      "unknown_character_share": round(share, 4), "vocabulary": describe_vocabulary(tokenizer)}
        if share > data_args.max_unk_share:
            worst = " ".join(c for c, _ in unknown.most_common(10))
            raise UserError(
                f"{share:.1%} of the {key} labels are unknown to the tokenizer (most frequent: {worst}); "
                "use a tokenizer that covers them, add them to --chars_to_ignore, or raise --max_unk_share."
            )
    return stats
