"""Write a corpus as WebDataset tar shards, the layout run_speech_recognition_ctc.py streams for large corpora.

    python tools/make_shards.py --dataset_name DIR --splits train validation test --output_dir SHARDS
    python tools/make_shards.py --train_file train.csv --output_dir SHARDS [--clips_per_shard 2000]

Reads any corpus the script reads (a local layout with --dataset_name, or --train_file/--eval_file manifests) and
writes SHARDS/SPLIT/shard-000000.tar, ... Each clip becomes two members: KEY.EXT, the audio file's bytes as they are
(no re-encoding), and KEY.txt, its transcript. Train on them with `--dataset_name SHARDS`: the train split is
streamed (give --max_steps), the others are read once.

Give every GPU process and DataLoader worker shards of its own: at least (GPUs x --dataloader_num_workers) shards,
ideally a multiple of it. The default of 1,000 clips per shard makes shards of tens of MB for short clips.
"""

import argparse
import io
import os
import sys
import tarfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ctc_finetune.audio import AUDIO_EXTENSIONS, audio_source  # noqa: E402
from ctc_finetune.columns import AUDIO_COLUMN, RAW_TEXT_COLUMN
from ctc_finetune.corpora import AUDIO_COLUMN_ALIASES, TEXT_COLUMN_ALIASES, load_split, resolve_column
from ctc_finetune.faults import UserError, exit_on_user_error


def clip_bytes(cell) -> tuple[bytes, str]:
    """The audio file's bytes and extension, from a path or datasets' {'path', 'bytes'} cell."""
    source = audio_source(cell)
    name = cell.get("path") if isinstance(cell, dict) else cell
    extension = os.path.splitext(str(name or ""))[1].lower()
    if extension not in AUDIO_EXTENSIONS:
        raise UserError(f"{name}: the shards need a {', '.join(AUDIO_EXTENSIONS)} file name to keep its type.")
    extension = extension[1:]
    if isinstance(source, io.BytesIO):
        return source.getvalue(), extension
    with open(source, "rb") as f:
        return f.read(), extension


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(ds, out_dir: str, clips_per_shard: int) -> list[str]:
    """Write `ds` (columns `audio` and `text`) as tar shards in `out_dir`; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths, tar, missing = [], None, 0
    for index, row in enumerate(ds):
        if index % clips_per_shard == 0:
            if tar is not None:
                tar.close()
            paths.append(os.path.join(out_dir, f"shard-{len(paths):06d}.tar"))
            tar = tarfile.open(paths[-1], "w")
        try:
            audio, extension = clip_bytes(row[AUDIO_COLUMN])
        except OSError:  # a missing file: the script would drop it too
            missing += 1
            continue
        key = f"{index:09d}"  # keys hold no dot: WebDataset splits a member name at its first one
        add_member(tar, f"{key}.{extension}", audio)
        add_member(tar, f"{key}.txt", (row[RAW_TEXT_COLUMN] or "").encode("utf-8"))
    if tar is not None:
        tar.close()
    if missing:
        print(f"{out_dir}: skipped {missing:,} clips whose audio file is missing")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_name", help="a local corpus directory, in any layout the script reads")
    parser.add_argument("--splits", nargs="+", default=["train"], help="split names (with --dataset_name)")
    parser.add_argument("--train_file", help="a manifest (CSV, TSV, JSON lines), written as split `train`")
    parser.add_argument("--eval_file", help="a manifest, written as split `test`")
    parser.add_argument("--audio_column_name", default=AUDIO_COLUMN)
    parser.add_argument("--text_column_name", default=RAW_TEXT_COLUMN)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--clips_per_shard", type=int, default=1000)
    args = parser.parse_args()
    if not args.dataset_name and not (args.train_file or args.eval_file):
        parser.error("give --dataset_name DIR (with --splits) or --train_file/--eval_file")

    if args.dataset_name:
        sources = [(split, split, None) for split in args.splits]
    else:
        sources = [(split, None, path) for split, path in (("train", args.train_file), ("test", args.eval_file)) if path]
    data_args = argparse.Namespace(dataset_name=args.dataset_name, dataset_config_name=None, token=None)
    try:
        for split, expression, manifest in sources:
            ds = load_split(data_args, expression, manifest, cache_dir=None)
            audio = resolve_column(ds, args.audio_column_name, AUDIO_COLUMN, AUDIO_COLUMN_ALIASES,
                                       "audio", split)
            text = resolve_column(ds, args.text_column_name, RAW_TEXT_COLUMN, TEXT_COLUMN_ALIASES,
                                      "text", split)
            ds = ds.select_columns([audio, text]).rename_columns(
                {c: n for c, n in ((audio, AUDIO_COLUMN), (text, RAW_TEXT_COLUMN)) if c != n})
            paths = write_shards(ds, os.path.join(args.output_dir, split), args.clips_per_shard)
            print(f"{split}: {len(ds):,} clips in {len(paths):,} shards in {os.path.join(args.output_dir, split)}")
    except UserError as e:
        exit_on_user_error(e)


if __name__ == "__main__":
    main()
