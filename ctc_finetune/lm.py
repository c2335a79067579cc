# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""The n-gram language model (--lm_text, step 7): KenLM estimates it, pyctcdecode beam-searches the CTC logits
with it."""

import functools
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Optional

import datasets

from .families import blank_token_id
from .faults import UserError
from .text import chars_to_ignore_regex, normalize_text, transcripts, vocabulary_case

logger = logging.getLogger(__name__)

LM_DIR = "language_model"  # pyctcdecode's layout in output_dir: alphabet.json + language_model/
LM_INSTALL = "bash tools/install_extras.sh lm"  # pyctcdecode (--no-deps: it pins numpy<2), kenlm, KenLM's lmplz


@dataclass
class LMArguments:
    """An n-gram language model (optional: pyctcdecode + KenLM, see tools/install_extras.sh), built after training;
    evaluation and prediction then also score beam search with it."""

    _argument_group_name = "n-gram language model (ctc_finetune/lm.py)"

    lm_text: Optional[str] = field(
        default=None,
        metadata={"help": "Build an n-gram LM from this text file (one sentence per line), or 'train' for the "
                          "training transcripts; eval and predict then also score beam search with it."},
    )
    lm_order: int = field(default=3, metadata={"help": "Order n of the n-gram LM."})
    lm_alpha: float = field(default=0.5, metadata={"help": "Weight of the LM score in beam search."})
    lm_beta: float = field(default=1.0, metadata={"help": "Bonus per word in beam search (counters short outputs)."})
    lm_beam_width: int = field(default=100, metadata={"help": "Beams kept in LM beam search."})

    def __post_init__(self):
        if self.lm_text not in (None, "train") and not os.path.isfile(self.lm_text):
            raise UserError(f"--lm_text {self.lm_text} is not a file; pass a text file or 'train'.")
        if self.lm_order < 1 or self.lm_beam_width < 1:
            raise UserError("--lm_order and --lm_beam_width must be at least 1.")
        check_lm_tools(self)


def kenlm_binary(name: str) -> Optional[str]:
    """Path of a KenLM program (lmplz, build_binary): on PATH or beside this Python (a venv not activated)."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return shutil.which(name) or (beside if os.access(beside, os.X_OK) else None)


def check_lm_tools(args: LMArguments) -> None:
    """As the flags are read, before any work: --lm_text needs pyctcdecode, kenlm and lmplz."""
    if args.lm_text is None:
        return
    missing = [p for p in ("pyctcdecode", "pygtrie", "kenlm") if importlib.util.find_spec(p) is None]
    missing += [b for b in ("lmplz", "build_binary") if kenlm_binary(b) is None]
    if missing:
        raise UserError(f"--lm_text needs {', '.join(missing)}, optional extras: install them with `{LM_INSTALL}`.")


def lm_sentences(lm_text: str, train_texts, ignore_regex: Optional[str], case: str) -> list[str]:
    """The LM's text, normalised as the transcripts are: a file (one sentence per line) or the training transcripts."""
    if lm_text == "train":
        return [t for t in train_texts if t]
    with open(lm_text, encoding="utf-8") as f:
        return [t for t in (normalize_text(line, ignore_regex, case) for line in f) if t]


def estimate_ngram(sentences: list[str], order: int, directory: str) -> str:
    """Estimate a Kneser-Ney n-gram with KenLM's lmplz and convert it to KenLM's binary format; returns its path."""
    arpa, binary = os.path.join(directory, "lm.arpa"), os.path.join(directory, "lm.binary")
    # --discount_fallback: small corpora lack the counts-of-counts Kneser-Ney discounts need; -S: lmplz would take 80%
    # of the RAM otherwise.
    lmplz = [kenlm_binary("lmplz"), "-o", str(order), "--discount_fallback", "-S", "10%", "-T", directory]
    with open(arpa, "w", encoding="utf-8") as out:
        run = subprocess.run(lmplz, input="\n".join(sentences) + "\n", stdout=out, stderr=subprocess.PIPE, text=True)
    if run.returncode == 0:
        run = subprocess.run([kenlm_binary("build_binary"), arpa, binary], capture_output=True, text=True)
    if run.returncode != 0:
        raise UserError(f"KenLM failed: {(run.stderr.strip().splitlines() or ['no message'])[-1]}")
    return binary


def ctc_alphabet(tokenizer, size: int, blank_id: int) -> list[str]:
    """pyctcdecode's labels, one per model output: '' for the blank, ' ' for the word delimiter (character
    vocabularies; pyctcdecode reads SentencePiece's `▁` in subword ones itself)."""
    labels = tokenizer.convert_ids_to_tokens(list(range(size)))
    delimiter = getattr(tokenizer, "word_delimiter_token", None)
    return ["" if i == blank_id else " " if t == delimiter else t or f"<{i}>" for i, t in enumerate(labels)]


def build_lm_decoder(splits: datasets.DatasetDict, config, tokenizer, args: LMArguments, chars_to_ignore,
                     training_args):
    """With --lm_text: estimate the n-gram on the main process and save the decoder to output_dir; every process loads
    it; its text is normalised as the transcripts were (`chars_to_ignore`). Returns the beam search (one clip's
    logits -> text), or None without --lm_text."""
    if not args.lm_text:
        return None
    from pyctcdecode import BeamSearchDecoderCTC, build_ctcdecoder

    out, blank_id = training_args.output_dir, blank_token_id(config, tokenizer)
    train_texts = transcripts(splits["train"]) if "train" in splits else []
    with training_args.main_process_first(desc="n-gram language model"):
        if training_args.should_save:
            sentences = lm_sentences(args.lm_text, train_texts, chars_to_ignore_regex(chars_to_ignore),
                                     vocabulary_case(tokenizer.get_vocab()))
            if not sentences:
                raise UserError(f"--lm_text {args.lm_text} holds no text.")
            with tempfile.TemporaryDirectory(dir=out) as tmp:
                decoder = build_ctcdecoder(
                    ctc_alphabet(tokenizer, config.vocab_size, blank_id),
                    estimate_ngram(sentences, args.lm_order, tmp),
                    # explicit unigrams: read from the ARPA file they would include lmplz's <s> and </s>
                    unigrams=sorted({w for t in sentences for w in t.split()}),
                    alpha=args.lm_alpha, beta=args.lm_beta,
                )
                shutil.rmtree(os.path.join(out, LM_DIR), ignore_errors=True)  # a previous run's
                decoder.save_to_dir(out)
            words = sum(len(t.split()) for t in sentences)
            logger.info(f"Language model: {args.lm_order}-gram from {len(sentences):,} sentences "
                        f"({words:,} words) of {args.lm_text}, saved in {os.path.join(out, LM_DIR)}")
    return functools.partial(BeamSearchDecoderCTC.load_from_dir(out).decode, beam_width=args.lm_beam_width)
