"""MMS language adapters against full fine-tuning: trainable parameters, step time and peak memory.

    python bench/adapters.py [--corpus examples/demo_corpus] [--clips 400] [--steps 30]

The corpus defaults to examples/demo_corpus; the figures in bench/RESULTS.md used the commands corpus, built by
`python tools/make_bench_corpus.py DIR` and passed as --corpus DIR. More --clips than the train split holds are
its clips repeated cyclically.

Builds an MMS-shaped checkpoint from bench/speed_model's config (wav2vec2, hidden 256, 4 layers, 4.3M parameters,
random weights) with attention adapters of size 16 (`adapter_attn_dim`, as facebook/mms-1b-all) and a per-language
vocabulary, then trains it for --steps steps on the first --clips clips of the corpus's train split twice, each in
its own process with the same batches (8 clips, fp32):

  (a) --target_language tur: new adapters and CTC head, the base frozen;
  (b) full fine-tuning of the same checkpoint (no --target_language; the conv feature encoder frozen, as usual).

Prints trainable parameters (from the script's log), seconds per step (train_runtime / steps) and peak RSS.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

from corpus import DEFAULT_CORPUS, require, with_train_clips

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def make_mms_model(path: str) -> str:
    """bench/speed_model's shape with MMS attention adapters and an English vocabulary nested by language."""
    import transformers

    config = transformers.Wav2Vec2Config.from_pretrained(os.path.join(HERE, "speed_model"))
    config.adapter_attn_dim = 16
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4,
             **{c: i + 5 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz'")}}
    config.vocab_size = len(vocab)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "vocab.json"), "w") as f:
        json.dump({"eng": vocab}, f)
    transformers.Wav2Vec2CTCTokenizer(os.path.join(path, "vocab.json"), target_lang="eng", pad_token="<pad>",
                                      unk_token="<unk>").save_pretrained(path)
    transformers.Wav2Vec2ForCTC(config).save_pretrained(path)
    transformers.Wav2Vec2FeatureExtractor.from_pretrained(os.path.join(HERE, "speed_model")).save_pretrained(path)
    return path


def train(model: str, corpus: str, clips: int, steps: int, work: str, adapter: bool) -> dict:
    out = os.path.join(work, "adapter" if adapter else "full")
    command = [
        sys.executable, os.path.join(ROOT, "run_speech_recognition_ctc.py"), "--model_name_or_path", model,
        "--dataset_name", corpus, "--train_split_name", "train", "--text_column_name", "sentence", "--do_train",
        "--max_train_samples", str(clips), "--max_steps", str(steps), "--per_device_train_batch_size", "8",
        "--learning_rate", "1e-3", "--save_strategy", "no", "--report_to", "none", "--output_dir", out,
        "--seed", "42", *(["--target_language", "tur"] if adapter else []),
    ]
    env = {**os.environ, "HF_HOME": os.path.join(work, "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    subprocess.run(command + ["--preprocessing_only"], env=env, check=True, capture_output=True)  # cache first
    with open(os.path.join(work, "log.txt"), "w") as log_file:
        process = subprocess.Popen(command + ["--overwrite_output_dir"], env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    with open(os.path.join(work, "log.txt")) as f:
        log = f.read()
    if status != 0:
        sys.exit(log[-3000:])
    with open(os.path.join(out, "train_results.json")) as f:
        results = json.load(f)
    trainable = int(re.search(r"parameters \(([\d,]+) trainable", log)[1].replace(",", ""))
    return {"trainable": trainable, "s_per_step": results["train_runtime"] / steps,
            "audio_s_per_s": results["train_audio_seconds_per_second"], "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--clips", type=int, default=400)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    require(args.corpus, "train")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="ctc-adapters-") as work:
        corpus = with_train_clips(args.corpus, args.clips, work)
        model = make_mms_model(os.path.join(work, "mms"))
        for adapter in (True, False):
            rows[adapter] = train(model, corpus, args.clips, args.steps, work, adapter)
    print("| setup | trainable parameters | s per step | audio s/s | peak RSS MB |")
    print("|---|---:|---:|---:|---:|")
    for adapter, name in ((True, "MMS adapter (--target_language tur)"), (False, "full fine-tuning")):
        r = rows[adapter]
        print(f"| {name} | {r['trainable']:,} | {r['s_per_step']:.3f} | {r['audio_s_per_s']:.1f} | "
              f"{r['peak_rss_mb']:,} |")
    print(f"adapter step time: {rows[True]['s_per_step'] / rows[False]['s_per_step']:.0%} of full fine-tuning")


if __name__ == "__main__":
    main()
