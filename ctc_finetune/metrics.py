# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Scoring (step 8): greedy decoding, WER/CER/PER, the final evaluation of a split, and its predictions
file, one row per clip."""

import csv
import logging
import os

import datasets
import jiwer
import numpy as np

from .analysis import clip_error
from .columns import CLIP_ID_COLUMN, LABEL_PAD_ID, LENGTH_COLUMN, predictions_file
from .corpora import passthrough_columns
from .families import blank_token_id, ctc_decode, decode_labels
from .preprocessing import scan_table

logger = logging.getLogger(__name__)

SUPPORTED_METRICS = ("wer", "cer", "per")  # per: phoneme error rate, the WER over space-separated phonemes
NUM_LOGGED_EXAMPLES = 3  # prediction/reference pairs logged at each evaluation
NUM_SUMMARY_EXAMPLES = 5  # reference/hypothesis pairs in the end-of-run summary, and worst clips logged


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


def log_summary(key: str, results: dict, rows: list[dict], report: dict, output_dir: str) -> None:
    """The end of the run in a few lines: scores, speed, the worst and some typical transcriptions (on the process
    that wrote the predictions file, `rows`)."""
    if not rows:
        return
    path = os.path.join(output_dir, predictions_file(key))
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
