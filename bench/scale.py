"""Set-up cost against corpus size: cached preprocessing against --preprocess_on_the_fly.

    python bench/scale.py [--corpus examples/demo_corpus] [--sizes 2000 20000 200000] [--steps 30]
                          [--modes cached on_the_fly] [--plot bench/scale.png] [--json scale.json]

The corpus defaults to examples/demo_corpus; the figures in bench/RESULTS.md used the commands corpus, built by
`python tools/make_bench_corpus.py DIR` and passed as --corpus DIR.

Writes CSV manifests of --sizes clips: the corpus's train split repeated, pointing at the same audio files (no
copies). For each size and mode it runs the script in a fresh process with a fresh datasets cache:

    --train_file MANIFEST --do_train --max_steps STEPS --max_batch_duration 24
    --preprocessing_num_workers 2 --dataloader_num_workers 2 [--preprocess_on_the_fly]

(batches of at most 24 s of audio, about 8 clips: the activations of a step are bounded, so peak RSS shows the data
pipeline's memory rather than which long clips a random batch happened to hold)

on --model (a config: default bench/speed_model, wav2vec2-shaped, 4.3M parameters, random weights), and prints:
  - seconds to the first training step (the script's `train_seconds_to_first_step`: from the process start to the
    end of step 1, so imports, loading, the header scan, any decoding and the DataLoader's first batch);
  - peak RSS of the main process (the largest of the process and its workers, from wait4);
  - the size of the datasets cache after the run (the preprocessing cache is in it);
  - training audio seconds per second over the --steps steps (the script's `train_audio_seconds_per_second`).

Targets (issue 16, 2 cores): on-the-fly time to the first step at 20k clips at most 25% of the cached mode's; peak
RSS in on-the-fly mode growing at most 1.5x from 2k to 200k clips; on-the-fly throughput within 20% of cached.
"""

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile

from corpus import DEFAULT_CORPUS, read_split, repeated, require

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def write_manifest(clips: list[dict], path: str) -> None:
    """A CSV manifest of these clips (read_split's rows), with absolute audio paths."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "sentence"])
        writer.writerows((r["path"], r["sentence"]) for r in clips)


def directory_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files
               if not os.path.islink(os.path.join(d, f)))


def run(model: str, manifest: str, mode: str, steps: int, work: str) -> dict:
    """One training run in a fresh process and cache; its set-up time, peak RSS, cache size and throughput."""
    hf_home, out = os.path.join(work, "hf"), os.path.join(work, "out")
    command = [
        sys.executable, os.path.join(ROOT, "run_speech_recognition_ctc.py"), "--config_name", model,
        "--train_file", manifest, "--text_column_name", "sentence", "--do_train", "--max_steps", str(steps),
        "--max_batch_duration", "24", "--preprocessing_num_workers", "2", "--dataloader_num_workers", "2",
        "--learning_rate", "1e-4", "--save_strategy", "no", "--report_to", "none", "--output_dir", out,
        *(["--preprocess_on_the_fly"] if mode == "on_the_fly" else []),
    ]
    env = {**os.environ, "HF_HOME": hf_home, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    with open(os.path.join(work, "log.txt"), "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        with open(os.path.join(work, "log.txt")) as f:
            sys.exit(f"the run failed ({mode}, {manifest}):\n" + f.read()[-3000:])
    with open(os.path.join(out, "all_results.json")) as f:
        results = json.load(f)
    return {
        "first_step_s": results["train_seconds_to_first_step"],
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "cache_mb": round(directory_bytes(hf_home) / 2**20),
        "audio_s_per_s": results["train_audio_seconds_per_second"],
    }


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (time_axis, rss_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in sorted({r["mode"] for r in rows}):
        points = sorted((r["clips"], r) for r in rows if r["mode"] == mode)
        clips = [c for c, _ in points]
        time_axis.plot(clips, [r["first_step_s"] for _, r in points], marker="o", label=mode)
        rss_axis.plot(clips, [r["peak_rss_mb"] for _, r in points], marker="o", label=mode)
    for axis, label in ((time_axis, "seconds to the first training step"), (rss_axis, "peak RSS (MB)")):
        axis.set_xscale("log")
        axis.set_xlabel("clips in the training manifest")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--model", default=os.path.join(HERE, "speed_model"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000, 200000])
    parser.add_argument("--modes", nargs="+", default=["cached", "on_the_fly"], choices=["cached", "on_the_fly"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--plot", help="write a PNG of time and RSS against clips (needs matplotlib)")
    parser.add_argument("--json", help="write the rows as JSON")
    args = parser.parse_args()
    require(args.corpus, "train")
    # The manifests repeat the train split's clips: each size takes the first `clips` of the longest list
    train = repeated(read_split(args.corpus, "train"), max(args.sizes), f"the train split of {args.corpus}")

    rows = []
    print("| clips | mode | s to first step | peak RSS MB | cache MB | audio s/s |", flush=True)
    print("|---:|---|---:|---:|---:|---:|", flush=True)
    for clips in args.sizes:
        with tempfile.TemporaryDirectory(prefix="ctc-scale-") as work:
            manifest = os.path.join(work, f"train-{clips}.csv")
            write_manifest(train[:clips], manifest)
            for mode in args.modes:
                run_dir = os.path.join(work, mode)
                os.makedirs(run_dir)
                row = {"clips": clips, "mode": mode, **run(args.model, manifest, mode, args.steps, run_dir)}
                shutil.rmtree(run_dir)  # the cached mode's cache grows to tens of GB
                rows.append(row)
                print(f"| {clips:,} | {mode} | {row['first_step_s']:.1f} | {row['peak_rss_mb']:,} | "
                      f"{row['cache_mb']:,} | {row['audio_s_per_s']:,.1f} |", flush=True)
    by = {(r["clips"], r["mode"]): r for r in rows}
    for clips in args.sizes:
        if (clips, "cached") in by and (clips, "on_the_fly") in by:
            cached, fly = by[clips, "cached"], by[clips, "on_the_fly"]
            print(f"{clips:,} clips: on-the-fly time to first step {fly['first_step_s'] / cached['first_step_s']:.0%} "
                  f"of cached (target at 20k: <= 25%); throughput {fly['audio_s_per_s'] / cached['audio_s_per_s']:.0%} "
                  "of cached (target >= 80%)")
    fly = sorted((r["clips"], r["peak_rss_mb"]) for r in rows if r["mode"] == "on_the_fly")
    if len(fly) > 1:
        print(f"on-the-fly peak RSS {fly[0][0]:,} -> {fly[-1][0]:,} clips: x{fly[-1][1] / fly[0][1]:.2f} (target <= 1.5)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
