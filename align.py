#!/usr/bin/env python
# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Time a known text in its audio (forced alignment) with a CTC model saved by run_speech_recognition_ctc.py, or cut
long recordings with their text into a training corpus.

    python align.py out lecture.flac lecture.txt --output lecture.json       # every word's start, end and score
    python align.py out lecture.flac lecture.txt --output lecture.TextGrid   # Praat: a word tier and a token tier
    python align.py out pairs.csv --output words.ctm                          # a manifest of audio and text pairs
    python align.py out book.mp3 book.txt --segment corpus --split_sentences --verify   # a training corpus

TEXT is a UTF-8 text file, one utterance per line (or free text with --split_sentences); a manifest (.csv .tsv
.json .jsonl) given as AUDIO pairs an audio column with a text column holding the text or a .txt file. The text
is normalised as training normalised it; characters the model's vocabulary lacks are skipped, and a word left with
none still gets a time, between its neighbours, flagged ("aligned": false). Audio the text lacks and lines the
audio lacks are tolerated: such lines get no time of their own and no score. Recordings of any length are read
window by window (as transcribe.py reads them), with memory flat for hours. --output picks the format by its
extension: .json (transcribe.py's words, plus a score per word and per line), .ctm, .srt, .vtt or .TextGrid (with
several inputs, .srt .vtt and .TextGrid name a folder: one file each); without it, CTM lines go to stdout.

--segment OUT_DIR writes OUT_DIR/train/metadata.csv (file_name,sentence,start,end,score) and a FLAC clip per kept
line, a split folder the training script reads (--dataset_name OUT_DIR --train_split_name train); dropped lines,
with their reason, go to OUT_DIR/dropped.csv. The score is 0 where the model hears exactly the text, lower the less
it does: see docs/align.md for picking --min_score.
"""

import os

# Windows come in many lengths, and oneDNN would keep a compiled kernel for each: see transcribe.py.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8")

import argparse
import json
import logging
import sys
import time
from collections import Counter

from ctc_finetune.alignment import Spelling, align_files
from ctc_finetune.engine import Engine, EngineOptions, check_model_dir
from ctc_finetune.faults import UserError, check_output_parent, run_command
from ctc_finetune.longform import DEFAULT_CHUNK_SECONDS, DEFAULT_CONTEXT_SECONDS
from ctc_finetune.segmentation import SegmentOptions, segment, summary_line
from ctc_finetune.sources import read_pairs
from ctc_finetune.subtitles import write_subtitles

logger = logging.getLogger("align")

FORMATS = (".json", ".ctm", ".srt", ".vtt", ".textgrid")  # --output's extensions (lower case)
PER_FILE = (".srt", ".vtt", ".textgrid")  # formats of one recording each: a folder of them for several inputs
TEXTGRID_TIERS = ("words", "tokens")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="Directory written by the training script, or one of its checkpoint-*.")
    parser.add_argument("audio", help="An audio file, or a manifest of audio and text pairs.")
    parser.add_argument("text", nargs="?", help="The text spoken in AUDIO (UTF-8, one utterance per line).")
    parser.add_argument("--output", help="Write here: .json, .ctm, .srt, .vtt or .TextGrid by the extension (a "
                                         "folder for .srt .vtt .TextGrid of several inputs); else CTM on stdout.")
    parser.add_argument("--segment", metavar="OUT_DIR",
                        help="Cut the recordings into a training corpus in OUT_DIR (train/ and dropped.csv).")
    parser.add_argument("--split_sentences", action="store_true",
                        help="Split free text into sentences (at . ! ? …) instead of taking its lines.")
    parser.add_argument("--min_score", type=float, default=SegmentOptions.min_score,
                        help=f"--segment drops lines scored under this (default {SegmentOptions.min_score:g}).")
    parser.add_argument("--max_clip_seconds", type=float, default=SegmentOptions.max_clip_seconds,
                        help=f"--segment drops lines longer than this (default {SegmentOptions.max_clip_seconds:g} s).")
    parser.add_argument("--verify", action="store_true",
                        help="--segment transcribes each clip and drops those whose CER is over --max_cer.")
    parser.add_argument("--max_cer", type=float, default=SegmentOptions.max_cer,
                        help=f"With --verify, the highest CER kept (default {SegmentOptions.max_cer:g}).")
    parser.add_argument("--batch_seconds", type=float, default=60.0,
                        help="Seconds of padded audio per forward pass (default 60); lower it if memory runs out.")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = cuda if available.")
    parser.add_argument("--language", help="An MMS model's language (ISO 639-3, e.g. tur): its adapter and vocabulary.")
    parser.add_argument("--chunk_seconds", type=float, default=DEFAULT_CHUNK_SECONDS,
                        help=f"Audio per window of a long recording (default {DEFAULT_CHUNK_SECONDS:g} s).")
    parser.add_argument("--context_seconds", type=float, default=DEFAULT_CONTEXT_SECONDS,
                        help=f"Audio read on each side of a window cut in speech, its output dropped (default "
                             f"{DEFAULT_CONTEXT_SECONDS:g} s).")
    args = parser.parse_args(argv)
    if args.output and output_kind(args.output) not in FORMATS:
        parser.error(f"--output {args.output}: pick the format by its extension, one of {', '.join(FORMATS)}")
    return args


def output_kind(output: str) -> str:
    return os.path.splitext(output.rstrip("/"))[1].lower()


def check_output(output, segment, pairs: list, skipped: Counter) -> None:
    """Something to align, and where the results go: --output's folder exists (a folder of its own for one file
    per recording), and so does --segment's parent."""
    if not pairs:
        raise UserError(f"the manifest has no row to align ({', '.join(f'{n:,} {r}' for r, n in skipped.items())}).")
    check_output_parent("--output", output)
    check_output_parent("--segment", segment)
    if output and len(pairs) > 1 and output_kind(output) in PER_FILE:
        os.makedirs(output, exist_ok=True)


def ctm_lines(alignment) -> list[str]:
    """CTM: `recording channel start duration word confidence`, one line per word."""
    name = os.path.splitext(os.path.basename(alignment.path))[0]
    return [f"{name} 1 {w['start']:.3f} {w['end'] - w['start']:.3f} {w['word']} {w['confidence']:.3f}\n"
            for w in alignment.words]


def write_textgrid(path: str, alignment) -> None:
    """A Praat TextGrid (praatio) with a word tier and a token tier; a word placed without time of its own (zero
    length) has no interval."""
    from praatio import textgrid

    grid = textgrid.Textgrid()
    for name, items, label in ((TEXTGRID_TIERS[0], alignment.words, "word"),
                               (TEXTGRID_TIERS[1], alignment.tokens, "token")):
        intervals = [(i["start"], i["end"], i[label]) for i in items if i["end"] > i["start"]]
        grid.addTier(textgrid.IntervalTier(name, intervals, 0.0, alignment.duration))
    grid.save(path, format="long_textgrid", includeBlankSpaces=True)


def per_file_paths(alignments: list, output: str, several: bool) -> list[str]:
    """One output per recording: --output itself, or files named after the recordings in the folder --output."""
    if not several:
        return [output]
    extension, seen, paths = os.path.splitext(output.rstrip("/"))[1], Counter(), []
    for alignment in alignments:
        stem = os.path.splitext(os.path.basename(alignment.path))[0]
        seen[stem] += 1
        paths.append(os.path.join(output, f"{stem}{extension}" if seen[stem] == 1 else
                                  f"{stem}-{seen[stem]}{extension}"))
    return paths


def write_outputs(alignments: list, output, several: bool) -> None:
    kind = output_kind(output) if output else ".ctm"
    if kind in PER_FILE:
        for alignment, path in zip(alignments, per_file_paths(alignments, output, several)):
            if kind == ".textgrid":
                write_textgrid(path, alignment)
            else:
                write_subtitles(path, alignment.words)
    elif kind == ".json":
        with open(output, "w", encoding="utf-8") as f:
            json.dump([a.as_dict() for a in alignments], f, ensure_ascii=False, indent=1)
    else:
        lines = [line for a in alignments for line in ctm_lines(a)]
        if output:
            with open(output, "w", encoding="utf-8") as f:
                f.writelines(lines)
        else:
            sys.stdout.writelines(lines)


def main(argv=None) -> list:
    args = parse_args(argv)
    # 1. Check the inputs (cheap, so mistakes show before the model loads)
    options = EngineOptions(batch_seconds=args.batch_seconds, chunk_seconds=args.chunk_seconds,
                            context_seconds=args.context_seconds, device=args.device, language=args.language)
    segmenting = SegmentOptions(args.min_score, args.max_clip_seconds, args.verify, args.max_cer)
    check_model_dir(args.model_dir)
    pairs, skipped = read_pairs(args.audio, args.text, args.split_sentences)
    check_output(args.output, args.segment, pairs, skipped)
    # 2. Load the model
    engine = Engine(args.model_dir, options)
    logger.info(f"Aligning {len(pairs):,} recording(s) with {engine.describe()}")
    # 3. Align: windows of all recordings share forward passes, long recordings stretch by stretch
    start = time.perf_counter()
    results, failed = align_files(engine, pairs)
    skipped += failed
    alignments = [a for a in results if a is not None]
    if not alignments:
        raise UserError(f"none of the {len(pairs):,} recordings could be aligned ({', '.join(skipped)}).")
    wall = time.perf_counter() - start
    # 4. Write the alignments (CTM on stdout unless they go to a file or a corpus), then the corpus
    if args.output or not args.segment:
        write_outputs(alignments, args.output, several=len(pairs) > 1)
    audio_seconds = sum(a.duration for a in alignments)
    words = sum(len(a.words) for a in alignments)
    flagged = sum(1 for a in alignments for w in a.words if w.get("aligned") is False)
    reasons = "".join(f", {n:,} {reason}" for reason, n in skipped.items())
    logger.info(f"Aligned {words:,} words ({flagged:,} placed between their neighbours) in {len(alignments):,} "
                f"recording(s), {audio_seconds:,.1f} s of audio ({sum(skipped.values()):,} skipped{reasons}) in "
                f"{wall:,.1f} s: real-time factor {wall / audio_seconds:.3f} (wall / audio)")
    if args.segment:
        spelling = Spelling(engine.tokenizer, engine.decoding.blank)
        logger.info(summary_line(segment(alignments, args.segment, segmenting, engine, spelling), args.segment))
    return alignments


def cli() -> None:
    run_command(main)


if __name__ == "__main__":
    cli()
