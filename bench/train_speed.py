"""Training throughput: the upstream-equivalent setup against our defaults, same model, same audio.

    python bench/train_speed.py [--corpus examples/demo_corpus] [--clips 400] [--quality_steps 1500]
    python bench/train_speed.py --model bench/base_model --precision bf16 --clips 2000     # on a GPU (and fp16)

The corpus defaults to examples/demo_corpus (1,000 training clips); the figures in bench/RESULTS.md used the
commands corpus (2,000), built by `python tools/make_bench_corpus.py DIR` and passed as --corpus DIR. Asked for more
clips than the train split holds, the script repeats them cyclically (the same audio files) and says so.

Trains --model (default bench/speed_model: wav2vec2 shape, hidden 256, 4 layers, 4.3M parameters; bench/base_model
is wav2vec2-base's shape, 94M; random weights either way) with the script, on the first --clips clips of the
corpus's train split for one epoch, in two setups:

  (a) upstream-equivalent: --per_device_train_batch_size 8 --group_by_length, eager attention, glibc's default
      memory handling (--reuse_cpu_memory False);
  (b) ours: --max_batch_duration (8 clips' worth of audio, so the steps match, or --batch_seconds), SDPA attention,
      freed CPU memory reused (the default), and --torch_compile with --compile.

--precision sets both setups' precision (fp32, bf16, fp16); by default (a) is fp32 and (b) uses bf16 where the
hardware has it (CUDA bf16, or a CPU with AMX / AVX512-BF16).

Each setup runs in its own process (after one shared preprocessing pass, so decoding is not timed) and the table
gives audio seconds trained per wall second of `trainer.train()`, padding share, peak RSS (and peak GPU memory on
a GPU), the model FLOPs utilisation where the peak is known (MFU: training FLOPs of the real audio, counted from
the model config as 3x the forward pass, per second, over the accelerator's dense 16-bit peak or --peak_tflops),
then the ratio b/a. --quality_steps N also trains both setups for N steps on the whole train split and
compares their test WER (the target: b not worse than a by more than 0.02); that comparison uses the demo's 0.7M
model (--quality_model), which learns this corpus in minutes on a CPU.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from corpus import DEFAULT_CORPUS, read_split, require, with_train_clips  # noqa: E402

BATCH_SIZE = 8  # upstream's per-device batch size in the published commands
TRAIN_FLOPS_PER_FORWARD = 3  # backward costs about twice the forward pass
# Dense bf16/fp16 tensor-core peaks in TFLOP/s (vendor data sheets; SXM unless named), the first key found in the
# device name wins.
PEAK_TFLOPS_16BIT = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
                     "A10": 125.0, "V100": 125.0}


def has_bf16() -> bool:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def forward_flops(config, samples: int) -> float:
    """FLOPs (2 per multiply-add) of one forward pass of a wav2vec2-shaped CTC model over a clip of `samples`."""
    flops, frames, channels = 0.0, samples, 1
    for dim, kernel, stride in zip(config.conv_dim, config.conv_kernel, config.conv_stride):  # feature encoder
        frames = (frames - kernel) // stride + 1
        flops += 2 * channels * dim * kernel * frames
        channels = dim
    hidden, inner = config.hidden_size, config.intermediate_size
    flops += 2 * channels * hidden * frames  # feature projection
    flops += 2 * hidden * hidden // config.num_conv_pos_embedding_groups * config.num_conv_pos_embeddings * frames
    attention = 2 * 4 * hidden * hidden * frames + 2 * 2 * frames * frames * hidden  # q, k, v, out; scores, values
    flops += config.num_hidden_layers * (attention + 2 * 2 * hidden * inner * frames)
    return flops + 2 * hidden * config.vocab_size * frames  # CTC head


def train_flops_per_audio_second(model_dir: str, seconds: list[float], rate: int = 16000) -> float:
    """Training FLOPs per second of real audio over these clips (attention grows with clip length, so per clip)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    total = sum(forward_flops(config, round(s * rate)) for s in seconds)
    return TRAIN_FLOPS_PER_FORWARD * total / sum(seconds)


def peak_flops(override_tflops) -> float | None:
    """The accelerator's dense 16-bit peak in FLOP/s: --peak_tflops, else looked up by the GPU's name."""
    if override_tflops:
        return override_tflops * 1e12
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((tflops * 1e12 for key, tflops in PEAK_TFLOPS_16BIT.items() if key in name), None)


def half_precision(kind: str) -> list[str]:
    """Flags for bf16 or fp16 training (the Trainer wants --use_cpu to autocast on a CPU)."""
    import torch

    return [f"--{kind}"] + ([] if torch.cuda.is_available() else ["--use_cpu"])


def setup_args(name: str, data: str, out: str, clips: int, batch_seconds: float, steps: int, compile_b: bool,
               model: str = os.path.join(HERE, "speed_model"), precision: str = "auto"):
    """Command line of one setup; steps=0 means one epoch over `clips` clips."""
    args = ["--config_name", model, "--dataset_name", data, "--output_dir", out,
            "--train_split_name", "train" if steps else f"train[:{clips}]", "--eval_split_name", "test",
            "--text_column_name", "sentence", "--do_train", "--learning_rate", "2e-3", "--warmup_steps", "60",
            "--freeze_feature_encoder", "False", "--mask_time_length", "5", "--save_strategy", "no",
            "--report_to", "none", "--seed", "42", "--logging_steps", "50", "--disable_tqdm", "True",
            "--overwrite_output_dir", "--per_device_eval_batch_size", "16"]
    args += ["--max_steps", str(steps), "--do_eval", "--eval_metrics", "wer", "cer"] if steps else ["--num_train_epochs", "1"]
    if precision in ("bf16", "fp16"):
        args += half_precision(precision)
    if name == "a":
        return args + ["--per_device_train_batch_size", str(BATCH_SIZE), "--group_by_length",
                       "--attn_implementation", "eager", "--reuse_cpu_memory", "False"]
    args += ["--max_batch_duration", f"{batch_seconds:.1f}", "--attn_implementation", "sdpa"]
    if precision == "auto" and has_bf16():
        args += half_precision("bf16")
    if compile_b:
        args += ["--torch_compile"]
    return args


def child(argv: list[str], report: str) -> None:
    """Run the training command in this process (as `python run_speech_recognition_ctc.py ARGS` would) and record
    its peak memory."""
    import runpy

    import torch

    sys.argv = [os.path.join(ROOT, "run_speech_recognition_ctc.py"), *argv]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as e:  # the command's exit: only a failure is one
        if e.code:
            raise
    peak = {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if torch.cuda.is_available():
        peak["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
    with open(report, "w") as f:
        json.dump(peak, f)


def run_setup(argv: list[str], out: str, env: dict) -> dict:
    report = out + "-peak.json"
    proc = subprocess.run([sys.executable, __file__, "--child", report, "--", *argv], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"setup failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    with open(os.path.join(out, "all_results.json")) as f:
        results = json.load(f)
    with open(report) as f:
        results.update(json.load(f))
    results["audio_seconds_per_second"] = results["train_audio_hours"] * 3600 / results["train_runtime"]
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--clips", type=int, default=400, help="Training clips timed (one epoch).")
    parser.add_argument("--model", default=os.path.join(HERE, "speed_model"), help="Model config of the timed runs.")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                        help="Precision of both setups (auto: a in fp32, b in bf16 where the hardware has it).")
    parser.add_argument("--batch_seconds", type=float, help="Setup b's --max_batch_duration (default: 8 clips' worth).")
    parser.add_argument("--peak_tflops", type=float, help="Peak FLOP/s of the device for MFU (default: GPU table).")
    parser.add_argument("--quality_steps", type=int, default=0, help="Also train N steps per setup, compare WER.")
    parser.add_argument("--quality_model", default=os.path.join(ROOT, "examples", "demo_model"),
                        help="Model config of the WER comparison (default: the demo's 0.7M model, quick to train).")
    parser.add_argument("--compile", action="store_true", help="Add --torch_compile to setup b.")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        return child(rest[1:] if rest[:1] == ["--"] else rest, args.child)

    require(args.corpus, "train", *(["test"] if args.quality_steps else []))
    if not os.path.isfile(os.path.join(args.model, "config.json")):
        parser.error(f"--model {args.model}: no config.json there (bench/speed_model and bench/base_model have one)")
    work = tempfile.mkdtemp(prefix="train_speed-")
    data = with_train_clips(args.corpus, args.clips, work)  # the timed runs' corpus: train repeated up to --clips
    timed = [r["duration"] for r in read_split(data, "train")[: args.clips]]
    batch_seconds = args.batch_seconds or BATCH_SIZE * sum(timed) / len(timed)  # default: as much audio per step as (a)
    flops_per_audio_second, peak = train_flops_per_audio_second(args.model, timed), peak_flops(args.peak_tflops)
    env = {**os.environ, "HF_HOME": os.path.join(work, "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    print(f"{len(timed)} clips, {sum(timed) / 60:.1f} min of audio; setup b batches up to {batch_seconds:.1f} s; "
          f"precision {args.precision} (bf16 hardware: {'yes' if has_bf16() else 'no'}); "
          f"{flops_per_audio_second / 1e9:,.1f} GFLOP per training audio second; work dir {work}", flush=True)

    # Fill the preprocessing cache first, in a process of its own: neither timed process decodes audio.
    prep = os.path.join(work, "prep")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "run_speech_recognition_ctc.py"),
                           *setup_args("a", data, prep, args.clips, batch_seconds, 0, False, args.model),
                           "--preprocessing_only"], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"preprocessing failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    rows = {}
    for name in ("a", "b"):
        out = os.path.join(work, f"speed-{name}")
        argv = setup_args(name, data, out, args.clips, batch_seconds, 0, args.compile, args.model, args.precision)
        rows[name] = run_setup(argv, out, env)
        r = rows[name]
        mfu = r["audio_seconds_per_second"] * flops_per_audio_second / peak if peak else None
        print(f"({name}) {r['audio_seconds_per_second']:8.1f} audio s/s  padding {r['train_padding_fraction']:6.1%}  "
              f"train {r['train_runtime']:6.1f} s  peak RSS {r['peak_rss_gb']:.2f} GB"
              + (f"  peak GPU {r['peak_gpu_gb']:.2f} GB" if "peak_gpu_gb" in r else "")
              + (f"  MFU {mfu:.1%}" if mfu is not None else ""), flush=True)
    ratio = rows["b"]["audio_seconds_per_second"] / rows["a"]["audio_seconds_per_second"]
    print(f"ratio b/a: {ratio:.2f}")

    if args.quality_steps:
        wer = {}
        for name in ("a", "b"):
            out = os.path.join(work, f"quality-{name}")
            argv = setup_args(name, args.corpus, out, args.clips, batch_seconds, args.quality_steps, args.compile,
                              args.quality_model, args.precision)
            r = run_setup(argv, out, env)
            wer[name] = r["eval_wer"]
            print(f"({name}) {args.quality_steps} steps: test WER {r['eval_wer']:.3f}, CER {r.get('eval_cer', 0):.3f}, "
                  f"train {r['train_runtime'] / 60:.1f} min, padding {r['train_padding_fraction']:.1%}", flush=True)
        print(f"WER b - a: {wer['b'] - wer['a']:+.3f} (target: at most +0.02)")


if __name__ == "__main__":
    main()
