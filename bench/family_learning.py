"""Does a newer family learn through the script? A demo-sized random model of the family, trained on --corpus.

    python bench/family_learning.py --family omniasr_ctc [--steps 1000] [--corpus examples/demo_corpus]

The corpus defaults to examples/demo_corpus; the figures in bench/RESULTS.md used the commands corpus, built by
`python tools/make_bench_corpus.py DIR` and passed as --corpus DIR.

Builds a checkpoint shaped like the family's release (tests/tiny_models.py: feature extractor, and for the subword
families the shipped tokenizer and CTC head) at the demo model's size (hidden 128, 4 layers, 4 heads), then runs
run_speech_recognition_ctc.py on it with the demo's hyper-parameters (--model_name_or_path, default flags
otherwise: a family's own tokenizer and blank stay when they cover the text). Prints the test WER/CER and the time.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import transformers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
from corpus import DEFAULT_CORPUS, require  # noqa: E402
from tiny_models import NEW_FAMILIES, make_checkpoint  # noqa: E402

DEMO_SIZE = {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 256}


def demo_sized_checkpoint(family: str, path: str) -> str:
    """The family's tiny release-shaped checkpoint, with its encoder grown to the demo model's size."""
    make_checkpoint(path, family)
    config = transformers.AutoConfig.from_pretrained(path)
    encoder = getattr(config, "encoder_config", None) or getattr(config, "audio_config", None) or config
    for key, value in DEMO_SIZE.items():
        setattr(encoder, key, value)
    if family == "omniasr_ctc":
        encoder.conv_dim = (64,) * len(encoder.conv_dim)
    if family == "wav2vec2-bert":  # released as a bare encoder: the script adds the head
        transformers.AutoModel.from_config(config).save_pretrained(path)
    else:
        transformers.AutoModelForCTC.from_config(config).save_pretrained(path)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=NEW_FAMILIES, default="omniasr_ctc")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    args = parser.parse_args()
    require(args.corpus, "train", "test")
    with tempfile.TemporaryDirectory() as tmp:
        model = demo_sized_checkpoint(args.family, os.path.join(tmp, "model"))
        out = os.path.join(tmp, "out")
        command = [
            sys.executable, os.path.join(ROOT, "run_speech_recognition_ctc.py"), "--model_name_or_path", model,
            "--dataset_name", args.corpus, "--train_split_name", "train", "--eval_split_name", "test",
            "--text_column_name", "sentence", "--output_dir", out, "--do_train", "--do_eval",
            "--eval_metrics", "wer", "cer", "--max_steps", str(args.steps), "--max_batch_duration", "29",
            "--per_device_eval_batch_size", "16", "--learning_rate", "2e-3", "--warmup_steps", "60",
            "--logging_steps", "100", "--save_strategy", "no", "--report_to", "none", "--seed", "42",
            "--preprocessing_num_workers", "2", "--freeze_feature_encoder", "False",
        ]
        start = time.perf_counter()
        run = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HOME": tmp})
        wall = time.perf_counter() - start
        if run.returncode != 0:
            sys.exit(f"error: the run failed:\n{run.stderr[-3000:]}")
        with open(os.path.join(out, "all_results.json"), encoding="utf-8") as f:
            results = json.load(f)
        kept = [line.split(" - ")[-1] for line in run.stdout.splitlines() if "Tokenizer:" in line or "Model:" in line]
        print("\n".join(kept))
        print(f"{args.family}: {args.steps} steps, test WER {results['eval_wer']:.3f}, CER {results['eval_cer']:.3f} "
              f"on {results['eval_samples']} clips; {wall / 60:.1f} min in all "
              f"({results['train_audio_seconds_per_second']:.1f} audio s/s in training)")


if __name__ == "__main__":
    main()
