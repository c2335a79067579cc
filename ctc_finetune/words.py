# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""The words of a transcript, with their times and confidence, from CTC output frames (transcribe.py).

Greedy decoding: a token is a run of frames with the same top token that is not the blank. A word is the tokens
between two word boundaries (the `|` delimiter of character vocabularies, the `▁` that starts a SentencePiece
piece). It starts at the first frame of its first token and ends after the last frame of its last token.

Confidence: the mean, over the word's frames, of the probability the model gives its top token at that frame (1.0
when it is sure of every frame). With a beam search (--lm, --hotwords), the frames are those pyctcdecode gives for
the word (its word offsets), and the confidence the same mean over the non-blank frames among them.
"""

import itertools
from typing import Optional

import numpy as np

SUBWORD_BOUNDARY = "▁"  # SentencePiece's mark of a piece that starts a word


def token_runs(ids: np.ndarray, blank: int) -> list[tuple[int, int, int]]:
    """The tokens of greedy CTC output: (token id, first frame, last frame) per run of frames that is not blank."""
    runs, frame = [], 0
    for token, group in itertools.groupby(ids.tolist()):
        n = len(list(group))
        if token != blank:
            runs.append((token, frame, frame + n - 1))
        frame += n
    return runs


def starts_word(token: str, delimiter: Optional[str]) -> bool:
    return token == delimiter or token.startswith(SUBWORD_BOUNDARY)


def greedy_words(ids: np.ndarray, probs: np.ndarray, tokenizer, blank: int, seconds_per_frame: float,
                 first_frame: int = 0) -> list[dict]:
    """Words with start and end (seconds from the file's start) and confidence, from every frame's greedy token id
    and its probability (`first_frame`: the file's number of the first of them)."""
    delimiter = getattr(tokenizer, "word_delimiter_token", None)
    runs = token_runs(ids, blank)
    distinct = sorted({t for t, _, _ in runs})
    name_of = dict(zip(distinct, tokenizer.convert_ids_to_tokens(distinct)))
    words, current = [], []
    for run in runs + [None]:
        boundary = run is None or starts_word(name_of[run[0]], delimiter)
        if boundary and current:
            words.append(current)
            current = []
        if run is not None and name_of[run[0]] != delimiter and name_of[run[0]] != SUBWORD_BOUNDARY:
            current.append(run)
    out = []
    for word in words:
        text = tokenizer.decode([t for t, _, _ in word], group_tokens=False).strip()
        if not text:
            continue
        frames = np.concatenate([np.arange(first, last + 1) for _, first, last in word])
        out.append(word_record(text, first_frame + word[0][1], first_frame + word[-1][2] + 1,
                               float(probs[frames].mean()), seconds_per_frame))
    return out


def word_record(text: str, first: int, stop: int, confidence: float, seconds_per_frame: float) -> dict:
    """{"word", "start", "end", "confidence"}: times in seconds (milliseconds kept), from frames [first, stop)."""
    return {"word": text, "start": round(first * seconds_per_frame, 3), "end": round(stop * seconds_per_frame, 3),
            "confidence": round(confidence, 3)}


def beam_words(beam_frames: list, ids: np.ndarray, probs: np.ndarray, blank: int, offset: int,
               seconds_per_frame: float) -> list[dict]:
    """Words of a pyctcdecode beam (its (word, (first, stop)) offsets, in frames of the decoded stretch, which
    starts at frame `offset` of the file) with times and confidence; `ids` and `probs` are the file's greedy frames."""
    out = []
    for text, (first, stop) in beam_frames:
        first, stop = first + offset, max(stop + offset, first + offset + 1)
        span = slice(first, stop)
        sure = probs[span][ids[span] != blank]
        confidence = float(sure.mean()) if sure.size else float(probs[span].mean()) if stop <= len(probs) else 0.0
        out.append(word_record(text, first, stop, confidence, seconds_per_frame))
    return out


def pause_cut(ids: np.ndarray, blank: int, min_frames: int) -> Optional[int]:
    """Where to cut a stretch of frames for a beam search of its own: the middle of its last run of at least
    `min_frames` blank frames (a pause, which no word crosses); None when it has none."""
    cut, run = None, 0
    for frame, token in enumerate(ids.tolist()):
        run = run + 1 if token == blank else 0
        if run >= min_frames:
            cut = frame - run // 2
    return cut
