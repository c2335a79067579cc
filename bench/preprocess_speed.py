"""Preprocessing throughput: audio seconds decoded, resampled and normalised per wall second.

    python bench/preprocess_speed.py [--corpus examples/demo_corpus] [--split train] [--workers 1 2]

The corpus defaults to examples/demo_corpus; the figures in bench/RESULTS.md used the commands corpus, built by
`python tools/make_bench_corpus.py DIR` and passed as --corpus DIR. Clip durations come from metadata.csv's
`duration` column where the corpus has one, else from the audio headers.

Runs the script's own header scan and feature stage (soundfile + soxr) over every clip of the split, with a
fresh cache each time, for each worker count. Where torchcodec and FFmpeg are installed it also times the
datasets library's own `Audio` decoding (what upstream relies on) over the same clips; elsewhere it says why not.
"""

import argparse
import functools
import os
import sys
import tempfile
import time

import datasets
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ctc_finetune.columns import AUDIO_COLUMN, TARGET_TEXT_COLUMN
from ctc_finetune.preprocessing import ClipForm, LabelEncoder, featurize_batch, scan_batch
from ctc_finetune.text import build_vocab  # noqa: E402
from corpus import DEFAULT_CORPUS, read_split, require  # noqa: E402

datasets.disable_progress_bars()


def load_clips(corpus: str, split: str) -> tuple[list[str], list[str], float]:
    """The split's audio paths, transcripts and total seconds of audio."""
    rows = read_split(corpus, split)
    return [r["path"] for r in rows], [r["sentence"] for r in rows], sum(r["duration"] for r in rows)


def timed_map(ds, function, workers: int, tmp: str, name: str) -> float:
    start = time.perf_counter()
    ds.map(function, batched=True, batch_size=16, num_proc=workers if workers > 1 else None,
           cache_file_name=os.path.join(tmp, f"{name}-{workers}.arrow"), load_from_cache_file=False)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--split", default="train")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    require(args.corpus, args.split)

    paths, texts, audio_seconds = load_clips(args.corpus, args.split)
    fe = Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True)
    with tempfile.TemporaryDirectory() as tmp:
        vocab = build_vocab(texts, "|", "[UNK]", "[PAD]")
        with open(os.path.join(tmp, "vocab.json"), "w") as f:
            import json

            json.dump(vocab, f)
        tokenizer = Wav2Vec2CTCTokenizer(os.path.join(tmp, "vocab.json"))
        ds = datasets.Dataset.from_dict({AUDIO_COLUMN: paths, TARGET_TEXT_COLUMN: texts})
        scan = functools.partial(scan_batch, encode=LabelEncoder(tokenizer), sampling_rate=16000)
        scanned = ds.map(scan, batched=True, batch_size=16)
        featurize = functools.partial(featurize_batch, form=ClipForm(fe))
        print(f"{len(paths):,} clips, {audio_seconds / 3600:.2f} h of audio ({args.split} of {args.corpus}), "
              f"{os.cpu_count()} CPU cores")
        print(f"{'path':<44} {'workers':>7} {'wall s':>8} {'audio s / s':>12}")
        for workers in args.workers:
            wall = timed_map(ds, scan, workers, tmp, "scan")
            print(f"{'header scan + labels (ours)':<44} {workers:>7} {wall:>8.2f} {audio_seconds / wall:>12.0f}")
            wall = timed_map(scanned, featurize, workers, tmp, "features")
            print(f"{'decode + resample + normalise (ours)':<44} {workers:>7} {wall:>8.2f} {audio_seconds / wall:>12.0f}")
        try:
            import torchcodec  # noqa: F401  (datasets' Audio decoding needs it, plus FFmpeg)

            audio_ds = ds.cast_column(AUDIO_COLUMN, datasets.Audio(sampling_rate=16000))

            def upstream_prepare(batch):
                arrays = [a["array"] for a in batch[AUDIO_COLUMN]]
                return {"input_values": [fe(a, sampling_rate=16000).input_values[0] for a in arrays]}

            for workers in args.workers:
                wall = timed_map(audio_ds, upstream_prepare, workers, tmp, "upstream")
                print(f"{'datasets Audio decoding (upstream)':<44} {workers:>7} {wall:>8.2f} "
                      f"{audio_seconds / wall:>12.0f}")
        except Exception as e:  # ImportError, or torchcodec failing to load its FFmpeg/torch libraries
            print(f"datasets Audio decoding (upstream): not measurable here ({type(e).__name__}: "
                  f"{str(e).splitlines()[0][:120] if str(e) else ''})")


if __name__ == "__main__":
    main()
