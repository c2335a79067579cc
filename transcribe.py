#!/usr/bin/env python
# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Transcribe audio files of any length with a CTC model saved by run_speech_recognition_ctc.py (or a checkpoint).

    python transcribe.py out recordings/ interview.mp3 clips.csv      # prints path<TAB>transcript lines
    python transcribe.py out/checkpoint-500 recordings/ --output transcripts.csv --device cuda --batch_seconds 300
    python transcribe.py out lecture.flac --output lecture.srt        # subtitles (.srt or .vtt)
    python transcribe.py out recordings/ --output words.json          # every word with its times and confidence
    python transcribe.py out recordings/ --lm --beam_width 50        # beam search with the saved n-gram LM
    python transcribe.py out calls/ --hotwords Kubernetes Grafana     # favour these words (beam search)
    python transcribe.py out recordings/ --onnx int8                  # the ONNX export (export_onnx.py --int8)

AUDIO is any mix of audio files, directories (searched recursively for .wav .flac .mp3 .ogg .opus) and manifests
(.csv .tsv .json .jsonl with an audio column, paths relative to the manifest). A recording longer than
--chunk_seconds is read window by window: a window ends in a pause where there is one (trimmed to the speech, as a
training clip), else at the chunk's length with --context_seconds of audio on both sides whose output is dropped.
Memory stays flat however long the recording, and no word is cut at a window's edge. Short clips run longest
first in batches of similar length; each prediction is cut at its clip's real length, so batching never changes a
transcript. --output picks the format by its extension: .tsv/.txt (default) or .csv (path, transcript), .json
(words with start, end and confidence), .srt or .vtt (with several inputs --output names a folder: one file each).
"""

import os

# Windows come in many lengths, and oneDNN would keep a compiled kernel for each (1,024 by default), so memory would
# grow with the recording; a few suffice. Set before torch is imported; a value set by the user stays.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8")

import argparse
import csv
import logging
import sys
import time
from collections import Counter
from typing import Optional

from ctc_finetune.engine import Engine, EngineOptions, check_model_dir
from ctc_finetune.onnx_runtime import ONNX_FILES
from ctc_finetune.faults import UserError, check_output_parent, run_command
from ctc_finetune.longform import DEFAULT_CHUNK_SECONDS, DEFAULT_CONTEXT_SECONDS
from ctc_finetune.sources import find_audio
from ctc_finetune.subtitles import SUBTITLE_FORMATS, write_json, write_subtitles

logger = logging.getLogger("transcribe")

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="Directory written by the training script, or one of its checkpoint-*.")
    parser.add_argument("audio", nargs="+", help="Audio files, directories and manifests, in any mix.")
    parser.add_argument("--output", help="Write here: .csv, .json, .srt, .vtt by the extension, else TSV; a folder "
                                         "for subtitles of several inputs.")
    parser.add_argument("--batch_seconds", type=float, default=60.0,
                        help="Seconds of padded audio per forward pass (default 60); lower it if memory runs out.")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = cuda if available.")
    parser.add_argument("--lm", action="store_true", help="Beam search with the n-gram LM saved in model_dir.")
    parser.add_argument("--language",
                        help="An MMS model's language (ISO 639-3, e.g. tur): its adapter and vocabulary.")
    parser.add_argument("--beam_width", type=int, default=100,
                        help="Beams kept with --lm or --hotwords (default 100, as pyctcdecode).")
    parser.add_argument("--chunk_seconds", type=float, default=DEFAULT_CHUNK_SECONDS,
                        help=f"Audio per window of a long recording (default {DEFAULT_CHUNK_SECONDS:g} s).")
    parser.add_argument("--context_seconds", type=float, default=DEFAULT_CONTEXT_SECONDS,
                        help=f"Audio read on each side of a window, its output dropped (default "
                             f"{DEFAULT_CONTEXT_SECONDS:g} s).")
    parser.add_argument("--hotwords", nargs="+", default=[], metavar="WORD",
                        help="Words (or phrases) the beam search favours: names, jargon (needs pyctcdecode).")
    parser.add_argument("--hotwords_file", help="A text file of hotwords, one per line.")
    parser.add_argument("--hotword_weight", type=float, default=10.0,
                        help="How much the hotwords are favoured (default 10, as pyctcdecode).")
    parser.add_argument("--onnx", nargs="?", const="fp32", choices=tuple(ONNX_FILES),
                        help="Run model_dir's ONNX export in onnxruntime on the CPU: fp32 (model.onnx, the default) "
                             "or int8 (model.int8.onnx); made by export_onnx.py.")
    return check_args(parser, parser.parse_args(argv))


def check_args(parser, args):
    """The flags' own rules (as usage errors), hotwords read from --hotwords_file, and --output's folder."""
    if args.batch_seconds <= 0 or args.beam_width < 1:
        parser.error("--batch_seconds must be > 0 and --beam_width >= 1")
    if args.chunk_seconds <= 0 or args.context_seconds < 0:
        parser.error("--chunk_seconds must be > 0 and --context_seconds >= 0")
    if args.hotwords_file:
        if not os.path.isfile(args.hotwords_file):
            raise UserError(f"--hotwords_file {args.hotwords_file} does not exist; pass a text file, one hotword "
                            "a line.")
        with open(args.hotwords_file, encoding="utf-8") as f:
            args.hotwords += [line.strip() for line in f if line.strip()]
    check_output_parent("--output", args.output)
    return args


def engine_options(args) -> EngineOptions:
    """The engine's options from the command line (flags of the same names)."""
    return EngineOptions(batch_seconds=args.batch_seconds, chunk_seconds=args.chunk_seconds,
                         context_seconds=args.context_seconds, device=args.device, onnx=args.onnx,
                         language=args.language, lm=args.lm, beam_width=args.beam_width, hotwords=args.hotwords,
                         hotword_weight=args.hotword_weight)


def output_kind(output: Optional[str]) -> str:
    """What --output asks for: 'tsv' (also .txt and stdout), 'csv', 'json', or a subtitle format '.srt'/'.vtt'."""
    name = (output or "").lower().rstrip("/")
    for extension in SUBTITLE_FORMATS:
        if name.endswith(extension):
            return extension
    return "csv" if name.endswith(".csv") else "json" if name.endswith(".json") else "tsv"


def write_outputs(records: list[dict], output: Optional[str], several: bool) -> None:
    """The transcripts in the format --output's extension names (TSV on stdout without --output)."""
    kind = output_kind(output)
    rows = [(r["path"], r["text"]) for r in records]
    if kind in SUBTITLE_FORMATS:
        for record, path in zip(records, subtitle_paths(records, output, several)):
            write_subtitles(path, record["words"])
    elif kind == "json":
        write_json(output, records)
    elif output is None:
        sys.stdout.writelines(f"{path}\t{text}\n" for path, text in rows)
    else:
        with open(output, "w", newline="", encoding="utf-8") as f:
            if kind == "csv":
                csv.writer(f).writerows([("path", "transcript"), *rows])
            else:  # plain TSV: read_table reads .tsv files without quote handling
                f.writelines(f"{path}\t{text}\n" for path, text in [("path", "transcript"), *rows])


def subtitle_paths(records: list[dict], output: str, several: bool) -> list[str]:
    """Where each file's subtitles go: --output itself for one input; else --output is a folder, one file per input
    named after it (numbered when two inputs share a name)."""
    if not several:
        return [output]
    extension = output_kind(output)
    os.makedirs(output, exist_ok=True)
    names, paths = Counter(), []
    for record in records:
        stem = os.path.splitext(os.path.basename(record["path"]))[0]
        names[stem] += 1
        name = f"{stem}{extension}" if names[stem] == 1 else f"{stem}-{names[stem]}{extension}"
        paths.append(os.path.join(output, name))
    return paths


def main(argv=None) -> list[tuple[str, str]]:
    args = parse_args(argv)
    # 1. Check the inputs (cheap, so mistakes show before the model loads)
    options = engine_options(args)
    check_model_dir(args.model_dir)
    paths = find_audio(args.audio)
    # 2. Load the model
    engine = Engine(args.model_dir, options)
    logger.info(f"Transcribing {len(paths):,} file(s) with {engine.describe()}")
    # 3. Transcribe: short clips longest first in batches of similar length, long recordings window by window
    start = time.perf_counter()
    results, skipped = engine.transcribe_many(paths)
    wall = time.perf_counter() - start
    ordered = [r.as_dict() for r in results if r is not None]
    if not ordered:
        raise UserError(f"none of the {len(paths):,} audio files could be transcribed (see the warnings above).")
    # 4. Write the transcripts in input order, then the speed
    write_outputs(ordered, args.output, several=len(paths) > 1)
    audio_seconds = sum(r["duration"] for r in ordered)
    reasons = "".join(f", {n:,} {reason}" for reason, n in skipped.items())
    logger.info(f"Transcribed {len(ordered):,} clips ({audio_seconds:,.1f} s of audio, {sum(skipped.values()):,} "
                f"skipped{reasons}) in {wall:,.1f} s: real-time factor {wall / audio_seconds:.3f} (wall / audio)")
    return [(r["path"], r["text"]) for r in ordered]


def cli() -> None:
    run_command(main)


if __name__ == "__main__":
    cli()
