"""The benchmarks' corpus: its default, the error that names it, clip durations, and clips repeated to a count.

Every script in bench/ defaults --corpus to examples/demo_corpus, which ships with the repository (1,000 train,
100 validation and 100 test MP3 clips; metadata.csv `file_name,sentence,speaker`). The figures in bench/RESULTS.md
used the larger commands corpus (2,000 / 250 / 250 clips, 57 words, espeak-ng and flite voices), built by
`python tools/make_bench_corpus.py DIR` and passed as `--corpus DIR`.
"""

import csv
import os
import sys

import soundfile as sf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CORPUS = os.path.join(ROOT, "examples", "demo_corpus")
CORPUS_NOTE = ("default examples/demo_corpus; the figures in bench/RESULTS.md used the commands corpus, built by "
               "`python tools/make_bench_corpus.py DIR` and passed as --corpus DIR")


def require(corpus: str, *splits: str, note: str = CORPUS_NOTE) -> None:
    """Exit with one `error:` line unless each of the corpus's split folders holds a metadata.csv; `note` says which
    corpus the script's recorded figures used."""
    for split in splits:
        metadata = os.path.join(corpus, split, "metadata.csv")
        if not os.path.isfile(metadata):
            folders = f"{' and '.join(splits)} folder{'s hold' if len(splits) > 1 else ' holds'}"
            sys.exit(f"error: no {metadata}; pass --corpus DIR, a folder whose {folders} metadata.csv (file_name, "
                     f"sentence) ({note}).")


def read_split(corpus: str, split: str) -> list[dict]:
    """A split's metadata.csv rows, each with the clip's absolute `path` and its `duration` in seconds: the column
    where the corpus has one (the commands corpus), else the audio file's header (the demo corpus)."""
    folder = os.path.abspath(os.path.join(corpus, split))
    with open(os.path.join(folder, "metadata.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"error: {folder}/metadata.csv lists no clips; pass --corpus DIR ({CORPUS_NOTE}).")
    for row in rows:
        row["path"] = os.path.join(folder, row["file_name"])
        row["duration"] = float(row.get("duration") or sf.info(row["path"]).duration)
    return rows


def repeated(items: list, count: int, what: str) -> list:
    """The first `count` items; the list repeated cyclically where it holds fewer, which one printed line says."""
    if count > len(items):
        print(f"{what} has {len(items):,} clips, fewer than the {count:,} asked for: repeating them cyclically",
              flush=True)
    return [items[i % len(items)] for i in range(count)]


def with_train_clips(corpus: str, clips: int, work: str) -> str:
    """`corpus` where its train split has `clips` clips or more; else a corpus folder in `work` whose train split
    repeats them cyclically up to `clips` (absolute paths to the same audio: no copies) and whose other splits are
    links to the corpus's own."""
    rows = read_split(corpus, "train")
    if clips <= len(rows):
        return corpus
    out = os.path.join(work, f"corpus-{clips}")
    os.makedirs(os.path.join(out, "train"), exist_ok=True)
    columns = [c for c in rows[0] if c != "path"]
    with open(os.path.join(out, "train", "metadata.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**r, "file_name": r["path"]} for r in repeated(rows, clips, f"the train split of {corpus}"))
    for split in os.listdir(corpus):
        if split != "train" and os.path.isdir(os.path.join(corpus, split)):
            os.symlink(os.path.abspath(os.path.join(corpus, split)), os.path.join(out, split))
    return out
