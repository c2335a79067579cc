# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Subtitles and word lists for transcribe.py and serve.py: words grouped into cues of at most two lines of about 42 characters
and about 7 seconds, split at pauses and between words, written as SRT (the srt package) or WebVTT (webvtt-py); and
the JSON of every file's words with their times and confidence."""

import datetime
import json

MAX_LINE_CHARS = 42  # characters per subtitle line (the common broadcast and streaming guideline)
MAX_LINES = 2  # lines per cue
MAX_CUE_SECONDS = 7.0  # a cue's longest time on screen
PAUSE_SECONDS = 0.6  # a silence this long between two words ends a cue
SUBTITLE_FORMATS = (".srt", ".vtt")


def wrap(words: list[str]) -> list[str]:
    """A cue's words on one line, or on two lines as even as a break between words makes them."""
    text = " ".join(words)
    if len(text) <= MAX_LINE_CHARS or len(words) < 2:
        return [text]
    splits = [(" ".join(words[:k]), " ".join(words[k:])) for k in range(1, len(words))]
    return list(min(splits, key=lambda lines: max(map(len, lines))))


def fits(words: list[str]) -> bool:
    lines = wrap(words)
    return len(lines) <= MAX_LINES and all(len(line) <= MAX_LINE_CHARS for line in lines)


def cue_words(words: list[dict]) -> list[list[dict]]:
    """The words in time order grouped into cues: a new cue at a pause, when the cue would stay on screen too long,
    or when its words would not fit on two lines."""
    out, current = [], []
    for word in words:
        if current and (word["start"] - current[-1]["end"] >= PAUSE_SECONDS
                        or word["end"] - current[0]["start"] > MAX_CUE_SECONDS
                        or not fits([w["word"] for w in current + [word]])):
            out.append(current)
            current = []
        current.append(word)
    return out + [current] if current else out


def cues(words: list[dict]) -> list[dict]:
    """Subtitle cues {"start", "end", "lines"} (seconds) of the words' groups (cue_words). Cues never overlap."""
    result = [{"start": c[0]["start"], "end": c[-1]["end"], "lines": wrap([w["word"] for w in c])}
              for c in cue_words(words)]
    for cue, following in zip(result, result[1:]):  # a word's end may reach past the next word's start by a frame
        cue["end"] = min(cue["end"], following["start"])
    return result


def srt_text(file_cues: list[dict]) -> str:
    import srt

    subtitles = [srt.Subtitle(index=i, start=datetime.timedelta(seconds=c["start"]),
                              end=datetime.timedelta(seconds=c["end"]), content="\n".join(c["lines"]))
                 for i, c in enumerate(file_cues, start=1)]
    return srt.compose(subtitles)


def vtt_time(seconds: float) -> str:
    """WebVTT's HH:MM:SS.mmm."""
    millis = round(seconds * 1000)
    return f"{millis // 3_600_000:02d}:{millis // 60_000 % 60:02d}:{millis // 1000 % 60:02d}.{millis % 1000:03d}"


def vtt_text(file_cues: list[dict]) -> str:
    import webvtt

    vtt = webvtt.WebVTT()
    for cue in file_cues:
        vtt.captions.append(webvtt.Caption(vtt_time(cue["start"]), vtt_time(cue["end"]), cue["lines"]))
    return vtt.content


def subtitle_text(extension: str, words: list[dict]) -> str:
    """The words' cues as an SRT (extension ".srt") or WebVTT (".vtt") file's text."""
    return (srt_text if extension == ".srt" else vtt_text)(cues(words))


def write_subtitles(path: str, words: list[dict]) -> None:
    """An .srt or .vtt file of the words' cues."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(subtitle_text(".srt" if path.lower().endswith(".srt") else ".vtt", words))


def write_json(path: str, records: list[dict]) -> None:
    """Every file's {"path", "text", "duration", "words": [{"word", "start", "end", "confidence"}]}."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(records, f, ensure_ascii=False, indent=1)
