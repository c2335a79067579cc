"""Every CTC family's output frame rate, and how many clips a character vocabulary can align at that rate.

    python bench/families.py [--corpus examples/demo_corpus] [--split train]

The corpus defaults to examples/demo_corpus; the figures in bench/RESULTS.md used the commands corpus, built by
`python tools/make_bench_corpus.py DIR` and passed as --corpus DIR.

For each of the 14 families of transformers 5.x, a tiny random checkpoint with its release's time arithmetic
(tests/tiny_models.py) gives the output frames the script's own `output_frames` counts for every clip of the split
(lengths from the file headers), and the frames each transcript needs under CTC with the character vocabulary the
script builds (`ctc_min_frames`). A clip whose transcript needs more frames than the model gives is one the script
drops; more than 20% of them stops the run before training (`check_ctc_fit`). Prints a table.
"""

import argparse
import csv
import json
import os
import sys
import tempfile

import numpy as np
import soundfile as sf
import transformers
from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForCTC, Wav2Vec2CTCTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
from ctc_finetune.families import output_frames
from ctc_finetune.preprocessing import MAX_INFEASIBLE_SHARE, ctc_min_frames, encode_labels
from ctc_finetune.text import build_vocab, normalize_text  # noqa: E402
from corpus import DEFAULT_CORPUS, require  # noqa: E402
from tiny_models import (  # noqa: E402
    ALL_FAMILIES, ARCHITECTURES, ENCODER, FamilyUnavailable, make_checkpoint, torchaudio_problem,
)

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


def model_and_features(arch: str, path: str, vocab_size: int):
    """A tiny CTC model of `arch` with its release's time arithmetic, and its feature extractor.

    The wav2vec2-era test checkpoints use short conv strides (200 frames/s) to be quick; here their configs keep
    the release's conv stack (strides 5, 2, 2, 2, 2, 2, 2: 50 frames/s)."""
    make_checkpoint(path, arch)
    if arch in ARCHITECTURES:
        config_cls, _, extra = ARCHITECTURES[arch]
        config = getattr(transformers, config_cls)(**ENCODER, **extra, vocab_size=vocab_size)
        return AutoModelForCTC.from_config(config), AutoFeatureExtractor.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    config.vocab_size = vocab_size
    model = AutoModelForCTC.from_pretrained(path, config=config, ignore_mismatched_sizes=True)
    return model, AutoFeatureExtractor.from_pretrained(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--split", default="train")
    args = parser.parse_args()
    require(args.corpus, args.split)
    with open(os.path.join(args.corpus, args.split, "metadata.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    texts = [normalize_text(r["sentence"], None) for r in rows]
    samples = [round(sf.info(os.path.join(args.corpus, args.split, r["file_name"])).duration * 16000) for r in rows]

    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "vocab.json"), "w") as f:
            json.dump(build_vocab(texts, "|", "[UNK]", "[PAD]"), f)
        tokenizer = Wav2Vec2CTCTokenizer(os.path.join(tmp, "vocab.json"), unk_token="[UNK]", pad_token="[PAD]")
        needed = np.array([ctc_min_frames(encode_labels(tokenizer, t)) for t in texts])
        print(f"{len(rows):,} clips of {args.split}, {sum(samples) / 16000 / 3600:.2f} h; character vocabulary of "
              f"{len(tokenizer)} tokens; label needs {int(np.median(needed))} frames (median)")
        print(f"{'family':<22} {'frames/s':>8} {'infeasible clips':>17}  outcome")
        for arch in ALL_FAMILIES:
            try:
                model, fe = model_and_features(arch, os.path.join(tmp, arch), len(tokenizer))
            except FamilyUnavailable:
                print(f"{arch:<22} skipped: {torchaudio_problem()}")
                continue
            rate = output_frames(model, fe, [100 * 16000])[0] / 100
            frames = output_frames(model, fe, samples)
            bad = int((frames < needed).sum())
            share = bad / len(rows)
            outcome = "stops before training" if share > MAX_INFEASIBLE_SHARE else "trains, drops these"
            print(f"{arch:<22} {rate:>8.2f} {bad:>8,} ({share:>5.1%})  {outcome}", flush=True)


if __name__ == "__main__":
    main()
