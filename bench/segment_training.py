"""Does a corpus cut by `align.py --segment` train as well as the clips it was cut from? (issue 44's last row)

    python bench/segment_training.py                          # seeds 42 43 44, the three corpora below
    python bench/segment_training.py --seeds 42 43 44 45 46
    python bench/segment_training.py --table                  # the finished runs only; trains nothing

The training clips of --corpus (default examples/demo_corpus; its test split scores every run; the commands corpus,
built by `python tools/make_bench_corpus.py DIR`, is passed as --corpus DIR) are joined once each,
in shuffled order, with 0.3-1.0 s pauses of digital silence, into one 16-bit 16 kHz WAV recording, with its text a
line per clip: a long recording with its transcript, as a user of `--segment` has one. Then three training corpora:

- clips: the original clips, as they are (the demo corpus: 22.05 kHz MP3);
- clips16: the same clips as 16 kHz 16-bit FLAC, their own edges kept: the recording's format, cut at the true
  clip boundaries, so clips16 against segments is the segmenter's own cost and clips against clips16 the format's;
- segments: `python align.py MODEL recording.wav recording.txt --segment DIR`, with MODEL the aligner (--model,
  default tests/fixtures/demo_model: the demo's model, pinned).

Each is trained with the demo's recipe (examples/demo.json, `--trim_silence` included) for each seed and scored on
the corpus's test clips. The table gives each run's test WER, the mean per corpus, and segments against clips and
against clips16 per seed (same seed: same initial weights). A finished run's results are kept in
bench/results/segment_training/RUN.json (committed) and read back instead of training again; runs live in --work.
"""

import argparse
import csv
import os
import subprocess
import sys

import numpy as np
import soundfile as sf

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]

from corpus import DEFAULT_CORPUS, read_split, require  # noqa: E402
from recipe_gain import run, run_args, test_metric  # noqa: E402

from ctc_finetune.audio import load_audio  # noqa: E402

RATE = 16_000
CORPORA = ["clips", "clips16", "segments"]
RECORDS = os.path.join(HERE, "results", "segment_training")


def with_test(out: str, corpus: str) -> None:
    """A corpus folder scored on `corpus`'s own test split (a link)."""
    link = os.path.join(out, "test")
    if not os.path.exists(link):
        os.symlink(os.path.abspath(os.path.join(corpus, "test")), link)


def write_clips16(rows: list[dict], audio: list[np.ndarray], out: str, corpus: str) -> None:
    """The training clips as 16 kHz 16-bit FLAC, their own edges kept."""
    os.makedirs(os.path.join(out, "train"), exist_ok=True)
    with open(os.path.join(out, "train", "metadata.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "sentence"])
        for i, (row, clip) in enumerate(zip(rows, audio)):
            name = f"clip-{i:05d}.flac"
            sf.write(os.path.join(out, "train", name), clip, RATE, subtype="PCM_16")
            writer.writerow([name, row["sentence"]])
    with_test(out, corpus)


def write_recording(rows: list[dict], audio: list[np.ndarray], work: str, seed: int = 0) -> tuple[str, str]:
    """Every clip once, shuffled, with 0.3-1.0 s of digital silence before each, as one 16-bit WAV; its text a line
    per clip in the same order."""
    rng = np.random.default_rng(seed)
    wav, txt = os.path.join(work, "recording.wav"), os.path.join(work, "recording.txt")
    with sf.SoundFile(wav, "w", samplerate=RATE, channels=1, format="WAV", subtype="PCM_16") as out, \
            open(txt, "w", encoding="utf-8") as text:
        for i in rng.permutation(len(rows)):
            out.write(np.zeros(int(rng.uniform(0.3, 1.0) * RATE), np.float32))
            out.write(audio[i])
            text.write(rows[i]["sentence"] + "\n")
    return wav, txt


def make_corpora(corpus: str, model: str, work: str) -> dict:
    """The three training corpora's folders (made once; kept in `work`)."""
    folders = {"clips": corpus, "clips16": os.path.join(work, "clips16"), "segments": os.path.join(work, "segments")}
    if all(os.path.isfile(os.path.join(folders[c], "train", "metadata.csv")) for c in CORPORA):
        return folders
    os.makedirs(work, exist_ok=True)
    rows = read_split(corpus, "train")
    audio = [load_audio(row["path"], RATE) for row in rows]
    write_clips16(rows, audio, folders["clips16"], corpus)
    wav, txt = write_recording(rows, audio, work)
    print(f"recording: {len(rows):,} clips, {sf.info(wav).duration / 60:.1f} min; segmenting it", flush=True)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "align.py"), model, wav, txt, "--segment",
                           folders["segments"]], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit status {proc.returncode}"
        sys.exit(f"error: align.py --segment failed ({last}); check --model {model} with `python align.py`")
    print(proc.stderr.strip().splitlines()[-1], flush=True)  # its summary: lines kept and dropped, hours
    with_test(folders["segments"], corpus)
    return folders


def table(results: dict, seeds: list[int]) -> None:
    print("\n| trained on | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |")
    print("|---|" + "---:|" * (len(seeds) + 1))
    wer = {c: {s: test_metric(r, "wer") for s, r in runs.items()} for c, runs in results.items()}
    for c, runs in wer.items():
        cells = [f"{runs[s]:.3f}" if s in runs else "-" for s in seeds]
        print(f"| {c} | {' | '.join(cells)} | {np.mean(list(runs.values())):.3f} |")
    for other in ("clips", "clips16"):
        paired = {s: wer["segments"][s] - wer[other][s] for s in seeds
                  if s in wer.get("segments", {}) and s in wer.get(other, {})}
        if paired:
            cells = [f"{paired[s]:+.3f}" if s in paired else "-" for s in seeds]
            print(f"| segments - {other} | {' | '.join(cells)} | **{np.mean(list(paired.values())):+.3f}** |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--model", default=os.path.join(ROOT, "tests", "fixtures", "demo_model"),
                        help="The aligner align.py --segment runs with.")
    parser.add_argument("--work", default=os.path.join(ROOT, "outputs", "segment_training"),
                        help="Where the recording, the corpora and the runs go.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44], help="A run per seed and corpus.")
    parser.add_argument("--corpora", nargs="+", choices=CORPORA, default=CORPORA, help="The corpora trained.")
    parser.add_argument("--steps", type=int, default=1600, help="Training steps (the demo's 1,600).")
    parser.add_argument("--table", action="store_true", help="Print the finished runs' table; train nothing.")
    args = parser.parse_args()
    name = os.path.basename(os.path.normpath(os.path.abspath(args.corpus)))
    if not args.table:
        require(args.corpus, "train", "test", note="default examples/demo_corpus, whose figures bench/RESULTS.md "
                "records")
        if not os.path.isfile(os.path.join(args.model, "config.json")):
            sys.exit(f"error: --model {args.model} holds no trained model; pass a model folder (outputs/demo after "
                     "`python run_speech_recognition_ctc.py examples/demo.json`)")
        folders = make_corpora(args.corpus, args.model, os.path.join(args.work, name))
    results = {}
    for seed in args.seeds:  # seed by seed, so that an interrupted sitting leaves pairs
        for corpus in args.corpora:
            out = os.path.join(args.work, name, f"{corpus}-{args.steps}-seed{seed}")
            record = os.path.join(RECORDS, f"{name}-{corpus}-{args.steps}-seed{seed}.json")
            if args.table:
                if not os.path.isfile(record):
                    continue
                flags = []
            else:
                flags = run_args([], folders[corpus], out, args.steps, seed, noise="")
            results.setdefault(corpus, {})[seed] = run(f"{corpus}, seed {seed}", flags, out, os.cpu_count(), record)
    table(results, args.seeds)


if __name__ == "__main__":
    main()
