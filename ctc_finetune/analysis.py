# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""What report.html says about a run, before any HTML: the run's files read back (predictions, trainer state, JSON
reports), corpus scores, WER and CER by group (clip duration, and each other column of the predictions, a number
in a few ranges), and the most frequent errors. Pure functions over rows of dicts; report.py renders them."""

import bisect
import csv
import glob
import json
import logging
import math
import os
from collections import Counter
from typing import Callable, Optional

import jiwer

from .columns import EVAL_KEY, PREDICTION_COLUMNS, PREDICTIONS_FILES, predictions_file
from .faults import UserError

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = PREDICTION_COLUMNS[:3]  # clip_id, reference, hypothesis
SCORE_COLUMNS = PREDICTION_COLUMNS[3:]  # the script's other columns; the rest are extras (speaker, accent, ...)
MAX_CATEGORIES = 50  # a text column with at most this many distinct values gets its own breakdown table
MIN_GROUP_CLIPS = 2  # clips per group, on average, below which a breakdown is left out (it would repeat the clips)
NUMBER_BINS = 5  # ranges a numeric column (speaking rate, SNR, ...) is cut into, of about equal clip counts
SAME_SECONDS = 0.1  # seconds: a column this close to the clip durations (of 90% of the clips) repeats that table
DURATION_EDGES = (2, 5, 10, 20)  # seconds: buckets < 2, 2-5, 5-10, 10-20, >= 20
TOP_ERRORS = 20  # rows in each most-frequent-errors table


def clip_error(measure, ref: str, hyp: str) -> float:
    """WER or CER of one clip (jiwer's `measure`), to 4 places; an empty reference scores 1 for any output, 0 for
    none. metrics.py scores each evaluated clip by it, and read_predictions a file without scores."""
    return round(measure(ref, hyp), 4) if ref.strip() else float(bool(hyp.strip()))


class ReportError(UserError):
    """Input the user can fix; the command line prints it as one `error:` line."""


def load_json(path: str) -> Optional[dict]:
    """A JSON object written by the run, or None when it is missing or unreadable (the page leaves that part out)."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        logger.warning(f"{path} is unreadable ({e}); the report leaves its part out")
        return None
    return data if isinstance(data, dict) else None


def prediction_files(output_dir: str) -> dict[str, str]:
    """The predictions files of a run's output_dir by split (eval, predict, eval_NAME of several eval sets); a
    folder without any is a ReportError that names the fix."""
    if not os.path.isdir(output_dir):
        raise ReportError(f"{output_dir} is not a directory; pass the output_dir of a run of "
                          "run_speech_recognition_ctc.py")
    found = {split: os.path.join(output_dir, name) for split, name in PREDICTIONS_FILES.items()
             if os.path.isfile(os.path.join(output_dir, name))}
    for path in sorted(glob.glob(os.path.join(output_dir, predictions_file(EVAL_KEY + "_*")))):  # several eval sets
        found[os.path.basename(path)[:-len(predictions_file(""))]] = path
    if not found:
        raise ReportError(f"{output_dir} has no {' or '.join(PREDICTIONS_FILES.values())}; run "
                          f"run_speech_recognition_ctc.py with --do_eval or --do_predict into it first")
    return found


def load_trainer_state(output_dir: str) -> Optional[dict]:
    """trainer_state.json of the finished run, else that of its newest checkpoint (a run stopped before the end)."""
    state = load_json(os.path.join(output_dir, "trainer_state.json"))
    if state is None:
        checkpoints = glob.glob(os.path.join(output_dir, "checkpoint-*", "trainer_state.json"))
        steps = {path: os.path.basename(os.path.dirname(path))[len("checkpoint-"):] for path in checkpoints}
        numbered = [path for path, step in steps.items() if step.isdigit()]
        if numbered:
            state = load_json(max(numbered, key=lambda path: int(steps[path])))
    return state


def to_float(value) -> Optional[float]:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_predictions(path: str) -> tuple[list[dict], list[str]]:
    """The clips of a predictions CSV, worst first, and its extra columns (passed through from the manifest)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = [c for c in reader.fieldnames or [] if c]
        raw = list(reader)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ReportError(f"{path} has no column {', '.join(missing)} (its columns: {', '.join(columns) or 'none'}); "
                          f"pass the output_dir of run_speech_recognition_ctc.py, whose predictions CSVs have them")
    rows = []
    for values in raw:
        row = {c: values.get(c) or "" for c in columns}  # short rows give None
        for name, measure in (("wer", jiwer.wer), ("cer", jiwer.cer)):  # the script writes both; else we score
            score = to_float(row[name]) if name in row else None
            row[name] = clip_error(measure, row["reference"], row["hypothesis"]) if score is None else score
        row["seconds"] = to_float(row.get("seconds"))
        row["wer_lm"] = to_float(row.get("wer_lm"))
        rows.append(row)
    rows.sort(key=lambda r: (-r["wer"], -r["cer"]))  # the script sorts so already; a CSV edited by hand may not be
    extras = [c for c in columns if c not in REQUIRED_COLUMNS + SCORE_COLUMNS]
    return rows, extras


# ---------------------------------------------------------------------------------------------------------------------
# Scoring: corpus-level rates per group of clips, and the most frequent errors
def corpus_scores(refs: list[str], hyps: list[str], cer: bool = True) -> dict:
    """WER and CER over some clips: all errors / all reference words (characters), not a mean of clip rates.

    Clips with an empty reference are left out of the rates, as the training script's scores leave them out.
    `cer=False` skips the CER (None), which takes most of the time.
    """
    pairs = [(r, h) for r, h in zip(refs, hyps) if r.strip()]
    if not pairs:
        return {"clips": len(refs), "words": 0, "wer": None, "cer": None}
    kept_refs, kept_hyps = [r for r, _ in pairs], [h for _, h in pairs]
    words = jiwer.process_words(kept_refs, kept_hyps)
    return {"clips": len(refs), "words": words.hits + words.substitutions + words.deletions, "wer": words.wer,
            "cer": jiwer.process_characters(kept_refs, kept_hyps).cer if cer else None}


def duration_bucket(seconds: Optional[float]) -> str:
    """The duration bucket of a clip, e.g. '2–5 s'."""
    if seconds is None:
        return "unknown"
    if seconds < DURATION_EDGES[0]:
        return f"< {DURATION_EDGES[0]} s"
    for low, high in zip(DURATION_EDGES, DURATION_EDGES[1:]):
        if seconds < high:
            return f"{low}–{high} s"
    return f"≥ {DURATION_EDGES[-1]} s"


def breakdown(rows: list[dict], group_of: Callable[[dict], str], has_lm: bool) -> list[dict]:
    """Corpus-level scores for each group of clips (`group_of(row)` names a clip's group), in first-seen order."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(group_of(row), []).append(row)
    table = []
    for name, members in groups.items():
        refs = [m["reference"] for m in members]
        entry = {"group": name, **corpus_scores(refs, [m["hypothesis"] for m in members])}
        if has_lm:
            entry["wer_lm"] = corpus_scores(refs, [m["hypothesis_lm"] for m in members], cer=False)["wer"]
        table.append(entry)
    return table


def number_label(value: float) -> str:
    """A bin edge or value as short text: 150, 1.5, 0.25."""
    return f"{value:.4g}"


def round_step(width: float) -> float:
    """The largest 1, 2 or 5 times a power of ten that is at most `width` (> 0)."""
    power = 10.0 ** math.floor(math.log10(width))
    return max(m * power for m in (1, 2, 5) if m * power <= width)


def number_groups(numbers: dict[str, float], clip_values: list[float], bins: int) -> dict[str, str]:
    """{value: its group} for the values of a numeric column (`clip_values`: each clip's): each value its own group
    when there are at most `bins`, else `bins` ranges of about equal clip counts, cut at round numbers ("130–145",
    "145–160", ...). In value order."""
    ordered = sorted(clip_values)
    values = sorted(set(ordered))
    if len(values) <= bins:
        return {text: number_label(number) for text, number in sorted(numbers.items(), key=lambda kv: kv[1])}
    low, high = values[0], values[-1]
    step = round_step((high - low) / (2 * bins))  # edges at round numbers, a few per bin width
    cuts = {round(ordered[len(ordered) * i // bins] / step) * step for i in range(1, bins)}  # quantiles, rounded
    edges = [low, *sorted(e for e in cuts if low < e < high), high]
    labels = [f"{number_label(a)}–{number_label(b)}" for a, b in zip(edges, edges[1:])]
    return {text: labels[min(bisect.bisect_right(edges, number), len(labels)) - 1]
            for text, number in sorted(numbers.items(), key=lambda kv: kv[1])}


def column_groups(rows: list[dict], column: str) -> tuple[Optional[dict[str, str]], bool, str]:
    """How to break a split's scores down by an extra column: ({value: its group}, whether the groups are numbers in
    value order, ""), or (None, False, why there is no table)."""
    texts = [row[column] for row in rows]
    if len(set(texts)) < 2:
        return None, False, "the same value for every clip"
    numbers = {t: to_float(t) for t in set(texts) if t != ""}
    most = len(rows) // MIN_GROUP_CLIPS
    is_id = column == "id" or column.endswith("_id")  # speaker_id 103, chapter_id 1240: labels, not quantities
    if numbers and not is_id and all(n is not None and math.isfinite(n) for n in numbers.values()):
        timed = [(numbers[t], row["seconds"]) for t, row in zip(texts, rows) if t != "" and row["seconds"] is not None]
        if timed and sum(abs(n - s) <= SAME_SECONDS for n, s in timed) >= 0.9 * len(timed):
            return None, False, "it repeats the clip durations"
        if min(NUMBER_BINS, most) < 2:
            return None, False, f"fewer than {2 * MIN_GROUP_CLIPS} clips"
        clip_values = [numbers[t] for t in texts if t != ""]
        groups = {**number_groups(numbers, clip_values, min(NUMBER_BINS, most)), "": "(empty)"}
        if len({groups[t] for t in texts}) < 2:
            return None, False, "the same range for every clip"
        return groups, True, ""
    distinct = len(set(texts))
    if distinct > min(MAX_CATEGORIES, most):
        return None, False, f"{distinct:,} values" + (f", over {MAX_CATEGORIES}" if distinct > MAX_CATEGORIES else
                                                      f" in {len(rows):,} clips, under {MIN_GROUP_CLIPS} a value")
    return {t: t or "(empty)" for t in texts}, False, ""


def chunk_tokens(chunk, ref: list[str], hyp: list[str]) -> tuple[list[str], list[str]]:
    """The reference and hypothesis tokens that one jiwer alignment chunk covers."""
    return ref[chunk.ref_start_idx:chunk.ref_end_idx], hyp[chunk.hyp_start_idx:chunk.hyp_end_idx]


def frequent_errors(refs: list[str], hyps: list[str]) -> dict[str, Counter]:
    """Counts over a split: word substitutions (ref, hyp), deleted words, inserted words, character substitutions."""
    counts = {"substitutions": Counter(), "deletions": Counter(), "insertions": Counter(), "characters": Counter()}
    if not refs:
        return counts
    words = jiwer.process_words(refs, hyps)
    for ref, hyp, chunks in zip(words.references, words.hypotheses, words.alignments):
        for chunk in chunks:
            r, h = chunk_tokens(chunk, ref, hyp)
            if chunk.type == "substitute":
                counts["substitutions"].update(zip(r, h))  # jiwer substitutes one for one
            elif chunk.type == "delete":
                counts["deletions"].update(r)
            elif chunk.type == "insert":
                counts["insertions"].update(h)
    chars = jiwer.process_characters(refs, hyps)
    for ref, hyp, chunks in zip(chars.references, chars.hypotheses, chars.alignments):
        for chunk in chunks:
            if chunk.type == "substitute":
                counts["characters"].update(zip(*chunk_tokens(chunk, ref, hyp)))
    return counts
