"""ONNX deployment: speed, memory and size of PyTorch fp32, ONNX fp32 and ONNX int8 on CPU, and their WER.

    python bench/onnx_speed.py speed [--clips 100] [--corpus examples/demo_corpus] [--int8_ops MatMul Gemm]
    python bench/onnx_speed.py accuracy [--model outputs/demo]
    python bench/onnx_speed.py                       # both

The speed corpus defaults to examples/demo_corpus (100 test clips; more --clips repeat them cyclically); the figures
in bench/RESULTS.md used the commands corpus, built by `python tools/make_bench_corpus.py DIR` and passed as
--corpus DIR. accuracy always uses the demo corpus, the data of the demo's model.

speed: random-weight models of two real shapes, built from configs: wav2vec2-base (95M parameters; group norm, so
each clip runs alone, as transcribe.py runs that checkpoint) and Parakeet CTC 0.6B (FastConformer, 24 layers of
1024). Each is exported with export_onnx.py --int8, then transcribes --clips test clips of --corpus with
transcribe.py's own code three ways, each in a fresh process: PyTorch fp32, --onnx (fp32) and --onnx int8. Printed:
audio seconds per second (inference only, after a warm-up on 5 clips), the real-time factor, the process's peak
RSS (model load included) and the model file's size.

accuracy: the demo's trained model (--model; run `python run_speech_recognition_ctc.py examples/demo.json` first),
exported the same way, transcribes the demo corpus's test split three ways; the WER of each against the
references (normalised as the demo run normalises them), and the differences to PyTorch's.
"""

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
from corpus import DEFAULT_CORPUS, read_split, repeated, require  # noqa: E402
from shapes import parakeet_shape, wav2vec2_base_shape  # noqa: E402

DEMO_TEST = os.path.join(ROOT, "examples", "demo_corpus", "test")
WORK = os.path.join(ROOT, "outputs", "onnx_speed")
ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
RUNTIMES = {"PyTorch fp32": [], "ONNX fp32": ["--onnx"], "ONNX int8": ["--onnx", "int8"]}
WARM_UP_CLIPS = 5


def export(model_dir: str, int8_ops: list[str], clips: list[str]) -> None:
    """export_onnx.py --int8 into model_dir (skipped when both files are there)."""
    check = os.path.join(model_dir, "onnx_check.json")
    if os.path.isfile(check) and os.path.isfile(os.path.join(model_dir, "model.int8.onnx")):
        with open(check) as f:
            if json.load(f)["int8_ops"] == int8_ops:
                return
    command = [sys.executable, os.path.join(ROOT, "export_onnx.py"), model_dir, "--int8", "--int8_ops", *int8_ops,
               "--int8_tolerance", "1e9", "--clips", *clips[:4]]  # random weights: int8 text is noise
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=ENV)
    if proc.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{proc.stderr[-3000:]}")
    print(f"  exported {os.path.basename(model_dir)} in {time.perf_counter() - start:.0f} s:", flush=True)
    print("\n".join("    " + line for line in proc.stderr.splitlines() if "MiB" in line), flush=True)


def run_once(model_dir: str, flags: list[str], clips: list[str]) -> dict:
    """In this process: load the model in the engine transcribe.py runs, warm up, then transcribe `clips`; the
    figures. `flags`: a RUNTIMES entry (transcribe.py's --onnx flag)."""
    import soundfile as sf

    from ctc_finetune.engine import Engine, EngineOptions

    onnx = (flags[1:] or ["fp32"])[0] if flags else None
    engine = Engine(model_dir, EngineOptions(device="cpu", onnx=onnx))
    engine.transcribe_many(clips[:WARM_UP_CLIPS])
    start = time.perf_counter()
    results, _ = engine.transcribe_many(clips)
    wall = time.perf_counter() - start
    audio = sum(sf.info(c).duration for c in clips)
    return {"audio_seconds": audio, "wall_seconds": wall, "audio_per_second": audio / wall, "rtf": wall / audio,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
            "texts": {r.path: r.text for r in results if r is not None}}


def measure(model_dir: str, flags: list[str], clips: list[str]) -> dict:
    """run_once in a fresh process (so that each runtime's peak RSS is its own)."""
    with open(os.path.join(WORK, "clips.txt"), "w") as f:
        f.write("\n".join(clips))
    command = [sys.executable, __file__, "_run", model_dir, os.path.join(WORK, "clips.txt"), *flags]
    proc = subprocess.run(command, capture_output=True, text=True, env=ENV)
    if proc.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def file_size(model_dir: str, runtime: str) -> float:
    from ctc_finetune.export import file_bytes

    if runtime == "PyTorch fp32":
        return os.path.getsize(os.path.join(model_dir, "model.safetensors")) / 2**20
    return file_bytes(os.path.join(model_dir, "model.int8.onnx" if "int8" in runtime else "model.onnx")) / 2**20


def corpus_clips(folder: str, count: int) -> tuple[list[str], dict]:
    """The first `count` clips of a split folder with a metadata.csv, and their transcripts by path."""
    with open(os.path.join(folder, "metadata.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:count]
    paths = [os.path.join(folder, r["file_name"]) for r in rows]
    return paths, {path: r["sentence"] for path, r in zip(paths, rows)}


def speed(corpus: str, count: int, int8_ops: list[str]) -> None:
    clips = repeated([r["path"] for r in read_split(corpus, "test")], count, f"the test split of {corpus}")
    print(f"speed: {len(clips)} test clips of {corpus}, {os.cpu_count()} CPU cores", flush=True)
    models = os.path.join(WORK, "models")
    shapes = {"wav2vec2-base shape (95M)": wav2vec2_base_shape(models),
              "parakeet-ctc-0.6b shape (609M)": parakeet_shape(models)}
    for name, path in shapes.items():
        export(path, int8_ops, clips)
        print(f"\n{name}\n  {'runtime':13} {'audio s/s':>10} {'RTF':>7} {'peak RSS':>9} {'file':>10} {'speed-up':>9}")
        base = None
        for runtime, flags in RUNTIMES.items():
            r = measure(path, flags, clips)
            base = base or r["audio_per_second"]
            print(f"  {runtime:13} {r['audio_per_second']:10.1f} {r['rtf']:7.4f} {r['peak_rss_gb']:7.2f} GB "
                  f"{file_size(path, runtime):7.1f} MiB {r['audio_per_second'] / base:8.2f}x", flush=True)


def accuracy(model_dir: str, int8_ops: list[str]) -> None:
    import jiwer

    from ctc_finetune.text import normalize_text

    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        sys.exit(f"{model_dir} holds no model: run `python run_speech_recognition_ctc.py examples/demo.json` first")
    clips, references = corpus_clips(DEMO_TEST, 10**6)
    for f in ("model.onnx", "model.int8.onnx"):  # a fresh export of this model
        if os.path.exists(os.path.join(model_dir, f)):
            os.remove(os.path.join(model_dir, f))
    export(model_dir, int8_ops, clips)
    print(f"\naccuracy: {model_dir} on the demo corpus's test split ({len(clips)} clips)")
    base = None
    for runtime, flags in RUNTIMES.items():
        texts = measure(model_dir, flags, clips)["texts"]
        wer = jiwer.wer([normalize_text(references[c], None) for c in clips], [texts[c] for c in clips])
        cer = jiwer.cer([normalize_text(references[c], None) for c in clips], [texts[c] for c in clips])
        base = wer if base is None else base
        print(f"  {runtime:13} test WER {wer:.4f} (CER {cer:.4f}), {wer - base:+.4f} against PyTorch", flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_run":  # the child of `measure`
        model_dir, clip_list, flags = sys.argv[2], sys.argv[3], sys.argv[4:]
        with open(clip_list) as f:
            clips = f.read().split("\n")
        print(json.dumps(run_once(model_dir, flags, clips)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", choices=("speed", "accuracy", "both"), default="both")
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--model", default=os.path.join(ROOT, "outputs", "demo"))
    parser.add_argument("--int8_ops", nargs="+", default=["MatMul", "Gemm"])
    args = parser.parse_args()
    if args.what in ("speed", "both"):
        require(args.corpus, "test")
    os.makedirs(WORK, exist_ok=True)
    if args.what in ("speed", "both"):
        speed(args.corpus, args.clips, args.int8_ops)
    if args.what in ("accuracy", "both"):
        accuracy(args.model, args.int8_ops)


if __name__ == "__main__":
    main()
