# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Live streams (serve.py's /v1/realtime): audio that arrives in small pieces, cut as it comes into the windows that
long-form transcription (longform.plan_windows) makes of the whole recording, so that a stream's final words are the
words transcribe.py gives the recording.

A window closes CLOSE_SECONDS into a pause (later where a word's fading end reaches into the pause: once the quiet
it keeps after it has arrived), or at the middle of a shorter pause, once speech resumes. It is then final: it holds
what the recording's window holds, from its first sound (less LEAD_SECONDS) to its last (plus
TRAILING_QUIET_SECONDS). SETTLE_SECONDS into a pause the window's audio has all arrived: it runs through the model
then, and the close only decodes that output. Speech without a pause is cut at --chunk_seconds with context, as in a
file. Between closes, the open window is transcribed again every PARTIAL_SECONDS of new audio: partial text, which may
change.

Where a stream and its recording may differ: pauses are found against the last STATS_SECONDS of the stream (the file
measures its whole length), so in noisy audio a borderline pause may be taken in one and not the other (a pause at
the stream's start, which no loud level yet tells from speech, is trimmed once speech has set one: leading_pause);
and a recording no longer than a chunk plus its context is read by transcribe.py as one window, while a stream is
cut at its pauses. Decoding is greedy (no n-gram LM or hotwords in streams)."""

import dataclasses
from typing import Callable, Optional

import numpy as np

from .families import output_frames
from .longform import (ENERGY_FRAME_SECONDS, MIN_WINDOW_SECONDS, PAUSE_SECONDS, FileFrames, Window, kept_logits,
                       quiet_threshold, trim_quiet)
from .words import greedy_words

CLOSE_SECONDS = 0.25  # this much quiet (longform.PAUSE_SECONDS, the shortest pause a file is cut in) ends the open
# window: any later cut in the same pause holds the same sound
SETTLE_SECONDS = 0.17  # this much quiet holds the open window's trimmed end (TRAILING_QUIET_SECONDS past its last
# sound, and a frame): the window as the pause would close it runs through the model ahead of the close
PARTIAL_SECONDS = 0.5  # the open window is transcribed again after this much new audio
STATS_SECONDS = 300.0  # the pause threshold is measured on this much of the stream's latest audio


@dataclasses.dataclass
class Piece:
    """A window of the stream ready for the model: its audio (edges trimmed) and where that audio starts."""

    window: Window
    audio: np.ndarray
    start: int  # stream sample of audio[0]


class StreamWindows:
    """The windows of a stream whose samples (mono float32 at `rate`) arrive through feed(); finish() ends it."""

    def __init__(self, rate: int, chunk: int, context: int, hop: int):
        self.rate, self.chunk, self.context, self.hop = rate, chunk, context, hop
        self.frame = round(rate * ENERGY_FRAME_SECONDS)
        self.pause_frames, self.close_frames, self.settle_frames = (
            round(s / ENERGY_FRAME_SECONDS) for s in (PAUSE_SECONDS, CLOSE_SECONDS, SETTLE_SECONDS))
        self.audio, self.base = np.zeros(0, np.float32), 0  # the samples kept, from stream sample `base`
        self.rms, self.peak = np.zeros(0), np.zeros(0)  # the latest frames' energy (STATS_SECONDS of them)
        self.peak_first = 0  # the frame number of peak[0]
        self.framed = 0  # frames measured so far
        self.start, self.keep_start, self.quiet_before = 0, 0, -1.0  # the open window (as in plan_windows)
        self.run = None  # first frame of the quiet run going on, if any
        self.closed = False  # that run has closed a window
        self.sound = False  # the open window has had a frame that is not quiet

    @property
    def total(self) -> int:
        return self.base + len(self.audio)

    def feed(self, samples: np.ndarray) -> list[Piece]:
        """The windows that the new samples close, in order."""
        self.audio = np.concatenate([self.audio, samples.astype(np.float32, copy=False)])
        new = (self.total - self.framed * self.frame) // self.frame
        if new <= 0:
            return []
        first = self.framed * self.frame - self.base
        frames = self.audio[first:first + new * self.frame].reshape(new, self.frame)
        keep = round(STATS_SECONDS / ENERGY_FRAME_SECONDS)
        self.rms = np.concatenate([self.rms, np.sqrt(np.mean(frames ** 2, axis=1))])[-keep:]
        self.peak = np.concatenate([self.peak, np.abs(frames).max(axis=1)])[-keep:]
        self.peak_first = self.framed + new - len(self.peak)
        threshold = quiet_threshold(self.rms)
        if self.start == 0 and self.keep_start == 0 and self.peak_first == 0:
            self.leading_pause(threshold)
        pieces = []
        for i, rms in zip(range(self.framed, self.framed + new), self.rms[-new:]):
            pieces += self.step(i, rms < threshold)
            pieces += self.chunk_cut(i + 1)
        self.framed += new
        self.forget()
        return pieces

    def leading_pause(self, threshold: float) -> None:
        """A stream that starts in a steady noise: its first frames could not be told from quiet before any speech
        set a loud level. Once they can, a pause at its start is trimmed from the first window, as a file's is."""
        quiet = self.rms < threshold
        run = int(np.argmin(quiet))  # leading quiet frames (0 where all are quiet: speech has not come yet)
        if run >= self.pause_frames:
            self.keep_start, self.quiet_before = None, self.floor(0, run)

    def floor(self, first: int, stop: int) -> float:
        """A run of frames' floor, as find_pauses measures a pause's (frames still held)."""
        held = self.peak[max(first - self.peak_first, 0):max(stop - self.peak_first, 0)]
        return float(np.percentile(held, 10)) if held.size else 0.0

    def step(self, i: int, quiet: bool) -> list[Piece]:
        """Frame i measured: a pause that closes the open window, or the end of one."""
        if quiet:
            if self.run is None:
                self.run, self.closed = i, False
            length = i + 1 - self.run
            if self.run == 0 and length == self.pause_frames:  # the stream starts in a pause: trimmed, not cut in
                self.keep_start, self.quiet_before = None, self.floor(0, i + 1)
            elif self.run > 0 and not self.closed and length >= self.close_frames \
                    and self.cuttable(self.run + self.close_frames / 2) and self.pause_piece(i + 1) is not None:
                self.closed = True  # what follows the cut is quiet: the next window starts where it cannot lose sound
                return [self.close((i + 1) * self.frame, self.floor(self.run, i + 1),
                                   (self.run * 2 + self.close_frames) * self.frame // 2)]
            return []
        pieces, run, self.run = [], self.run, None
        if run is None or i - run < self.pause_frames:
            self.sound = True
            return pieces
        middle = round((run + i) / 2 * self.frame)  # the recording's cut amid the pause
        if run == 0:
            self.quiet_before = self.floor(0, i)
        elif self.closed:  # the next window starts at the pause's middle, trimming the whole pause's quiet
            self.start, self.quiet_before = max(self.start, middle), self.floor(run, i)
        elif self.cuttable((run + i) / 2):
            pieces.append(self.close(middle, self.floor(run, i), middle))
        self.sound = True
        return pieces

    def pause_piece(self, framed: int) -> Optional[Piece]:
        """The open window as the pause going on would close it after `framed` frames, if its trimmed end
        (TRAILING_QUIET_SECONDS past its last sound) lies inside them; else None: a word's fading end passed the
        sound level into the quiet run, and the window waits for the quiet it keeps, as the file's window (cut amid
        the pause) holds it."""
        end = framed * self.frame
        piece = self.piece(Window(0, self.start, end, self.keep_start, None, False, False, self.quiet_before,
                                  self.floor(self.run, framed)))
        return piece if piece.start + len(piece.audio) < end else None

    def cuttable(self, middle_frame: float) -> bool:
        """A pause whose middle is here may end the open window (plan_windows' rule)."""
        middle = middle_frame * self.frame
        return self.start + MIN_WINDOW_SECONDS * self.rate <= middle < self.start + self.chunk

    def close(self, end: int, floor: float, next_start: int) -> Piece:
        window = Window(0, self.start, end, self.keep_start, None, False, False, self.quiet_before, floor)
        self.start, self.keep_start, self.quiet_before, self.sound = next_start, None, floor, False
        return self.piece(window)

    def piece(self, window: Window) -> Piece:
        begin = max(window.start, self.base)
        audio, lead = trim_quiet(self.audio[begin - self.base:window.end - self.base], window, self.rate)
        return Piece(window, audio, begin + lead)

    def chunk_cut(self, framed: int) -> list[Piece]:
        """Speech that runs on past a chunk: cut there, read with context on both sides (once the right context
        has arrived). Quiet alone is never cut: it makes no window."""
        cut = (self.start + self.chunk) // self.hop * self.hop
        if not self.sound or (self.run is not None and self.closed) or framed * self.frame < cut + self.context:
            return []
        window = Window(0, self.start if self.keep_start is None else max(0, self.start - self.context),
                        cut + self.context, self.keep_start, cut // self.hop, False, False, self.quiet_before)
        self.start, self.keep_start, self.quiet_before = cut, cut // self.hop, -1.0
        return [self.piece(window)]

    def forget(self) -> None:
        """Drop the samples no window can read again (in a long pause, all but its last second)."""
        keep = self.start - (self.context if self.keep_start is not None else 0)
        if self.run is not None and (self.closed or not self.sound):
            keep = max(keep, self.total - self.rate)
        if keep > self.base:
            self.audio, self.base = self.audio[keep - self.base:], keep

    def settled_piece(self) -> Optional[Piece]:
        """The open window as the pause going on would close it, once that much is certain: its audio is all here
        (SETTLE_SECONDS into the pause, its trimmed end inside what has arrived). None otherwise. The close makes
        its own piece; where the two hold the same samples, the model's output for this one serves it."""
        if self.run is None or self.run == 0 or self.closed or not self.sound \
                or self.framed - self.run < self.settle_frames or not self.cuttable(self.run + self.close_frames / 2):
            return None
        return self.pause_piece(self.framed)

    def open_piece(self) -> Optional[Piece]:
        """The open window as it stands (for partial text), or None while it holds no sound."""
        if not self.sound:
            return None
        return self.piece(Window(0, self.start, self.total, self.keep_start, None, False, False, self.quiet_before))

    def finish(self, total_frames: int) -> list[Piece]:
        """The open window as the stream's last (`total_frames`: the model's frames of the whole stream), unless it
        holds only the quiet after the last close; the next samples start a new window."""
        quiet_after = -1.0
        if self.run is not None and self.framed - self.run >= self.pause_frames:
            quiet_after = self.floor(self.run, self.framed)  # the stream ends in a pause: trimmed
        pieces = []
        if self.sound:
            pieces.append(self.piece(Window(0, self.start, self.total, self.keep_start, total_frames, False, True,
                                            self.quiet_before, quiet_after)))
        self.start, self.keep_start, self.quiet_before, self.sound = self.total, None, -1.0, False
        self.run, self.closed = None, False
        return pieces


class StreamSession:
    """One live stream through an engine (engine.py): samples in, events out. `forward` runs pieces through the
    model (default: the engine's model in this thread; serve.py passes its batcher)."""

    def __init__(self, engine, forward: Optional[Callable] = None):
        self.engine = engine
        opts, rate, hop = engine.options, engine.sampling_rate, engine.hop
        self.windows = StreamWindows(rate, max(round(opts.chunk_seconds * rate / hop), 1) * hop,
                                     round(opts.context_seconds * rate / hop) * hop, hop)
        self.forward = forward or self.run_pieces
        decoding = engine.decoding
        self.frames = FileFrames("<stream>", 0.0, decoding.blank, decoding.boundary, keep_logits=False)
        self.final_frame = 0  # the frame where the next final's words start
        self.partial_at = 0  # stream sample of the last partial
        self.items = 0
        self.settled = None  # (start, samples) of the open window run ahead of its close, and the model's output

    def run_pieces(self, pieces: list[Piece]) -> list[tuple[int, object]]:
        engine = self.engine
        return kept_logits([p.window for p in pieces], [p.audio for p in pieces], [p.start for p in pieces],
                           engine.model, engine.feature_extractor, engine.collate, engine.hop)

    def seconds(self, samples: int) -> float:
        return round(samples / self.engine.sampling_rate, 3)

    def feed(self, samples: np.ndarray) -> list[dict]:
        """Events for new samples: a final transcript per window they close, else maybe a partial one."""
        was_speaking = self.windows.sound
        pieces = [p for p in self.windows.feed(samples) if len(p.audio) >= self.engine.fewest]
        events = [{"type": "speech_started", "start": self.seconds(self.windows.start)}] \
            if self.windows.sound and not was_speaking else []
        if pieces:
            events += self.finals(pieces)
        elif (settled := self.windows.settled_piece()) is not None:
            events += self.settle(settled)
        elif self.windows.sound and self.windows.total - self.partial_at >= PARTIAL_SECONDS * self.engine.sampling_rate:
            events += self.partial()
        return events

    def settle(self, piece: Piece) -> list[dict]:
        """The open window as the pause will close it, through the model now, so that the close only decodes it:
        its final comes as soon as the pause is certain. The output is also a partial."""
        key = (piece.start, len(piece.audio))
        if len(piece.audio) < self.engine.fewest or self.settled is not None and self.settled[0] == key:
            return []
        self.settled = key, self.forward([piece])[0]
        self.partial_at = self.windows.total
        return [self.partial_event(*self.settled[1])]

    def finish(self) -> list[dict]:
        """The end of the stream or a commit: the open window's final transcript (if it held sound)."""
        total_frames = int(self.engine_frames(self.windows.total))
        pieces = [p for p in self.windows.finish(total_frames) if len(p.audio) >= self.engine.fewest]
        return self.finals(pieces) if pieces else []

    def engine_frames(self, samples: int) -> int:
        return output_frames(self.engine.model, self.engine.feature_extractor, [samples])[0]

    def outputs(self, pieces: list[Piece]) -> list[tuple[int, object]]:
        """The model's output for each piece: the window run ahead of its close (settle) reused where it holds the
        same samples, the others run now."""
        settled, self.settled = self.settled, None
        ahead = [settled[1] if settled and settled[0] == (p.start, len(p.audio)) else None for p in pieces]
        ran = iter(self.forward([p for p, a in zip(pieces, ahead) if a is None]) if None in ahead else ())
        return [a if a is not None else next(ran) for a in ahead]

    def finals(self, pieces: list[Piece]) -> list[dict]:
        events = []
        for piece, (first_frame, logits) in zip(pieces, self.outputs(pieces)):
            self.frames.add(first_frame, logits, piece.audio)
            ids, probs = self.frames.frames()
            decoding = self.engine.decoding
            words = greedy_words(ids[self.final_frame:], probs[self.final_frame:], self.engine.tokenizer,
                                 decoding.blank, decoding.seconds_per_frame, self.final_frame)
            self.final_frame = len(ids)
            self.items += 1
            start, end = self.seconds(piece.start), self.seconds(piece.start + len(piece.audio))
            events.append({"type": "final", "item": self.items, "start": start, "end": end,
                           "text": " ".join(w["word"] for w in words), "words": words})
        self.partial_at = self.windows.total
        return events

    def partial(self) -> list[dict]:
        self.partial_at = self.windows.total
        piece = self.windows.open_piece()
        if piece is None or len(piece.audio) < self.engine.fewest:
            return []
        return [self.partial_event(*self.forward([piece])[0])]

    def partial_event(self, first_frame: int, logits) -> dict:
        probs = logits.softmax(-1).max(-1)
        decoding = self.engine.decoding
        words = greedy_words(probs.indices.numpy(), probs.values.numpy(), self.engine.tokenizer, decoding.blank,
                             decoding.seconds_per_frame, first_frame)
        return {"type": "partial", "item": self.items + 1, "text": " ".join(w["word"] for w in words)}
