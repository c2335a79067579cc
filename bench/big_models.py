"""Big models: LoRA's trainable share and memory, FSDP against DDP per rank, and LoRA's quality in a real transfer.

    python bench/big_models.py memory  [--steps 3]      # or `ranks`: only DDP against FSDP
    python bench/big_models.py quality [--steps 800] [--start outputs/demo] [--corpus examples/demo_corpus]
                                    [--work outputs/big_models] [--runs NAME ...]   # --runs: only those LoRA runs

memory: random-weight models of two real shapes, wav2vec2-large (317M parameters) and Parakeet CTC 0.6B, built from
configs, trained --steps steps on the fixture corpus (tests/fixtures/commands, 2 clips a batch, fp32, CPU), each
run in its own process:
  - full fine-tuning against LoRA rank 16 (--lora_rank 16), one process: trainable share and peak RSS;
  - wav2vec2-large under torchrun with 2 ranks (gloo): DDP against FSDP (--fsdp "full_shard auto_wrap"), the peak
    RSS of the largest rank.

quality: the demo's trained model (--start, run `python run_speech_recognition_ctc.py examples/demo.json` first), a
stand-in for a pretrained checkpoint that has heard only the demo corpus (29 words), fine-tuned on --corpus (57
words, more voices, and letters the demo never saw, so each run builds a new vocabulary; the new CTC head starts
the rows of the letters both share from the demo's, --carry_ctc_head_rows) for --steps steps: full (the demo's
settings, its convolutional front end trained too), LoRA rank 8 and rank 16 (an eighth of this 0.7M model's width)
at the demo's learning rate, rank 16 at twice it, rank 16 with only the adapters at 5x (--lora_learning_rate), the
same with the front end trained in full at the demo's rate (--freeze_feature_encoder False, as the full run), and
the CTC head only (--freeze_encoder_steps = --steps); test WER of each and of the start. The share of full
fine-tuning's WER gain over the start that LoRA recovers is the figure to watch (target: 80% or more).

--corpus defaults to examples/demo_corpus, so that the command runs from a fresh clone; but that is the start's own
corpus, so there the runs measure more training on data the start has heard, not a transfer (the script says so).
The figures in bench/RESULTS.md used the commands corpus, built by `python tools/make_bench_corpus.py DIR` and
passed as --corpus DIR.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

from corpus import DEFAULT_CORPUS, require

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "commands")
SCRIPT = os.path.join(ROOT, "run_speech_recognition_ctc.py")
ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")


def make_models(root: str) -> dict:
    """Config folders (config + feature extractor) of the two shapes: wav2vec2-large (its published config's sizes)
    and Parakeet CTC 0.6B (FastConformer, 24 layers of 1024)."""
    import transformers

    models = {}
    w2v = transformers.Wav2Vec2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                      intermediate_size=4096, feat_extract_norm="layer", do_stable_layer_norm=True,
                                      conv_bias=True)
    models["wav2vec2-large shape (315M)"] = (w2v, transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True))
    encoder = transformers.ParakeetEncoderConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=8,
                                                 intermediate_size=4096)
    parakeet = transformers.ParakeetCTCConfig(encoder_config=encoder.to_dict(), vocab_size=1025)
    models["parakeet-ctc-0.6b shape (609M)"] = (parakeet, transformers.ParakeetFeatureExtractor())
    paths = {}
    for name, (config, extractor) in models.items():  # saved with random weights: LoRA adapts a checkpoint
        path = os.path.join(root, re.sub(r"\W+", "-", name))
        transformers.AutoModelForCTC.from_config(config).save_pretrained(path)
        extractor.save_pretrained(path)
        paths[name] = path
    return paths


def measured(command: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    """Run a command in a fresh process tree; return it and the peak RSS (GB) of its largest process."""
    probe = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "sys.stdout.write(p.stdout); sys.stderr.write(p.stderr); "
             "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(p.returncode)")
    proc = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, env=ENV)
    if proc.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{proc.stderr[-3000:]}")
    return proc, int(re.findall(r"PEAK_KB (\d+)", proc.stdout)[-1]) / 1e6


def train_args(model_dir: str, out: str, steps: int) -> list[str]:
    return ["--model_name_or_path", model_dir, "--dataset_name", FIXTURES, "--train_split_name", "train",
            "--text_column_name", "sentence", "--output_dir", out, "--overwrite_output_dir", "--do_train",
            "--max_steps", str(steps), "--per_device_train_batch_size", "2", "--save_strategy", "no",
            "--report_to", "none", "--use_cpu", "--logging_steps", "1"]


def trainable(log: str) -> str:
    """The trainable parameters a run's log reports (LoRA's line; else the model line, less what head-first froze)."""
    frozen = re.findall(r"Head-first: froze the encoder \(([\d,]+) parameters\)", log)
    if frozen:
        n, t = (int(x.replace(",", "")) for x in re.findall(r"([\d,]+) parameters \(([\d,]+) trainable", log)[-1])
        t -= int(frozen[0].replace(",", ""))
        return f"{t:,} of {n:,} ({t / n:.2%})"
    found = re.findall(r"([\d,]+) of ([\d,]+) parameters trainable \(([\d.]+%)\)", log)
    if found:
        return f"{found[-1][0]} of {found[-1][1]} ({found[-1][2]})"
    found = re.findall(r"([\d,]+) parameters \(([\d,]+) trainable", log)
    n, t = (int(x.replace(",", "")) for x in found[-1])
    return f"{t:,} of {n:,} ({t / n:.2%})"


def train_peak(out: str) -> str:
    """The main process's training state (weights and optimizer states: its shards under FSDP) and its peak RSS up
    to the end of training (before the model is saved), from train_results.json."""
    with open(os.path.join(out, "train_results.json")) as f:
        r = json.load(f)
    return f"{r['train_state_gb']:.2f} | {r['train_peak_rss_gb']:.2f}"


def memory(steps: int, ranks_only: bool = False) -> None:
    work = tempfile.mkdtemp(prefix="big-models-")
    paths = make_models(work)
    print("| model | setup | trainable parameters | weights + optimizer states at the end of training (GB) | "
          "peak RSS to the end of training (GB) | peak RSS of the run, with loading and saving (GB) |", flush=True)
    print("|---|---|---|---:|---:|---:|", flush=True)
    for name, path in ({} if ranks_only else paths).items():
        vocab = ["--vocab_type", "bpe"] if "parakeet" in name else []  # 12.5 frames/s: characters do not fit CTC
        for setup, extra in (("full fine-tuning", []), ("LoRA r=16", ["--lora_rank", "16"])):
            proc, peak = measured([sys.executable, SCRIPT, *train_args(path, os.path.join(work, "out"), steps),
                                   *vocab, *extra])
            train = train_peak(os.path.join(work, "out"))
            print(f"| {name} | {setup}, 1 process | {trainable(proc.stdout)} | {train} | {peak:.2f} |", flush=True)
    name = "wav2vec2-large shape (315M)"
    for setup, extra in (("DDP", []), ("FSDP full_shard auto_wrap", ["--fsdp", "full_shard auto_wrap"])):
        command = ["torchrun", "--nproc_per_node", "2", "--master_port", "29561", SCRIPT,
                   *train_args(paths[name], os.path.join(work, "out"), steps), *extra]
        proc, peak = measured(command)
        train = train_peak(os.path.join(work, "out"))
        print(f"| {name} | {setup}, 2 ranks (rank 0; RSS of the run: the largest rank) | {trainable(proc.stdout)} | "
              f"{train} | {peak:.2f} |", flush=True)


def quality(start: str, corpus: str, steps: int, work: str, only: list[str]) -> None:
    if os.path.samefile(corpus, DEFAULT_CORPUS):
        print(f"--corpus {corpus} is the corpus the demo's model was trained on: these runs train the start further "
              "on data it has heard, not a transfer; the figures in bench/RESULTS.md used the commands corpus "
              "(python tools/make_bench_corpus.py DIR, then --corpus DIR)", flush=True)
    # A finished run is read back from --work, not rerun: a folder holds the runs of one corpus only
    os.makedirs(work, exist_ok=True)
    mark = os.path.join(work, "corpus.txt")
    if os.path.isfile(mark):
        with open(mark) as f:
            before = f.read().strip()
        if before != os.path.abspath(corpus):
            sys.exit(f"error: --work {work} holds runs on {before}; pass another --work for --corpus {corpus}")
    with open(mark, "w") as f:
        f.write(os.path.abspath(corpus) + "\n")
    with open(os.path.join(ROOT, "examples", "demo.json")) as f:
        demo = json.load(f)
    common = ["--dataset_name", corpus, "--train_split_name", "train", "--eval_split_name", "test",
              "--text_column_name", "sentence", "--eval_metrics", "wer", "cer", "--report_to", "none",
              "--per_device_eval_batch_size", "16", "--seed", "42"]
    tuned = ["--do_train", "--do_eval", "--max_steps", str(steps), "--per_device_train_batch_size", "8",
             "--learning_rate", str(demo["learning_rate"]), "--warmup_steps", str(demo["warmup_steps"]),
             "--group_by_length", "--mask_time_length", "5", "--save_strategy", "no", "--logging_steps", "100"]
    # The start keeps its own tokenizer and head (the corpus's x, y and z are unknown to it); the fine-tuned runs
    # build the corpus's vocabulary, so each has a new CTC head (the shared letters' rows carried over)
    runs = {"start (no fine-tuning)": ["--do_eval", "--tokenizer_name_or_path", start, "--max_unk_share", "1"],
            "full fine-tuning": tuned + ["--freeze_feature_encoder", "False"],
            "LoRA r=8": tuned + ["--lora_rank", "8"],
            "LoRA r=16": tuned + ["--lora_rank", "16"],
            "LoRA r=16, 2x the learning rate": tuned + ["--lora_rank", "16",
                                                        "--learning_rate", str(2 * demo["learning_rate"])],
            "LoRA r=16, adapters at 5x the learning rate": tuned + [
                "--lora_rank", "16", "--lora_learning_rate", str(5 * demo["learning_rate"])],
            "LoRA r=16, adapters at 5x the learning rate, front end trained": tuned + [
                "--lora_rank", "16", "--lora_learning_rate", str(5 * demo["learning_rate"]),
                "--freeze_feature_encoder", "False"],
            "LoRA r=16, adapters at 10x the learning rate, front end trained": tuned + [
                "--lora_rank", "16", "--lora_learning_rate", str(10 * demo["learning_rate"]),
                "--freeze_feature_encoder", "False"],
            "LoRA r=16, adapters at 5x the learning rate, front end trained, every projection": tuned + [
                "--lora_rank", "16", "--lora_learning_rate", str(5 * demo["learning_rate"]),
                "--freeze_feature_encoder", "False", "--lora_target_modules", "q_proj", "k_proj", "v_proj",
                "out_proj", "intermediate_dense", "output_dense", "projection"],
            "LoRA r=16, adapters at 5x the learning rate, front end, its projection and the norms trained": tuned + [
                "--lora_rank", "16", "--lora_learning_rate", str(5 * demo["learning_rate"]),
                "--freeze_feature_encoder", "False", "--lora_modules_to_save", "feature_projection", "layer_norm",
                "final_layer_norm"],
            "LoRA r=32, adapters at 5x the learning rate, front end, its projection and the norms trained": tuned + [
                "--lora_rank", "32", "--lora_learning_rate", str(5 * demo["learning_rate"]),
                "--freeze_feature_encoder", "False", "--lora_modules_to_save", "feature_projection", "layer_norm",
                "final_layer_norm"],
            "DoRA r=16, adapters at 5x the learning rate, front end, its projection and the norms trained": tuned + [
                "--lora_rank", "16", "--lora_use_dora", "--lora_learning_rate", str(5 * demo["learning_rate"]),
                "--freeze_feature_encoder", "False", "--lora_modules_to_save", "feature_projection", "layer_norm",
                "final_layer_norm"],
            "DoRA r=16, adapters at 5x the learning rate, front end, its projection, the norms and the positional "
            "convolution trained": tuned + [
                "--lora_rank", "16", "--lora_use_dora", "--lora_learning_rate", str(5 * demo["learning_rate"]),
                "--freeze_feature_encoder", "False", "--lora_modules_to_save", "feature_projection", "layer_norm",
                "final_layer_norm", "pos_conv_embed"],
            "LoRA r=16, adapters at 5x the learning rate, front end, its projection, the norms and the positional "
            "convolution trained": tuned + [
                "--lora_rank", "16", "--lora_learning_rate", str(5 * demo["learning_rate"]),
                "--freeze_feature_encoder", "False", "--lora_modules_to_save", "feature_projection", "layer_norm",
                "final_layer_norm", "pos_conv_embed"],
            "CTC head only": tuned + ["--freeze_encoder_steps", str(steps)]}
    if only:  # the start and full fine-tuning always: the share is measured against them
        runs = {n: a for n, a in runs.items() if n in ("start (no fine-tuning)", "full fine-tuning") or n in only}
    results = {}
    for name, extra in runs.items():
        out = os.path.join(work, re.sub(r"\W+", "-", name).strip("-"))
        path = os.path.join(out, "all_results.json")
        if not os.path.isfile(path):
            proc, _ = measured([sys.executable, SCRIPT, "--model_name_or_path", start, "--output_dir", out,
                                "--overwrite_output_dir", *common, *extra])
            log = proc.stdout
            with open(out + ".log", "w") as f:
                f.write(log)
        with open(path) as f:
            results[name] = json.load(f)
        with open(out + ".log") as f:
            share = trainable(f.read()) if "trainable" in extra or name != "start (no fine-tuning)" else "-"
        r = results[name]
        print(f"{name}: test WER {r['eval_wer']:.4f}, CER {r['eval_cer']:.4f}, trainable {share}", flush=True)
    start_wer, full_wer = results["start (no fine-tuning)"]["eval_wer"], results["full fine-tuning"]["eval_wer"]
    if full_wer >= start_wer:  # no gain to share out (the start's own corpus, or too few steps)
        print(f"full fine-tuning did not lower the start's WER ({start_wer:.4f} -> {full_wer:.4f}): no gain to recover")
        return
    for name in [n for n in runs if n.startswith(("LoRA", "CTC head"))]:
        gain = (start_wer - results[name]["eval_wer"]) / (start_wer - full_wer)
        print(f"{name} recovers {gain:.0%} of full fine-tuning's WER gain over the start "
              f"({start_wer:.4f} -> {full_wer:.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["memory", "ranks", "quality"], help="ranks: only DDP against FSDP")
    parser.add_argument("--steps", type=int, default=None, help="memory: 3; quality: 800")
    parser.add_argument("--start", default=os.path.join(ROOT, "outputs", "demo"))
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--work", default=os.path.join(ROOT, "outputs", "big_models"))
    parser.add_argument("--runs", nargs="+", default=[], metavar="NAME",
                        help="quality: only these runs (by name, as printed), beside the start and full fine-tuning")
    args = parser.parse_args()
    if args.part in ("memory", "ranks"):
        memory(args.steps or 3, ranks_only=args.part == "ranks")
    else:
        if not os.path.isfile(os.path.join(args.start, "model.safetensors")):
            sys.exit(f"{args.start} holds no trained model: run `python run_speech_recognition_ctc.py "
                     "examples/demo.json` first")
        require(args.corpus, "train", "test")
        quality(args.start, args.corpus, args.steps or 800, args.work, args.runs)


if __name__ == "__main__":
    main()
