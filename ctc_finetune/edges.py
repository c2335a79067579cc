# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Where a clip starts and ends (--trim_silence): each clip cut to its speech, with the same margins of quiet before
and after it, in training, in evaluation and in transcription alike, so that a model does not learn how its corpus
happened to be cut.

A corpus cut by hand, by a recorder's button or by `align.py --segment` starts and ends its clips in its own way, and
a small model learns those edges: one trained on segments that start 0.05 s before their speech misheard half the
words of clips that start right at it. With --trim_silence every clip is cut to its speech first (its first and
last 10 ms frame over 1% of its loudest frame's RMS, which neither 16-bit rounding nor a recording's noise floor
reach), then given EDGE_LEAD_SECONDS of its own audio before and EDGE_TAIL_SECONDS after, made up with digital
silence where the clip holds less. The setting is saved with the model (its feature extractor's "trim_silence", in
processor_config.json). transcribe.py, serve.py and align.py cut each window they run through such a model the same way
at each edge that lies in a pause (longform.kept_logits): a file read whole, and the windows of a long recording or a
stream, which end amid pauses.
"""

import logging
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

EDGE_FRAME_SECONDS = 0.01  # speech is found 10 ms frame by frame,
EDGE_SHARE = 0.01  # as the frames whose RMS passes this share of the clip's loudest frame's
EDGE_LEAD_SECONDS = 0.05  # audio kept before the first such frame (as a long recording's windows keep: longform)
EDGE_TAIL_SECONDS = 0.15  # and after the last (a long recording's windows keep 0.15 s: longform)
TRIM_ATTRIBUTE = "trim_silence"  # the feature extractor's attribute (and key in the saved processor config)


@dataclass
class EdgeArguments:
    """Clip edges: where each clip starts and ends, in training, evaluation and transcription."""

    _argument_group_name = "Clip edges (ctc_finetune/edges.py)"

    trim_silence: bool = field(
        default=False,
        metadata={"help": "Cut every clip (training and evaluation, and later what transcribe.py, serve.py and "
                          "align.py read) to its speech, keeping 0.05 s of quiet before it and 0.15 s after, so the "
                          "model does not learn where its corpus's clips happen to start and end: train on segments "
                          "from `align.py --segment` and test on clips, or the other way round. Saved with the "
                          "model; a model trained with it keeps it when fine-tuned again."},
    )


def speech_span(audio: np.ndarray, rate: int) -> tuple[int, int]:
    """Where a clip's speech starts and ends, in samples: the first sample of its first 10 ms frame whose RMS passes
    EDGE_SHARE of its loudest frame's, and one past the last sample of its last. A clip with no such frame (silent,
    or shorter than a frame) is all speech."""
    frame = max(round(rate * EDGE_FRAME_SECONDS), 1)
    whole = len(audio) // frame * frame
    rms = np.sqrt(np.mean(np.square(audio[:whole], dtype=np.float64).reshape(-1, frame), axis=1))
    loud = np.flatnonzero(rms > EDGE_SHARE * rms.max()) if rms.size else rms
    if not loud.size:
        return 0, len(audio)
    return int(loud[0]) * frame, len(audio) if loud[-1] == rms.size - 1 else (int(loud[-1]) + 1) * frame


def trim_to_speech(audio: np.ndarray, rate: int, lead: bool = True, tail: bool = True) -> tuple[np.ndarray, int]:
    """The clip cut to its speech (speech_span) with EDGE_LEAD_SECONDS before it and EDGE_TAIL_SECONDS after, made up
    with zeros where the clip holds less; and where the result starts, in samples of the clip (negative where zeros
    were put before it). `lead` or `tail` False leaves that edge as it is (a window of a recording cut amid speech)."""
    start, end = speech_span(audio, rate)
    start = start - round(EDGE_LEAD_SECONDS * rate) if lead else 0
    end = end + round(EDGE_TAIL_SECONDS * rate) if tail else len(audio)
    kept = audio[max(start, 0):min(end, len(audio))]
    before, after = max(-start, 0), max(end - len(audio), 0)
    if before or after:
        kept = np.concatenate([np.zeros(before, audio.dtype), kept, np.zeros(after, audio.dtype)])
    return kept, start


def trims(feature_extractor) -> bool:
    """Whether a model's clips are cut to their speech (its feature extractor says so: --trim_silence)."""
    return bool(getattr(feature_extractor, TRIM_ATTRIBUTE, False))


def configure_edges(feature_extractor, args: EdgeArguments) -> None:
    """Record --trim_silence on the feature extractor, which preprocessing reads and the saved model keeps."""
    if args.trim_silence:
        setattr(feature_extractor, TRIM_ATTRIBUTE, True)
    if trims(feature_extractor):
        why = "--trim_silence" if args.trim_silence else "as the model was trained: --trim_silence"
        logger.info(f"Clip edges: every clip cut to its speech, {EDGE_LEAD_SECONDS:g} s kept before it and "
                    f"{EDGE_TAIL_SECONDS:g} s after ({why})")
