"""Where speech starts: a model's WER on test clips as they are, and with quiet before them, as a recording, a
stream's window or a user's file starts.

    python bench/onset.py --model outputs/demo                  # the demo's trained model (run the demo first)
    python bench/onset.py --model outputs/demo --lead 0.25 0.05 --corpus DIR --split test
    python bench/onset.py --model outputs/demo --lead --edges 0.05:0.3 0.1:0.2   # clips cut to their sound

Each clip of --split (default examples/demo_corpus, test: voices the demo model never heard; the corpus of the
recorded figures in bench/RESULTS.md is built by `python tools/make_bench_corpus.py DIR`) is transcribed by
transcribe.py as it is, and once per --lead with that many seconds of quiet before it, written two ways: float WAV
with digital silence, and 16-bit WAV with triangular dither of one step (the clip rounded to 16-bit steps too, as a
16-bit recording holds it), and once per --edges LEAD:TAIL cut to its sound (first to last sample above EDGE_LEVEL)
with that much digital silence before and after, as another corpus cuts its clips. Prints one table: WER and CER per
variant, and the WER's change from the clips as they are.
"""

import argparse
import csv
import os
import subprocess
import sys
import tempfile

import jiwer
import numpy as np
import soundfile as sf

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]

from corpus import DEFAULT_CORPUS, read_split, require  # noqa: E402

from ctc_finetune.audio import load_audio  # noqa: E402

RATE = 16_000  # Hz: the variants are written at the demo model's rate
PCM16_STEP = 1 / 32768  # one step of 16-bit audio
EDGE_LEVEL = 1e-3  # --edges: a clip's sound is from its first to its last sample above this


def with_lead(audio: np.ndarray, lead: float, pcm16: bool, rng: np.random.Generator) -> np.ndarray:
    """The clip after `lead` seconds of quiet: digital silence, or, `pcm16`, dithered 16-bit silence with the clip
    rounded to 16-bit steps."""
    padded = np.concatenate([np.zeros(round(lead * RATE), np.float32), audio])
    if not pcm16:
        return padded
    dither = rng.uniform(-0.5, 0.5, (2, len(padded))).sum(axis=0)
    return (np.round(padded / PCM16_STEP + dither) * PCM16_STEP).clip(-1, 1 - PCM16_STEP).astype(np.float32)


def re_edged(audio: np.ndarray, lead: float, tail: float) -> np.ndarray:
    """The clip's sound (first to last sample above EDGE_LEVEL) with `lead` seconds of digital silence before it and
    `tail` after: a clip whose edges are cut as another corpus cuts them."""
    loud = np.flatnonzero(np.abs(audio) > EDGE_LEVEL)
    body = audio[loud[0]:loud[-1] + 1] if loud.size else audio
    return np.concatenate([np.zeros(round(lead * RATE), np.float32), body, np.zeros(round(tail * RATE), np.float32)])


def edges_arg(value: str) -> tuple[float, float]:
    """--edges' LEAD:TAIL, in seconds; anything else is argparse's one-line usage error."""
    try:
        lead, tail = (float(x) for x in value.split(":"))
    except ValueError:
        lead = tail = -1.0
    if lead < 0 or tail < 0:
        raise argparse.ArgumentTypeError(f"takes LEAD:TAIL, seconds of silence before and after, e.g. 0.05:0.3; "
                                         f"got {value!r}")
    return lead, tail


def transcribe(model: str, paths: list[str], out: str, device: str) -> dict[str, str]:
    """transcribe.py's transcripts of `paths`, by path."""
    subprocess.run([sys.executable, os.path.join(ROOT, "transcribe.py"), model, *paths, "--output", out,
                    "--device", device], check=True)
    with open(out, newline="", encoding="utf-8") as f:
        return {row["path"]: row["transcript"] for row in csv.DictReader(f)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="A trained model directory (e.g. outputs/demo).")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS, help="A folder of split folders with metadata.csv.")
    parser.add_argument("--split", default="test")
    parser.add_argument("--lead", type=float, nargs="*", default=[0.25], help="Seconds of quiet before each clip.")
    parser.add_argument("--edges", nargs="*", type=edges_arg, default=[], metavar="LEAD:TAIL",
                        help="Also the clips cut to their sound with LEAD s of silence before and TAIL s after.")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    require(args.corpus, args.split)
    rows = read_split(args.corpus, args.split)
    references = [row["sentence"] for row in rows]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as work:
        variants = {"as they are": [row["path"] for row in rows]}
        for lead in args.lead:
            for pcm16 in (False, True):
                name = f"{lead:g} s of {'dithered 16-bit' if pcm16 else 'digital'} silence before"
                folder = os.path.join(work, name.replace(" ", "_"))
                os.makedirs(folder)
                variants[name] = []
                for i, row in enumerate(rows):
                    path = os.path.join(folder, f"{i:05d}.wav")
                    sf.write(path, with_lead(load_audio(row["path"], RATE), lead, pcm16, rng), RATE,
                             subtype="PCM_16" if pcm16 else "FLOAT")
                    variants[name].append(path)
        for lead, tail in args.edges:
            name = f"cut to their sound, {lead:g} s before and {tail:g} s after"
            folder = os.path.join(work, f"edges_{lead:g}_{tail:g}")
            os.makedirs(folder)
            variants[name] = []
            for i, row in enumerate(rows):
                path = os.path.join(folder, f"{i:05d}.wav")
                sf.write(path, re_edged(load_audio(row["path"], RATE), lead, tail), RATE, subtype="FLOAT")
                variants[name].append(path)
        print(f"{len(rows):,} clips of {args.corpus}/{args.split}, model {args.model}")
        print("| clips | WER | CER | WER change |\n|---|---:|---:|---:|")
        base = None
        for name, paths in variants.items():
            texts = transcribe(args.model, paths, os.path.join(work, "out.csv"), args.device)
            hypotheses = [texts[p] for p in paths]
            wer, cer = jiwer.wer(references, hypotheses), jiwer.cer(references, hypotheses)
            base = wer if base is None else base
            print(f"| {name} | {wer:.4f} | {cer:.4f} | {wer - base:+.4f} |", flush=True)


if __name__ == "__main__":
    main()
