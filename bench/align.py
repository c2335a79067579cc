"""Forced alignment and segmentation (align.py) on long recordings whose clip boundaries and speech onsets are known.

    python bench/align.py --model outputs/demo                   # the demo's trained model (run the demo first)
    python bench/align.py --model outputs/demo --lengths 600 --skip_memory     # a quick look
    python bench/align.py --model outputs/demo --corpus DIR      # the commands corpus: tools/make_bench_corpus.py DIR
    python bench/align.py --model outputs/demo --lengths 1800 --skip_memory --noise_db -60      # in a room's noise

--corpus is a folder of split folders (default examples/demo_corpus; the commands corpus is built by
`python tools/make_bench_corpus.py DIR` and passed as --corpus DIR). Its test clips (voices the model never heard)
are joined in shuffled order with 0.3-1.0 s pauses of digital silence into 16-bit WAV recordings of --lengths
seconds (bench/longform.py's join), with each clip's start, end and speech onset (the first 10 ms whose RMS passes
2% of the clip's loudest 10 ms); with --noise_db, a steady white noise at that level (dB full scale) lies under the
whole recording, as a room's does. Then, on the first length (30 minutes by default):

- onset: align.py with the right text (a line per clip): the share of lines whose first word starts within 0.10 s
  (and 0.05 s) of its clip's onset, and the median error;
- wrong lines: 10% of the text's lines replaced by other lines of the corpus and 10% of the clips left out of the
  text, then align.py --segment (and again with --verify): the share of kept clips whose CER against the true
  transcript of the audio they hold is at most 10%, and the share of the right lines kept;
- speed: audio seconds per second of alignment (align.py's summary line) and of the whole command;
- the Viterbi alone, ours against ctc-segmentation (pip install ctc-segmentation), on the same emissions;

and peak RSS of align.py on every length (2 hours against 30 minutes by default).
"""

import argparse
import csv
import json
import os
import re
import sys
import tempfile
import time

import jiwer
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]

from corpus import DEFAULT_CORPUS, read_split, require  # noqa: E402
from longform import RATE, join, read_clips, run_timed, run_transcribe  # noqa: E402

ONSET_SHARE = 0.02  # speech starts at the first 10 ms whose RMS passes this share of the clip's loudest 10 ms
WITHIN = (0.10, 0.05)  # seconds: the onset tolerances reported
WRONG_SHARE, MISSING_SHARE = 0.10, 0.10  # text lines replaced by others; clips left out of the text
GOOD_CER = 0.10  # a kept clip is right when its CER against the true transcript is at most this


def onset(audio: np.ndarray) -> float:
    frame = RATE // 100
    rms = np.sqrt(np.mean(audio[: len(audio) // frame * frame].reshape(-1, frame) ** 2, axis=1))
    return float(np.argmax(rms > ONSET_SHARE * rms.max())) * frame / RATE


def run_align(model: str, argv: list) -> dict:
    """align.py in a subprocess (longform.run_timed): "aligning" is the alignment's own seconds."""
    run = run_timed("align.py", [model, *argv])
    return {**run, "aligning": run["working"]}


def onset_errors(manifest: list[dict], lines: list[dict]) -> np.ndarray:
    return np.array([abs(line["start"] - clip["onset"]) for line, clip in zip(lines, manifest)])


def mixed_text(manifest: list[dict], others: list[str], seed: int) -> tuple[list[str], list]:
    """The text with WRONG_SHARE of its lines replaced by other lines of the corpus (never the clip's own) and
    MISSING_SHARE of the clips left out: the lines, and for each the clip whose audio it is (None: not in the
    audio)."""
    rng = np.random.default_rng(seed)
    lines, truth = [], []
    for i, clip in enumerate(manifest):
        draw = rng.random()
        if draw < MISSING_SHARE:
            continue
        if draw < MISSING_SHARE + WRONG_SHARE:
            lines.append(next(t for t in rng.permutation(others) if t != clip["text"]))
            truth.append(None)
        else:
            lines.append(clip["text"])
            truth.append(i)
    return lines, truth


def held_by(manifest: list[dict], starts: np.ndarray, start: float, end: float) -> dict:
    """The clip a stretch of the recording overlaps most."""
    i = max(int(np.searchsorted(starts, start)) - 1, 0)
    near = manifest[max(i - 1, 0):i + 3]
    return max(near, key=lambda c: min(end, c["end"]) - max(start, c["start"]))


def score_segments(out_dir: str, manifest: list[dict], lines: list[str], truth: list) -> dict:
    """Kept clips right (CER against what their audio holds at most GOOD_CER), right lines kept."""
    with open(os.path.join(out_dir, "train", "metadata.csv"), encoding="utf-8") as f:
        kept = list(csv.DictReader(f))
    starts = np.array([c["start"] for c in manifest])
    cers = [jiwer.cer(held_by(manifest, starts, float(r["start"]), float(r["end"]))["text"], r["sentence"])
            for r in kept]
    right = sum(t is not None for t in truth)
    lines_kept = [int(re.search(r"-(\d+)\.flac$", row["file_name"])[1]) - 1 for row in kept]  # stem-LINE.flac
    kept_right = sum(truth[i] is not None for i in lines_kept)
    return {"kept": len(kept), "good": float(np.mean(np.array(cers) <= GOOD_CER)) if cers else 0.0,
            "right_kept": kept_right / right, "wrong_lines": len(truth) - right, "right_lines": right}


def recording_emissions(model: str, path: str, lines: list[str]):
    """The recording's log-probabilities as align.py computes them (captured as its aligner is fed), the model's
    spelling and seconds per frame."""
    import torch

    from ctc_finetune import alignment
    from ctc_finetune.engine import Engine, EngineOptions

    engine = Engine(model, EngineOptions(device="cpu"))
    captured, feed = [], alignment.FileAligner.feed
    alignment.FileAligner.feed = lambda self, lp: (captured.append(lp), feed(self, lp))[1]
    alignment.align_files(engine, [(path, lines)])
    alignment.FileAligner.feed = feed
    return torch.cat(captured), alignment.Spelling(engine.tokenizer, engine.decoding.blank), engine.hop / RATE


def viterbi_against_ctc_segmentation(model: str, path: str, manifest: list[dict]) -> None:
    """Our stretch-by-stretch Viterbi and ctc-segmentation on the same emissions: wall seconds of the alignment
    step alone, and the lines' onset accuracy (the first character's frame for both: neither moves a word that
    starts in the quiet a window keeps to its first sound, as align.py does)."""
    from ctc_finetune import alignment

    lines = [c["text"] for c in manifest]
    emissions, spelling, spf = recording_emissions(model, path, lines)
    seconds, start = len(emissions) * spf, time.perf_counter()
    aligner = alignment.FileAligner(lines, spelling, len(emissions), spf)
    aligner.feed(emissions)
    aligner.ended = True
    alignment.run_stretches([aligner])
    ours = time.perf_counter() - start
    errors = onset_errors(manifest, alignment.alignment_record(path, seconds, lines, aligner.words, spelling,
                                                               spf).lines)
    print(f"| Viterbi step alone, ours (stretches of {alignment.STRETCH_SECONDS:g} s, torch) | {ours:.2f} s "
          f"({seconds / ours:,.0f}x real time) | {np.mean(errors <= WITHIN[0]):.1%} within {WITHIN[0]} s, median "
          f"{np.median(errors):.3f} s |", flush=True)
    try:
        ctc_segmentation_step(emissions, spelling, spf, manifest)
    except ImportError:
        print("| ctc-segmentation | not installed: pip install ctc-segmentation | |")


def ctc_segmentation_step(emissions, spelling, spf: float, manifest: list[dict]) -> None:
    import ctc_segmentation as cs

    names = spelling.tokenizer.convert_ids_to_tokens(list(range(emissions.shape[1])))
    config = cs.CtcSegmentationParameters(char_list=names, blank=spelling.blank, index_duration=spf)
    tokens = [np.array([t for i, w in enumerate(spelling.words([clip["text"]]))
                        for t in ([spelling.delimiter] if i and spelling.delimiter is not None else []) + w.tokens])
              for clip in manifest]  # the tokens our trellis has, delimiters between words
    ground_truth, begins = cs.prepare_token_list(config, tokens)
    start = time.perf_counter()
    timings, _, _ = cs.ctc_segmentation(config, emissions.numpy(), ground_truth)
    theirs, seconds = time.perf_counter() - start, len(emissions) * spf
    table = min(config.min_window_size, len(emissions)) * len(ground_truth) * 4 / 2**20  # its float32 trellis
    # Each line's first character (its segments start up to 0.5 s earlier, by design: they are cut points)
    errors = np.array([abs(timings[b + 1] - c["onset"]) for b, c in zip(begins, manifest)])
    print(f"| Viterbi step alone, ctc-segmentation (Cython) | {theirs:.2f} s ({seconds / theirs:,.0f}x real time; "
          f"its trellis {table:,.0f} MB) | {np.mean(errors <= WITHIN[0]):.1%} within {WITHIN[0]} s, median "
          f"{np.median(errors):.3f} s |", flush=True)


def make_recording(clips: list[dict], seconds: float, work: str, noise: float) -> tuple[str, str, list[dict]]:
    """A 16-bit recording of about `seconds` (white noise of RMS `noise` under it) and its text, a line per clip:
    their paths, and its manifest."""
    path, text = os.path.join(work, f"joined-{seconds:.0f}s.wav"), os.path.join(work, f"joined-{seconds:.0f}s.txt")
    manifest = join(clips, seconds, path, seed=int(seconds), subtype="PCM_16", noise=noise)
    with open(text, "w", encoding="utf-8") as f:
        f.writelines(c["text"] + "\n" for c in manifest)
    return path, text, manifest


def onset_and_speed(model: str, path: str, text: str, manifest: list[dict], name: str) -> float:
    """align.py with the right text: where each line starts against its onset, its speed (and transcribe.py's on
    the same recording, for the machine's pace at the time); returns its peak RSS."""
    output = os.path.splitext(path)[0] + ".json"
    run = run_align(model, [path, text, "--output", output])
    with open(output, encoding="utf-8") as f:
        (record,) = json.load(f)
    errors = onset_errors(manifest, record["lines"])
    print(f"| {name}: first word within {WITHIN[0]} s of the onset (right text) | "
          f"{np.mean(errors <= WITHIN[0]):.1%} | within {WITHIN[1]} s {np.mean(errors <= WITHIN[1]):.1%}, median "
          f"{np.median(errors):.3f} s, max {errors.max():.2f} s |")
    plain = run_transcribe(model, [path], os.path.splitext(path)[0] + "-transcribed.json")
    print(f"| {name}: alignment speed | {record['duration'] / run['aligning']:,.0f}x real time | "
          f"{record['duration'] / run['wall']:,.0f}x with start-up ({run['wall']:.1f} s in all); transcribe.py just "
          f"after: {record['duration'] / plain['transcribing']:,.0f}x |", flush=True)
    return run["rss_gb"]


def wrong_lines(model: str, path: str, manifest: list[dict], others: list[str], work: str, name: str) -> None:
    """align.py --segment (and --verify) with lines replaced and lines left out: kept clips right, right lines
    kept, speed."""
    lines, truth = mixed_text(manifest, others, seed=1)
    mixed, duration = os.path.join(work, "mixed.txt"), manifest[-1]["end"]
    with open(mixed, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    for flags in ([], ["--verify"]):
        out_dir = os.path.join(work, f"corpus{'-verify' if flags else ''}")
        run = run_align(model, [path, mixed, "--segment", out_dir, *flags])
        got = score_segments(out_dir, manifest, lines, truth)
        print(f"| {name}, {got['wrong_lines']} lines wrong, {len(manifest) - len(lines)} clips not in the text: "
              f"--segment {' '.join(flags)} | {got['good']:.1%} of {got['kept']:,} kept clips right (CER <= "
              f"{GOOD_CER:g}), {got['right_kept']:.1%} of {got['right_lines']:,} right lines kept | "
              f"{duration / run['wall']:,.0f}x real time in all ({run['wall']:.1f} s); "
              f"{run['log'].strip().splitlines()[-2]} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.path.join(ROOT, "outputs", "demo"))
    parser.add_argument("--corpus", default=DEFAULT_CORPUS, help="A folder of split folders with metadata.csv.")
    parser.add_argument("--lengths", type=float, nargs="+", default=[1800, 7200], help="Seconds per recording.")
    parser.add_argument("--skip_memory", action="store_true", help="Only the first length (no memory comparison).")
    parser.add_argument("--skip_viterbi", action="store_true", help="Skip the Viterbi-alone comparison.")
    parser.add_argument("--noise_db", type=float, default=None,
                        help="A steady noise under the recordings at this level, e.g. -60 (dB full scale).")
    parser.add_argument("--work_dir", default=None, help="Where the recordings go (default: a temporary folder).")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.model, "config.json")):
        sys.exit(f"error: {args.model} is no model; run the demo first (python run_speech_recognition_ctc.py "
                 "examples/demo.json) or pass --model.")
    require(args.corpus, "test", "train")
    work = args.work_dir or tempfile.mkdtemp(prefix="align-")
    os.makedirs(work, exist_ok=True)
    clips = read_clips(os.path.join(args.corpus, "test"))
    for clip in clips:
        clip["onset"] = onset(clip["audio"])
    others = sorted({row["sentence"] for row in read_split(args.corpus, "train")})
    print(f"model {args.model}, corpus {args.corpus}/test ({len(clips)} clips)\n\n| check | measured | |\n|---|---|---|")
    rss = {}
    for number, seconds in enumerate(args.lengths[:1] if args.skip_memory else args.lengths):
        path, text, manifest = make_recording(clips, seconds, work,
                                              10 ** (args.noise_db / 20) if args.noise_db is not None else 0.0)
        name = f"{seconds / 60:.0f} min ({len(manifest):,} clips)"
        if number:
            rss[seconds] = run_align(args.model, [path, text, "--output", os.path.join(work, "long.json")])["rss_gb"]
        else:
            rss[seconds] = onset_and_speed(args.model, path, text, manifest, name)
            wrong_lines(args.model, path, manifest, others, work, name)
            if not args.skip_viterbi:
                viterbi_against_ctc_segmentation(args.model, path, manifest)
        print(f"| {name}: align.py, peak RSS | {rss[seconds]:.2f} GB | |", flush=True)
    if len(rss) > 1:
        lengths = sorted(rss)
        print(f"| peak RSS, {lengths[-1] / 60:.0f} min against {lengths[0] / 60:.0f} min | "
              f"{rss[lengths[-1]] / rss[lengths[0]]:.2f}x | |")

if __name__ == "__main__":
    main()
