"""What the WER levers of issue 27 buy at the same compute: the demo's model on the commands corpus.

    python bench/recipe_gain.py [--corpus examples/demo_corpus] [--steps 4800] [--seeds 42 43 44]
                                [--settings baseline speed speed+noise ...]
    python bench/recipe_gain.py --steps 1600          # the demo's budget
    python bench/recipe_gain.py --throughput 400      # audio s/s trained, with and without augmentation
    python bench/recipe_gain.py --start bench/start_model  # fine-tune the demo's trained model (pinned) instead
    python bench/recipe_gain.py --table               # the table of the finished runs only; trains nothing

The corpus defaults to examples/demo_corpus (1,000 training clips, 100 test clips); the figures in bench/RESULTS.md
and the committed records used the commands corpus, built by `python tools/make_bench_corpus.py DIR` and passed as
--corpus DIR. Run folders and records are named after the corpus folder (demo_corpus-baseline-4800-seed42), except
for a folder named `commands`, the corpus of the committed records: build it as DIR/commands to read them back.

Each run is the demo's recipe (examples/demo.json: its 0.7M model, batch 8, learning rate 2e-3), trained from
scratch on the corpus's training clips (2,000 in the commands corpus) for --steps steps and tested on its test split
(250 clips there, voices never heard in training). With --start DIR, each run fine-tunes the trained model in DIR
instead (the demo's, as a stand-in for a pretrained encoder, as bench/big_models.py does; run folders and records
named ft-SETTING-...; bench/start_model is one demo run's model, pinned, since the demo trains slightly different
weights on another CPU), closer to how the levers are used, and perhaps less at the mercy of the seed (from scratch,
the seed alone moved this model's test WER from 0.20 to 0.35).
A setting is `baseline` (today's recipe: SpecAugment only) or levers joined by `+`:

  speed     --speed_perturbation 0.9 1.0 1.1;
  noise     babble and coloured noise at 5-20 dB SNR on half the clips (--noise_dir, made once by make_noise);
  colourednoise  the same with the coloured noise alone (no babble: the babble speaks this corpus's own words);
  average   a checkpoint every 400 steps evaluated on the validation split (other unseen voices: selection never
            sees the test split), the 5 best averaged (--average_checkpoints 5), kept only if better;
  tristage  fairseq's tri-stage learning rate (--lr_scheduler_type tri_stage: 10% warm-up, 40% at the peak, 50%
            decay) instead of the demo's linear decay;
  headfirst only the CTC head trains for the first 400 steps (--freeze_encoder_steps 400), as fairseq's
            freeze_finetune_updates: meant for --start, where the encoder has been trained already.

The default settings add the levers one by one, as the issue lists them (speed, speed+noise, speed+noise+average);
any other combination (`--settings average speed+average`) runs the same way.
Runs are resumable: a run whose all_results.json exists is read, not rerun, and one cut short resumes from its last
checkpoint (every 400 steps), so the table can be filled over several sittings. A finished run's results are also
kept in bench/results/recipe_gain/RUN.json, which is committed: a later sitting on a fresh checkout (no outputs/)
reads them back instead of training again (delete the file to rerun). The table gives every run's test WER
and CER, and per setting the mean, the spread (max - min) over seeds, the change of the mean against the
baseline's, and each seed's change against the baseline run of the same seed.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import soundfile as sf

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from corpus import DEFAULT_CORPUS, require  # noqa: E402

RECORDS = os.path.join(HERE, "results", "recipe_gain")
RATE = 16000

LEVERS = {
    "speed": ["--speed_perturbation", "0.9", "1.0", "1.1"],
    "noise": ["--noise_dir", "{noise}", "--noise_snr_db", "5", "20", "--noise_prob", "0.5"],
    "colourednoise": ["--noise_dir", "{noise}/coloured", "--noise_snr_db", "5", "20", "--noise_prob", "0.5"],
    "average": ["--eval_split_name", "validation,test", "--metric_for_best_model", "validation_wer",
                "--eval_strategy", "steps", "--eval_steps", "400", "--save_strategy", "steps", "--save_steps", "400",
                "--average_checkpoints", "5", "--save_total_limit", "6"],
    "tristage": ["--lr_scheduler_type", "tri_stage"],
    "headfirst": ["--freeze_encoder_steps", "400"],
}
DEFAULT_SETTINGS = ["baseline", "speed", "speed+noise", "speed+noise+average"]


def levers(setting: str) -> list[str]:
    """The levers of a setting: [] for the baseline, else its `+`-joined names (each one of LEVERS)."""
    names = [] if setting == "baseline" else setting.split("+")
    unknown = [n for n in names if n not in LEVERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown lever {unknown[0]!r} in {setting!r}: use baseline, or "
                                         f"{', '.join(LEVERS)} joined by +")
    return names


def setting(text: str) -> str:
    """argparse type of --settings: a setting whose levers all exist."""
    levers(text)
    return text


def make_noise(corpus: str, out: str, seed: int = 0, babble: int = 40, coloured: int = 20) -> str:
    """A noise folder made here: `babble` files of 20 training clips overlapped over 10 s (about 5 voices at a time)
    in out/babble, and `coloured` files of white, pink and brown noise (10 s) in out/coloured. Returns the folder;
    made once."""
    if all(os.path.isdir(os.path.join(out, kind)) and len(os.listdir(os.path.join(out, kind))) == count
           for kind, count in (("babble", babble), ("coloured", coloured))):
        return out
    from ctc_finetune.audio import load_audio

    for kind in ("babble", "coloured"):
        os.makedirs(os.path.join(out, kind), exist_ok=True)
    rng = np.random.default_rng(seed)
    clips = sorted(f for f in os.listdir(os.path.join(corpus, "train")) if f.endswith(".mp3"))
    length = 10 * RATE
    for i in range(babble):
        mix = np.zeros(length, np.float32)
        for name in rng.choice(clips, size=5 * 4, replace=False):  # 5 voices at a time, over 10 s
            audio = load_audio(os.path.join(corpus, "train", name), RATE)[:length // 2]
            start = rng.integers(0, length - len(audio))
            mix[start:start + len(audio)] += audio
        sf.write(os.path.join(out, "babble", f"babble-{i:02d}.wav"), mix / np.abs(mix).max() * 0.5, RATE)
    for i in range(coloured):
        exponent = (0, 1, 2)[i % 3]  # white, pink, brown: power falls as 1/f^exponent
        spectrum = np.fft.rfft(rng.standard_normal(length))
        spectrum /= np.maximum(np.fft.rfftfreq(length, 1 / RATE), 1.0) ** (exponent / 2)
        noise = np.fft.irfft(spectrum, n=length)
        sf.write(os.path.join(out, "coloured", f"{('white', 'pink', 'brown')[exponent]}-{i:02d}.wav"),
                 (noise / np.abs(noise).max() * 0.5).astype(np.float32), RATE)
    return out


def corpus_tag(corpus: str) -> str:
    """The prefix of a run's folder and record names: none for a corpus folder named `commands` (the corpus of the
    committed records), else the folder's name and a dash, so that a run never reads another corpus's record."""
    name = os.path.basename(os.path.normpath(os.path.abspath(corpus)))
    return "" if name == "commands" else f"{name}-"


def run_args(settings: list[str], corpus: str, out: str, steps: int, seed: int, noise: str,
             start: str = "") -> list[str]:
    """The script's flags for a run: the demo's JSON as flags (from the trained model in `start` when given, else
    from scratch), the corpus and budget, then each setting's levers."""
    with open(os.path.join(ROOT, "examples", "demo.json")) as f:
        demo = json.load(f)
    if start:
        del demo["config_name"]
        demo["model_name_or_path"] = start
    # A checkpoint every 400 steps and no --overwrite_output_dir: a run cut short resumes where it stopped
    demo.update(dataset_name=corpus, output_dir=out, max_steps=steps, seed=seed, eval_split_name="test",
                overwrite_output_dir=False, save_strategy="steps", save_steps=400, save_total_limit=1)
    args = []
    for key, value in demo.items():
        args += [f"--{key}", *map(str, value)] if isinstance(value, list) else [f"--{key}", str(value)]
    for name in settings:
        args += [a.format(noise=noise) for a in LEVERS[name]]
    return args


def run(name: str, args: list[str], out: str, threads: int, record: str = "", start: str = "") -> dict:
    """Train one run in its own process (or read its results); returns all_results.json plus the wall time.

    With `record` (a json path), a finished run's results are written there, and read from there when `out` holds
    none: the record outlives the output folder. With `start` (the model fine-tuned), the record also names it by
    the sha256 of its weights, since the demo trains a slightly different model on another CPU."""
    results = os.path.join(out, "all_results.json")
    if record and os.path.isfile(record) and not os.path.isfile(results):
        with open(record) as f:
            r = json.load(f)
    else:
        if not os.path.isfile(results):
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
            began = time.time()
            try:
                with open(out + ".log", "w") as log:
                    subprocess.run([sys.executable, os.path.join(ROOT, "run_speech_recognition_ctc.py"), *args],
                                   check=True, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            except subprocess.CalledProcessError as e:  # its checkpoints stay: the same command resumes it
                sys.exit(f"error: the run {name} failed (exit status {e.returncode}); its log is {out}.log, and the "
                         "same command resumes it once the cause is fixed")
            with open(os.path.join(out, "wall_seconds.txt"), "w") as f:
                f.write(f"{time.time() - began:.0f}\n")
        with open(results) as f:
            r = json.load(f)
        wall = os.path.join(out, "wall_seconds.txt")
        r["wall_seconds"] = float(open(wall).read()) if os.path.isfile(wall) else None
        if start:
            r["start_model_sha256"] = weights_sha256(start)
        if record:
            os.makedirs(os.path.dirname(record), exist_ok=True)
            with open(record, "w") as f:
                json.dump(r, f, indent=1, sort_keys=True)
    wall = f"{r['wall_seconds']:.0f} s" if r.get("wall_seconds") else "wall time not kept"
    print(f"  {name}: test WER {test_metric(r, 'wer'):.4f}, CER {test_metric(r, 'cer'):.4f}, {wall}", flush=True)
    return r


def weights_sha256(model_dir: str) -> str | None:
    """The first 12 hex digits of the sha256 of a model folder's model.safetensors; None when it has none (sharded or
    .bin weights), so that a finished run's record is written all the same."""
    path = os.path.join(model_dir, "model.safetensors")
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:12]


def test_metric(results: dict, metric: str) -> float:
    """The test split's figure: eval_test_* when several sets were evaluated, else eval_*."""
    return results.get(f"eval_test_{metric}", results.get(f"eval_{metric}"))


def table(rows: dict) -> None:
    """Per setting: each seed's test WER, the mean, the spread over seeds, the change of the mean against the
    baseline's, and each seed's change against the baseline of the same seed (same initial weights and data order)."""
    baseline = {seed: test_metric(r, "wer") for seed, r in rows.get("baseline", {}).items()}
    base = np.mean(list(baseline.values())) if baseline else None
    print("\n| setting | test WER per seed | mean WER | spread | mean CER | vs baseline | per seed vs baseline |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in rows.items():
        wers = {seed: test_metric(r, "wer") for seed, r in runs.items()}
        cers = [test_metric(r, "cer") for r in runs.values()]
        change = f"{np.mean(list(wers.values())) / base - 1:+.1%}" if base else "-"
        paired = ", ".join(f"{wer / baseline[seed] - 1:+.1%}" for seed, wer in wers.items() if seed in baseline)
        print(f"| {name} | {', '.join(f'{w:.4f}' for w in wers.values())} | {np.mean(list(wers.values())):.4f} | "
              f"{max(wers.values()) - min(wers.values()):.4f} | {np.mean(cers):.4f} | {change} | {paired or '-'} |")


def throughput(corpus: str, work: str, steps: int, noise: str, threads: int) -> None:
    """Audio seconds trained per second over `steps` steps: without augmentation, then with speed perturbation and
    noise done in the main process (no DataLoader workers) and in one worker."""
    print(f"throughput, {steps} steps (train_audio_seconds_per_second of the played audio):", flush=True)
    base = None
    for name, levers, extra in (("none", [], []), ("speed+noise, 0 workers", ["speed", "noise"], []),
                                ("speed+noise, 1 worker", ["speed", "noise"], ["--dataloader_num_workers", "1"])):
        out = os.path.join(work, f"{corpus_tag(corpus)}throughput-{steps}-{name.replace(' ', '').replace(',', '-')}")
        r = run(name, run_args(levers, corpus, out, steps, 42, noise) + extra, out, threads)
        speed = r["train_audio_seconds_per_second"]
        base = base or speed
        print(f"    {speed:.1f} audio s/s ({speed / base - 1:+.1%} against none)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--work", default=os.path.join(ROOT, "outputs", "recipe_gain"))
    parser.add_argument("--steps", type=int, default=4800)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS, type=setting,
                        help=f"baseline, or levers joined by + ({', '.join(LEVERS)})")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--table", action="store_true",
                        help="Print the table of the runs already finished (folders or records); train nothing.")
    parser.add_argument("--start", default="", metavar="DIR",
                        help="Fine-tune this trained model (e.g. outputs/demo) instead of training from scratch.")
    parser.add_argument("--throughput", type=int, default=0, metavar="STEPS",
                        help="Only compare training speed with and without augmentation over STEPS steps.")
    args = parser.parse_args()
    if args.table and args.throughput:
        parser.error("--table prints the WER table only; drop --throughput (its runs are quick to rerun)")
    if args.start and not args.table and not os.path.isfile(os.path.join(args.start, "config.json")):
        sys.exit(f"error: --start {args.start} holds no trained model; run `python run_speech_recognition_ctc.py "
                 "examples/demo.json` first, or pass another model folder")
    if not args.table:
        require(args.corpus, "train", "test")
    tag = corpus_tag(args.corpus)
    noise = "" if args.table else make_noise(args.corpus, os.path.join(args.work, f"{tag}noise"))
    if args.throughput:
        return throughput(args.corpus, args.work, args.throughput, noise, args.threads)
    rows = {}
    for name in args.settings:
        print(f"{name}, {args.steps} steps:", flush=True)
        for seed in args.seeds:
            out = os.path.join(args.work, f"{tag}{'ft-' if args.start else ''}{name}-{args.steps}-seed{seed}")
            flags = run_args(levers(name), args.corpus, out, args.steps, seed, noise, args.start)
            record = os.path.join(RECORDS, os.path.basename(out) + ".json")
            if args.table and not os.path.isfile(record) and not os.path.isfile(os.path.join(out, "all_results.json")):
                continue
            rows.setdefault(name, {})[seed] = run(f"seed {seed}", flags, out, args.threads, record, args.start)
    table(rows)


if __name__ == "__main__":
    main()
