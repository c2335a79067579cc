# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Long recordings with their text cut into a training corpus (align.py --segment): each aligned line becomes a
FLAC clip in OUT_DIR/train/ with a row of OUT_DIR/train/metadata.csv (file_name, sentence, start, end, score), a
split folder that run_speech_recognition_ctc.py trains on as it is. Lines are dropped, counted by reason and listed
in OUT_DIR/dropped.csv: not found in the audio, a score under --min_score, longer than --max_clip_seconds, or (with
--verify) a transcription of the clip by the model whose CER against the line is over --max_cer."""

import csv
import dataclasses
import logging
import os
from collections import Counter

import jiwer
import soundfile as sf

from .faults import UserError
from .longform import LEAD_SECONDS

logger = logging.getLogger(__name__)

CLIP_LEAD_SECONDS = LEAD_SECONDS  # audio kept before a line's first word (at most half the way to the line before):
# what a long recording's windows keep before their first sound, so a model trained on the clips meets speech where
# transcription will give it (0.1 s taught the demo's model that speech starts 0.14 s in: bench/RESULTS.md)
CLIP_TAIL_SECONDS = 0.3  # and after its last: a CTC model marks a word's last sound before the sound has faded
CLIP_FORMAT = ("FLAC", "PCM_16")  # soundfile's format and subtype of the clips
METADATA_COLUMNS = ("file_name", "sentence", "start", "end", "score")
DROPPED_COLUMNS = ("source", "line", "sentence", "start", "end", "score", "cer", "reason")
NOT_FOUND, LOW_SCORE, TOO_LONG, HIGH_CER = "not in the audio", "score under --min_score", \
    "longer than --max_clip_seconds", "CER over --max_cer"


@dataclasses.dataclass
class SegmentOptions:
    """align.py --segment's flags of the same names."""

    min_score: float = -1.0
    max_clip_seconds: float = 30.0
    verify: bool = False
    max_cer: float = 0.3

    def __post_init__(self):
        if self.max_clip_seconds <= 0 or not 0 <= self.max_cer <= 1:
            raise UserError(f"--max_clip_seconds must be > 0 and --max_cer in [0, 1]; got {self.max_clip_seconds} "
                            f"and {self.max_cer}.")


def clip_bounds(lines: list[dict], index: int, duration: float) -> tuple[float, float]:
    """Where line `index`'s clip starts and ends (seconds): its words' span, widened by CLIP_LEAD_SECONDS and
    CLIP_TAIL_SECONDS but never past half the way to its neighbouring lines, nor past the recording."""
    line = lines[index]
    before = lines[index - 1]["end"] if index else 0.0
    after = lines[index + 1]["start"] if index + 1 < len(lines) else duration
    start = max(line["start"] - CLIP_LEAD_SECONDS, (before + line["start"]) / 2 if index else 0.0)
    end = min(line["end"] + CLIP_TAIL_SECONDS, (line["end"] + after) / 2 if index + 1 < len(lines) else duration)
    return round(max(start, 0.0), 3), round(min(max(end, line["end"]), duration), 3)


def drop_reason(line: dict, start: float, end: float, options: SegmentOptions) -> str:
    """Why a line is dropped before its clip is written ("" to keep it)."""
    if line["score"] is None:
        return NOT_FOUND
    if line["score"] < options.min_score:
        return LOW_SCORE
    return TOO_LONG if end - start > options.max_clip_seconds else ""


def write_clip(source: str, start: float, end: float, path: str) -> None:
    """Seconds [start, end) of a recording as a FLAC file at the recording's own rate and channels (read alone,
    not the whole recording)."""
    with sf.SoundFile(source) as f:
        rate, channels = f.samplerate, f.channels
        f.seek(round(start * rate))
        audio = f.read(round((end - start) * rate), dtype="float32", always_2d=True)
    sf.write(path, audio if channels > 1 else audio[:, 0], rate, format=CLIP_FORMAT[0], subtype=CLIP_FORMAT[1])


def clip_names(sources: list[str]) -> list[str]:
    """A clip name stem per recording: its file name, with its input number where two share one."""
    stems = [os.path.splitext(os.path.basename(s))[0] for s in sources]
    shared = {s for s, n in Counter(stems).items() if n > 1}
    return [f"{i:04d}-{s}" if s in shared else s for i, s in enumerate(stems)]


def cut(alignments: list, out_dir: str, options: SegmentOptions) -> tuple[list[dict], list[dict]]:
    """Every line of the recordings: a clip written for each kept line (its metadata row), a row of dropped.csv for
    each other one."""
    train = os.path.join(out_dir, "train")
    os.makedirs(train, exist_ok=True)
    kept, dropped = [], []
    for alignment, stem in zip(alignments, clip_names([a.path for a in alignments])):
        for index, line in enumerate(alignment.lines):
            start, end = clip_bounds(alignment.lines, index, alignment.duration)
            row = {"sentence": line["text"], "start": start, "end": end, "score": line["score"]}
            reason = drop_reason(line, start, end, options)
            if reason:
                dropped.append({"source": alignment.path, "line": index + 1, **row, "cer": None, "reason": reason})
                continue
            name = f"{stem}-{index + 1:05d}.flac"
            write_clip(alignment.path, start, end, os.path.join(train, name))
            kept.append({"file_name": name, **row, "source": alignment.path, "line": index + 1})
    return kept, dropped


def verify(kept: list[dict], out_dir: str, engine, spelling, max_cer: float) -> tuple[list[dict], list[dict]]:
    """The kept clips transcribed by the model: those whose CER against their line is over max_cer are deleted and
    move to the dropped rows."""
    paths = [os.path.join(out_dir, "train", row["file_name"]) for row in kept]
    results, _ = engine.transcribe_many(paths)
    still, dropped = [], []
    for row, result, path in zip(kept, results, paths):
        reference = spelling.spelt(row["sentence"])
        cer = jiwer.cer(reference, result.text) if result is not None and reference else 1.0
        if cer <= max_cer:
            still.append(row)
            continue
        os.remove(path)
        dropped.append({"source": row["source"], "line": row["line"], "sentence": row["sentence"], "start": row["start"],
                        "end": row["end"], "score": row["score"], "cer": round(cer, 3), "reason": HIGH_CER})
    return still, dropped


def write_table(path: str, columns: tuple, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def segment(alignments: list, out_dir: str, options: SegmentOptions, engine=None, spelling=None) -> dict:
    """The corpus in out_dir (train/metadata.csv and its clips, dropped.csv) from the recordings' alignments; with
    options.verify, `engine` transcribes the clips and `spelling` spells their lines. Returns the counts the
    summary line gives: lines, kept, dropped by reason, hours kept, retention."""
    kept, dropped = cut(alignments, out_dir, options)
    if options.verify and kept:
        kept, failed = verify(kept, out_dir, engine, spelling, options.max_cer)
        dropped += failed
    dropped.sort(key=lambda row: (row["source"], row["line"]))
    write_table(os.path.join(out_dir, "train", "metadata.csv"), METADATA_COLUMNS, kept)
    write_table(os.path.join(out_dir, "dropped.csv"), DROPPED_COLUMNS, dropped)
    lines = len(kept) + len(dropped)
    return {"recordings": len(alignments), "lines": lines, "kept": len(kept),
            "dropped": dict(Counter(row["reason"] for row in dropped)),
            "hours": sum(row["end"] - row["start"] for row in kept) / 3600,
            "retention": len(kept) / lines if lines else 0.0}


def summary_line(counts: dict, out_dir: str) -> str:
    reasons = ", ".join(f"{n:,} {reason}" for reason, n in sorted(counts["dropped"].items())) or "none"
    return (f"Segmented {counts['lines']:,} lines of {counts['recordings']:,} recording(s) into {out_dir}: kept "
            f"{counts['kept']:,} ({counts['hours']:,.2f} hours), dropped {sum(counts['dropped'].values()):,} "
            f"({reasons}); retention {counts['retention']:.1%}")

