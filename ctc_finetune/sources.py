# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""The audio a transcription is given: files, directories (searched recursively), manifests (a table with an audio
column), for the commands that take them (transcribe.py, export_onnx.py)."""

import os

from .audio import AUDIO_EXTENSIONS
from .corpora import AUDIO_COLUMN_ALIASES, read_table
from .faults import UserError

MANIFEST_EXTENSIONS = (".csv", ".tsv", ".json", ".jsonl")

def find_audio(inputs: list[str]) -> list[str]:
    """Audio paths in input order: files as given, directories searched recursively, manifests row by row."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            paths += sorted(os.path.join(root, name) for root, _, names in os.walk(item)
                            for name in names if name.lower().endswith(AUDIO_EXTENSIONS))
        elif not os.path.isfile(item):
            raise UserError(f"{item} does not exist; pass audio files, directories or manifests.")
        elif item.lower().endswith(MANIFEST_EXTENSIONS):
            paths += manifest_paths(item)
        else:
            paths.append(item)
    if not paths:
        raise UserError(f"no audio found in {' '.join(inputs)} (directories are searched for "
                        f"{' '.join(AUDIO_EXTENSIONS)} files).")
    return paths


def manifest_paths(manifest: str) -> list[str]:
    """The audio paths a manifest lists, relative to the manifest (a Common Voice TSV's, inside clips/ beside it)."""
    try:
        table = read_table(manifest)
    except ValueError as e:
        raise UserError(f"cannot read manifest {manifest}: {e}") from e
    column = next((c for c in AUDIO_COLUMN_ALIASES if c in table.columns), None)
    if column is None:
        raise UserError(f"manifest {manifest} has no audio column (tried {', '.join(AUDIO_COLUMN_ALIASES)}); "
                        f"its columns are: {', '.join(map(str, table.columns))}.")
    base = os.path.dirname(manifest)
    paths = []
    for name in map(str, table[column]):
        path, in_clips = os.path.join(base, name), os.path.join(base, "clips", name)
        paths.append(in_clips if not os.path.exists(path) and os.path.exists(in_clips) else path)
    return paths
