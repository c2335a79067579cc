# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""The audio a transcription is given: files, directories (searched recursively), manifests (a table with an audio
column), for the commands that take them (transcribe.py, export_onnx.py); and what an alignment is given
(align.py): an audio file and its text file, or a manifest pairing audio with text (the text itself, or a .txt file
beside the manifest), the text's lines (one utterance each) or its sentences."""

import logging
import os
import re
from collections import Counter
from typing import Optional

from .audio import AUDIO_EXTENSIONS, read_header
from .corpora import AUDIO_COLUMN_ALIASES, TEXT_COLUMN_ALIASES, read_table
from .faults import UserError

logger = logging.getLogger(__name__)

MANIFEST_EXTENSIONS = (".csv", ".tsv", ".json", ".jsonl")
SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")  # --split_sentences: a sentence ends at . ! ? … before a space

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


def read_text(path: str, what: str) -> str:
    """A UTF-8 text file's contents; a UserError says why it cannot be read."""
    if not os.path.isfile(path):
        raise UserError(f"{what} {path} does not exist; pass a UTF-8 text file, one line per utterance.")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {path} is not UTF-8 text ({e.reason} at byte {e.start:,}); convert it to UTF-8 "
                        "(iconv -t UTF-8).") from e
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror}.") from e


def read_pairs(audio: str, text: Optional[str], split_sentences: bool) -> tuple[list[tuple[str, list]], Counter]:
    """The (audio path, text lines) pairs to align: AUDIO and TEXT, or the rows of a manifest given as AUDIO (an
    audio column, and a text column holding the text or a .txt file beside the manifest). Rows whose text is
    missing or empty are skipped with a warning each and counted; a bad single pair is a UserError."""
    if text is None:
        if not audio.lower().endswith(MANIFEST_EXTENSIONS):
            raise UserError(f"no TEXT for {audio}: pass `align.py MODEL_DIR AUDIO TEXT`, or a manifest "
                            f"({' '.join(MANIFEST_EXTENSIONS)}) of audio and text as AUDIO.")
        return manifest_pairs(audio, split_sentences)
    if not os.path.isfile(audio):
        raise UserError(f"AUDIO {audio} does not exist; pass an audio file (WAV, FLAC, MP3, OGG) or a manifest.")
    _, _, _, reason = read_header(audio)
    if reason:
        raise UserError(f"cannot align {audio}: {reason}; pass a readable audio file (WAV, FLAC, MP3, OGG).")
    lines = text_lines(read_text(text, "TEXT"), split_sentences)
    if not lines:
        raise UserError(f"TEXT {text} is empty; pass the text spoken in {audio}, one utterance per line.")
    return [(audio, lines)], Counter()


def manifest_pairs(manifest: str, split_sentences: bool) -> tuple[list[tuple[str, list]], Counter]:
    if not os.path.isfile(manifest):
        raise UserError(f"manifest {manifest} does not exist.")
    try:
        table = read_table(manifest)
    except ValueError as e:
        raise UserError(f"cannot read manifest {manifest}: {e}") from e
    audio_column = next((c for c in AUDIO_COLUMN_ALIASES if c in table.columns), None)
    text_column = next((c for c in (*TEXT_COLUMN_ALIASES, "text_file") if c in table.columns), None)
    if audio_column is None or text_column is None:
        raise UserError(f"manifest {manifest} needs an audio column ({', '.join(AUDIO_COLUMN_ALIASES)}) and a text "
                        f"column ({', '.join(TEXT_COLUMN_ALIASES)}, text_file); its columns are: "
                        f"{', '.join(map(str, table.columns))}.")
    base, pairs, skipped = os.path.dirname(manifest), [], Counter()
    for audio, cell in zip(map(str, table[audio_column]), map(str, table[text_column])):
        text_file = os.path.join(base, cell)
        if cell.lower().endswith(".txt") and not os.path.isfile(text_file):
            reason = "missing text file"
        else:
            lines = text_lines(read_text(text_file, "text file") if cell.lower().endswith(".txt") else cell,
                               split_sentences)
            reason = "" if lines else "empty text"
        if reason:
            logger.warning(f"warning: skipped {os.path.join(base, audio)}: {reason} ({cell})")
            skipped[reason] += 1
        else:
            pairs.append((os.path.join(base, audio), lines))
    return pairs, skipped


def text_lines(text: str, split_sentences: bool = False) -> list[str]:
    """The lines to align: the text's non-empty lines, or (split_sentences) its sentences, lines joined first."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not split_sentences:
        return lines
    return [s.strip() for s in SENTENCE_END.split(" ".join(lines)) if s.strip()]
