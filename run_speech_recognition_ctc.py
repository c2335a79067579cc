#!/usr/bin/env python
# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune a pretrained speech encoder with CTC: any CTC family of transformers 5.x (wav2vec2, XLS-R, HuBERT, WavLM,
UniSpeech, SEW, Data2Vec-Audio, Wav2Vec2-Conformer, Wav2Vec2-BERT, Parakeet, LASR, OmniASR, Granite Speech).

A reproduction of the Hugging Face `run_speech_recognition_ctc.py` example (same arguments and outputs; docs/upstream.md
lists what differs) that runs on transformers 5.x, reads corpora from disk, decodes audio without FFmpeg and scores
WER/CER locally.

One GPU:
    python run_speech_recognition_ctc.py --dataset_name DATA_DIR_OR_HUB_ID \
        --model_name_or_path facebook/wav2vec2-base --output_dir out --do_train --do_eval \
        --per_device_train_batch_size 16 --learning_rate 3e-4 \
        --num_train_epochs 15 --fp16 --group_by_length --text_column_name sentence

Several GPUs (one node):
    torchrun --nproc_per_node 8 run_speech_recognition_ctc.py ...same arguments...

A tiny CPU run (arguments from a JSON file):
    python run_speech_recognition_ctc.py examples/demo.json

This file is the recipe: the arguments, main() and its steps. What is behind a step lives in the package
ctc_finetune beside it, one concept per module (each module's docstring says which step uses it):

    step of main()            modules of ctc_finetune
    0 checks, resume          checkpoints (output_dir, checkpoints cut short), faults (errors, stop signals, full disk)
    1 load the data           corpora (local layouts, manifests, the hub, split expressions), shards (tar shards)
    2 text and tokenizer      text (normalisation), vocabulary (which tokenizer, new vocabularies), phonemes, adapters
    3 model                   modeling (checkpoint, CTC head), families (what differs between families), adapters,
                              lora (LoRA adapters through peft, merged at the end of step 6), distributed (what DDP
                              and FSDP need of the model), edges (--trim_silence: clips cut to their speech)
    4 preprocess              preprocessing (scan, filter, decode, cache, data report), audio (decoding)
    5 processor, trainer      batching (padding, duration batches), trainer (CTCTrainer), columns (shared names),
                              augment (speed perturbation, noise, reverberation: as batches are made), schedules
                              (head-first training, tri-stage learning rate), selection (early stopping)
    6 train                   trainer, shards (batches of a stream), faults (stop signals), selection (keeping the
                              best checkpoints, averaging them)
    7 n-gram LM (optional)    lm
    8 evaluate and predict    metrics (WER/CER/PER, the predictions files)
    9 report and model card   report (report.html), analysis (what it says), curves (its training curves)
    after training            transcribe.py (beside this file) over engine (the transcription engine), sources (its
                              inputs), longform (recordings of any length, in windows), words (word times and
                              confidence), subtitles (SRT, WebVTT, JSON), onnx_runtime (the exported model that
                              --onnx runs); export_onnx.py: export (ONNX export, int8); serve.py: serving (the HTTP
                              server), openai_api (OpenAI's transcription API), batcher (batching across requests),
                              streaming and realtime (live streams); align.py: alignment (forced alignment),
                              segmentation (long recordings cut into a corpus)

Where to change what, and how the arguments are organised: docs/development.md.
"""

import functools
import json
import logging
import os
import sys
import warnings
from dataclasses import dataclass, field, fields
from typing import Optional

import datasets
import huggingface_hub
import torch
import transformers
import yaml
from transformers import AutoProcessor, HfArgumentParser, set_seed
from transformers.trainer_utils import is_main_process

from ctc_finetune.adapters import AdapterArguments
from ctc_finetune.augment import AugmentArguments, Augmenter, build_augmenter
from ctc_finetune.edges import EdgeArguments, configure_edges
from ctc_finetune.batching import DataCollatorCTCWithPadding
from ctc_finetune.checkpoints import resume_or_clear_output_dir
from ctc_finetune.columns import DATA_REPORT_FILE, LENGTH_COLUMN, is_eval, is_stream, predictions_file
from ctc_finetune.corpora import eval_set_key, eval_split_names, load_splits
from ctc_finetune.families import blank_token_id, has_channel_axis, processor_class
from ctc_finetune.distributed import configure_distributed
from ctc_finetune.faults import (
    INTERRUPTED_EXIT,
    REQUEUE_EXIT,
    USER_ERROR_EXIT,
    StopOnSignal,
    Stopped,
    UserError,
    exit_on_user_error,
)
from ctc_finetune.lm import LMArguments, build_lm_decoder
from ctc_finetune.lora import LoraArguments
from ctc_finetune.metrics import (
    SUPPORTED_METRICS,
    compute_metrics,
    log_summary,
    prediction_rows,
    transcribe_split,
    write_csv,
)
from ctc_finetune.modeling import load_model, save_model
from ctc_finetune.preprocessing import (
    LabelEncoder,
    clip_limits,
    data_report,
    featurize,
    log_cache_files,
    log_samples,
    save_json,
    scan_and_filter,
)
from ctc_finetune.report import ReportArguments, write_report
from ctc_finetune.schedules import (TRI_STAGE, TRI_STAGE_RATIOS, TRI_STAGE_SCHEDULER, ScheduleArguments,
                                    schedule_callbacks)
from ctc_finetune.selection import SelectionArguments, configure_selection, finish_selection, selection_callbacks
from ctc_finetune.shards import decode_stream, stream_report
from ctc_finetune.trainer import CTCTrainer, check_report_to, reuse_cpu_memory
from ctc_finetune.vocabulary import VocabularyArguments, build_tokenizer, choose_tokenizer, hub_kwargs, text_report


logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------------
# Constants
USAGE = ("usage: python run_speech_recognition_ctc.py [--flags ... | ARGS.json]; try the demo: python "
         "run_speech_recognition_ctc.py examples/demo.json; --help lists every flag.")


# ---------------------------------------------------------------------------------------------------------------------
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
        metadata={"help": "Train from scratch: directory (or hub id) of a model config plus feature extractor "
                          "config."},
    )
    tokenizer_name_or_path: Optional[str] = field(
        default=None,
        metadata={"help": "Hub id or local directory of an existing CTC tokenizer; by default one is built from the "
                          "data."},
    )
    carry_ctc_head_rows: bool = field(
        default=True, metadata={"help": "When a checkpoint's CTC head meets a new vocabulary: start the new head's "
                                        "rows of the tokens both share (and the blank) from the old ones."}
    )
    cache_dir: Optional[str] = field(
        default=None, metadata={"help": "Where to cache models, tokenizers and datasets downloaded from the hub."}
    )
    freeze_feature_encoder: bool = field(
        default=True,
        metadata={"help": "Freeze the front end that turns audio into encoder frames: the convolutional feature "
                          "encoder (wav2vec2-style models) or the subsampling stack (Parakeet, LASR); see "
                          "docs/models.md."},
    )
    # Regularisation and CTC settings written into the model config. Left unset, wav2vec2-era models get upstream's
    # defaults (as upstream writes them) and the newer families keep their checkpoint's own values.
    attention_dropout: Optional[float] = field(
        default=None,
        metadata={"help": "Dropout ratio on the attention probabilities (0.0). Unset, this and the settings below take "
                          "the value in brackets on wav2vec2-era models and Wav2Vec2-BERT; Parakeet, LASR, OmniASR "
                          "and Granite keep their checkpoint's."},
    )
    activation_dropout: Optional[float] = field(
        default=None, metadata={"help": "Dropout ratio after the activation inside the feed-forward layers (0.0)."}
    )
    feat_proj_dropout: Optional[float] = field(
        default=None, metadata={"help": "Dropout ratio on the projected features (0.0)."}
    )
    hidden_dropout: Optional[float] = field(
        default=None,
        metadata={"help": "Dropout ratio of the embeddings, encoder and pooler fully connected layers (0.0)."},
    )
    final_dropout: Optional[float] = field(default=None, metadata={"help": "Dropout ratio before the CTC head (0.0)."})
    mask_time_prob: Optional[float] = field(
        default=None, metadata={"help": "Probability of each feature frame starting a SpecAugment time mask (0.05)."}
    )
    mask_time_length: Optional[int] = field(
        default=None, metadata={"help": "Length of each time mask, in frames (10)."}
    )
    mask_feature_prob: Optional[float] = field(
        default=None,
        metadata={"help": "Probability of each feature channel starting a SpecAugment feature mask (0.0)."},
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
        metadata={"help": "Zero infinite CTC losses (labels longer than the audio allows) (False)."},
    )
    add_adapter: bool = field(
        default=False,
        metadata={"help": "Add a convolutional adapter on top of the encoder (meant for Wav2Vec2-BERT)."},
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
        metadata={"help": "Hub dataset id, or a local corpus directory (split folders, Common Voice, LibriSpeech, "
                          "saved)."},
    )
    dataset_config_name: Optional[str] = field(
        default=None, metadata={"help": "Configuration of the dataset (e.g. a language code such as 'tr')."}
    )
    train_split_name: str = field(
        default="train+validation", metadata={"help": "Training split; '+' joins splits, 'train[:800]' takes a slice."}
    )
    eval_split_name: str = field(
        default="test",
        metadata={"help": "Evaluation split; a comma list (test,test-other) scores each set on its own "
                          "(eval_test_wer, eval_test-other_wer, ...); '+' joins splits into one."},
    )
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
    overwrite_cache: bool = field(
        default=False, metadata={"help": "Redo the preprocessing instead of using its cache."}
    )
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
        default_factory=lambda: ["wer"],
        metadata={"help": "Metrics computed at evaluation: 'wer', 'cer', 'per' (phoneme mode)."},
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
    # Legacy spelling (transformers 4.x command lines)
    use_auth_token: bool = field(default=False, metadata={"help": "Old flag, ignored: the stored hub login is used."})

    def __post_init__(self):
        if self.use_auth_token:
            warnings.warn("--use_auth_token is deprecated: the stored hub login is used unless --token is given.")
        if self.dataset_name is None and self.train_file is None and self.eval_file is None:
            raise UserError("pass --dataset_name (hub id or local directory) or --train_file/--eval_file manifests.")
        unknown = [m for m in self.eval_metrics if m not in SUPPORTED_METRICS]
        if unknown:
            raise UserError(f"--eval_metrics {' '.join(unknown)} is not supported; "
                            f"choose from {' '.join(SUPPORTED_METRICS)}.")
        if not 0.0 <= self.max_unk_share <= 1.0:
            raise UserError(f"--max_unk_share must be between 0 and 1, got {self.max_unk_share}.")


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    """transformers.TrainingArguments plus the flags of the example's published command lines."""

    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Keep False: the collator picks its columns and group_by_length reads lengths."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start afresh in a non-empty output_dir: rebuild the vocabulary, drop checkpoints."},
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
    # Schedules and model selection (ctc_finetune/schedules.py, ctc_finetune/selection.py)
    lr_scheduler_type: str = field(
        default="linear",
        metadata={"help": "Learning-rate schedule: transformers' (linear, cosine, warmup_stable_decay, ...) or "
                          "tri_stage (fairseq's: warm-up, hold, decay in the shares of --tri_stage_ratios)."},
    )
    tri_stage_ratios: Optional[list[float]] = field(
        default=None,
        metadata={"help": "WARMUP HOLD DECAY shares of the steps for --lr_scheduler_type tri_stage (default 0.1 "
                          "0.4 0.5, as fairseq's wav2vec 2.0 fine-tuning)."},
    )
    # Legacy form (transformers 4.x), mapped to today's argument with a warning
    group_by_length: bool = field(
        default=False, metadata={"help": "Old form of --train_sampling_strategy group_by_length."}
    )

    def __post_init__(self):
        if self.group_by_length:
            warnings.warn("--group_by_length is now --train_sampling_strategy group_by_length; using it as such.")
            self.train_sampling_strategy = "group_by_length"
        if self.length_column_name == "length":  # TrainingArguments' default: point it at our precomputed lengths
            self.length_column_name = LENGTH_COLUMN
        if self.max_batch_duration is not None and self.max_batch_duration <= 0:
            raise UserError(f"--max_batch_duration must be a number of seconds > 0, got {self.max_batch_duration}.")
        if self.lr_scheduler_type == TRI_STAGE:  # transformers' warmup_stable_decay, sized by the trainer
            self.lr_scheduler_type = TRI_STAGE_SCHEDULER
            self.tri_stage_ratios = self.tri_stage_ratios or list(TRI_STAGE_RATIOS)
        elif self.tri_stage_ratios:
            raise UserError("--tri_stage_ratios sets the phases of --lr_scheduler_type tri_stage: add it.")
        if self.tri_stage_ratios and (len(self.tri_stage_ratios) != 3 or min(self.tri_stage_ratios) < 0):
            raise UserError("--tri_stage_ratios takes 3 shares, WARMUP HOLD DECAY (e.g. 0.1 0.4 0.5).")
        if self.greater_is_better is None and (self.metric_for_best_model or "").endswith(SUPPORTED_METRICS):
            self.greater_is_better = False  # an error rate: lower is better (the Trainer assumes higher)
        super().__post_init__()


@dataclass
class Features:
    """The optional features' arguments: one class each, whose flags and checks live in the feature's module."""

    vocabulary: VocabularyArguments
    adapters: AdapterArguments
    augment: AugmentArguments
    edges: EdgeArguments
    lora: LoraArguments
    schedules: ScheduleArguments
    selection: SelectionArguments
    lm: LMArguments
    report: ReportArguments


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


def build_parser() -> ArgumentParser:
    """The recipe's parser: the upstream example's three argument classes, then each optional feature's (their
    sections of --help; docs/arguments.md is generated from it)."""
    return ArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments,
                           *(f.type for f in fields(Features))))


def parse_args(argv: list[str]) -> tuple[ModelArguments, DataTrainingArguments, TrainingArguments, Features]:
    """Parse the command line, or a single JSON or YAML file of arguments; hub tokens move into HF_TOKEN. Each class
    checks its own flags; the rules between features are checked here."""
    parser = build_parser()
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        if not os.path.isfile(argv[0]):
            raise UserError(f"argument file {argv[0]} does not exist; pass an existing .json or .yaml file or "
                            "command-line flags.")
        with open(argv[0], encoding="utf-8") as f:
            try:
                args = json.load(f) if argv[0].endswith(".json") else yaml.safe_load(f)
            except (ValueError, yaml.YAMLError) as e:
                raise UserError(f"argument file {argv[0]} is not valid "
                                f"{'JSON' if argv[0].endswith('.json') else 'YAML'}: {str(e).splitlines()[0]}") from e
        if not isinstance(args, dict):
            raise UserError(f"argument file {argv[0]} must hold a mapping of flag names to values.")
        for old, new in LEGACY_RENAMES.items():
            if old in args:
                warnings.warn(f"{old} is the old name of {new}; using it as such.")
                args[new] = args.pop(old)
        parsed = parse_or_explain(parser.parse_dict, args)
    else:
        parsed = parse_or_explain(parser.parse_args_into_dataclasses, args=rename_legacy_flags(argv))
    model_args, data_args, training_args, *features = parsed
    features = Features(*features)
    hide_tokens(data_args, training_args)
    check_feature_rules(model_args, data_args, training_args, features)
    return model_args, data_args, training_args, features


def check_feature_rules(model_args: ModelArguments, data_args: DataTrainingArguments, training_args: TrainingArguments,
                        features: Features) -> None:
    """The rules between features (each feature's class checks its own flags), and the selection metric."""
    vocab, lora, language = features.vocabulary, features.lora, features.adapters.target_language
    phonemes, subword = vocab.phoneme_language, vocab.vocab_type != "char"
    if phonemes and data_args.eval_metrics == ["wer"]:  # the default: words are not what is scored
        data_args.eval_metrics = ["per"]
    if "per" in data_args.eval_metrics and not phonemes:
        raise UserError("--eval_metrics per scores phonemes: add --phoneme_language (e.g. tr), or use wer/cer.")
    if subword and model_args.tokenizer_name_or_path:
        raise UserError("--vocab_type builds a vocabulary and --tokenizer_name_or_path reuses one: pass only one.")
    if language and (phonemes or subword):
        raise UserError("--target_language trains an MMS adapter with a character vocabulary per language: it "
                        "does not go with --phoneme_language or --vocab_type bpe/unigram.")
    if lora.lora_rank and language:
        raise UserError("--lora_rank (LoRA) and --target_language (MMS adapters) are two kinds of adapters: pick one.")
    if lora.lora_rank and model_args.config_name:
        raise UserError("--lora_rank adapts a pretrained model: pass it as --model_name_or_path, not --config_name.")
    if lora.lora_rank and features.selection.average_checkpoints:
        raise UserError("--average_checkpoints averages full checkpoints; LoRA checkpoints hold adapters only: drop "
                        "one of --average_checkpoints and --lora_rank.")
    if phonemes and features.lm.lm_text:
        raise UserError("--lm_text builds a word n-gram: it does not go with --phoneme_language.")
    if features.lm.lm_text == "train" and not training_args.do_train:
        raise UserError("--lm_text train uses the training transcripts: add --do_train, or pass a text file.")
    eval_sets = [eval_set_key(name)[len("eval_"):] for name in eval_split_names(data_args)]
    configure_selection(features.selection, training_args, eval_sets, data_args.eval_metrics)


# ---------------------------------------------------------------------------------------------------------------------
# Run setup (step 0): logging, the checks that can fail before any work, distributed settings
def setup_logging(training_args: TrainingArguments) -> None:
    """INFO on the main process, WARNING on the others, for this script and the package; WARNING for datasets and
    transformers everywhere (their INFO lines would bury the recipe's one line per phase)."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    level = logging.INFO if is_main_process(training_args.local_process_index) else logging.WARNING
    for name in (__name__, "ctc_finetune"):
        logging.getLogger(name).setLevel(level)
    datasets.utils.logging.set_verbosity(logging.WARNING)
    transformers.utils.logging.set_verbosity(logging.WARNING)
    logger.warning(
        f"Process rank {training_args.process_index}, device {training_args.device}, "
        f"distributed {training_args.parallel_mode.value == 'distributed'}, fp16 {training_args.fp16}, "
        f"bf16 {training_args.bf16}"
    )


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


def check_run(data_args: DataTrainingArguments, training_args: TrainingArguments, features: Features) -> Optional[str]:
    """Every check that can fail before any work (so a mistake costs seconds, not a preprocessing pass); returns the
    checkpoint to resume from, or None."""
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise UserError("nothing to do: add --do_train, --do_eval and/or --do_predict (the demo's settings: "
                        "python run_speech_recognition_ctc.py examples/demo.json).")
    check_push_to_hub(training_args)
    check_report_to(training_args.report_to)
    return resume_or_clear_output_dir(training_args)


# ---------------------------------------------------------------------------------------------------------------------
# The steps of main(), in its order; each hands its work to the package ctc_finetune
def prepare_text(splits, model_args, data_args, training_args, features: Features):
    """The transcripts normalised (or phonemized) for the tokenizer, the tokenizer (given, the checkpoint's own, or
    built from the text), what turns a transcript into labels, and the text report. Returns (tokenizer, encode, the
    splits with their transcripts, text_stats)."""
    vocab, adapters = features.vocabulary, features.adapters
    tokenizer, splits = choose_tokenizer(splits, model_args, data_args, training_args, vocab, adapters)
    if tokenizer is None:
        tokenizer = build_tokenizer(model_args, data_args, training_args, splits, vocab, adapters)
    phonemes = bool(vocab.phoneme_language)
    return (tokenizer, LabelEncoder(tokenizer, phonemes), splits,
            text_report(splits, tokenizer, data_args, phonemes))


def preprocess(splits, model, feature_extractor, encode: LabelEncoder, text_stats, model_args, data_args,
               training_args, augmenter: Optional[Augmenter]):
    """The model's inputs per split (evaluation splits longest first), the clips dropped per split and reason, and
    the data report. Read splits are scanned and filtered, then featurized (cached); a streamed one (tar shards) is
    set up to be decoded and checked as training reads it. Logs three training examples as the model will see them."""
    cache_root = os.path.join(model_args.cache_dir or datasets.config.HF_DATASETS_CACHE, "ctc_preprocessing")
    rate = feature_extractor.sampling_rate
    frames, limits = clip_limits(model, feature_extractor, data_args)
    streamed = [k for k, ds in splits.items() if is_stream(ds)]
    read = datasets.DatasetDict({k: ds for k, ds in splits.items() if k not in streamed})
    speeds = augmenter.speeds if augmenter else ()
    kept, dropped = scan_and_filter(read, encode, frames, limits, rate, cache_root, data_args, training_args, speeds)
    vectorized, dropped = featurize(kept, data_args, training_args, feature_extractor, dropped, cache_root,
                                    augmenter is not None)
    log_samples(vectorized, encode.tokenizer, rate, training_args.seed)
    report = data_report(vectorized, dropped, text_stats, rate)
    for key in streamed:
        vectorized[key] = decode_stream(splits[key], feature_extractor, encode, frames, limits, augmenter)
        dropped[key], report[key] = {}, stream_report(splits[key], key, text_stats[key])
    in_order = list(splits)  # train, eval, predict
    return (datasets.DatasetDict({k: vectorized[k] for k in in_order}), {k: dropped[k] for k in in_order},
            {k: report[k] for k in in_order})


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


def build_trainer(model, processor, vectorized: datasets.DatasetDict, augmenter: Optional[Augmenter], data_args,
                  training_args, features: Features, stop: StopOnSignal):
    """The CTCTrainer: padding collator (which augments training clips), greedy-decoding metrics on the eval set(s),
    and the callbacks: stop signals, head-first training, early stopping, keeping the best checkpoints."""
    feature_extractor = processor.feature_extractor
    eval_sets = {key[len("eval_"):]: ds for key, ds in vectorized.items() if is_eval(key) and key != "eval"}
    callbacks = [stop, *schedule_callbacks(features.schedules, model, training_args),
                 *selection_callbacks(features.selection, training_args)]
    return CTCTrainer(
        model=model,
        args=training_args,
        data_collator=DataCollatorCTCWithPadding(feature_extractor, channel_axis=has_channel_axis(feature_extractor),
                                                 augmenter=augmenter),
        train_dataset=vectorized.get("train"),
        eval_dataset=eval_sets or vectorized.get("eval"),
        processing_class=processor,
        compute_metrics=functools.partial(
            compute_metrics, tokenizer=processor.tokenizer, blank_id=blank_token_id(model.config, processor.tokenizer),
            metric_names=data_args.eval_metrics,
        ),
        callbacks=callbacks,
        adapter_learning_rate=features.lora.lora_learning_rate,
    )


def train(trainer: CTCTrainer, last_checkpoint, stop: StopOnSignal, model_args, data_args, training_args,
          features: Features) -> dict:
    """Train (from last_checkpoint when there is one), save the model (and the language's adapter) and
    train_results.json; a stop signal ends here with the checkpoint saved. Returns the training metrics."""
    reuse_cpu_memory(training_args)  # from here: what set-up freed went back to the system
    train_result = trainer.train(resume_from_checkpoint=last_checkpoint)
    if stop.received:
        step = trainer.state.global_step
        raise Stopped(f"stopped by {stop.received} at step {step}: checkpoint-{step} saved in "
                      f"{training_args.output_dir}; run the same command to resume")
    averaged = finish_selection(trainer, features.selection)
    save_model(trainer, model_args.model_name_or_path, hub_kwargs(model_args, data_args))
    metrics = {**train_result.metrics, **{f"train_{k}": v for k, v in trainer.throughput.summary().items()},
               **averaged, **trainer.data_metrics()}
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    return metrics


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
    write_csv(os.path.join(training_args.output_dir, predictions_file(key)), rows)
    return metrics, rows


def model_card_kwargs(model_args: ModelArguments, data_args: DataTrainingArguments,
                      target_language: Optional[str] = None) -> dict:
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
    if target_language:  # an MMS adapter, as upstream's adapter script tags it
        kwargs["tags"].append("mms")
    return kwargs


def finish_run(trainer, model_args, data_args, training_args, features: Features) -> None:
    """The error-analysis report (after evaluation or prediction), then the model card, or a push to the hub; under
    torchrun, the process group is closed once every rank is done."""
    if training_args.should_save and (training_args.do_eval or training_args.do_predict):
        write_report(training_args.output_dir, features.report)
    card = model_card_kwargs(model_args, data_args, getattr(trainer.model, "target_lang", None))
    if training_args.push_to_hub:
        trainer.push_to_hub(**card)
    elif training_args.should_save:
        trainer.create_model_card(**card)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # A gloo group left open can abort a rank at interpreter exit ("terminate called without an active
        # exception", pytorch/pytorch#190489): torchrun then kills the others mid-work.
        trainer.accelerator.wait_for_everyone()
        torch.distributed.destroy_process_group()
        logger.info("Every rank done: process group closed")


# ---------------------------------------------------------------------------------------------------------------------
# main: the pipeline, step by step
def main(argv: Optional[list[str]] = None) -> dict:
    """Fine-tune and/or evaluate; returns the metrics written to all_results.json."""
    model_args, data_args, training_args, features = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(training_args)
    with StopOnSignal() as stop:  # SIGTERM, SIGUSR1, Ctrl-C: a checkpoint in training, a clean stop elsewhere
        # 0. Every check that can fail before any work; the checkpoint to resume from
        last_checkpoint = check_run(data_args, training_args, features)
        set_seed(training_args.seed)  # before the model exists, so a fresh CTC head is reproducible

        # 1. Load the data: audio references and transcripts, nothing decoded yet
        splits = load_splits(data_args, training_args, model_args.cache_dir)

        # 2. Text: normalised (or phonemized) transcripts, the tokenizer (given, the checkpoint's, or built), labels
        tokenizer, encode, splits, text_stats = prepare_text(splits, model_args, data_args, training_args, features)

        # 3. Model
        feature_extractor, model = load_model(model_args, data_args, tokenizer, training_args.do_train, features.lora,
                                              features.adapters)
        configure_edges(feature_extractor, features.edges)  # --trim_silence: clips cut to their speech
        configure_distributed(model, training_args)

        # 4. Preprocess: scan headers and drop unusable clips, then decode, resample and extract features (cached)
        stop.phase = "preprocessing"
        augmenter = build_augmenter(features.augment, feature_extractor.sampling_rate, training_args.do_train)
        vectorized, dropped, report = preprocess(splits, model, feature_extractor, encode, text_stats, model_args,
                                                 data_args, training_args, augmenter)
        save_json(report, DATA_REPORT_FILE, training_args)
        if data_args.preprocessing_only:
            return log_cache_files(vectorized)

        # 5. Processor (saved once, loaded by every process), collator and trainer
        processor = save_processor(model, feature_extractor, tokenizer, training_args)
        trainer = build_trainer(model, processor, vectorized, augmenter, data_args, training_args, features, stop)

        # 6. Train (resuming from a real checkpoint only, never from the pretrained model directory), save the model
        results = (train(trainer, last_checkpoint, stop, model_args, data_args, training_args, features)
                   if training_args.do_train else {})

        # 7. n-gram language model (optional): evaluation and prediction then score beam search beside greedy decoding
        lm = build_lm_decoder(splits, model.config, processor.tokenizer, features.lm, data_args.chars_to_ignore,
                              training_args)

        # 8. Evaluate, and transcribe the predict split: metrics to {eval,predict}_results.json, every clip to a CSV
        stop.phase = "evaluating"
        for key in [k for k in vectorized if is_eval(k) or k == "predict"]:  # what --do_eval and --do_predict load
            metrics, rows = evaluate_split(trainer, vectorized[key], key, dropped[key], lm, data_args, training_args)
            results.update(metrics)
            log_summary(key, results, rows, report, training_args.output_dir)

        # 9. The error-analysis report, the model card, or push to the hub
        finish_run(trainer, model_args, data_args, training_args, features)
        return results


# ---------------------------------------------------------------------------------------------------------------------
# Command line
def cli() -> None:
    """Run main(); a user mistake ends with one line on stderr and USER_ERROR_EXIT (set CTC_DEBUG=1 for the
    traceback), a stop signal with one line and REQUEUE_EXIT, a second Ctrl-C with INTERRUPTED_EXIT."""
    if len(sys.argv) == 1:
        print(USAGE, file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    try:
        main()
    except UserError as e:
        exit_on_user_error(e)
    except Stopped as e:
        print(e, file=sys.stderr)
        sys.exit(REQUEUE_EXIT)
    except KeyboardInterrupt:
        print("interrupted (a second Ctrl-C): stopped at once; rerun to resume from the last checkpoint",
              file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)


if __name__ == "__main__":
    cli()
