#!/usr/bin/env python
# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune a pretrained speech encoder with CTC: any CTC family of transformers 5.x (wav2vec2, XLS-R, HuBERT, WavLM,
UniSpeech, SEW, Data2Vec-Audio, Wav2Vec2-Conformer, Wav2Vec2-BERT, Parakeet, LASR, OmniASR, Granite Speech).

A reproduction of the Hugging Face `run_speech_recognition_ctc.py` example (same arguments, defaults and outputs)
that runs on transformers 5.x, reads corpora from disk, decodes audio without FFmpeg and scores WER/CER locally.

One GPU:
    python run_speech_recognition_ctc.py --dataset_name DATA_DIR_OR_HUB_ID --model_name_or_path facebook/wav2vec2-base \
        --output_dir out --do_train --do_eval --per_device_train_batch_size 16 --learning_rate 3e-4 \
        --num_train_epochs 15 --fp16 --group_by_length --text_column_name sentence

Several GPUs (one node):
    torchrun --nproc_per_node 8 run_speech_recognition_ctc.py ...same arguments...

A tiny CPU run (arguments from a JSON file):
    python run_speech_recognition_ctc.py examples/demo.json

The sections of this file follow main()'s steps (constants, arguments, run setup, data, text and vocabulary, model
families, model, preprocessing, batching, trainer, metrics and predictions); the optional features (n-gram LM,
phonemes, the report) come after them, each fenced, then the end of the run, main and the command line.

Where to change what:
    text normalisation   normalize_text (case, ignored characters), applied by normalize_transcripts
    filtering clips      drop_reasons (duration limits, CTC feasibility; scan_and_filter sets the limits), scan_batch
                         (missing, unreadable, empty files), featurize_batch (undecodable, truncated audio)
    vocabulary           build_vocab (characters), train_subword_vocab (bpe/unigram), build_tokenizer (vocab.json, one
                         per language), choose_tokenizer (the given tokenizer, the checkpoint's, or a new one)
    batching             DataCollatorCTCWithPadding (padding), DurationBatchSampler (--max_batch_duration),
                         StreamBatches (tar shards), CTCTrainer.get_train_dataloader (which of them)
    scoring              score (WER/CER/PER of a split), clip_error and prediction_rows (each clip's row)
    adding a family      the "Model families" section: its tables (FEATURE_FRAMES, FRONT_ENDS, CONFIG_KEY_ALIASES) and
                         helpers (encoder_config, model_input_names, output_frames, ctc_head_name, blank_token_id);
                         then a tiny checkpoint of it in tests/tiny_models.py
    audio decoding       load_audio (soundfile + soxr; no FFmpeg)
After changing a function whose output is cached (normalisation, scanning, decoding), bump CACHE_VERSION.
"""

import csv
import ctypes
import errno
import functools
import glob
import importlib.util
import io
import itertools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import datasets
import huggingface_hub
import jiwer
import numpy as np
import pyarrow as pa
import pyarrow.compute
import soundfile as sf
import soxr
import torch
import yaml
import transformers
from datasets.distributed import split_dataset_by_node
from datasets.fingerprint import Hasher
from torch.utils.data import DataLoader
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModelForCTC,
    AutoProcessor,
    AutoTokenizer,
    HfArgumentParser,
    Trainer,
    TrainerCallback,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2PhonemeCTCTokenizer,
    set_seed,
)
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import is_main_process

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------------------
# Constants
LABEL_PAD_ID = -100  # label id ignored by the CTC loss; the Trainer also pads predictions across batches with it
AUDIO_COLUMN = "audio"  # audio path (or datasets' undecoded {"path", "bytes"}), whatever the corpus called it
RAW_TEXT_COLUMN = "text"  # transcript as the corpus has it
TARGET_TEXT_COLUMN = "target_text"  # normalised transcript
LENGTH_COLUMN = "input_length"  # clip length in samples at the feature extractor's rate, used by group_by_length
SOURCE_RATE_COLUMN = "source_rate"  # sampling rate of the file, Hz
CHANNELS_COLUMN = "channels"  # channel count of the file
MIN_FRAMES_COLUMN = "ctc_min_frames"  # output frames the label needs under CTC
WAVEFORM_INPUT = "input_values"  # the input name of models that read samples (the others read feature frames)
LABELS_COLUMN = "labels"  # label ids, as the models' forward() takes them
CLIP_ID_COLUMN = "clip_id"  # the audio file's path (or name in a hub dataset), for predictions.csv
DROP_COLUMN = "drop_reason"  # why preprocessing rejected a clip ("" when kept)
CTC_INFEASIBLE = "transcript too long for the audio (CTC)"  # the drop reason of labels needing more output frames
KEEP_TOKENIZER_MAX_UNK = 0.001  # a checkpoint's tokenizer is kept when at most this share of training labels is unknown
MAX_INFEASIBLE_SHARE = 0.2  # stop when more of the training clips than this are CTC-infeasible: the vocabulary is wrong
AUDIO_ERRORS = (sf.LibsndfileError, RuntimeError, OSError, ValueError, TypeError)  # what a bad file raises in decoding
TRUNCATION_TOLERANCE = 0.9  # a file decoding to less than this share of its header's length is truncated
CACHE_VERSION = 3  # bump when the preprocessing functions change what they write
VOCAB_FILE = "vocab.json"
SUBWORD_FILE = "tokenizer.json"  # a --vocab_type bpe/unigram vocabulary (the tokenizers library's format)
VOCAB_TYPES = ("char", "bpe", "unigram")
DEFAULT_ADAPTER_DIM = 16  # upstream's --adapter_attn_dim (MMS's adapters)
ADAPTER_FILE = "adapter.{}.safetensors"  # a language's MMS adapter and CTC head, as Wav2Vec2ForCTC.load_adapter reads
DEFAULT_SUBWORD_SIZE = 256  # --vocab_size for bpe/unigram: short labels for 8x models, yet every piece seen often
DATA_REPORT_FILE = "data_report.json"
REQUEUE_EXIT = 75  # exit status of a run a signal stopped at a checkpoint: sysexits' EX_TEMPFAIL, "run it again"
STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")  # schedulers' preemption warnings, and Ctrl-C (a second one: at once)
USAGE = ("usage: python run_speech_recognition_ctc.py [--flags ... | ARGS.json]; try the demo: python "
         "run_speech_recognition_ctc.py examples/demo.json; --help lists every flag.")
PREDICTIONS_FILES = {"eval": "eval_predictions.csv", "predict": "predictions.csv"}  # every clip scored, worst first
LM_DIR = "language_model"  # pyctcdecode's layout in output_dir: alphabet.json + language_model/
PHONEME_INSTALL = "bash tools/install_extras.sh phoneme"  # apt-get install espeak-ng; pip install phonemizer
TORCHAUDIO_INSTALL = "bash tools/install_extras.sh granite"  # torchaudio's pure-Python parts, for Granite Speech
LM_INSTALL = "bash tools/install_extras.sh lm"  # pyctcdecode (--no-deps: it pins numpy<2), kenlm, KenLM's lmplz
NUM_SUMMARY_EXAMPLES = 5  # reference/hypothesis pairs in the end-of-run summary, and worst clips logged
MALLOC_MMAP_MAX, MALLOC_TRIM_THRESHOLD = -4, -1  # glibc mallopt parameters (malloc.h)
CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")  # the Trainer's checkpoint folders
SUPPORTED_METRICS = ("wer", "cer", "per")  # per: phoneme error rate, the WER over space-separated phonemes
NUM_LOGGED_EXAMPLES = 3  # prediction/reference pairs logged at each evaluation
PREDICTION_COLUMNS = (CLIP_ID_COLUMN, "reference", "hypothesis", "wer", "cer", "seconds", "hypothesis_lm", "wer_lm")
SHARD_AUDIO_EXTENSIONS = ("flac", "wav", "mp3", "ogg", "opus")  # the audio members of a WebDataset tar shard
STREAM_TEXT_CLIPS = 20_000  # transcripts a streamed split lends to the vocabulary and the text report
STREAM_SHUFFLE_BUFFER = 1_000  # clips a streamed split is shuffled within (after its shards are shuffled)
# Files this script writes into output_dir before the first checkpoint: a restart may find them without that being
# "foreign content" (everything else in a non-empty output_dir makes us stop, as upstream).
OWN_OUTPUT_FILES = {
    VOCAB_FILE,
    DATA_REPORT_FILE,
    "tokenizer_config.json",
    "tokenizer.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "preprocessor_config.json",
    "processor_config.json",
    "config.json",
    "runs",
}


class UserError(Exception):
    """A mistake in the arguments or the data: reported as one line, without a traceback."""


class Stopped(Exception):
    """A stop signal ended the run cleanly (in training: at a saved checkpoint). One line; exit status REQUEUE_EXIT."""


class DiskFull(UserError):
    """No space left on the device while writing `what`: one line with the space needed and free there."""

    def __init__(self, what: str, path: str, needed_bytes: float, fix: str):
        directory = path
        while directory and not os.path.isdir(directory):
            directory = os.path.dirname(directory)
        free = shutil.disk_usage(directory or ".").free
        super().__init__(f"no space left on device writing {what} {path}: about {needed_bytes / 1e6:,.0f} MB needed, "
                         f"{free / 1e6:,.0f} MB free there; {fix}.")


def is_disk_full(error: BaseException) -> bool:
    """Whether a writer's exception (Python, Arrow, safetensors or torch.save) means that the disk is full."""
    text = str(error)
    return (getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in text
            or "StorageFull" in text or "PytorchStreamWriter failed writing file" in text)


# ----------------------------------------------------------------------------------------------------------------------
# Arguments
@dataclass
class ModelArguments:
    """Which checkpoint to fine-tune and how to configure it."""

    # Where the model comes from
    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "Hub id or local directory of the pretrained checkpoint to fine-tune."}
    )
    config_name: Optional[str] = field(
        default=None,
        metadata={"help": "Train from scratch: directory (or hub id) of a model config plus feature extractor config."},
    )
    tokenizer_name_or_path: Optional[str] = field(
        default=None,
        metadata={"help": "Hub id or local directory of an existing CTC tokenizer; by default one is built from the data."},
    )
    cache_dir: Optional[str] = field(
        default=None, metadata={"help": "Where to cache models, tokenizers and datasets downloaded from the hub."}
    )
    freeze_feature_encoder: bool = field(
        default=True,
        metadata={"help": "Freeze the front end that turns audio into encoder frames: the convolutional feature encoder "
                          "(wav2vec2-style models) or the subsampling stack (Parakeet, LASR); see the README table."},
    )
    # Regularisation and CTC settings written into the model config. Left unset, wav2vec2-era models get upstream's
    # defaults (as upstream writes them) and the newer families keep their checkpoint's own values.
    attention_dropout: Optional[float] = field(
        default=None, metadata={"help": "Dropout ratio on the attention probabilities (upstream default 0.0)."}
    )
    activation_dropout: Optional[float] = field(
        default=None, metadata={"help": "Dropout ratio after the activation inside the feed-forward layers (0.0)."}
    )
    feat_proj_dropout: Optional[float] = field(
        default=None, metadata={"help": "Dropout ratio on the projected features (0.0)."}
    )
    hidden_dropout: Optional[float] = field(
        default=None, metadata={"help": "Dropout ratio of the embeddings, encoder and pooler fully connected layers (0.0)."}
    )
    final_dropout: Optional[float] = field(default=None, metadata={"help": "Dropout ratio before the CTC head (0.0)."})
    mask_time_prob: Optional[float] = field(
        default=None, metadata={"help": "Probability of each feature frame starting a SpecAugment time mask (0.05)."}
    )
    mask_time_length: Optional[int] = field(default=None, metadata={"help": "Length of each time mask, in frames (10)."})
    mask_feature_prob: Optional[float] = field(
        default=None, metadata={"help": "Probability of each feature channel starting a SpecAugment feature mask (0.0)."}
    )
    mask_feature_length: Optional[int] = field(
        default=None, metadata={"help": "Length of each feature mask, in channels (10)."}
    )
    layerdrop: Optional[float] = field(
        default=None, metadata={"help": "Probability of skipping a whole transformer layer (0.0)."}
    )
    # CTC head
    ctc_loss_reduction: str = field(
        default="mean", metadata={"help": "How the CTC loss is reduced over the batch: 'mean' or 'sum'."}
    )
    ctc_zero_infinity: Optional[bool] = field(
        default=None,
        metadata={"help": "Zero infinite CTC losses (labels longer than the audio allows); upstream default False."},
    )
    add_adapter: bool = field(
        default=False, metadata={"help": "Add a convolutional adapter on top of the encoder (meant for Wav2Vec2-BERT)."}
    )
    adapter_attn_dim: Optional[int] = field(
        default=None,
        metadata={"help": "With --target_language: size of the MMS attention adapters (the checkpoint's, else "
                          f"{DEFAULT_ADAPTER_DIM}); only they and the CTC head train."},
    )
    attn_implementation: str = field(
        default="sdpa",
        metadata={"help": "Attention kernel: 'sdpa' (PyTorch fused; eager where a model lacks it), 'eager', or "
                          "'flash_attention_2'."},
    )
    def __post_init__(self):
        if (self.model_name_or_path is None) == (self.config_name is None):
            raise UserError("pass exactly one of --model_name_or_path (fine-tune) and --config_name (from scratch).")
        if self.ctc_loss_reduction not in ("mean", "sum"):
            raise UserError(f"--ctc_loss_reduction must be 'mean' or 'sum', got {self.ctc_loss_reduction!r}.")


@dataclass
class DataTrainingArguments:
    """What data to train and evaluate on, and how to prepare it."""

    # Which corpus and splits
    dataset_name: Optional[str] = field(
        default=None,
        metadata={"help": "Hub dataset id, or a local corpus directory (split folders, Common Voice, LibriSpeech, saved)."},
    )
    dataset_config_name: Optional[str] = field(
        default=None, metadata={"help": "Configuration of the dataset (e.g. a language code such as 'tr')."}
    )
    train_split_name: str = field(
        default="train+validation", metadata={"help": "Training split; '+' joins splits, 'train[:800]' takes a slice."}
    )
    eval_split_name: str = field(default="test", metadata={"help": "Evaluation split."})
    train_file: Optional[str] = field(
        default=None, metadata={"help": "Training manifest (CSV, TSV, JSON or JSONL) instead of --dataset_name."}
    )
    eval_file: Optional[str] = field(
        default=None, metadata={"help": "Evaluation manifest (CSV, TSV, JSON or JSONL) instead of --dataset_name."}
    )
    predict_split_name: Optional[str] = field(
        default=None, metadata={"help": "Split transcribed and scored by --do_predict (default: the eval split)."}
    )
    predict_file: Optional[str] = field(
        default=None, metadata={"help": "Manifest transcribed and scored by --do_predict, instead of a split."}
    )
    audio_column_name: str = field(default="audio", metadata={"help": "Column holding the audio (or its path)."})
    text_column_name: str = field(default="text", metadata={"help": "Column holding the transcript."})
    # Preprocessing
    overwrite_cache: bool = field(default=False, metadata={"help": "Redo the preprocessing instead of using its cache."})
    preprocessing_num_workers: Optional[int] = field(
        default=None, metadata={"help": "Number of processes that decode audio and extract features."}
    )
    max_train_samples: Optional[int] = field(
        default=None, metadata={"help": "Use only the first N training examples (for debugging or quick runs)."}
    )
    max_eval_samples: Optional[int] = field(
        default=None, metadata={"help": "Use only the first N evaluation examples (for debugging or quick runs)."}
    )
    chars_to_ignore: Optional[list[str]] = field(
        default=None, metadata={"help": "Characters deleted from transcripts, e.g. --chars_to_ignore , ? . ! - ; :"}
    )
    eval_metrics: list[str] = field(
        default_factory=lambda: ["wer"], metadata={"help": "Metrics computed at evaluation: 'wer', 'cer', 'per' (phoneme mode)."}
    )
    max_duration_in_seconds: float = field(
        default=20.0, metadata={"help": "Training clips this long or longer are dropped (counted); eval keeps all."}
    )
    min_duration_in_seconds: float = field(
        default=0.0, metadata={"help": "Training clips this short or shorter are dropped (counted)."}
    )
    preprocess_on_the_fly: bool = field(
        default=False, metadata={"help": "Decode audio in the DataLoader workers instead of caching features on disk."}
    )
    strict_data: bool = field(
        default=False, metadata={"help": "Stop instead of skipping clips with missing, unreadable or unusable audio."}
    )
    preprocessing_only: bool = field(
        default=False, metadata={"help": "Stop after preprocessing, so a later (distributed) run reuses the cache."}
    )
    max_unk_share: float = field(
        default=0.05,
        metadata={"help": "Stop if more than this share of label characters is unknown to the tokenizer (0 to 1)."},
    )
    # Hub access
    token: Optional[str] = field(
        default=None, metadata={"help": "Hub token for private datasets and models (default: the stored login)."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow a hub model to run its own code; only for repositories you trust."}
    )
    # Tokenizer
    unk_token: str = field(default="[UNK]", metadata={"help": "Token for characters outside the vocabulary."})
    pad_token: str = field(default="[PAD]", metadata={"help": "Padding token, which is also the CTC blank."})
    word_delimiter_token: str = field(default="|", metadata={"help": "Token that stands for the space between words."})
    vocab_type: str = field(
        default="char",
        metadata={"help": "Vocabulary built from the transcripts: 'char' (as upstream), or subword pieces trained on "
                          "them, 'bpe' or 'unigram' (SentencePiece-style, words marked by ▁)."},
    )
    vocab_size: Optional[int] = field(
        default=None, metadata={"help": f"Pieces of a bpe/unigram vocabulary (default {DEFAULT_SUBWORD_SIZE})."}
    )
    target_language: Optional[str] = field(
        default=None,
        metadata={"help": "Train an MMS language adapter for this language (ISO 639-3, e.g. tur): the base model stays "
                          "frozen, vocab.json keeps one vocabulary per language, adapter.LANG.safetensors is saved."},
    )
    overwrite_lang_vocab: bool = field(
        default=False, metadata={"help": "With --target_language: rebuild that language's vocabulary if it exists."}
    )
    phoneme_language: Optional[str] = field(
        default=None,
        metadata={"help": "Train on phonemes: espeak-ng language code (tr, it, sv, en-us) of the transcripts; the default "
                          "metric becomes per."},
    )
    # n-gram language model (optional: pyctcdecode + KenLM, see tools/install_extras.sh)
    lm_text: Optional[str] = field(
        default=None,
        metadata={"help": "Build an n-gram LM from this text file (one sentence per line), or 'train' for the training "
                          "transcripts; eval and predict then also score beam search with it."},
    )
    lm_order: int = field(default=3, metadata={"help": "Order n of the n-gram LM."})
    lm_alpha: float = field(default=0.5, metadata={"help": "Weight of the LM score in beam search."})
    lm_beta: float = field(default=1.0, metadata={"help": "Bonus per word in beam search (counters short outputs)."})
    lm_beam_width: int = field(default=100, metadata={"help": "Beams kept in LM beam search."})
    # The error-analysis report (report.py, beside this script)
    report_clips: int = field(default=50, metadata={"help": "Worst clips report.html lists per split, with audio."})
    report_embed_audio: bool = field(
        default=False, metadata={"help": "Put those clips' audio inside report.html (portable) instead of linking it."}
    )
    # Legacy spelling (transformers 4.x command lines)
    use_auth_token: bool = field(default=False, metadata={"help": "Old flag, ignored: the stored hub login is used."})

    def __post_init__(self):
        if self.use_auth_token:
            warnings.warn("--use_auth_token is deprecated: the stored hub login is used unless --token is given.")
        if self.dataset_name is None and self.train_file is None and self.eval_file is None:
            raise UserError("pass --dataset_name (hub id or local directory) or --train_file/--eval_file manifests.")
        if self.phoneme_language and self.eval_metrics == ["wer"]:  # the default: words are not what is scored
            self.eval_metrics = ["per"]
        if "per" in self.eval_metrics and not self.phoneme_language:
            raise UserError("--eval_metrics per scores phonemes: add --phoneme_language (e.g. tr), or use wer/cer.")
        if self.phoneme_language and self.lm_text:
            raise UserError("--lm_text builds a word n-gram: it does not go with --phoneme_language.")
        unknown = [m for m in self.eval_metrics if m not in SUPPORTED_METRICS]
        if unknown:
            raise UserError(f"--eval_metrics {' '.join(unknown)} is not supported; choose from {' '.join(SUPPORTED_METRICS)}.")
        if not 0.0 <= self.max_unk_share <= 1.0:
            raise UserError(f"--max_unk_share must be between 0 and 1, got {self.max_unk_share}.")
        if self.lm_text not in (None, "train") and not os.path.isfile(self.lm_text):
            raise UserError(f"--lm_text {self.lm_text} is not a file; pass a text file or 'train'.")
        if self.lm_order < 1 or self.lm_beam_width < 1:
            raise UserError("--lm_order and --lm_beam_width must be at least 1.")
        if self.vocab_type not in VOCAB_TYPES:
            raise UserError(f"--vocab_type {self.vocab_type} is not one of {', '.join(VOCAB_TYPES)}.")
        if self.vocab_type != "char" and self.phoneme_language:
            raise UserError("--vocab_type bpe/unigram builds subword pieces of words: phoneme mode keeps phonemes; "
                            "drop one of --vocab_type and --phoneme_language.")
        if self.vocab_size is not None and (self.vocab_type == "char" or self.vocab_size < 1):
            raise UserError(f"--vocab_size {self.vocab_size}: give a positive size, with --vocab_type bpe or unigram.")
        if self.target_language and (self.phoneme_language or self.vocab_type != "char"):
            raise UserError("--target_language trains an MMS adapter with a character vocabulary per language: it does "
                            "not go with --phoneme_language or --vocab_type bpe/unigram.")


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    """transformers.TrainingArguments plus the flags of the example's published command lines."""

    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep False: the collator picks its columns and group_by_length reads lengths."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start afresh in a non-empty output_dir: rebuild the vocabulary, drop checkpoints."}
    )
    reuse_cpu_memory: bool = field(
        default=True,
        metadata={"help": "On CPU (Linux), keep freed memory for reuse instead of returning each step's big tensors "
                          "to the kernel: much faster steps, higher peak RSS."},
    )
    max_batch_duration: Optional[float] = field(
        default=None,
        metadata={"help": "Seconds of padded audio per training batch and device, instead of a fixed "
                          "--per_device_train_batch_size: batches of similar-length clips, little padding."},
    )
    # Legacy form (transformers 4.x), mapped to today's argument with a warning
    group_by_length: bool = field(default=False, metadata={"help": "Old form of --train_sampling_strategy group_by_length."})

    def __post_init__(self):
        if self.group_by_length:
            warnings.warn("--group_by_length is now --train_sampling_strategy group_by_length; using it as such.")
            self.train_sampling_strategy = "group_by_length"
        if self.length_column_name == "length":  # TrainingArguments' default: point it at our precomputed lengths
            self.length_column_name = LENGTH_COLUMN
        if self.max_batch_duration is not None and self.max_batch_duration <= 0:
            raise UserError(f"--max_batch_duration must be a number of seconds > 0, got {self.max_batch_duration}.")
        super().__post_init__()


# Flags of the published (transformers 4.x) command lines that today have another name.
LEGACY_RENAMES = {
    "freeze_feature_extractor": "freeze_feature_encoder",
    "evaluation_strategy": "eval_strategy",
    "no_cuda": "use_cpu",
}


def rename_legacy_flags(argv: list[str]) -> list[str]:
    """Rewrite old flag names (`--evaluation_strategy steps`, `--no_cuda=True`) to today's, with a warning each."""
    renamed = []
    for arg in argv:
        name, eq, value = arg[2:].partition("=")
        new = LEGACY_RENAMES.get(name.replace("-", "_")) if arg.startswith("--") else None
        if new:
            warnings.warn(f"--{name} is the old name of --{new}; using it as such.")
            arg = f"--{new}{eq}{value}"
        renamed.append(arg)
    return renamed


class ArgumentParser(HfArgumentParser):
    """HfArgumentParser whose errors (bad type, missing value) are one line, not the whole usage text."""

    def error(self, message):
        raise UserError(f"{message}; see --help.")


def hide_tokens(data_args: DataTrainingArguments, training_args: TrainingArguments) -> None:
    """Move --token/--hub_token into HF_TOKEN, where every hub call finds them, so no log or saved file holds them."""
    token = data_args.token or training_args.hub_token
    if token:
        os.environ["HF_TOKEN"] = token
    data_args.token = training_args.hub_token = None


def parse_or_explain(parse, *args, **kwargs):
    """Turn the parser's and TrainingArguments' ValueErrors (unknown flags, bad combinations) into user errors."""
    try:
        return parse(*args, **kwargs)
    except ValueError as e:
        raise UserError(str(e).strip().splitlines()[0]) from e


def parse_args(argv: list[str]) -> tuple[ModelArguments, DataTrainingArguments, TrainingArguments]:
    """Parse the command line, or a single JSON or YAML file of arguments; hub tokens move into HF_TOKEN."""
    parser = ArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments))
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        if not os.path.isfile(argv[0]):
            raise UserError(f"argument file {argv[0]} does not exist; pass an existing .json or .yaml file or "
                            "command-line flags.")
        with open(argv[0], encoding="utf-8") as f:
            try:
                args = json.load(f) if argv[0].endswith(".json") else yaml.safe_load(f)
            except (ValueError, yaml.YAMLError) as e:
                raise UserError(f"argument file {argv[0]} is not valid {'JSON' if argv[0].endswith('.json') else 'YAML'}"
                                f": {str(e).splitlines()[0]}") from e
        if not isinstance(args, dict):
            raise UserError(f"argument file {argv[0]} must hold a mapping of flag names to values.")
        for old, new in LEGACY_RENAMES.items():
            if old in args:
                warnings.warn(f"{old} is the old name of {new}; using it as such.")
                args[new] = args.pop(old)
        parsed = parse_or_explain(parser.parse_dict, args)
    else:
        parsed = parse_or_explain(parser.parse_args_into_dataclasses, args=rename_legacy_flags(argv))
    hide_tokens(parsed[1], parsed[2])
    if parsed[1].vocab_type != "char" and parsed[0].tokenizer_name_or_path:
        raise UserError("--vocab_type builds a vocabulary and --tokenizer_name_or_path reuses one: pass only one.")
    return parsed


# ----------------------------------------------------------------------------------------------------------------------
# Run setup: checks before any work, checkpoints to resume from, distributed and CPU settings
def check_push_to_hub(training_args: TrainingArguments) -> None:
    """Fail before any work when --push_to_hub cannot reach the hub (upstream finds out after training)."""
    if not training_args.push_to_hub:
        return
    try:
        huggingface_hub.whoami()  # the token, if any, is in HF_TOKEN (hide_tokens)
    except Exception as e:  # offline mode, no network and no login all mean the same to the user; token never shown
        raise UserError(
            f"--push_to_hub needs network access and a hub login (the hub check failed: {type(e).__name__}); "
            "run `hf auth login` or pass --hub_token, or drop --push_to_hub to save locally only."
        ) from e


def safetensors_complete(path: str) -> bool:
    """Whether a .safetensors file is whole: its header parses and the file is as long as the header says."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        return os.path.getsize(path) == 8 + size + end
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def damaged_file(directory: str, checkpoint: bool = False) -> Optional[str]:
    """The first weights file in `directory` cut short (a kill mid-copy, a disk error), or None. In a Trainer
    checkpoint also the optimizer and scheduler states (torch.save writes a zip archive, whose index is at the end)."""
    for path in sorted(glob.glob(os.path.join(directory, "*.safetensors"))):
        if not safetensors_complete(path):
            return path
    for path in sorted(glob.glob(os.path.join(directory, "*.pt"))) if checkpoint else []:
        if not zipfile.is_zipfile(path):
            return path
    return None


def check_report_to(training_args: TrainingArguments) -> None:
    """Before any work: every --report_to integration is installed (the Trainer would stop after preprocessing)."""
    from transformers.integrations import get_reporting_integration_callbacks

    for callback in get_reporting_integration_callbacks(training_args.report_to):
        try:
            callback()
        except (RuntimeError, ImportError) as e:
            raise UserError(f"--report_to: {str(e).strip()} Or pass --report_to none.") from e


def last_complete_checkpoint(out: str, remove_incomplete: bool) -> Optional[str]:
    """The newest usable checkpoint-N: it holds trainer_state.json (the Trainer writes it last; folders without it
    are removed) and no file cut short (such a checkpoint is skipped, with a log line, and kept for inspection)."""
    found = [(int(m[1]), os.path.join(out, m[0])) for m in map(CHECKPOINT_DIR.match, os.listdir(out))
             if m and os.path.isdir(os.path.join(out, m[0]))]
    for _, path in sorted(found, reverse=True):
        if not os.path.isfile(os.path.join(path, "trainer_state.json")):
            if remove_incomplete:  # the process died while writing it: unusable
                logger.warning(f"Removing {path}: an incomplete checkpoint (no trainer_state.json)")
                shutil.rmtree(path)
            continue
        damaged = damaged_file(path, checkpoint=True)
        if damaged is None:
            return path
        logger.warning(f"{damaged} is truncated or corrupt: {path} is skipped; falling back to an earlier checkpoint")
    return None


def check_output_dir(training_args: TrainingArguments, keep_vocab: bool = False) -> Optional[str]:
    """Return the checkpoint to resume from, clear output_dir when asked, or refuse foreign content. `keep_vocab`: a
    per-language vocab.json (--target_language) survives --overwrite_output_dir, as do the adapters."""
    out = training_args.output_dir
    if not os.path.isdir(out) or not training_args.do_train:
        return None
    with training_args.main_process_first(desc="checking output_dir"):  # only the main process deletes
        if training_args.overwrite_output_dir:
            for name in os.listdir(out) if training_args.should_save else []:
                if CHECKPOINT_DIR.match(name) or (name in (VOCAB_FILE, SUBWORD_FILE) and not keep_vocab):
                    path = os.path.join(out, name)
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            return None
        last = last_complete_checkpoint(out, remove_incomplete=training_args.should_save)
    if last is not None:
        logger.info(f"Resuming from {last} (pass --overwrite_output_dir to start afresh)")
        return last
    foreign = sorted(set(os.listdir(out)) - OWN_OUTPUT_FILES)
    if foreign:
        raise UserError(
            f"output_dir {out} is not empty ({', '.join(foreign[:3])}...) and holds no checkpoint; "
            "pass --overwrite_output_dir to reuse it or choose another --output_dir."
        )
    return None


def check_run(data_args: DataTrainingArguments, training_args: TrainingArguments) -> Optional[str]:
    """Every check that can fail before any work (so a mistake costs seconds, not a preprocessing pass); returns the
    checkpoint to resume from, or None."""
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise UserError("nothing to do: add --do_train, --do_eval and/or --do_predict (the demo's settings: "
                        "python run_speech_recognition_ctc.py examples/demo.json).")
    check_push_to_hub(training_args)
    check_report_to(training_args)
    check_lm_tools(data_args, training_args)
    check_phonemizer(data_args.phoneme_language)
    return check_output_dir(training_args, keep_vocab=bool(data_args.target_language))


def configure_distributed(config, training_args: TrainingArguments) -> None:
    """DDP settings the model needs, and one OpenMP thread per rank unless the user chose otherwise."""
    if training_args.world_size > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)  # N ranks x all cores each oversubscribes the CPU and slows every rank down
    if getattr(encoder_config(config), "layerdrop", 0) > 0 and training_args.ddp_find_unused_parameters is None:
        # A dropped layer gets no gradient in that step: DDP's reducer must look for unused parameters, which
        # re-entrant activation checkpointing does not support.
        training_args.ddp_find_unused_parameters = True
        if training_args.activation_checkpointing:
            training_args.activation_checkpointing_kwargs = {
                "use_reentrant": False, **(training_args.activation_checkpointing_kwargs or {})
            }
        if training_args.world_size > 1:
            logger.info("DDP: --layerdrop > 0, so ddp_find_unused_parameters=True (non-reentrant checkpointing)")


def reuse_cpu_memory(training_args: TrainingArguments) -> None:
    """On CPU, keep freed memory in the process (glibc) instead of unmapping every big tensor after each step.

    Each step allocates activations of hundreds of MB; glibc hands blocks that big back to the kernel when freed,
    and the kernel zeroes fresh pages again at the next step: measured here, a third of the step time went there.
    """
    if not training_args.reuse_cpu_memory or training_args.device.type != "cpu" or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl): nothing to tune
        return
    libc.mallopt(MALLOC_MMAP_MAX, 0)  # big blocks come from the heap, not from fresh mappings
    libc.mallopt(MALLOC_TRIM_THRESHOLD, 2**30)  # and stay there once freed (up to 1 GiB of free heap kept)
    logger.info("CPU memory: freed blocks are kept for reuse (--reuse_cpu_memory; higher peak RSS, faster steps)")


# ----------------------------------------------------------------------------------------------------------------------
# Data: splits from a local directory, manifest files or the hub
SPLIT_PART = re.compile(r"^(?P<name>[\w.-]+)(?:\[(?P<start>-?\d*%?):(?P<stop>-?\d*%?)\])?$")
COMMON_VOICE_SPLITS = {"validation": "dev"}  # split name -> .tsv name where they differ
# Column names other corpora use, tried (with a log line) when the default column name does not exist
AUDIO_COLUMN_ALIASES = ("audio", "file_name", "path", "audio_filepath", "file", "filename")
TEXT_COLUMN_ALIASES = ("text", "sentence", "transcript", "transcription", "normalized_text")


def parse_split_expression(expression: str) -> list[tuple[str, Optional[str], Optional[str]]]:
    """'train[:80%]+validation' -> [('train', None, '80%'), ('validation', None, None)]."""
    parts = []
    for part in expression.split("+"):
        match = SPLIT_PART.match(part.strip())
        if not match:
            raise UserError(
                f"cannot read split expression {expression!r}: use names joined by '+', each optionally sliced "
                "as name[start:stop] with numbers or percentages, e.g. train[:80%]+validation."
            )
        parts.append((match["name"], match["start"] or None, match["stop"] or None))
    return parts


def slice_dataset(ds: datasets.Dataset, start: Optional[str], stop: Optional[str]) -> datasets.Dataset:
    """Apply a [start:stop] slice given as numbers or percentages of the split."""
    def index(bound):
        if bound is None:
            return None
        return round(len(ds) * int(bound[:-1]) / 100) if bound.endswith("%") else int(bound)

    if start is None and stop is None:
        return ds
    return ds.select(range(len(ds))[index(start):index(stop)])


def read_table(path: str) -> "pandas.DataFrame":  # noqa: F821
    """A CSV, TSV, JSON or JSON-lines manifest as a DataFrame of strings (Common Voice TSVs contain raw quotes)."""
    import pandas as pd

    if path.endswith((".json", ".jsonl")):
        with open(path, encoding="utf-8") as f:
            is_array = f.read(1024).lstrip().startswith("[")
        return pd.read_json(path, lines=not is_array, dtype=False)
    if path.endswith(".tsv"):
        return pd.read_csv(path, sep="\t", quoting=3, dtype=str, keep_default_na=False)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def table_to_dataset(table, base_dir: str, audio_columns: tuple[str, ...]) -> datasets.Dataset:
    """Resolve relative audio paths against `base_dir` and build a Dataset; audiofolder's `file_name` -> `audio`."""
    if "file_name" in table.columns and AUDIO_COLUMN not in table.columns:
        table = table.rename(columns={"file_name": AUDIO_COLUMN})
    for column in audio_columns:
        if column in table.columns:
            table[column] = [os.path.join(base_dir, str(p)) for p in table[column]]
    return datasets.Dataset.from_pandas(table, preserve_index=False)


def detect_layout(data_dir: str) -> str:
    """Which local corpus layout `data_dir` holds: saved, shards, common_voice, splits or librispeech."""
    entries = set(os.listdir(data_dir))
    subdirs = [d for d in entries if os.path.isdir(os.path.join(data_dir, d))]
    if entries & {"dataset_dict.json", "state.json"}:
        return "saved"
    if any(glob.glob(os.path.join(data_dir, d, "*.tar")) for d in subdirs):
        return "shards"
    if "clips" in entries and entries & {"train.tsv", "dev.tsv", "test.tsv", "validated.tsv"}:
        return "common_voice"
    if any(os.path.isfile(os.path.join(data_dir, d, m)) for d in subdirs for m in ("metadata.csv", "metadata.jsonl")):
        return "splits"
    for d in subdirs:
        for _ in glob.iglob(os.path.join(data_dir, d, "*", "*", "*.trans.txt")):
            return "librispeech"
    raise UserError(
        f"--dataset_name {data_dir}: no known corpus layout. Looked for: split sub-directories with metadata.csv or "
        "metadata.jsonl (audiofolder); clips/ plus train.tsv/dev.tsv/test.tsv (Common Voice); "
        "SPLIT/SPEAKER/CHAPTER/*.trans.txt (LibriSpeech); SPLIT/*.tar (WebDataset shards); a datasets "
        "save_to_disk directory. "
        "Or pass manifests with --train_file/--eval_file."
    )


def shard_fields(tar_path: str) -> tuple[str, str, Optional[dict]]:
    """The audio and transcript members of a shard's clips ('flac', 'txt'), from its first clip; and that clip's
    parsed JSON when the transcript is in KEY.json."""
    fields, key, parsed = {}, None, None
    try:
        with tarfile.open(tar_path) as tar:
            for member in tar:
                name = os.path.basename(member.name)
                if not member.isfile() or "." not in name:
                    continue
                stem, extension = name.split(".", 1)
                if key is not None and stem != key:
                    break
                key, fields[extension.lower()] = stem, member
                if extension.lower() == "json":
                    parsed = json.load(tar.extractfile(member))
    except (tarfile.TarError, OSError, ValueError) as e:
        raise UserError(f"{tar_path}: not a readable tar shard ({e}); rewrite it with tools/make_shards.py.") from e
    audio = [f for f in fields if f in SHARD_AUDIO_EXTENSIONS]
    text = [f for f in ("txt", "json") if f in fields]
    if not audio or not text:
        raise UserError(
            f"{tar_path}: its first clip {key!r} has members {', '.join(sorted(fields)) or 'none'}; a shard pairs "
            f"KEY.{'|'.join(SHARD_AUDIO_EXTENSIONS)} with KEY.txt or KEY.json (write shards with tools/make_shards.py)."
        )
    return audio[0], text[0], parsed


def load_shards(tars: list[str], stream: bool, cache_dir):
    """WebDataset tar shards, read by the datasets library's `webdataset` builder: streamed (the training split) or
    read once into Arrow (evaluation). Columns: `audio` ({'path': 'SHARD/KEY.EXT', 'bytes': the file}), and `text`
    from KEY.txt, or every field of KEY.json."""
    audio, text, first_json = shard_fields(tars[0])
    string = datasets.Value("string")
    # Explicit features: the builder would type the audio member as datasets.Audio, whose encoding needs torchcodec.
    fields = datasets.Features({audio: datasets.Value("binary"), "__key__": string, "__url__": string})
    if text == "txt":
        columns = {RAW_TEXT_COLUMN: string}
    else:
        columns = dict(datasets.Features.from_arrow_schema(pa.Table.from_pylist([first_json]).schema))
    fields[text] = string if text == "txt" else columns
    ds = datasets.load_dataset("webdataset", data_files={"shards": tars}, split="shards", streaming=stream,
                               features=fields, cache_dir=cache_dir)

    def to_columns(clip: dict) -> dict:
        path = f"{os.path.basename(clip['__url__'])}/{clip['__key__']}.{audio}"
        row = {AUDIO_COLUMN: {"bytes": clip[audio], "path": path}}
        row.update({RAW_TEXT_COLUMN: clip["txt"]} if text == "txt" else (clip["json"] or {}))
        return row

    out = datasets.Features({AUDIO_COLUMN: {"bytes": datasets.Value("binary"), "path": string}, **columns})
    return ds.map(to_columns, remove_columns=list(fields), features=out)


def load_local_split(data_dir: str, layout: str, name: str) -> datasets.Dataset:
    """One named split of a local corpus, with audio paths made absolute."""
    if layout == "saved":
        saved = datasets.load_from_disk(data_dir)
        if isinstance(saved, datasets.Dataset):
            return saved
        if name not in saved:
            raise UserError(f"split {name!r} not in {data_dir}; it has: {', '.join(saved)}.")
        return saved[name]
    if layout == "common_voice":
        tsv = os.path.join(data_dir, COMMON_VOICE_SPLITS.get(name, name) + ".tsv")
        if not os.path.isfile(tsv):
            found = sorted(f[:-4] for f in os.listdir(data_dir) if f.endswith(".tsv"))
            raise UserError(f"split {name!r}: no {tsv}; this Common Voice release has: {', '.join(found)}.")
        return table_to_dataset(read_table(tsv), os.path.join(data_dir, "clips"), ("path",))
    split_dir = os.path.join(data_dir, name)
    if layout == "librispeech" and not os.path.isdir(split_dir):  # the hub's "train.clean.100" naming
        split_dir = os.path.join(data_dir, name.replace(".", "-"))
    if not os.path.isdir(split_dir):
        found = sorted(d for d in os.listdir(data_dir) if os.path.isdir(os.path.join(data_dir, d)))
        raise UserError(f"split {name!r} not found in {data_dir}; its splits are: {', '.join(found) or 'none'}.")
    if layout == "librispeech":
        rows = {AUDIO_COLUMN: [], RAW_TEXT_COLUMN: [], "speaker_id": [], "chapter_id": [], "id": []}
        for trans in sorted(glob.glob(os.path.join(split_dir, "*", "*", "*.trans.txt"))):
            with open(trans, encoding="utf-8") as f:
                for line in f:
                    utt, _, text = line.strip().partition(" ")
                    speaker, chapter, _ = utt.split("-", 2)
                    rows[AUDIO_COLUMN].append(os.path.join(os.path.dirname(os.path.abspath(trans)), utt + ".flac"))
                    rows[RAW_TEXT_COLUMN].append(text)
                    rows["speaker_id"].append(speaker)
                    rows["chapter_id"].append(chapter)
                    rows["id"].append(utt)
        return datasets.Dataset.from_dict(rows)
    for metadata in ("metadata.csv", "metadata.jsonl"):
        path = os.path.join(split_dir, metadata)
        if os.path.isfile(path):
            return table_to_dataset(read_table(path), os.path.abspath(split_dir), AUDIO_COLUMN_ALIASES)
    raise UserError(f"split {name!r}: expected {split_dir}/metadata.csv or metadata.jsonl.")


def shard_split_files(data_dir: str, expression: str) -> list[str]:
    """The tar shards of a split expression ('train+validation'; slices need a corpus with a length)."""
    tars = []
    for split, start, stop in parse_split_expression(expression):
        if start or stop:
            raise UserError(f"split {expression!r}: tar shards cannot be sliced; use --max_train_samples/"
                            "--max_eval_samples, or write the slice as shards of its own (tools/make_shards.py).")
        found = sorted(glob.glob(os.path.join(data_dir, split, "*.tar")))
        if not found:
            splits = sorted(d for d in os.listdir(data_dir) if glob.glob(os.path.join(data_dir, d, "*.tar")))
            raise UserError(f"split {split!r}: no {data_dir}/{split}/*.tar; the shard splits are: {', '.join(splits)}.")
        tars += found
    return tars


def load_split(data_args: DataTrainingArguments, expression: str, manifest: Optional[str], cache_dir,
               stream: bool = False):
    """A split expression from a manifest file, a local directory or the hub, with the audio left undecoded.
    Tar shards come as a stream (an IterableDataset) when `stream`, else as a Dataset."""
    if manifest:
        if not os.path.isfile(manifest):
            raise UserError(f"manifest {manifest} does not exist.")
        base = os.path.dirname(os.path.abspath(manifest))
        return table_to_dataset(read_table(manifest), base, AUDIO_COLUMN_ALIASES)
    name = data_args.dataset_name
    if os.path.isdir(name) and detect_layout(name) == "shards":
        ds = load_shards(shard_split_files(name, expression), stream, cache_dir)
    elif os.path.isdir(name):
        layout = detect_layout(name)
        parts = [
            slice_dataset(load_local_split(name, layout, split), start, stop)
            for split, start, stop in parse_split_expression(expression)
        ]
        ds = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    elif os.path.isfile(name):
        raise UserError(f"--dataset_name {name} is a file: pass manifests as --train_file/--eval_file.")
    elif name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise UserError(f"--dataset_name {name}: no such directory (and not a hub id).")
    else:
        try:
            ds = datasets.load_dataset(
                name, data_args.dataset_config_name, split=expression, cache_dir=cache_dir
            )
        except (ConnectionError, FileNotFoundError, ValueError) as e:
            raise UserError(
                f"could not load {name!r} split {expression!r} from the hub ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}); check the name and network, or pass a local directory."
            ) from e
    # We decode audio ourselves (soundfile + soxr): the datasets library's decoder needs torchcodec and FFmpeg.
    for column, feature in ds.features.items():
        if isinstance(feature, datasets.Audio):
            ds = ds.cast_column(column, datasets.Audio(decode=False))
    return ds


def resolve_column(ds: datasets.Dataset, wanted: str, default: str, aliases: tuple[str, ...], flag: str, split) -> str:
    """The asked-for column; for a default name also the one known alias present. Else fail listing the columns."""
    if wanted in ds.column_names:
        return wanted
    present = [a for a in aliases if a in ds.column_names] if wanted == default else []
    if len(present) == 1:
        logger.info(f"Data [{split}]: no column {wanted!r}, using {present[0]!r} as the {flag} column")
        return present[0]
    raise UserError(
        f"--{flag}_column_name {wanted!r} not found in split {split!r}; its columns are: {', '.join(ds.column_names)}."
    )


def passthrough_columns(ds, used=()) -> list[str]:
    """The scalar columns of an eval/predict split besides audio and text (speaker, gender, accent, ...): carried to
    its predictions file, where report.html breaks the error rates down by them."""
    ours = {AUDIO_COLUMN, RAW_TEXT_COLUMN, TARGET_TEXT_COLUMN, LENGTH_COLUMN, SOURCE_RATE_COLUMN, CHANNELS_COLUMN,
            MIN_FRAMES_COLUMN, CLIP_ID_COLUMN, DROP_COLUMN, LABELS_COLUMN, *PREDICTION_COLUMNS, *used}
    scalar = ("string", "large_string", "int8", "int16", "int32", "int64", "bool")
    return [c for c, f in (ds.features or {}).items()
            if c not in ours and isinstance(f, datasets.Value) and f.dtype in scalar]


def is_stream(ds) -> bool:
    """Whether a split is streamed (tar shards for training): no length, read in order, decoded as it is read."""
    return isinstance(ds, datasets.IterableDataset)


def this_process_stream(ds: datasets.IterableDataset, training_args: TrainingArguments) -> datasets.IterableDataset:
    """The training stream as this process reads it: its own shards under DDP, reshuffled each epoch (the shard order,
    then within a buffer of clips). Stops on flags a stream cannot honour."""
    if training_args.max_steps <= 0:
        raise UserError("the training split is streamed from tar shards, which have no length: give --max_steps.")
    if training_args.max_batch_duration is not None:
        raise UserError("--max_batch_duration needs every clip's length up front, which streamed tar shards do not "
                        "give; use --per_device_train_batch_size.")
    world, shards = training_args.world_size, ds.n_shards
    if shards % world:
        logger.warning(f"{shards} training shards do not divide among {world} processes: each process reads every "
                       f"shard and keeps every {world}th clip. Write a multiple of {world} shards to read each once.")
    ds = split_dataset_by_node(ds, rank=training_args.process_index, world_size=world)
    if ds.n_shards < max(training_args.dataloader_num_workers, 1):
        logger.warning(f"{ds.n_shards} shards per process for {training_args.dataloader_num_workers} DataLoader "
                       "workers: some workers will idle; write more shards (tools/make_shards.py --clips_per_shard).")
    logger.info(f"Streaming [train]: {shards:,} tar shards, {ds.n_shards:,} for each of {world} process(es), "
                f"shuffled within {STREAM_SHUFFLE_BUFFER:,} clips")
    return ds.shuffle(seed=training_args.seed, buffer_size=STREAM_SHUFFLE_BUFFER)


def load_splits(data_args: DataTrainingArguments, training_args: TrainingArguments, cache_dir) -> datasets.DatasetDict:
    """Load the train, eval and/or predict split with the columns `audio` (path or bytes) and the raw transcript `text`,
    plus, in eval and predict splits, the manifest's scalar columns (passthrough_columns)."""
    raw = datasets.DatasetDict()
    wanted = []
    if training_args.do_train:
        wanted.append(("train", data_args.train_split_name, data_args.train_file, data_args.max_train_samples))
    if training_args.do_eval:
        wanted.append(("eval", data_args.eval_split_name, data_args.eval_file, data_args.max_eval_samples))
    if training_args.do_predict:  # the eval split unless told otherwise
        own = data_args.predict_file or data_args.predict_split_name
        wanted.append(("predict", data_args.predict_split_name or data_args.eval_split_name,
                       data_args.predict_file if own else data_args.eval_file, None))
    for key, expression, manifest, max_samples in wanted:
        ds = load_split(data_args, expression, manifest, cache_dir, stream=key == "train")
        split = manifest or expression
        audio = resolve_column(ds, data_args.audio_column_name, AUDIO_COLUMN, AUDIO_COLUMN_ALIASES, "audio", split)
        text = resolve_column(ds, data_args.text_column_name, RAW_TEXT_COLUMN, TEXT_COLUMN_ALIASES, "text", split)
        if max_samples is not None:
            ds = ds.take(max_samples) if is_stream(ds) else ds.select(range(min(max_samples, len(ds))))
        ds = ds.select_columns([audio, text, *([] if key == "train" else passthrough_columns(ds, (audio, text)))])
        ds = ds.rename_columns({c: n for c, n in ((audio, AUDIO_COLUMN), (text, RAW_TEXT_COLUMN)) if c != n})
        raw[key] = this_process_stream(ds, training_args) if is_stream(ds) else ds
    logger.info("Loaded: " + ", ".join(f"{k} {'a stream' if is_stream(ds) else f'{len(ds):,} clips'}"
                                       for k, ds in raw.items()))
    return raw


# ----------------------------------------------------------------------------------------------------------------------
# Text normalisation and vocabulary
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


def derived_fingerprint(ds: datasets.Dataset, *parts) -> str:
    """The cache key of what a map makes of `ds` with these settings. datasets keeps a dataset's fingerprint in a
    private attribute; reading it beats letting datasets hash the map function, which changes between `python
    script.py` (__main__) and an import."""
    return Hasher.hash([ds._fingerprint, *parts])


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
    logger.info(f"Read the transcripts of the first {len(texts):,} streamed clips (for the vocabulary and text report)")
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


def hub_kwargs(model_args, data_args) -> dict:
    """The hub arguments of every from_pretrained call: the cache, and whether remote code may run."""
    return {"cache_dir": model_args.cache_dir, "trust_remote_code": data_args.trust_remote_code}  # token: HF_TOKEN


def load_existing_tokenizer(model_args, data_args, training_args):
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
    language = data_args.target_language
    if language:  # an MMS-style tokenizer: one vocabulary per language
        languages = getattr(tokenizer, "vocab", {})
        if language not in languages or not hasattr(tokenizer, "set_target_lang"):
            known = ", ".join(sorted(languages)[:40]) if isinstance(languages, dict) else ""
            raise UserError(f"--target_language {language}: the tokenizer of {source} has no vocabulary for it "
                            f"(it has: {known or 'one vocabulary, no languages'}).")
        tokenizer.set_target_lang(language)
    logger.info(f"Tokenizer: reused from {source} ({len(tokenizer):,} tokens{f', {language}' if language else ''})")
    return tokenizer


def has_ctc_head(config) -> bool:
    """Whether a checkpoint was saved with a CTC head (a `...ForCTC` architecture), rather than as a bare encoder."""
    return any(a.endswith("ForCTC") for a in config.architectures or [])


def shipped_tokenizer(model_args, data_args, training_args):
    """When fine-tuning a checkpoint that ships a CTC head and a tokenizer, and no other vocabulary is given or already
    built in output_dir: that tokenizer, to keep with its head if it covers the transcripts. Else None."""
    source = model_args.model_name_or_path
    if (not training_args.do_train or source is None or model_args.tokenizer_name_or_path or data_args.phoneme_language
            or data_args.vocab_type != "char" or data_args.target_language
            or os.path.isfile(os.path.join(training_args.output_dir, VOCAB_FILE))):
        return None
    hub = hub_kwargs(model_args, data_args)
    try:
        if not has_ctc_head(AutoConfig.from_pretrained(source, **hub)):
            return None
        return AutoTokenizer.from_pretrained(source, **hub)
    except (OSError, ValueError, TypeError):  # no tokenizer files (a bare encoder), or no config at all (load_model says)
        return None


def unknown_token_share(tokenizer, texts) -> float:
    """The share of label tokens the tokenizer encodes as unknown (0 for tokenizers without an unknown token)."""
    texts = [t for t in texts if t]
    ids = [i for row in tokenizer(texts, add_special_tokens=False).input_ids for i in row] if texts else []
    return sum(i == tokenizer.unk_token_id for i in ids) / max(len(ids), 1) if tokenizer.unk_token_id is not None else 0.0


def describe_vocabulary(tokenizer) -> str:
    """'characters, 31 tokens', 'phonemes, 50 tokens' or 'subword pieces, 256 tokens', for the log and data report."""
    kind = ("phonemes" if isinstance(tokenizer, Wav2Vec2PhonemeCTCTokenizer) else
            "characters" if is_character_tokenizer(tokenizer) else "subword pieces")
    return f"{kind}, {len(tokenizer):,} tokens"


def choose_tokenizer(raw, model_args, data_args, training_args):
    """Pick the tokenizer and normalise the transcripts for it: the tokenizer given, else the checkpoint's own when it
    covers the normalised training text (returned), else None: build_tokenizer makes a vocabulary from the text."""
    tokenizer = load_existing_tokenizer(model_args, data_args, training_args)
    shipped = shipped_tokenizer(model_args, data_args, training_args) if tokenizer is None else None
    case = vocabulary_case((tokenizer or shipped).get_vocab()) if (tokenizer or shipped) is not None else "lower"
    text = normalize_transcripts(raw, data_args, training_args, case)
    if shipped is not None:
        share = unknown_token_share(shipped, transcripts(text["train"]))
        if share <= KEEP_TOKENIZER_MAX_UNK:
            logger.info(f"Tokenizer: the checkpoint's own ({len(shipped):,} tokens, {share:.2%} of the training labels "
                        "unknown), kept with its CTC head")
            return shipped, text
        logger.info(f"Tokenizer: the checkpoint's own leaves {share:.1%} of the training labels unknown; building a new "
                    "vocabulary from the transcripts (and a new CTC head)")
        if case != "lower":
            text = normalize_transcripts(raw, data_args, training_args, "lower")
    return tokenizer, text


def train_subword_vocab(texts: list[str], kind: str, size: int, unk_token: str, pad_token: str):
    """A SentencePiece-style `kind` ('bpe' or 'unigram') vocabulary of about `size` pieces trained on the transcripts
    with the tokenizers library: words marked by `▁`, unk first, pad (the CTC blank) second."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    alphabet = {c for text in texts for c in text if c != " "} | {"▁"}
    if size < len(alphabet) + 2:
        raise UserError(f"--vocab_size {size} is under the text's {len(alphabet)} characters (with ▁) plus unk and pad: "
                        f"pass at least {len(alphabet) + 2}, or --vocab_type char.")
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


def build_subword_tokenizer(data_args, training_args, raw: datasets.DatasetDict):
    """--vocab_type bpe/unigram: train the vocabulary once (main process), save it in output_dir, load it everywhere.

    It is wrapped as a ParakeetTokenizer: a CTC tokenizer (repeats merged, pad dropped as the blank) that
    AutoTokenizer and AutoProcessor load back from output_dir. An existing one there is reused, as vocab.json is.
    """
    path = os.path.join(training_args.output_dir, SUBWORD_FILE)
    special = {"unk_token": data_args.unk_token, "pad_token": data_args.pad_token}
    with training_args.main_process_first(desc="vocabulary"):
        if training_args.should_save and not os.path.isfile(path):
            texts = [t for key in ("train", "eval") if key in raw for t in transcripts(raw[key]) if t]
            size = data_args.vocab_size or DEFAULT_SUBWORD_SIZE
            trained = train_subword_vocab(texts, data_args.vocab_type, size, **special)
            lowered = "" if trained.get_vocab_size() >= size else f" (lowered from {size:,}: the text supports no more)"
            transformers.ParakeetTokenizer(tokenizer_object=trained, **special).save_pretrained(training_args.output_dir)
            logger.info(f"Vocabulary: {data_args.vocab_type}, {trained.get_vocab_size():,} pieces{lowered} trained on "
                        f"{len(texts):,} transcripts{'' if data_args.vocab_size else ' (the default --vocab_size)'}, "
                        f"written to {path}")
        else:
            logger.info(f"Vocabulary: reusing {path}")
    return AutoTokenizer.from_pretrained(training_args.output_dir)


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
    return {**languages, language: vocab}, f"{'rebuilt' if language in languages else 'added'} the {language} vocabulary"


def build_tokenizer(model_args, data_args, training_args, raw: datasets.DatasetDict):
    """A character (or phoneme) tokenizer over the train and eval transcripts; an existing vocab.json is reused.
    With --target_language the vocab.json holds one vocabulary per language (the checkpoint's, or output_dir's)."""
    if data_args.vocab_type != "char":
        return build_subword_tokenizer(data_args, training_args, raw)
    special = {
        "word_delimiter_token": data_args.word_delimiter_token,
        "unk_token": data_args.unk_token,
        "pad_token": data_args.pad_token,
    }
    vocab_path = os.path.join(training_args.output_dir, VOCAB_FILE)
    language = data_args.target_language
    with training_args.main_process_first(desc="vocabulary"):
        if training_args.should_save and language:
            hub = hub_kwargs(model_args, data_args)
            languages = (language_vocabularies(vocab_path, hub) if os.path.isfile(vocab_path)
                         else language_vocabularies(model_args.model_name_or_path, hub))
            texts = (t for key in ("train", "eval") if key in raw for t in transcripts(raw[key]))
            languages, done = add_language_vocab(languages, language, build_vocab(texts, **special),
                                                 data_args.overwrite_lang_vocab)
            os.makedirs(training_args.output_dir, exist_ok=True)
            with open(vocab_path, "w", encoding="utf-8") as f:
                json.dump(languages, f, ensure_ascii=False, indent=1)
            logger.info(f"Vocabulary: {done} ({len(languages[language]):,} tokens), {len(languages):,} language(s) in "
                        f"{vocab_path}")
        elif training_args.should_save and not os.path.isfile(vocab_path):
            texts = (t for key in ("train", "eval") if key in raw for t in transcripts(raw[key]))
            vocab = build_vocab(texts, **special, phonemes=bool(data_args.phoneme_language))
            os.makedirs(training_args.output_dir, exist_ok=True)
            with open(vocab_path, "w", encoding="utf-8") as f:
                json.dump(vocab, f, ensure_ascii=False, indent=1)
            logger.info(f"Vocabulary: {len(vocab):,} tokens built from the transcripts, written to {vocab_path}")
        else:
            logger.info(f"Vocabulary: reusing {vocab_path}")
    if data_args.phoneme_language:  # phonemizes raw text itself when used elsewhere; decoding needs no phonemizer
        return Wav2Vec2PhonemeCTCTokenizer(vocab_path, **special, phonemizer_lang=data_args.phoneme_language)
    # The CTC character tokenizer does not depend on the model type (upstream has none for WavLM and SEW).
    return Wav2Vec2CTCTokenizer(vocab_path, **special, **({"target_lang": language} if language else {}))


def text_report(raw: datasets.DatasetDict, tokenizer, data_args: DataTrainingArguments) -> dict:
    """Character (or phoneme) inventory and unknown share per split; warn on eval-only ones, stop when too many unknown."""
    vocab, phonemes = tokenizer.get_vocab(), bool(data_args.phoneme_language)
    counts = {
        k: Counter(u for t in transcripts(ds) for u in text_units(t, data_args.word_delimiter_token, phonemes))
        for k, ds in raw.items()
    }
    if "train" in counts and "eval" in counts:
        eval_only = sorted(set(counts["eval"]) - set(counts["train"]))
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
            share = unknown_token_share(tokenizer, transcripts(raw[key]))
        stats[key] = {"characters": (" " if phonemes else "").join(sorted(counter)), "distinct": len(counter),
                      "unknown_character_share": round(share, 4), "vocabulary": describe_vocabulary(tokenizer)}
        if share > data_args.max_unk_share:
            worst = " ".join(c for c, _ in unknown.most_common(10))
            raise UserError(
                f"{share:.1%} of the {key} labels are unknown to the tokenizer (most frequent: {worst}); "
                "use a tokenizer that covers them, add them to --chars_to_ignore, or raise --max_unk_share."
            )
    return stats


def prepare_text(raw, model_args, data_args, training_args):
    """The transcripts normalised (or phonemized) for the tokenizer, the tokenizer (given, the checkpoint's own, or
    built from the text), and the text report. Returns (tokenizer, transcripts, text_stats)."""
    tokenizer, raw = choose_tokenizer(raw, model_args, data_args, training_args)
    if data_args.phoneme_language:  # phonemized once here (cached, parallel), not by the tokenizer per clip
        # A given phoneme tokenizer may have no word delimiter (e.g. facebook/wav2vec2-xlsr-53-espeak-cv-ft).
        delimiter = tokenizer.init_kwargs.get("word_delimiter_token") if tokenizer else data_args.word_delimiter_token
        raw = phonemize_transcripts(raw, data_args, training_args, delimiter)
    if tokenizer is None:
        tokenizer = build_tokenizer(model_args, data_args, training_args, raw)
    return tokenizer, raw, text_report(raw, tokenizer, data_args)


# ----------------------------------------------------------------------------------------------------------------------
# Model families: what differs between the CTC models of transformers, in one place
#
# wav2vec2-era models (wav2vec2, HuBERT, WavLM, UniSpeech(-SAT), SEW(-D), Data2Vec-Audio, Wav2Vec2-Conformer) read the
# waveform and keep every setting in their config; Wav2Vec2-BERT reads fbank features; Parakeet, LASR, OmniASR and
# Granite Speech keep their encoder's settings in a sub-config and call their projection `ctc_head`. Everything else in
# the script goes through the helpers below: lengths in samples, labels, inputs and ids are the same for every family.

# Our regularisation and CTC flags, with upstream's defaults: wav2vec2-era configs get these when a flag is unset.
UPSTREAM_MODEL_DEFAULTS = {
    "attention_dropout": 0.0, "activation_dropout": 0.0, "feat_proj_dropout": 0.0, "hidden_dropout": 0.0,
    "final_dropout": 0.0, "mask_time_prob": 0.05, "mask_time_length": 10, "mask_feature_prob": 0.0,
    "mask_feature_length": 10, "layerdrop": 0.0, "ctc_zero_infinity": False,
}
CONFIG_KEY_ALIASES = {"hidden_dropout": ("hidden_dropout", "dropout")}  # Parakeet and LASR call it `dropout`
# Feature frames a feature extractor makes of n samples (the frames it marks valid); waveform models read samples.
FEATURE_FRAMES = {
    # Wav2Vec2-BERT: 25 ms Kaldi fbank windows every 10 ms, stacked in pairs
    "SeamlessM4TFeatureExtractor": lambda fe, n: np.maximum((n - 400) // 160 + 1, 0) // fe.stride,
    # Parakeet: a centred STFT whose last, partial frame is masked
    "ParakeetFeatureExtractor": lambda fe, n: (n + fe.n_fft // 2 * 2 - fe.n_fft) // fe.hop_length,
    # LASR: the windows that fit inside the clip
    "LasrFeatureExtractor": lambda fe, n: np.maximum((n - fe.win_length) // fe.hop_length + 1, 0),
    # Granite Speech: mel frames stacked in groups of `frame_stacking`, the last group padded
    "GraniteSpeech5FeatureExtractor": lambda fe, n: -(-(n // fe.hop_length) // fe.frame_stacking),
}
# What --freeze_feature_encoder freezes in models without freeze_feature_encoder(): the module that turns the input
# into encoder frames. None: nothing (the features go through a single linear projection).
FRONT_ENDS = {
    "wav2vec2-bert": None,
    "parakeet_ctc": "encoder.subsampling",  # 2-D convolutions, 8x subsampling
    "lasr_ctc": "encoder.subsampler",  # 2-D convolutions, 4x subsampling
    "omniasr_ctc": "model.audio_tower.subsampling",  # the wav2vec2-style convolutional feature encoder
    "granite_speech5_ctc": None,
}


def encoder_config(config):
    """The config holding the encoder's settings: the sub-config of the newer families, else the config itself."""
    return getattr(config, "encoder_config", None) or getattr(config, "audio_config", None) or config


def model_input_names(feature_extractor) -> tuple[str, str]:
    """The model's input (`input_values`: samples, `input_features`: frames) and mask names (OmniASR: `padding_mask`)."""
    names = feature_extractor.model_input_names
    return names[0], names[1] if len(names) > 1 else "attention_mask"


def extract_features(feature_extractor, audio: np.ndarray) -> np.ndarray:
    """One clip's model input, time first ([samples] or [frames, features]), cut to the frames the extractor marks valid."""
    name, mask_name = model_input_names(feature_extractor)
    inputs = feature_extractor(audio, sampling_rate=feature_extractor.sampling_rate, return_attention_mask=True)
    values = np.asarray(inputs[name][0], dtype=np.float32)
    if name == WAVEFORM_INPUT and values.ndim == 2:  # OmniASR gives the waveform a channel axis: [1, samples]
        values = values[0]
    mask = inputs.get(mask_name)
    return values[: int(np.asarray(mask[0]).sum())] if mask is not None else values


def has_channel_axis(feature_extractor) -> bool:
    """Whether the model reads the waveform with a channel axis ([batch, 1, samples]), as OmniASR does."""
    name, _ = model_input_names(feature_extractor)
    rate = feature_extractor.sampling_rate
    return name == WAVEFORM_INPUT and np.ndim(feature_extractor(np.zeros(rate // 10), sampling_rate=rate)[name][0]) == 2


def feature_frames(feature_extractor, samples) -> np.ndarray:
    """Input frames the model gets for clips of `samples` samples (the samples themselves for waveform models)."""
    samples = np.asarray(samples, dtype=np.int64)
    if model_input_names(feature_extractor)[0] == WAVEFORM_INPUT:
        return samples
    rule = FEATURE_FRAMES.get(type(feature_extractor).__name__)
    if rule is None:  # an extractor we have no rule for: measure it (exact, but it computes every clip's features)
        return np.array([len(extract_features(feature_extractor, np.zeros(n, np.float32))) for n in samples])
    return rule(feature_extractor, samples)


def output_frames(model, feature_extractor, samples, before_adapter: bool = False) -> np.ndarray:
    """CTC output frames (logits) for clips of `samples` samples, by the model's own length arithmetic.

    `before_adapter`: the frames SpecAugment masks, before a wav2vec2-style adapter (--add_adapter) subsamples them.
    """
    # transformers has no public API for this: the models' private length functions are the only exact source.
    frames = torch.as_tensor(feature_frames(feature_extractor, samples))
    if hasattr(model, "_get_feat_extract_output_lengths"):  # wav2vec2-era and Wav2Vec2-BERT: conv strides (+ adapter)
        skip = before_adapter and getattr(model.config, "add_adapter", False)
        out = model._get_feat_extract_output_lengths(frames, **({"add_adapter": False} if skip else {}))
    elif hasattr(model, "_get_subsampling_output_length"):  # Parakeet, LASR, OmniASR, Granite Speech: subsampling
        out = model._get_subsampling_output_length(frames)
    else:
        raise UserError(f"{type(model).__name__} has no output-length function (_get_feat_extract_output_lengths or "
                        "_get_subsampling_output_length), which the script needs to align labels with its frames.")
    return np.maximum(np.asarray(out, dtype=np.int64), 0)


def configure_model(config, model_args: ModelArguments) -> list[str]:
    """Write the regularisation and CTC flags where the family reads them; return the flags it has no setting for.

    An unset flag gets upstream's default in a wav2vec2-era config (upstream writes them all); the newer families keep
    their checkpoint's own value (e.g. Parakeet's dropout 0.1 and ctc_zero_infinity=True).
    """
    encoder = encoder_config(config)
    configs = [config] if encoder is config else [config, encoder]
    unused = []
    for flag, default in UPSTREAM_MODEL_DEFAULTS.items():
        value = getattr(model_args, flag)
        if value is None and encoder is config:
            value = default
        if value is None:
            continue
        targets = [(c, k) for c in configs for k in CONFIG_KEY_ALIASES.get(flag, (flag,)) if hasattr(c, k)]
        for target, key in targets:
            setattr(target, key, value)
        if not targets and getattr(model_args, flag) is not None:
            unused.append(flag)
    config.ctc_loss_reduction = model_args.ctc_loss_reduction
    if hasattr(config, "add_adapter"):
        config.add_adapter = model_args.add_adapter
    elif model_args.add_adapter:
        raise UserError(f"--add_adapter: {config.model_type} models have no adapter; drop the flag.")
    return unused


def has_spec_augment(config) -> bool:
    """Whether the family masks time steps in training (wav2vec2-era and Wav2Vec2-BERT do; the newer ones do not)."""
    return any(hasattr(c, "mask_time_prob") for c in (config, encoder_config(config)))


def set_ctc_vocabulary(config, tokenizer) -> None:
    """Size a new CTC head for `tokenizer`, whose pad token is the blank of the loss and of decoding."""
    config.vocab_size = len(tokenizer)
    config.pad_token_id = tokenizer.pad_token_id
    if hasattr(config, "blank_token_id"):  # OmniASR's loss reads a blank id of its own
        config.blank_token_id = tokenizer.pad_token_id
    encoder = encoder_config(config)
    if encoder is not config and hasattr(encoder, "vocab_size"):  # Granite ties its head to the encoder's projection
        encoder.vocab_size = len(tokenizer)


def blank_token_id(config, tokenizer) -> int:
    """The CTC blank: OmniASR's own `blank_token_id`, else the tokenizer's pad token (what CTC tokenizers drop, and
    what the loss reads as `pad_token_id` once load_model has aligned the two)."""
    blank = getattr(config, "blank_token_id", None)
    return tokenizer.pad_token_id if blank is None else blank


def ctc_head_name(model) -> str:
    """Where the CTC projection lives: `lm_head` (wav2vec2-era, Wav2Vec2-BERT) or `ctc_head` (newer families)."""
    return "ctc_head" if hasattr(model, "ctc_head") else "lm_head"


def freeze_front_end(model) -> str:
    """--freeze_feature_encoder: freeze the convolutional feature encoder or subsampling stack; say what was frozen."""
    if hasattr(model, "freeze_feature_encoder"):
        model.freeze_feature_encoder()
        return "froze the convolutional feature encoder"
    path = FRONT_ENDS.get(model.config.model_type)
    if path is None:
        return "froze nothing (this model has no convolutional front end)"
    model.get_submodule(path).requires_grad_(False)
    return f"froze the front end ({path})"


def processor_class(model_type: str):
    """The family's own processor class, so AutoProcessor and the pipeline load what we save."""
    # transformers' own model type -> processor table; no public function answers this without a saved checkpoint
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    return getattr(transformers, PROCESSOR_MAPPING_NAMES.get(model_type) or "Wav2Vec2Processor")


def is_character_tokenizer(tokenizer) -> bool:
    """Whether the tokenizer spells transcripts unit by unit (characters or phonemes) rather than in subword pieces."""
    return isinstance(tokenizer, (Wav2Vec2CTCTokenizer, Wav2Vec2PhonemeCTCTokenizer))


def ctc_decode(tokenizer, ids, blank_id: int) -> str:
    """Greedy CTC output to text: repeats merged, blanks (and -100 past the clip's end) dropped, then the tokenizer
    joins the tokens at its own word boundaries (`|` or SentencePiece's `▁`)."""
    kept = [int(i) for i, _ in itertools.groupby(ids) if i != blank_id and i != LABEL_PAD_ID]
    return tokenizer.decode(kept, group_tokens=False)  # CTC tokenizers would merge repeats again: we already did


def decode_labels(tokenizer, ids) -> str:
    """A label sequence (padded with -100) back to its text; repeated tokens are real here."""
    return tokenizer.decode([int(i) for i in ids if i != LABEL_PAD_ID], group_tokens=False)


# ----------------------------------------------------------------------------------------------------------------------
# Model: load a checkpoint (or a config) for CTC, its attention kernel, MMS language adapters
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


def adapter_weights(model) -> dict:
    """A Wav2Vec2ForCTC's MMS adapter and CTC head weights by name: what load_adapter reads back. transformers lists
    them only through a private method, the one its own save and load use."""
    return model._get_adapters()


def attach_language_adapter(model, language: str, training: bool, source: str) -> str:
    """--target_language: fresh MMS attention adapters and CTC head to train, the base model frozen; or, to evaluate,
    the language's saved adapter (adapter.LANG.safetensors beside the model). Returns what it did, for the log."""
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


def load_model(model_args: ModelArguments, data_args: DataTrainingArguments, tokenizer, training: bool = True):
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


# ----------------------------------------------------------------------------------------------------------------------
# Preprocessing: scan headers, drop unusable clips, decode audio, extract features, encode labels
def audio_source(value):
    """A path or a file object from an audio cell (a path string, or datasets' undecoded {'path', 'bytes'} dict)."""
    if isinstance(value, dict):
        return io.BytesIO(value["bytes"]) if value.get("bytes") else value.get("path")
    return value


def load_audio(source, sampling_rate: int) -> np.ndarray:
    """Decode a file (path or file object) to mono float32 at `sampling_rate` Hz."""
    audio, rate = sf.read(source, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != sampling_rate:
        audio = soxr.resample(audio, rate, sampling_rate)
    return audio.astype(np.float32, copy=False)


def ctc_min_frames(label_ids: list[int]) -> int:
    """Output frames CTC needs for a label: one per token plus a blank between repeated tokens."""
    return len(label_ids) + sum(a == b for a, b in zip(label_ids, label_ids[1:]))


def encode_labels(tokenizer, text: str, phonemes: bool = False) -> list[int]:
    """Label ids of a transcript: its phonemes, or what the tokenizer makes of it, without special tokens (no </s>)."""
    return tokenizer.convert_tokens_to_ids(text.split()) if phonemes else tokenizer(text, add_special_tokens=False).input_ids


def label_encoder(tokenizer, phonemes: bool = False):
    """encode_labels for one tokenizer, as a function of the text. For our character tokenizer it is a dictionary
    lookup per character, which is what Wav2Vec2CTCTokenizer does, 40 times faster (the header scan of a large corpus
    spent most of its time there); texts holding a multi-character token such as [UNK] go through the tokenizer."""
    if type(tokenizer) is not Wav2Vec2CTCTokenizer or tokenizer.do_lower_case or phonemes:
        return functools.partial(encode_labels, tokenizer, phonemes=phonemes)
    ids = {**tokenizer.encoder, **tokenizer.added_tokens_encoder}
    unk, delimiter = tokenizer.encoder.get(tokenizer.unk_token), tokenizer.word_delimiter_token
    long_tokens = [t for t in ids if len(t) > 1]

    def encode(text: str) -> list[int]:
        if any(t in text for t in long_tokens):
            return encode_labels(tokenizer, text)
        return [ids.get(c, unk) for c in text.replace(" ", delimiter)]

    return encode


def scan_batch(batch: dict, *, tokenizer, sampling_rate: int, phonemes: bool = False) -> dict:
    """datasets.map function: facts from each file's header (no decoding) and label ids; bad clips get a reason.
    With `phonemes`, transcripts are already space-separated phonemes."""
    out = {LENGTH_COLUMN: [], SOURCE_RATE_COLUMN: [], CHANNELS_COLUMN: [], LABELS_COLUMN: [], MIN_FRAMES_COLUMN: [],
           DROP_COLUMN: [], CLIP_ID_COLUMN: []}
    encode = label_encoder(tokenizer, phonemes)
    for cell, text in zip(batch[AUDIO_COLUMN], batch[TARGET_TEXT_COLUMN]):
        frames, rate, channels, reason = 0, 0, 0, ""
        source = audio_source(cell)
        if source is None or (isinstance(source, str) and not os.path.isfile(source)):
            reason = "missing file"
        else:
            try:
                with sf.SoundFile(source) as f:  # the header only (sf.info also formats descriptions: 2x slower)
                    frames, rate, channels = f.frames, f.samplerate, f.channels
            except AUDIO_ERRORS:
                reason = "unreadable audio"
        if not reason and frames <= 0:
            reason = "empty audio"
        if not reason and not text:
            reason = "empty transcript"
        labels = encode(text) if text else []
        out[LENGTH_COLUMN].append(round(frames * sampling_rate / rate) if rate else 0)
        out[SOURCE_RATE_COLUMN].append(rate)
        out[CHANNELS_COLUMN].append(channels)
        out[LABELS_COLUMN].append(labels)
        out[MIN_FRAMES_COLUMN].append(ctc_min_frames(labels))
        out[DROP_COLUMN].append(reason)
        out[CLIP_ID_COLUMN].append(str(cell.get("path") if isinstance(cell, dict) else cell))
    return out


def empty_features(feature_extractor) -> np.ndarray:
    """A model input of no frames, shaped like a real one: what a clip that fails to decode is stored as."""
    return extract_features(feature_extractor, np.zeros(feature_extractor.sampling_rate, np.float32))[:0]


def featurize_batch(batch: dict, *, feature_extractor, one_thread: bool = False) -> dict:
    """datasets.map function: decode, resample and extract each clip's features; truncated or corrupt files get a reason."""
    if one_thread:  # a forked worker: torch's OpenMP pool, copied mid-state from the parent, would deadlock
        torch.set_num_threads(1)
    rate = feature_extractor.sampling_rate
    input_name, _ = model_input_names(feature_extractor)
    out = {input_name: [], LENGTH_COLUMN: [], DROP_COLUMN: []}
    for cell, expected in zip(batch[AUDIO_COLUMN], batch[LENGTH_COLUMN]):
        reason, audio, features = "", np.zeros(0, dtype=np.float32), None
        try:
            audio = load_audio(audio_source(cell), rate)
            features = extract_features(feature_extractor, audio)
        except AUDIO_ERRORS:
            reason = "undecodable audio"
        if not reason and len(audio) < TRUNCATION_TOLERANCE * expected:
            reason = "truncated audio"
        out[input_name].append(features if not reason else empty_features(feature_extractor))
        out[LENGTH_COLUMN].append(len(audio))
        out[DROP_COLUMN].append(reason)
    return out


def featurize_on_access(batch: dict, *, feature_extractor) -> dict:
    """Dataset transform for --preprocess_on_the_fly: decode in the DataLoader workers, store nothing.

    A file that fails to decode gives an empty input, which the collator skips with a warning.
    """
    if AUDIO_COLUMN not in batch:  # a read of other columns only
        return batch
    rate = feature_extractor.sampling_rate
    input_name, _ = model_input_names(feature_extractor)
    batch = dict(batch)
    features = []
    for cell in batch.pop(AUDIO_COLUMN):
        try:
            features.append(extract_features(feature_extractor, load_audio(audio_source(cell), rate)))
        except AUDIO_ERRORS:
            features.append(empty_features(feature_extractor))
    batch[input_name] = features
    return batch


def drop_reasons(scanned: dict, output_frames: np.ndarray, *, train: bool, min_len: float, max_len: float,
                 mask_time_frames: int, masked_frames: Optional[np.ndarray] = None) -> np.ndarray:
    """Why each clip is dropped ("" = kept): scan reasons, then (train only) duration bounds and CTC feasibility.

    `masked_frames`: the frames SpecAugment masks, where they differ from the output frames (an adapter subsamples).

    Eval keeps every readable clip, so WER covers the whole split; SpecAugment and the loss only matter in training.
    """
    reasons = np.asarray(scanned[DROP_COLUMN], dtype=object)
    if not train:
        return reasons
    lengths = np.asarray(scanned[LENGTH_COLUMN])
    masked_frames = output_frames if masked_frames is None else masked_frames
    checks = (
        (lengths <= min_len, "shorter than --min_duration_in_seconds"),
        (lengths >= max_len, "longer than --max_duration_in_seconds"),
        (masked_frames < mask_time_frames, "too short for SpecAugment's --mask_time_length"),
        (output_frames < np.asarray(scanned[MIN_FRAMES_COLUMN]), CTC_INFEASIBLE),
    )
    for failed, reason in checks:
        reasons[(reasons == "") & failed] = reason
    return reasons


def decode_stream_batch(batch: dict, *, feature_extractor, tokenizer, phonemes: bool, frames, limits: dict) -> dict:
    """Stream map function (tar shards, run in the DataLoader workers): what scan_batch, featurize_batch and
    drop_reasons make of each clip, in one pass. Dropped clips stay, with their reason, for StreamBatches to count.
    `frames(samples, before_adapter)` is output_frames for the model."""
    scanned = scan_batch(batch, tokenizer=tokenizer, sampling_rate=feature_extractor.sampling_rate, phonemes=phonemes)
    decoded = featurize_batch({AUDIO_COLUMN: batch[AUDIO_COLUMN], LENGTH_COLUMN: scanned[LENGTH_COLUMN]},
                              feature_extractor=feature_extractor)
    reasons = [scan or decode for scan, decode in zip(scanned[DROP_COLUMN], decoded[DROP_COLUMN])]
    scanned.update(decoded, **{DROP_COLUMN: reasons})
    lengths = scanned[LENGTH_COLUMN]
    reasons = drop_reasons(scanned, frames(lengths), masked_frames=frames(lengths, before_adapter=True), train=True,
                           **limits)
    return {**scanned, DROP_COLUMN: reasons.tolist()}


def check_ctc_fit(reasons: np.ndarray, frames_per_second: float, vocab_size: int) -> None:
    """Stop before training when the model's frame rate cannot align a large share of the training transcripts."""
    too_long = int((reasons == CTC_INFEASIBLE).sum())
    usable = too_long + int((reasons == "").sum())
    if usable and too_long / usable > MAX_INFEASIBLE_SHARE:
        raise UserError(
            f"{too_long:,} of {usable:,} training clips ({too_long / usable:.0%}) have transcripts too long for this "
            f"model's {frames_per_second:g} output frames per second with a {vocab_size:,}-token vocabulary (CTC needs "
            "a frame per token); training on the rest would not learn the task. Use fewer, longer tokens: a subword "
            "vocabulary (--vocab_type bpe), or the checkpoint's own subword tokenizer (--tokenizer_name_or_path); or "
            "a model with more output frames per second."
        )


def cache_rows(files: list[str]) -> int:
    """Rows in a set of cache files; -1 when one is unreadable (truncated by a kill, or a disk error)."""
    try:
        return sum(len(datasets.Dataset.from_file(f)) for f in files)
    except (pa.ArrowException, OSError, ValueError):
        return -1


def cached_map(ds: datasets.Dataset, function, key_parts: list, name: str, cache_root: str, data_args,
               needed_bytes: float = 0) -> datasets.Dataset:
    """datasets.map into a cache file named by the input's fingerprint and `key_parts`; reused by later runs once
    checked whole (a damaged one is rebuilt). `needed_bytes`: about what it takes on disk, for a full-disk error."""
    key = derived_fingerprint(ds, name, *key_parts)
    path = os.path.join(cache_root, f"{name}-{key}.arrow")
    workers = data_args.preprocessing_num_workers or 1
    shards = [path] if workers == 1 else [f"{path[:-6]}_{i:05d}_of_{workers:05d}.arrow" for i in range(workers)]
    existing = [path] if os.path.isfile(path) else shards if all(os.path.isfile(p) for p in shards) else []
    if existing and not data_args.overwrite_cache:
        if cache_rows(existing) == len(ds):
            logger.info(f"{name}: reusing the cache in {cache_root} (--overwrite_cache to redo it)")
        else:  # a map's output has a row per input row: fewer, or none readable, is a damaged file
            logger.warning(f"{name}: the cache {existing[0]} is unreadable or incomplete (truncated?): rebuilding it")
            for f in existing:
                os.remove(f)
    os.makedirs(cache_root, exist_ok=True)
    try:
        return ds.map(
            function, batched=True, batch_size=16, num_proc=data_args.preprocessing_num_workers,
            cache_file_name=path, load_from_cache_file=not data_args.overwrite_cache, new_fingerprint=key, desc=name,
        )
    except Exception as e:
        if is_disk_full(e):
            raise DiskFull("the preprocessing cache in", cache_root, needed_bytes,
                           "free some space, point --cache_dir at a bigger disk, or use --preprocess_on_the_fly") from e
        raise


def log_drops(key: str, reasons: np.ndarray, ds: datasets.Dataset, stage: str) -> dict[str, int]:
    """One line per split and stage: kept/dropped counts per reason and the first few files dropped."""
    counts = Counter(r for r in reasons if r)
    for reason, n in counts.items():
        first = [str(audio_source(ds[int(i)][AUDIO_COLUMN])) for i in np.flatnonzero(reasons == reason)[:3]]
        logger.warning(f"Dropped [{key}] {n:,} clips, {reason}: {', '.join(first)}{' ...' if n > 3 else ''}")
    logger.info(f"{stage} [{key}]: {int((reasons == '').sum()):,} clips kept, {sum(counts.values()):,} dropped")
    return dict(counts)


def scan_table(ds: datasets.Dataset, *names: str) -> pa.Table:
    """Columns of the header scan (lengths, rates, labels, clip ids) as an Arrow table, read past the dataset's format
    (with --preprocess_on_the_fly its transform would decode every clip's audio for each read), and without making a
    Python object per value (millions of them for the labels of a large corpus)."""
    return ds.select_columns(list(names)).with_format("arrow")[:]


def scan_column(ds: datasets.Dataset, name: str) -> np.ndarray:
    """One column of the header scan (see scan_table) as an array."""
    return scan_table(ds, name)[name].to_numpy(zero_copy_only=False)


def check_drops(kept: datasets.DatasetDict, dropped: dict, data_args) -> None:
    """Stop when a split is empty, or (--strict_data) when any clip was dropped for bad input."""
    for key, ds in kept.items():
        summary = ", ".join(f"{n:,} {r}" for r, n in dropped[key].items()) or "none"
        if is_stream(ds):  # its drops are counted as it is read (StreamBatches)
            continue
        if len(ds) == 0:
            raise UserError(
                f"no {key} clips left (dropped: {summary}); check the audio paths, the transcript column and "
                "--min/max_duration_in_seconds."
            )
        bad = {r: n for r, n in dropped[key].items() if not r.startswith(("shorter than --", "longer than --"))}
        if data_args.strict_data and bad:
            raise UserError(f"--strict_data: {key} clips dropped ({summary}); fix or remove them, or drop the flag.")


def sort_longest_first(ds: datasets.Dataset) -> datasets.Dataset:
    """An evaluation split in the order it is scored: longest clips first, so batches hold similar lengths (little
    padding; an OOM shows at once). transcribe_split returns the transcripts in this order."""
    return ds.select(np.argsort(-scan_column(ds, LENGTH_COLUMN), kind="stable"))


def scan_and_filter(raw, data_args, training_args, model, feature_extractor, tokenizer, cache_root):
    """Read every file's header, drop unusable clips (counted per reason), and return what is kept and why not."""
    rate = feature_extractor.sampling_rate
    scan = functools.partial(
        scan_batch, tokenizer=tokenizer, sampling_rate=rate, phonemes=bool(data_args.phoneme_language)
    )
    key_parts = [tokenizer.get_vocab(), rate, data_args.phoneme_language, CACHE_VERSION]
    frames = functools.partial(output_frames, model, feature_extractor)
    spec_augment = getattr(model.config, "mask_time_prob", 0) > 0
    limits = {"min_len": data_args.min_duration_in_seconds * rate, "max_len": data_args.max_duration_in_seconds * rate,
              "mask_time_frames": model.config.mask_time_length if spec_augment else 0}
    kept, dropped = datasets.DatasetDict(), {}
    with training_args.main_process_first(desc="scanning audio headers"):
        for key, ds in raw.items():
            if is_stream(ds):  # nothing read now: each clip is scanned, decoded and checked as training reads it
                kept[key] = ds.map(functools.partial(
                    decode_stream_batch, feature_extractor=feature_extractor, tokenizer=tokenizer, frames=frames,
                    phonemes=bool(data_args.phoneme_language), limits=limits,
                ), batched=True, batch_size=16, remove_columns=[AUDIO_COLUMN, TARGET_TEXT_COLUMN])
                dropped[key] = {}
                continue
            scanned = cached_map(ds, scan, key_parts, f"scan-{key}", cache_root, data_args, 1000 * len(ds))
            columns = scanned.select_columns([LENGTH_COLUMN, MIN_FRAMES_COLUMN, DROP_COLUMN]).to_dict()
            lengths = columns[LENGTH_COLUMN]
            reasons = drop_reasons(columns, frames(lengths), masked_frames=frames(lengths, before_adapter=True),
                                   train=key == "train", **limits)
            dropped[key] = log_drops(key, reasons, scanned, "Scanned")
            if key == "train":
                check_ctc_fit(reasons, frames([100 * rate])[0] / 100, len(tokenizer))
            kept[key] = scanned.select(np.flatnonzero(reasons == "")).remove_columns([DROP_COLUMN, MIN_FRAMES_COLUMN])
    check_drops(kept, dropped, data_args)
    return kept, dropped


def featurize(kept, data_args, training_args, feature_extractor, dropped, cache_root) -> tuple[datasets.DatasetDict, dict]:
    """Decode every kept clip into cached features, or (--preprocess_on_the_fly) set up decoding at access time.
    Returns them and the drop counts per split and reason: the scan's `dropped` plus the clips that failed to decode."""
    dropped = {key: dict(reasons) for key, reasons in dropped.items()}
    if data_args.preprocess_on_the_fly:
        transform = functools.partial(featurize_on_access, feature_extractor=feature_extractor)
        return datasets.DatasetDict({k: ds if is_stream(ds) else (ds if k == "train" else sort_longest_first(ds))
                                     .with_transform(transform) for k, ds in kept.items()}), dropped
    featurize_fn = functools.partial(featurize_batch, feature_extractor=feature_extractor,
                                     one_thread=(data_args.preprocessing_num_workers or 1) > 1)
    key_parts = [feature_extractor.to_dict(), TRUNCATION_TOLERANCE, CACHE_VERSION]
    vectorized = datasets.DatasetDict()
    with training_args.main_process_first(desc="decoding audio"):
        for key, ds in kept.items():
            if is_stream(ds):  # decoded as training reads it (decode_stream_batch)
                vectorized[key] = ds
                continue
            samples = float(scan_column(ds, LENGTH_COLUMN).sum())  # float32 features: about 4 bytes per sample
            ds = cached_map(ds, featurize_fn, key_parts, f"features-{key}", cache_root, data_args, 4 * samples)
            reasons = np.asarray(ds[DROP_COLUMN], dtype=object)
            for reason, n in log_drops(key, reasons, ds, "Decoded").items():
                dropped[key][reason] = dropped[key].get(reason, 0) + n
            ds = ds.select(np.flatnonzero(reasons == "")).remove_columns([DROP_COLUMN, AUDIO_COLUMN])
            if key != "train":
                ds = sort_longest_first(ds)
            # Features read as numpy arrays (zero-copy from Arrow), not as Python lists of floats
            vectorized[key] = ds.with_format("numpy", columns=[model_input_names(feature_extractor)[0]],
                                             output_all_columns=True)
    check_drops(vectorized, dropped, data_args)
    return vectorized, dropped


def log_samples(vectorized: datasets.DatasetDict, tokenizer, sampling_rate: int, seed: int) -> None:
    """Three random training examples as the model will see them: duration and the decoded label."""
    ds = vectorized.get("train")
    if ds is None or is_stream(ds):
        return
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(ds), size=min(NUM_LOGGED_EXAMPLES, len(ds)), replace=False)
    scanned = scan_table(ds.select(picked), LABELS_COLUMN, LENGTH_COLUMN).to_pydict()
    for i, labels, length in zip(picked, scanned[LABELS_COLUMN], scanned[LENGTH_COLUMN]):
        logger.info(f"Sample {int(i)} of train: {length / sampling_rate:.2f} s, label {decode_labels(tokenizer, labels)!r}")


def save_json(obj: dict, name: str, training_args: TrainingArguments) -> None:
    """Write `name` into output_dir (on the process that saves)."""
    if training_args.should_save:
        os.makedirs(training_args.output_dir, exist_ok=True)
        with open(os.path.join(training_args.output_dir, name), "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=1)


def data_report(ds_dict: datasets.DatasetDict, dropped: dict, text_stats: dict, sampling_rate: int) -> dict:
    """Log one compact line per split (clips, hours, durations, rates, channels, characters, drops); return it all."""
    report = {}
    for key, ds in ds_dict.items():
        if is_stream(ds):
            report[key] = {"streamed_shards": ds.n_shards, **text_stats[key]}
            logger.info(f"Data [{key}]: streamed from {ds.n_shards:,} tar shards per process; clips, hours and drops are "
                        f"counted as training reads them; {text_stats[key]['vocabulary']}")
            continue
        columns = scan_table(ds, LENGTH_COLUMN, SOURCE_RATE_COLUMN, CHANNELS_COLUMN, LABELS_COLUMN)
        seconds = columns[LENGTH_COLUMN].to_numpy() / sampling_rate
        label_tokens = pa.compute.sum(pa.compute.list_value_length(columns[LABELS_COLUMN])).as_py() or 0
        r = report[key] = {
            "clips": len(ds),
            "hours": round(float(seconds.sum()) / 3600, 4),
            "seconds_min_median_max": [round(float(f(seconds)), 2) for f in (np.min, np.median, np.max)],
            "sampling_rates": sorted(pa.compute.unique(columns[SOURCE_RATE_COLUMN]).to_pylist()),
            "channels": sorted(pa.compute.unique(columns[CHANNELS_COLUMN]).to_pylist()),
            "label_tokens_per_second": round(label_tokens / max(float(seconds.sum()), 1e-9), 2),
            **text_stats[key],
            "dropped": dropped[key],
        }
        logger.info(
            f"Data [{key}]: {r['clips']:,} clips, {r['hours']:.2f} h, seconds min/median/max "
            f"{'/'.join(map(str, r['seconds_min_median_max']))}, rates {r['sampling_rates']} Hz, channels "
            f"{r['channels']}, {r['distinct']} {'phonemes' if ' ' in r['characters'] else 'characters'} "
            f"{r['characters'][:100]!r}, "
            f"{r['unknown_character_share']:.2%} unknown; {r['vocabulary']}, labels {r['label_tokens_per_second']} "
            f"tokens per second of audio; dropped {sum(r['dropped'].values()):,}"
        )
    return report


def preprocess(raw, model, feature_extractor, tokenizer, model_args, data_args, training_args):
    """scan_and_filter, then featurize: the model's inputs per split (evaluation splits longest first), and the clips
    dropped per split and reason. Logs three training examples as the model will see them."""
    cache_root = os.path.join(model_args.cache_dir or datasets.config.HF_DATASETS_CACHE, "ctc_preprocessing")
    kept, dropped = scan_and_filter(raw, data_args, training_args, model, feature_extractor, tokenizer, cache_root)
    vectorized, dropped = featurize(kept, data_args, training_args, feature_extractor, dropped, cache_root)
    log_samples(vectorized, tokenizer, feature_extractor.sampling_rate, training_args.seed)
    return vectorized, dropped


def log_cache_files(vectorized: datasets.DatasetDict) -> dict:
    """--preprocessing_only: where the features are cached (a later run with the same settings reuses them)."""
    logger.info("Preprocessing done; cache files: "
                f"{ {k: ds.cache_files for k, ds in vectorized.items() if not is_stream(ds)} }")
    return {}


# ----------------------------------------------------------------------------------------------------------------------
# Batching: duration-capped batches, batches of a stream, padding
class DurationBatchSampler:
    """Batches of similar-length clips, each holding at most `max_samples` samples of padded audio.

    The batches are formed once, from the clips sorted by length (so padding is tiny and memory per step is bounded),
    and dealt out in a new random order each epoch (seeded by `seed` and the epoch: deterministic, and resumable).
    Under DDP, accelerate hands whole batches to the processes, every process the same number.
    """

    def __init__(self, lengths, max_samples: float, seed: int):
        lengths = np.asarray(lengths)
        self.batches, batch = [], []
        for i in np.argsort(lengths, kind="stable"):  # ascending: each new clip is the batch's longest
            if batch and lengths[i] * (len(batch) + 1) > max_samples:
                self.batches.append(batch)
                batch = []
            batch.append(int(i))
        if batch:
            self.batches.append(batch)
        self.seed, self.epoch = seed, 0
        # Under DDP accelerate wraps this in a BatchSamplerShard, which has no set_epoch; accelerate's loader then
        # passes the epoch to the wrapped batch sampler's `.sampler` only.
        self.sampler = self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for b in np.random.default_rng([self.seed, self.epoch]).permutation(len(self.batches)):
            yield self.batches[b]


class StreamBatches(torch.utils.data.IterableDataset):
    """Training batches from a streamed split (tar shards), without end: epoch after epoch, each reshuffled, until
    --max_steps. Clips the stream marked for dropping are left out; each batch carries `stream`: its clip ids and the
    drop reasons met since the previous batch, for the trainer to count. Runs in the DataLoader workers, which
    datasets gives shards of their own."""

    def __init__(self, ds: datasets.IterableDataset, batch_size: int, collator):
        self.ds, self.batch_size, self.collator = ds, batch_size, collator

    def __iter__(self):
        batch, dropped = [], Counter()
        for epoch in itertools.count():
            self.ds.set_epoch(epoch)
            read = kept = 0
            for clip in self.ds:
                read += 1
                if clip[DROP_COLUMN]:
                    dropped[clip[DROP_COLUMN]] += 1
                    continue
                kept += 1
                batch.append(clip)
                if len(batch) == self.batch_size:
                    yield {**self.collator(batch), "stream": {"clips": [c[CLIP_ID_COLUMN] for c in batch],
                                                              "dropped": dict(dropped)}}
                    batch, dropped = [], Counter()
            if read == 0:  # a worker without shards (more workers than shards): the others go on
                return
            if kept == 0:
                raise RuntimeError(f"every clip of this DataLoader worker's shards was dropped ({dict(dropped)})")


@dataclass
class DataCollatorCTCWithPadding:
    """Pad inputs along time (with the feature extractor's padding value) and labels (with -100) into tensors.

    `input_lengths` (samples per clip, whatever the model reads) rides along so evaluation can cut predictions to each
    clip's real length and training can count padding; CTCTrainer removes it before the forward pass.
    """

    feature_extractor: object
    channel_axis: bool = False  # the model reads [batch, 1, samples] (see has_channel_axis)

    def __call__(self, features: list[dict]) -> dict:
        input_name, mask_name = model_input_names(self.feature_extractor)
        readable = [f for f in features if len(f[input_name])]
        if len(readable) < len(features):  # only with --preprocess_on_the_fly: a file failed to decode just now
            logger.warning(f"Skipped {len(features) - len(readable)} clip(s) of this batch that failed to decode")
            if not readable:
                raise RuntimeError("every clip of a batch failed to decode; rerun without --preprocess_on_the_fly")
            features = readable
        inputs = [np.asarray(f[input_name], dtype=np.float32) for f in features]  # [samples] or [frames, features]
        frames = torch.tensor([len(x) for x in inputs])
        width = int(frames.max())
        values = np.full((len(inputs), width, *inputs[0].shape[1:]), self.feature_extractor.padding_value, np.float32)
        for row, x in zip(values, inputs):
            row[: len(x)] = x
        samples = [int(f.get(LENGTH_COLUMN, len(x))) for f, x in zip(features, inputs)]
        batch = {input_name: torch.from_numpy(values[:, None] if self.channel_axis else values),
                 "input_lengths": torch.tensor(samples)}
        if LABELS_COLUMN in features[0]:
            labels = np.full((len(features), max(len(f[LABELS_COLUMN]) for f in features)), LABEL_PAD_ID, np.int64)
            for label_row, f in zip(labels, features):
                label_row[: len(f[LABELS_COLUMN])] = f[LABELS_COLUMN]
            batch[LABELS_COLUMN] = torch.from_numpy(labels)
        if self.feature_extractor.return_attention_mask:  # group-norm models (e.g. wav2vec2-base) were pretrained on
            batch[mask_name] = (torch.arange(width)[None, :] < frames[:, None]).long()  # zero padding, no mask
        return batch


# ----------------------------------------------------------------------------------------------------------------------
# Trainer: stop signals, throughput, the CTC specifics of training and evaluation, and the training run
class StopOnSignal(TrainerCallback):
    """SIGTERM, SIGUSR1 (SLURM's warning before a time limit) or a first Ctrl-C. During training: finish the step,
    save a checkpoint and stop, every process at the same step (they agree at each step's end). Outside training:
    stop at once (datasets removes a cache file it was writing). A second Ctrl-C stops at once anywhere.

    A context manager: installs its handlers on entry, puts the previous ones back on exit."""

    def __init__(self):
        self.received, self.training, self.phase, self.previous = None, False, "preparing the run", {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # only the main thread may handle signals
            for name in STOP_SIGNALS:
                self.previous[name] = signal.signal(getattr(signal, name), self.handle)
        return self

    def __exit__(self, *exc_info):
        for name, handler in self.previous.items():
            signal.signal(getattr(signal, name), handler)

    def handle(self, signum, frame):
        name = signal.Signals(signum).name
        if name == "SIGINT" and self.received == "SIGINT":
            raise KeyboardInterrupt
        if not self.training:
            raise Stopped(f"stopped by {name} while {self.phase}; nothing half-written is kept: run the same command "
                          "again to start over")
        if self.received is None:
            self.received = name
            logger.warning(f"Received {name}: stopping after this training step, with a checkpoint")

    def on_train_begin(self, args, state, control, **kwargs):
        self.training = True

    def on_train_end(self, args, state, control, **kwargs):
        self.training, self.phase = False, "evaluating"

    def on_step_end(self, args, state, control, **kwargs):
        number = getattr(signal, self.received) if self.received else 0
        if torch.distributed.is_available() and torch.distributed.is_initialized():  # a signal to any process counts
            flag = torch.tensor([int(number)], device=args.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            number = int(flag.item())
        if number:
            self.received = signal.Signals(number).name
            control.should_save = control.should_training_stop = True


class AudioThroughput(TrainerCallback):
    """Counts the audio of each training batch; logs per epoch the hours, padding share and audio seconds per second
    (of this process), and once how long the process took to its first training step (the set-up cost)."""

    def __init__(self, sampling_rate: int):
        self.rate = sampling_rate
        self.totals = np.zeros(3)  # real samples, padded batch samples, seconds
        self.epoch = np.zeros(3)
        self.start = time.perf_counter()
        self.first_step = None  # seconds from the process's start to the end of its first training step

    def on_step_end(self, args, state, control, **kwargs):
        if self.first_step is None:
            import psutil  # an accelerate dependency

            self.first_step = round(time.time() - psutil.Process().create_time(), 1)
            logger.info(f"First training step done {self.first_step:.1f} s after the process started")

    def add(self, real: int, padded: int) -> None:
        self.epoch[:2] += (real, padded)

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.epoch[:], self.start = 0, time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.epoch[2] = time.perf_counter() - self.start
        self.totals += self.epoch
        stats = self.summary(self.epoch)
        logger.info(f"Epoch {state.epoch:.2f}: {stats['audio_hours']:.3f} h of audio, padding "
                    f"{stats['padding_fraction']:.1%}, {stats['audio_seconds_per_second']:,.1f} audio s/s")

    def summary(self, counts=None) -> dict:
        real, padded, seconds = self.totals if counts is None else counts
        return {"audio_hours": round(real / self.rate / 3600, 4),
                "padding_fraction": round(1 - real / padded, 4) if padded else 0.0,
                "audio_seconds_per_second": round(real / self.rate / seconds, 2) if seconds else 0.0,
                **({"seconds_to_first_step": self.first_step} if counts is None and self.first_step else {})}


class CTCTrainer(Trainer):
    """Trainer whose evaluation yields greedy CTC ids, each cut to its clip's real number of output frames.

    Taking the argmax here keeps eval memory small for big vocabularies, and marking frames past a clip's end with
    -100 stops padding (within a batch, and the Trainer's own padding across batches) from being decoded as text.
    predict_ctc keeps the logits too, for an n-gram LM's beam search. Evaluation keeps the split's order (see
    sort_longest_first).

    The methods named with an underscore override Trainer internals (no public hook does these things); each says why.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        feature_extractor = self.processing_class.feature_extractor
        self.throughput = AudioThroughput(feature_extractor.sampling_rate)
        self.add_callback(self.throughput)
        self.streamed = {"clips": 0, "dropped": Counter(), "shards": set()}  # what a streamed training split gave
        self.keep_logits = False  # set by predict_ctc for one prediction pass

    def get_train_dataloader(self):
        if is_stream(self.train_dataset):  # this process's shards, batched in its workers; not re-split by accelerate
            batches = StreamBatches(self.train_dataset, self.args.per_device_train_batch_size, self.data_collator)
            return DataLoader(batches, batch_size=None, num_workers=self.args.dataloader_num_workers,
                              pin_memory=self.args.dataloader_pin_memory,
                              prefetch_factor=self.args.dataloader_prefetch_factor)
        if self.args.max_batch_duration is None:
            return super().get_train_dataloader()
        rate = self.processing_class.feature_extractor.sampling_rate
        sampler = DurationBatchSampler(scan_column(self.train_dataset, LENGTH_COLUMN),
                                       self.args.max_batch_duration * rate, self.args.seed)
        loader = DataLoader(
            self.train_dataset, batch_sampler=sampler, collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers,
            prefetch_factor=self.args.dataloader_prefetch_factor,
        )
        return self.accelerator.prepare(loader)

    def _get_train_sampler(self, train_dataset=None):
        # --group_by_length: the Trainer would read the lengths through the dataset's format (decoding every clip of
        # an on-the-fly split); ours come from the header scan's Arrow column.
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        lengths = scan_column(train_dataset or self.train_dataset, LENGTH_COLUMN).tolist()
        return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps, lengths=lengths)

    def training_step(self, model, inputs, num_items_in_batch=None):
        stream = inputs.pop("stream", None)
        if stream is not None:
            self.streamed["clips"] += len(stream["clips"])
            self.streamed["dropped"].update(stream["dropped"])
            self.streamed["shards"].update(clip.split("/")[0] for clip in stream["clips"])
        lengths = inputs.pop("input_lengths", None)
        if lengths is not None:
            self.throughput.add(int(lengths.sum()), lengths.numel() * int(lengths.max()))  # samples, padded as frames
        try:
            loss = super().training_step(model, inputs, num_items_in_batch)
        except torch.OutOfMemoryError as e:
            raise UserError(
                f"out of memory at step {self.state.global_step + 1} on {self.describe_batch(lengths)}; use smaller "
                "batches (--max_batch_duration, or --per_device_train_batch_size with more "
                "--gradient_accumulation_steps), --gradient_checkpointing, or drop long clips with "
                "--max_duration_in_seconds. Earlier checkpoints are kept."
            ) from e
        if not torch.isfinite(loss):  # the Trainer would average it away (logging_nan_inf_filter) and go on
            raise UserError(
                f"the training loss became {loss.item()} at step {self.state.global_step + 1}; likely causes: fp16 "
                "overflow (use --bf16, or a lower --learning_rate), clips too short for their transcripts "
                "(--ctc_zero_infinity), or a learning rate too high. Earlier checkpoints are kept."
            )
        return loss

    def describe_batch(self, lengths) -> str:
        """'a batch of 8 clips, 61.2 s of audio (longest 9.8 s)', for the out-of-memory errors."""
        seconds = lengths.double() / self.processing_class.feature_extractor.sampling_rate if lengths is not None \
            else torch.zeros(1)
        return f"a batch of {seconds.numel()} clips, {seconds.sum():.1f} s of audio (longest {seconds.max():.1f} s)"

    def model_bytes(self) -> float:
        """About what a checkpoint takes: the weights, and the optimizer's two moments (Adam) per trained weight."""
        weights = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return weights + 2 * 4 * sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def save_model(self, output_dir=None, _internal_call=False):
        try:
            super().save_model(output_dir, _internal_call)
        except Exception as e:
            if not is_disk_full(e):
                raise
            raise DiskFull("the model to", output_dir or self.args.output_dir, self.model_bytes(),
                           "free some space or choose another --output_dir") from e

    def _save_checkpoint(self, model, trial):
        # A full disk mid-checkpoint: remove the partial folder, so resuming never picks it.
        try:
            super()._save_checkpoint(model, trial)
        except Exception as e:
            if not (isinstance(e, DiskFull) or is_disk_full(e)):
                raise
            path = os.path.join(self._get_output_dir(trial), f"checkpoint-{self.state.global_step}")
            if self.args.should_save:  # never resumed from: the previous checkpoint stays the newest
                shutil.rmtree(path, ignore_errors=True)
            raise DiskFull("checkpoint", path, self.model_bytes(), "free some space, keep fewer checkpoints "
                           "(--save_total_limit), or choose another --output_dir; the previous checkpoint is kept") from e

    def _get_eval_sampler(self, eval_dataset):
        # The split's own order (sort_longest_first); with --group_by_length the Trainer would shuffle it in groups.
        return torch.utils.data.SequentialSampler(eval_dataset)

    def predict_ctc(self, ds: datasets.Dataset, key: str, keep_logits: bool = False):
        """trainer.predict (ids, labels and metrics in one pass); with `keep_logits`, predictions are (ids, logits)."""
        self.keep_logits = keep_logits
        try:
            return self.predict(ds, metric_key_prefix=key)
        finally:
            self.keep_logits = False

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        input_lengths = inputs.pop("input_lengths", None)
        try:
            loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        except torch.OutOfMemoryError as e:  # evaluation runs longest first: the first batch is the largest
            raise UserError(
                f"out of memory evaluating {self.describe_batch(input_lengths)}; lower --per_device_eval_batch_size "
                "(down to 1) or evaluate in half precision (--bf16_full_eval or --fp16_full_eval); evaluation keeps "
                "every clip, so one too long for the device even alone must be cut or left out of the split. "
                "Checkpoints and any saved model are kept: evaluate with --model_name_or_path OUTPUT_DIR --do_eval."
            ) from e
        if logits is None:
            return loss, logits, labels
        logits = logits[0] if isinstance(logits, tuple) else logits
        pred_ids = logits.argmax(-1)
        if input_lengths is not None:
            frames = torch.as_tensor(output_frames(self.accelerator.unwrap_model(model),
                                                   self.processing_class.feature_extractor, input_lengths.cpu()),
                                     device=pred_ids.device)
            beyond = torch.arange(pred_ids.shape[1], device=pred_ids.device)[None, :] >= frames[:, None]
            pred_ids = pred_ids.masked_fill(beyond, LABEL_PAD_ID)
        if self.keep_logits:
            return loss, (pred_ids, logits.float()), labels
        return loss, pred_ids, labels


def save_processor(model, feature_extractor, tokenizer, training_args: TrainingArguments):
    """The family's processor and the model config, saved to output_dir by the main process and loaded back by every
    process: what transcribe.py and a resumed run read."""
    with training_args.main_process_first(desc="saving the processor"):
        if training_args.should_save:
            family_processor = processor_class(model.config.model_type)
            family_processor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(
                training_args.output_dir
            )
            model.config.save_pretrained(training_args.output_dir)
    return AutoProcessor.from_pretrained(training_args.output_dir)


def build_trainer(model, processor, vectorized: datasets.DatasetDict, data_args, training_args, stop: StopOnSignal):
    """The CTCTrainer: padding collator, greedy-decoding metrics, and the stop-signal callback."""
    trainer = CTCTrainer(
        model=model,
        args=training_args,
        data_collator=DataCollatorCTCWithPadding(processor.feature_extractor,
                                                 channel_axis=has_channel_axis(processor.feature_extractor)),
        train_dataset=vectorized.get("train"),
        eval_dataset=vectorized.get("eval"),
        processing_class=processor,
        compute_metrics=functools.partial(
            compute_metrics, tokenizer=processor.tokenizer, blank_id=blank_token_id(model.config, processor.tokenizer),
            metric_names=data_args.eval_metrics,
        ),
    )
    trainer.add_callback(stop)
    return trainer


def log_stream(streamed: dict, training_args: TrainingArguments) -> dict:
    """One line per process on what its training stream gave: clips, shards, drops; returns this process's counts."""
    dropped = dict(streamed["dropped"])
    summary = ", ".join(f"{n:,} {r}" for r, n in dropped.items()) or "none"
    logger.warning(f"Streamed [train] process {training_args.process_index}/{training_args.world_size}: "  # all print it
                   f"{streamed['clips']:,} clips trained on from shards {', '.join(sorted(streamed['shards']))}; "
                   f"dropped: {summary}")
    return {"train_samples": streamed["clips"], "train_clips_dropped": sum(dropped.values())}


def train(trainer: CTCTrainer, last_checkpoint, stop: StopOnSignal, data_args, training_args) -> dict:
    """Train (from last_checkpoint when there is one), save the model (and the language's adapter) and
    train_results.json; a stop signal ends here with the checkpoint saved. Returns the training metrics."""
    reuse_cpu_memory(training_args)  # from here: what set-up freed went back to the system
    train_result = trainer.train(resume_from_checkpoint=last_checkpoint)
    if stop.received:
        step = trainer.state.global_step
        raise Stopped(f"stopped by {stop.received} at step {step}: checkpoint-{step} saved in "
                      f"{training_args.output_dir}; run the same command to resume")
    trainer.save_model()
    if data_args.target_language and training_args.should_save:
        save_language_adapter(trainer.model, training_args.output_dir, data_args.target_language)
    metrics = {**train_result.metrics, **{f"train_{k}": v for k, v in trainer.throughput.summary().items()}}
    if is_stream(trainer.train_dataset):
        metrics.update(log_stream(trainer.streamed, training_args))
    else:
        metrics["train_samples"] = len(trainer.train_dataset)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    return metrics


# ----------------------------------------------------------------------------------------------------------------------
# Metrics and predictions: greedy decoding, WER/CER, the final evaluation of each split, its predictions file
def decode_predictions(pred_ids: np.ndarray, label_ids: np.ndarray, tokenizer,
                       blank_id: int) -> tuple[list[str], list[str]]:
    """Greedy CTC decoding of predictions (-100 = beyond the clip's end) and plain decoding of labels."""
    predictions = [ctc_decode(tokenizer, ids, blank_id) for ids in pred_ids]
    references = [decode_labels(tokenizer, ids) for ids in label_ids]
    return predictions, references


def score(predictions: list[str], references: list[str], metric_names) -> dict[str, float]:
    """Corpus-level WER/CER with jiwer; clips with an empty reference are left out (jiwer cannot score them)."""
    pairs = [(p, r) for p, r in zip(predictions, references) if r.strip()]
    hyps, refs = [p for p, _ in pairs], [r for _, r in pairs]
    scorers = {"wer": jiwer.wer, "cer": jiwer.cer, "per": jiwer.wer}  # phonemes are decoded separated by spaces
    return {name: float(scorers[name](refs, hyps)) for name in metric_names}


def compute_metrics(pred, *, tokenizer, blank_id: int, metric_names) -> dict[str, float]:
    """Trainer hook, at every evaluation: greedy-decode the ids, log a few pairs, return the scores."""
    pred_ids = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions  # (ids, logits): LM
    predictions, references = decode_predictions(pred_ids, pred.label_ids, tokenizer, blank_id)
    for p, r in list(zip(predictions, references))[:NUM_LOGGED_EXAMPLES]:
        logger.info(f"  ref: {r!r}\n  hyp: {p!r}")
    return score(predictions, references, metric_names)


def transcribe_split(trainer, ds: datasets.Dataset, key: str, metric_names, lm=None) -> tuple[dict, dict]:
    """The final evaluation of a split, in one pass of trainer.predict: its metrics and every clip's transcripts, in
    the split's order. With `lm` (a function from one clip's logits to text: build_lm_decoder), also the beam
    search's transcripts and `..._lm` metrics."""
    output = trainer.predict_ctc(ds, key, keep_logits=lm is not None)
    pred_ids, logits = output.predictions if lm is not None else (output.predictions, None)
    tokenizer = trainer.processing_class.tokenizer
    hypotheses, references = decode_predictions(pred_ids, output.label_ids, tokenizer,
                                                blank_token_id(trainer.model.config, tokenizer))
    texts, metrics = {"reference": references, "hypothesis": hypotheses}, dict(output.metrics)
    if lm is not None:
        frames = (pred_ids != LABEL_PAD_ID).sum(-1)  # ids past a clip's end are -100
        texts["hypothesis_lm"] = [lm(clip[:n]) for clip, n in zip(logits, frames)]
        scores = score(texts["hypothesis_lm"], references, metric_names)
        items, at = list(metrics.items()), list(metrics).index(f"{key}_runtime")  # the model card lists them in order:
        metrics = dict(items[:at] + [(f"{key}_{k}_lm", v) for k, v in scores.items()] + items[at:])  # scores first
    trainer.log(metrics)  # as trainer.evaluate does: into the log history and the --report_to integrations
    return metrics, texts


def clip_error(measure, ref: str, hyp: str) -> float:
    """WER or CER of one clip; an empty reference scores 1 for any output, 0 for none."""
    return round(measure(ref, hyp), 4) if ref else float(bool(hyp))


def prediction_rows(ds: datasets.Dataset, texts: dict, sampling_rate: int) -> list[dict]:
    """One row per clip of a split scored by transcribe_split (greedy and, with an LM, beam-search transcripts, the
    manifest's speaker, gender, ... columns), worst first."""
    extras = passthrough_columns(ds)
    columns = scan_table(ds, CLIP_ID_COLUMN, LENGTH_COLUMN, *extras).to_pydict()
    rows = []
    for index, (ref, hyp) in enumerate(zip(texts["reference"], texts["hypothesis"])):
        row = {CLIP_ID_COLUMN: columns[CLIP_ID_COLUMN][index], "reference": ref, "hypothesis": hyp,
               "wer": clip_error(jiwer.wer, ref, hyp), "cer": clip_error(jiwer.cer, ref, hyp),
               "seconds": round(columns[LENGTH_COLUMN][index] / sampling_rate, 2)}
        if "hypothesis_lm" in texts:
            hyp_lm = texts["hypothesis_lm"][index]
            row.update(hypothesis_lm=hyp_lm, wer_lm=clip_error(jiwer.wer, ref, hyp_lm))
        rows.append({**row, **{c: columns[c][index] for c in extras}})
    return sorted(rows, key=lambda r: (-r["wer"], -r["cer"]))


def write_csv(path: str, rows: list[dict]) -> None:
    """Rows as a CSV file, with the first row's keys as its header."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def evaluate_split(trainer, ds: datasets.Dataset, key: str, dropped: dict, lm, data_args, training_args):
    """Score a split: {key}_results.json, and its predictions file (every clip, worst first) on the main process.
    Returns the metrics and the rows (none where nothing is saved)."""
    metrics, texts = transcribe_split(trainer, ds, key, data_args.eval_metrics, lm)
    metrics.update({f"{key}_samples": len(ds), f"{key}_clips_dropped": sum(dropped.values())})
    trainer.log_metrics(key, metrics)
    trainer.save_metrics(key, metrics)
    if not training_args.should_save:
        return metrics, []
    rows = prediction_rows(ds, texts, trainer.processing_class.feature_extractor.sampling_rate)
    write_csv(os.path.join(training_args.output_dir, PREDICTIONS_FILES[key]), rows)
    return metrics, rows


def log_summary(key: str, results: dict, rows: list[dict], report: dict, output_dir: str) -> None:
    """The end of the run in a few lines: scores, speed, the worst and some typical transcriptions (on the process
    that wrote the predictions file, `rows`)."""
    if not rows:
        return
    path = os.path.join(output_dir, PREDICTIONS_FILES[key])
    scores = {k[len(key) + 1:]: v for k, v in results.items() if k.startswith(key + "_")}
    named = {"wer": "WER", "cer": "CER", "per": "PER", "wer_lm": "WER with LM", "cer_lm": "CER with LM"}
    lines = [", ".join(f"{named[k]} {v:.3f}" for k, v in scores.items() if k in named)
             + f" on {results[key + '_samples']:,} {key} clips ({report[key]['hours']:.2f} h); every clip in {path}"]
    if "train_runtime" in results:  # a streamed split has no hours up front: the audio this process trained on
        audio_hours = report["train"]["hours"] * results["epoch"] if "hours" in report["train"] else results[
            "train_audio_hours"]
        lines.append(
            f"training {results['train_runtime'] / 60:.1f} min for {audio_hours:.2f} h of audio "
            f"({audio_hours / (results['train_runtime'] / 3600):,.0f} audio hours per hour)"
        )
    worst, typical = rows[:NUM_SUMMARY_EXAMPLES], rows[len(rows) // 2:][:NUM_SUMMARY_EXAMPLES]
    for title, picked in (("worst", worst), ("typical", typical)):
        lines.append(f"{title} clips (reference -> hypothesis):")
        lines += [f"  {r['reference']!r} -> {r['hypothesis']!r}" for r in picked]
    logger.info("Summary: " + "\n  ".join(lines))


# ----------------------------------------------------------------------------------------------------------------------
# n-gram language model (optional): KenLM estimates it, pyctcdecode beam-searches the CTC logits with it
def kenlm_binary(name: str) -> Optional[str]:
    """Path of a KenLM program (lmplz, build_binary): on PATH or beside this Python (a venv not activated)."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return shutil.which(name) or (beside if os.access(beside, os.X_OK) else None)


def check_lm_tools(data_args: DataTrainingArguments, training_args: TrainingArguments) -> None:
    """Before any work: --lm_text needs pyctcdecode, kenlm and lmplz, and 'train' needs --do_train."""
    if data_args.lm_text is None:
        return
    missing = [p for p in ("pyctcdecode", "pygtrie", "kenlm") if importlib.util.find_spec(p) is None]
    missing += [b for b in ("lmplz", "build_binary") if kenlm_binary(b) is None]
    if missing:
        raise UserError(f"--lm_text needs {', '.join(missing)}, optional extras: install them with `{LM_INSTALL}`.")
    if data_args.lm_text == "train" and not training_args.do_train:
        raise UserError("--lm_text train uses the training transcripts: add --do_train, or pass a text file.")


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


def build_lm_decoder(raw: datasets.DatasetDict, config, tokenizer, data_args, training_args):
    """With --lm_text: estimate the n-gram on the main process and save the decoder to output_dir; every process loads
    it. Returns the beam search (one clip's logits -> text), or None without --lm_text."""
    if not data_args.lm_text:
        return None
    from pyctcdecode import BeamSearchDecoderCTC, build_ctcdecoder

    out, blank_id = training_args.output_dir, blank_token_id(config, tokenizer)
    train_texts = transcripts(raw["train"]) if "train" in raw else []
    with training_args.main_process_first(desc="n-gram language model"):
        if training_args.should_save:
            sentences = lm_sentences(data_args.lm_text, train_texts, chars_to_ignore_regex(data_args.chars_to_ignore),
                                     vocabulary_case(tokenizer.get_vocab()))
            if not sentences:
                raise UserError(f"--lm_text {data_args.lm_text} holds no text.")
            with tempfile.TemporaryDirectory(dir=out) as tmp:
                decoder = build_ctcdecoder(
                    ctc_alphabet(tokenizer, config.vocab_size, blank_id), estimate_ngram(sentences, data_args.lm_order, tmp),
                    # explicit unigrams: read from the ARPA file they would include lmplz's <s> and </s>
                    unigrams=sorted({w for t in sentences for w in t.split()}),
                    alpha=data_args.lm_alpha, beta=data_args.lm_beta,
                )
                shutil.rmtree(os.path.join(out, LM_DIR), ignore_errors=True)  # a previous run's
                decoder.save_to_dir(out)
            words = sum(len(t.split()) for t in sentences)
            logger.info(f"Language model: {data_args.lm_order}-gram from {len(sentences):,} sentences ({words:,} words) "
                        f"of {data_args.lm_text}, saved in {os.path.join(out, LM_DIR)}")
    return functools.partial(BeamSearchDecoderCTC.load_from_dir(out).decode, beam_width=data_args.lm_beam_width)


# ----------------------------------------------------------------------------------------------------------------------
# Phonemes (optional): transcripts phonemized with espeak-ng for --phoneme_language
def check_phonemizer(language: Optional[str]) -> None:
    """Before any work: phoneme mode needs phonemizer with espeak-ng, and a language espeak-ng knows."""
    if language is None:
        return
    if importlib.util.find_spec("phonemizer") is None:
        raise UserError(f"--phoneme_language needs the phonemizer package and espeak-ng: run `{PHONEME_INSTALL}`.")
    from phonemizer.backend import EspeakBackend

    if not EspeakBackend.is_available():
        raise UserError(f"--phoneme_language needs espeak-ng (apt-get install espeak-ng): run `{PHONEME_INSTALL}`.")
    if language not in EspeakBackend.supported_languages():
        raise UserError(f"--phoneme_language {language}: espeak-ng does not know it; `espeak-ng --voices` lists codes.")


def phonemize_batch(batch: dict, *, language: str, word_delimiter_token: Optional[str]) -> dict:
    """datasets.map function: transcripts to espeak-ng phonemes, as Wav2Vec2PhonemeCTCTokenizer.phonemize does it
    (phonemes separated by spaces, words by the delimiter token when the tokenizer has one, language flags removed)."""
    from phonemizer.backend import EspeakBackend
    from phonemizer.separator import Separator

    backend = EspeakBackend(language, language_switch="remove-flags")
    word = f"{word_delimiter_token} " if word_delimiter_token else ""
    phones = backend.phonemize(batch[TARGET_TEXT_COLUMN], separator=Separator(phone=" ", word=word, syllable=""))
    return {TARGET_TEXT_COLUMN: [" ".join(p.split()) for p in phones]}


def phonemize_transcripts(raw, data_args, training_args, word_delimiter_token: Optional[str]) -> datasets.DatasetDict:
    """Phoneme mode: replace the normalised transcripts by phonemes, once (cached) and in parallel."""
    phonemize = functools.partial(
        phonemize_batch, language=data_args.phoneme_language, word_delimiter_token=word_delimiter_token
    )
    with training_args.main_process_first(desc="phonemization"):
        out = datasets.DatasetDict({
            key: map_text(ds, phonemize, f"phonemizing {key} text",
                          [data_args.phoneme_language, word_delimiter_token, CACHE_VERSION], batch_size=500,
                          num_proc=data_args.preprocessing_num_workers)
            for key, ds in raw.items()
        })
    for key, ds in out.items():
        logger.info(f"Phonemized [{key}] ({data_args.phoneme_language}): {transcripts(raw[key])[0]!r} -> "
                    f"{transcripts(ds)[0]!r}")
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Error-analysis report (optional): report.html, built by report.py beside this script
def write_report(output_dir: str, data_args: DataTrainingArguments) -> None:
    """report.html from this run's files, by report.py beside this script; a failure there never costs the run."""
    try:
        from report import build_report
    except ImportError:
        logger.warning("No report.html: report.py is not beside this script (copy it from the repository)")
        return
    try:
        path = build_report(output_dir, clips=data_args.report_clips, embed_audio=data_args.report_embed_audio)
    except Exception as e:  # noqa: BLE001 - the model and metrics are saved; the report is a view of them
        logger.warning(f"No report.html ({type(e).__name__}: {e}); `python report.py {output_dir}` retries")
        return
    logger.info(f"Report: {path} (`python report.py {output_dir}` rebuilds it)")


# ----------------------------------------------------------------------------------------------------------------------
# End of the run: the report, the model card (or a push to the hub)
def model_card_kwargs(model_args: ModelArguments, data_args: DataTrainingArguments) -> dict:
    """Model card fields as upstream, with local paths reduced to their last component (no user paths leak)."""
    dataset = data_args.dataset_name or os.path.basename(data_args.train_file or data_args.eval_file)
    dataset = os.path.basename(os.path.normpath(dataset)) if os.path.exists(dataset) else dataset
    config_name = data_args.dataset_config_name or "na"
    kwargs = {
        "tasks": "automatic-speech-recognition",
        "tags": ["automatic-speech-recognition", dataset],
        "dataset_args": (
            f"Config: {config_name}, Training split: {data_args.train_split_name}, "
            f"Eval split: {data_args.eval_split_name}"
        ),
        "dataset": f"{dataset.upper()} - {config_name.upper()}",
    }
    base = model_args.model_name_or_path
    if base:  # a model trained from --config_name is fine-tuned from nothing
        kwargs["finetuned_from"] = os.path.basename(os.path.normpath(base)) if os.path.isdir(base) else base
    if "common_voice" in dataset:
        kwargs["language"] = data_args.dataset_config_name
    if data_args.target_language:  # an MMS adapter, as upstream's adapter script tags it
        kwargs["tags"].append("mms")
    return kwargs


def finish_run(trainer, model_args, data_args, training_args) -> None:
    """The error-analysis report (after evaluation or prediction), then the model card, or a push to the hub."""
    if training_args.should_save and (training_args.do_eval or training_args.do_predict):
        write_report(training_args.output_dir, data_args)
    card = model_card_kwargs(model_args, data_args)
    if training_args.push_to_hub:
        trainer.push_to_hub(**card)
    elif training_args.should_save:
        trainer.create_model_card(**card)


# ----------------------------------------------------------------------------------------------------------------------
# main: the pipeline, step by step
def setup_logging(training_args: TrainingArguments) -> None:
    """INFO on the main process, WARNING on the others."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    level = logging.INFO if is_main_process(training_args.local_process_index) else logging.WARNING
    logger.setLevel(level)
    datasets.utils.logging.set_verbosity(level if level == logging.WARNING else logging.WARNING)
    transformers.utils.logging.set_verbosity(level if level == logging.WARNING else logging.WARNING)
    logger.warning(
        f"Process rank {training_args.process_index}, device {training_args.device}, "
        f"distributed {training_args.parallel_mode.value == 'distributed'}, fp16 {training_args.fp16}, "
        f"bf16 {training_args.bf16}"
    )


def main(argv: Optional[list[str]] = None) -> dict:
    """Fine-tune and/or evaluate; returns the metrics written to all_results.json."""
    model_args, data_args, training_args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(training_args)
    with StopOnSignal() as stop:  # SIGTERM, SIGUSR1, Ctrl-C: a checkpoint in training, a clean stop elsewhere
        # 0. Every check that can fail before any work; the checkpoint to resume from
        last_checkpoint = check_run(data_args, training_args)
        set_seed(training_args.seed)  # before the model exists, so a fresh CTC head is reproducible

        # 1. Load the data: audio references and transcripts, nothing decoded yet
        raw = load_splits(data_args, training_args, model_args.cache_dir)

        # 2. Text: normalised (or phonemized) transcripts and the tokenizer (given, the checkpoint's, or built)
        tokenizer, raw, text_stats = prepare_text(raw, model_args, data_args, training_args)

        # 3. Model
        feature_extractor, model = load_model(model_args, data_args, tokenizer, training_args.do_train)
        configure_distributed(model.config, training_args)

        # 4. Preprocess: scan headers and drop unusable clips, then decode, resample and extract features (cached)
        stop.phase = "preprocessing"
        vectorized, dropped = preprocess(raw, model, feature_extractor, tokenizer, model_args, data_args, training_args)
        report = data_report(vectorized, dropped, text_stats, feature_extractor.sampling_rate)
        save_json(report, DATA_REPORT_FILE, training_args)
        if data_args.preprocessing_only:
            return log_cache_files(vectorized)

        # 5. Processor (saved once, loaded by every process), collator and trainer
        processor = save_processor(model, feature_extractor, tokenizer, training_args)
        trainer = build_trainer(model, processor, vectorized, data_args, training_args, stop)

        # 6. Train (resuming from a real checkpoint only, never from the pretrained model directory), save the model
        results = train(trainer, last_checkpoint, stop, data_args, training_args) if training_args.do_train else {}

        # 7. n-gram language model (optional): evaluation and prediction then score beam search beside greedy decoding
        lm = build_lm_decoder(raw, model.config, processor.tokenizer, data_args, training_args)

        # 8. Evaluate, and transcribe the predict split: metrics to {eval,predict}_results.json, every clip to a CSV
        stop.phase = "evaluating"
        for key in [k for k in ("eval", "predict") if k in vectorized]:  # the splits --do_eval and --do_predict load
            metrics, rows = evaluate_split(trainer, vectorized[key], key, dropped[key], lm, data_args, training_args)
            results.update(metrics)
            log_summary(key, results, rows, report, training_args.output_dir)

        # 9. The error-analysis report, the model card, or push to the hub
        finish_run(trainer, model_args, data_args, training_args)
        return results


# ----------------------------------------------------------------------------------------------------------------------
# Command line
def cli() -> None:
    """Run main(); user mistakes end with one line on stderr (set CTC_DEBUG=1 for the traceback), a stop signal with
    one line and REQUEUE_EXIT, a second Ctrl-C with 130."""
    if len(sys.argv) == 1:
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    try:
        main()
    except UserError as e:
        if os.environ.get("CTC_DEBUG"):
            raise
        sys.exit(f"error: {e}")
    except Stopped as e:
        print(e, file=sys.stderr)
        sys.exit(REQUEUE_EXIT)
    except KeyboardInterrupt:
        print("interrupted (a second Ctrl-C): stopped at once; rerun to resume from the last checkpoint",
              file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    cli()
