"""Character against subword vocabularies, on an 8x model (12.5 frames/s) and a 20 ms model (50 frames/s).

    python bench/vocab_compare.py [--steps 1000] [--bpe_size 256] [--corpus examples/demo_corpus]

The corpus defaults to examples/demo_corpus; the figures in bench/RESULTS.md used the commands corpus, built by
`python tools/make_bench_corpus.py DIR` and passed as --corpus DIR.

Trains from scratch (--config_name) on the corpus, with the demo's hyper-parameters: a Parakeet-shaped model
(8x subsampling, demo size: hidden 128, 4 layers; bench/family_learning.py) and the demo's wav2vec2-shaped model
(examples/demo_model), each once with --vocab_type char and once with --vocab_type bpe. Prints the training clips
kept, the test WER/CER and the wall time of each run (a run the script stops before training says why).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "bench"), os.path.join(ROOT, "tests")]
from corpus import DEFAULT_CORPUS, require  # noqa: E402
from family_learning import demo_sized_checkpoint  # noqa: E402


def run(config: str, vocab: list[str], corpus: str, steps: int, out: str, home: str) -> dict:
    command = [
        sys.executable, os.path.join(ROOT, "run_speech_recognition_ctc.py"), "--config_name", config,
        "--dataset_name", corpus, "--train_split_name", "train", "--eval_split_name", "test",
        "--text_column_name", "sentence", "--output_dir", out, "--do_train", "--do_eval", "--eval_metrics", "wer", "cer",
        "--max_steps", str(steps), "--max_batch_duration", "29", "--per_device_eval_batch_size", "16",
        "--learning_rate", "2e-3", "--warmup_steps", "60", "--logging_steps", "100", "--save_strategy", "no",
        "--report_to", "none", "--seed", "42", "--preprocessing_num_workers", "2", "--freeze_feature_encoder", "False",
        "--mask_time_length", "5", *vocab,
    ]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HOME": home})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1], "wall": wall}
    with open(os.path.join(out, "all_results.json"), encoding="utf-8") as f:
        results = json.load(f)
    with open(os.path.join(out, "data_report.json"), encoding="utf-8") as f:
        train = json.load(f)["train"]
    return {**results, "kept": train["clips"], "total": train["clips"] + sum(train["dropped"].values()), "wall": wall}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--bpe_size", type=int, default=256)
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    args = parser.parse_args()
    require(args.corpus, "train", "test")
    with tempfile.TemporaryDirectory() as tmp:
        models = {"parakeet-shaped 8x": demo_sized_checkpoint("parakeet_ctc", os.path.join(tmp, "parakeet")),
                  "wav2vec2 demo 20 ms": os.path.join(ROOT, "examples", "demo_model")}
        vocabs = {"char": [], f"bpe {args.bpe_size}": ["--vocab_type", "bpe", "--vocab_size", str(args.bpe_size)]}
        for model_name, config in models.items():
            for vocab_name, flags in vocabs.items():
                out = os.path.join(tmp, f"{len(os.listdir(tmp))}")
                r = run(config, flags, args.corpus, args.steps, out, os.path.join(tmp, "hf"))
                if "error" in r:
                    print(f"{model_name:<20} {vocab_name:<9} stopped before training ({r['wall']:.0f} s): {r['error']}",
                          flush=True)
                    continue
                print(f"{model_name:<20} {vocab_name:<9} kept {r['kept']:,}/{r['total']:,} training clips, test WER "
                      f"{r['eval_wer']:.3f}, CER {r['eval_cer']:.3f}, {r['wall'] / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
