# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Corpora and their splits (step 1): local layouts (audiofolder splits, Common Voice, LibriSpeech, saved
datasets, tar shards), manifest files, the hub, and split expressions such as train[:80%]+validation."""

import glob
import logging
import os
import re
import shlex
from typing import Optional

import datasets

from .columns import AUDIO_COLUMN, EVAL_KEY, OWN_COLUMNS, RAW_TEXT_COLUMN, is_stream
from .faults import UserError
from .shards import load_shards, this_process_stream

logger = logging.getLogger(__name__)

SPLIT_PART = re.compile(r"^(?P<name>[\w.-]+)(?:\[(?P<start>-?\d*%?):(?P<stop>-?\d*%?)\])?$")
COMMON_VOICE_SPLITS = {"validation": "dev"}  # split name -> .tsv name where they differ
# Column names other corpora use, tried (with a log line) when the default column name does not exist
AUDIO_COLUMN_ALIASES = ("audio", "file_name", "path", "audio_filepath", "file", "filename")
TEXT_COLUMN_ALIASES = ("text", "sentence", "transcript", "transcription", "normalized_text")
EVAL_SPLIT_NAMES = ("test", "validation", "dev", "valid")  # split names suggested for evaluation, in this order
HELD_OUT = 10  # percent of a corpus's only split suggested as its eval slice


class MissingSplitError(UserError):
    """A split the local corpus lacks; `found` lists the splits it has (load_splits adds the flags to pass)."""

    def __init__(self, name: str, data_dir: str, found: list[str]):
        self.where = f"split {name!r} not found in {data_dir} (its splits: {', '.join(found) or 'none'})"
        self.found = found
        super().__init__(self.where + ".")


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


def load_local_split(data_dir: str, layout: str, name: str) -> datasets.Dataset:
    """One named split of a local corpus, with audio paths made absolute."""
    if layout == "saved":
        saved = datasets.load_from_disk(data_dir)
        if isinstance(saved, datasets.Dataset):
            return saved
        if name not in saved:
            raise MissingSplitError(name, data_dir, sorted(saved))
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
        raise MissingSplitError(name, data_dir, found)
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
            raise MissingSplitError(split, data_dir, splits)
        tars += found
    return tars


def load_split(data_args, expression: str, manifest: Optional[str], cache_dir,
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
    ours = {*OWN_COLUMNS, *used}
    scalar = ("string", "large_string", "int8", "int16", "int32", "int64", "bool")
    return [c for c, f in (ds.features or {}).items()
            if c not in ours and isinstance(f, datasets.Value) and f.dtype in scalar]


def eval_split_names(data_args) -> list[str]:
    """The eval split expressions: --eval_split_name's comma list ("test,test-other": scored one by one), or one
    ('+' joins splits into one, as upstream)."""
    if data_args.eval_file:
        return [data_args.eval_file]
    names = [n.strip() for n in data_args.eval_split_name.split(",")]
    if not all(names) or len(set(names)) < len(names):
        raise UserError(f"--eval_split_name {data_args.eval_split_name!r}: give split names separated by commas, "
                        "each once (e.g. test,test-other).")
    return names


def eval_set_key(name: str) -> str:
    """The split key of one of several eval sets, which also names its metrics and files: test-other ->
    eval_test-other (eval_test-other_wer, eval_test-other_predictions.csv); odd characters become _."""
    return f"{EVAL_KEY}_{re.sub(r'[^0-9A-Za-z.-]+', '_', name).strip('_')}"


def split_flags_fix(found: list[str], data_args, training_args, predicting: bool = False) -> str:
    """The split flags that work on a corpus whose splits are `found`: the asked-for splits that exist, else `train`
    to train on and test/validation/dev to evaluate on (a corpus without one of those: a slice of a split). For a
    missing predict split (train and eval loaded), only --predict_split_name."""
    if not found:
        return "--train_file and --eval_file manifests"

    def exists(expression):
        matches = [SPLIT_PART.match(part.strip()) for part in expression.split("+")]
        return all(m and m["name"] in found for m in matches)

    held_out = next((n for n in EVAL_SPLIT_NAMES if n in found), None) or next(
        (n for prefix in EVAL_SPLIT_NAMES for n in found if n.startswith(prefix)), None)  # test-clean, dev-other
    eval_value = ",".join(n for n in eval_split_names(data_args) if exists(n)) or held_out
    if predicting:
        return f"--predict_split_name {shlex.quote(eval_value or found[0])}"
    # The eval split we pick must not also be trained on (train+validation when validation becomes the eval split).
    train_value = "+".join(p for p in data_args.train_split_name.split("+") if exists(p) and p.strip() != eval_value)
    train_value = train_value or next((n for n in found if n.startswith("train")), None) or next(
        (n for n in found if n != eval_value), None)
    trains = training_args.do_train and not data_args.train_file
    evaluates = training_args.do_eval and not data_args.eval_file
    if trains and evaluates and (eval_value is None or train_value is None):  # one split: hold out a slice of it
        whole = train_value or eval_value
        train_value, eval_value = f"{whole}[:{100 - HELD_OUT}%]", f"{whole}[{100 - HELD_OUT}%:]"
    flags = []
    if trains:
        flags.append(f"--train_split_name {shlex.quote(train_value or found[0])}")
    if evaluates:
        flags.append(f"--eval_split_name {shlex.quote(eval_value or found[0])}")
    return " ".join(flags)


def load_splits(data_args, training_args, cache_dir) -> datasets.DatasetDict:
    """Load the train, eval and/or predict split with the columns `audio` (path or bytes) and the raw transcript
    `text`, plus, in eval and predict splits, the manifest's scalar columns (passthrough_columns)."""
    splits = datasets.DatasetDict()
    wanted = []
    if training_args.do_train:
        wanted.append(("train", data_args.train_split_name, data_args.train_file, data_args.max_train_samples))
    eval_sets = eval_split_names(data_args)
    if training_args.do_eval:  # one eval split, or several eval sets, each scored on its own
        for name in eval_sets:
            key = EVAL_KEY if len(eval_sets) == 1 else eval_set_key(name)
            wanted.append((key, name, data_args.eval_file, data_args.max_eval_samples))
    if training_args.do_predict:  # the (first) eval split unless told otherwise
        own = data_args.predict_file or data_args.predict_split_name
        wanted.append(("predict", data_args.predict_split_name or eval_sets[0],
                       data_args.predict_file if own else data_args.eval_file, None))
    for key, expression, manifest, max_samples in wanted:
        try:
            ds = load_split(data_args, expression, manifest, cache_dir, stream=key == "train")
        except MissingSplitError as e:
            fix = split_flags_fix(e.found, data_args, training_args, predicting=key == "predict")
            raise UserError(f"{e.where}; pass {fix}") from e
        split = manifest or expression
        audio = resolve_column(ds, data_args.audio_column_name, AUDIO_COLUMN, AUDIO_COLUMN_ALIASES, "audio", split)
        text = resolve_column(ds, data_args.text_column_name, RAW_TEXT_COLUMN, TEXT_COLUMN_ALIASES, "text", split)
        if max_samples is not None:
            ds = ds.take(max_samples) if is_stream(ds) else ds.select(range(min(max_samples, len(ds))))
        ds = ds.select_columns([audio, text, *([] if key == "train" else passthrough_columns(ds, (audio, text)))])
        ds = ds.rename_columns({c: n for c, n in ((audio, AUDIO_COLUMN), (text, RAW_TEXT_COLUMN)) if c != n})
        splits[key] = this_process_stream(ds, training_args) if is_stream(ds) else ds
    logger.info("Loaded: " + ", ".join(f"{k} {'a stream' if is_stream(ds) else f'{len(ds):,} clips'}"
                                       for k, ds in splits.items()))
    return splits
