# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""The columns every step of the recipe reads and writes, the files a run writes beside the model (predictions,
vocabulary), whether a split is streamed, and how a derived split is keyed in the cache: the names that several
modules share. Imports no other module of the package."""

import datasets
from datasets.fingerprint import Hasher

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
WAVEFORM_COLUMN = "waveform"  # a training clip's decoded audio, kept instead of its features when it is augmented
FASTEST_SPEED_COLUMN = "fastest_speed"  # the fastest --speed_perturbation factor at which CTC still fits the clip
CACHE_VERSION = 4  # bump when the preprocessing functions change what they write
DATA_REPORT_FILE = "data_report.json"
VOCAB_FILE = "vocab.json"  # a character vocabulary
SUBWORD_FILE = "tokenizer.json"  # a --vocab_type bpe/unigram vocabulary (the tokenizers library's format)
STREAM_TEXT_CLIPS = 20_000  # transcripts a streamed split lends to the vocabulary and the text report
PREDICTIONS_FILES = {"eval": "eval_predictions.csv", "predict": "predictions.csv"}  # every clip scored, worst first
EVAL_KEY = "eval"  # the eval split's key; one of several eval sets (--eval_split_name "test,test-other") is eval_NAME
PREDICTION_COLUMNS = (CLIP_ID_COLUMN, "reference", "hypothesis", "wer", "cer", "seconds", "hypothesis_lm", "wer_lm")
# Every column the steps read or add, and the predictions file's: a corpus's other columns (speaker, accent, ...) are
# passed through to the predictions file.
OWN_COLUMNS = frozenset({AUDIO_COLUMN, RAW_TEXT_COLUMN, TARGET_TEXT_COLUMN, LENGTH_COLUMN, SOURCE_RATE_COLUMN,
                         CHANNELS_COLUMN, MIN_FRAMES_COLUMN, CLIP_ID_COLUMN, DROP_COLUMN, LABELS_COLUMN,
                         WAVEFORM_COLUMN, FASTEST_SPEED_COLUMN,
                         *PREDICTION_COLUMNS})


def is_stream(ds) -> bool:
    """Whether a split is streamed (tar shards for training): no length, read in order, decoded as it is read."""
    return isinstance(ds, datasets.IterableDataset)


def is_eval(key: str) -> bool:
    """Whether a split key is the eval split or one of several eval sets (eval_test, eval_test-other, ...)."""
    return key == EVAL_KEY or key.startswith(EVAL_KEY + "_")


def predictions_file(key: str) -> str:
    """A split's predictions file: eval_predictions.csv, predictions.csv, or eval_NAME_predictions.csv for one of
    several eval sets."""
    return PREDICTIONS_FILES.get(key, f"{key}_predictions.csv")


def derived_fingerprint(ds: datasets.Dataset, *parts) -> str:
    """The cache key of what a map makes of `ds` with these settings. datasets keeps a dataset's fingerprint in a
    private attribute; reading it beats letting datasets hash the map function, which changes between `python
    script.py` (__main__) and an import."""
    return Hasher.hash([ds._fingerprint, *parts])
