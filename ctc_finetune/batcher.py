# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Batching across requests, for serve.py: one thread owns the model and runs the windows of every request in flight
together, and each request joins its own windows' frames as transcribe.py does.

A request submits windows (longform.Window with its audio at the model's rate, where it starts in the recording)
and waits for each one's kept frames. A batch closes when its padded audio reaches `max_batch_seconds` or when its
oldest window has waited `max_wait_seconds`; each window's output is cut at its own length (longform.kept_logits),
so a batch never changes a transcript. A model without an attention mask (group norm: wav2vec2-base) takes padding
as signal, so there every window runs alone, as it does in transcribe.py. The windows come from an uploaded file
here (transcribe_file); anything that cuts audio into windows (a live stream) can submit them the same way."""

import collections
import concurrent.futures
import dataclasses
import logging
import threading
import time
from typing import Callable, Optional

import numpy as np

from .audio import TRUNCATION_TOLERANCE
from .engine import Engine, Run, Transcript
from .families import ctc_decode
from .faults import UserError
from .longform import FileFrames, Window

logger = logging.getLogger(__name__)

READ_AHEAD_SECONDS = 120.0  # a request's audio read ahead of the model's output: memory stays flat for long uploads


class BadAudio(UserError):
    """Audio that cannot be transcribed (unreadable, empty, truncated, silent, too short): the message says which."""


class Job:
    """One request's windows in the batcher: cancelling it (its client went away) drops those not run yet."""

    def __init__(self):
        self.cancelled = False
        self.futures = []

    def cancel(self) -> None:
        self.cancelled = True
        for future in list(self.futures):
            future.cancel()  # a window already in a batch runs on; its request stops at its next window


@dataclasses.dataclass
class Pending:
    """A window waiting for the model."""

    job: Job
    window: Window
    audio: np.ndarray
    start: int  # where its audio starts in the recording, in samples
    future: concurrent.futures.Future
    arrived: float  # time.monotonic() when it was submitted


class Batcher:
    """The one thread that runs the model, on batches of the windows that requests submit."""

    def __init__(self, forward: Callable, rate: int, max_batch_seconds: float, max_wait_seconds: float,
                 on_batch: Optional[Callable] = None):
        self.forward, self.rate, self.on_batch = forward, rate, on_batch
        self.capacity = max_batch_seconds * rate  # padded samples per batch; 0: every window alone
        self.max_wait = max_wait_seconds
        self.pending = collections.deque()
        self.condition = threading.Condition()
        self.stopping, self.thread = False, None

    def start(self) -> None:
        self.thread = threading.Thread(target=self.loop, name="ctc-batcher", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Finish the batch running, then cancel every window still waiting."""
        with self.condition:
            self.stopping = True
            self.condition.notify()
        if self.thread is not None:
            self.thread.join()
        for item in self.pending:
            item.future.cancel()

    @staticmethod
    def job() -> Job:
        """A new request's handle: the windows submitted under it are cancelled together."""
        return Job()

    def submit(self, job: Job, window: Window, audio: np.ndarray, start: int, first: bool = False
               ) -> concurrent.futures.Future:
        """Queue a window; its future gives (first kept frame, kept logits [frames, vocabulary]). `first`: ahead of
        the windows waiting (a live stream's, whose speaker waits for its words)."""
        future = concurrent.futures.Future()
        job.futures.append(future)
        with self.condition:
            if self.stopping:
                raise RuntimeError("the server is shutting down")
            pending = Pending(job, window, audio, start, future, time.monotonic())
            if first:
                self.pending.appendleft(pending)
            else:
                self.pending.append(pending)
            self.condition.notify()
        return future

    def depth(self) -> int:
        """Windows waiting for the model."""
        return len(self.pending)

    def loop(self) -> None:
        while (batch := self.next_batch()) is not None:
            self.run(batch)

    def next_batch(self) -> Optional[list[Pending]]:
        """The next batch, once it is full or its oldest window has waited long enough; None when stopping."""
        with self.condition:
            while True:
                while not self.pending and not self.stopping:
                    self.condition.wait()
                if self.stopping:
                    return None
                deadline = self.pending[0].arrived + self.max_wait
                while not self.stopping and not self.full() and (left := deadline - time.monotonic()) > 0:
                    self.condition.wait(left)
                batch = self.take()
                if batch:
                    return batch

    def full(self) -> bool:
        longest = max(len(item.audio) for item in self.pending)
        return longest * len(self.pending) >= self.capacity

    def take(self) -> list[Pending]:
        """The oldest windows whose padded audio fits the capacity (at least one); windows of requests that are gone
        are dropped."""
        batch, longest = [], 0
        while self.pending:
            length = len(self.pending[0].audio)
            if batch and max(longest, length) * (len(batch) + 1) > self.capacity:
                break
            item = self.pending.popleft()
            if item.future.set_running_or_notify_cancel():  # False: cancelled while it waited
                batch.append(item)
                longest = max(longest, length)
        return batch

    def run(self, batch: list[Pending]) -> None:
        """One forward pass; a failure fails its requests, not the server."""
        try:
            kept = self.forward([b.window for b in batch], [b.audio for b in batch], [b.start for b in batch])
        except Exception as e:  # out of memory, a model error: its requests get a 500, the next batch runs
            logger.exception("error: a forward pass failed")
            for item in batch:
                item.future.set_exception(e)
            return
        for item, out in zip(batch, kept):
            item.future.set_result(out)
        if self.on_batch is not None:
            self.on_batch(len(batch), sum(len(b.audio) for b in batch) / self.rate)


class SettledText:
    """The start of a file's text that its later frames cannot change, for text streamed as windows finish: with a
    beam search, the stretches it has searched; with greedy decoding of a character vocabulary, the words before the
    last word delimiter. Each call gives what is new since the last."""

    def __init__(self, decoding):
        self.decoding, self.sent = decoding, ""

    def delta(self, frames: Optional[FileFrames]) -> str:
        settled = self.settled(frames) if frames is not None else ""
        if len(settled) <= len(self.sent) or not settled.startswith(self.sent):
            return ""
        new, self.sent = settled[len(self.sent):], settled
        return new

    def rest(self, text: str) -> str:
        """What is left of the final text."""
        if not text.startswith(self.sent):  # a tokenizer whose clean-up reached back before a delimiter
            logger.warning("warning: the streamed text differs from the final text")
            return ""
        return text[len(self.sent):]

    def settled(self, frames: FileFrames) -> str:
        decoding = self.decoding
        if decoding.decoder is not None:
            return " ".join(t for t in frames.texts if t)
        if decoding.boundary is None:  # a subword vocabulary: its text comes whole at the end
            return ""
        ids, _ = frames.frames()
        delimiters = np.flatnonzero(ids == decoding.boundary)
        if not delimiters.size:
            return ""
        cut = int(delimiters[-1])
        while cut > 0 and ids[cut - 1] == decoding.boundary:
            cut -= 1
        settled = ctc_decode(decoding.tokenizer, ids[:cut].tolist(), decoding.blank)
        return settled if ctc_decode(decoding.tokenizer, ids.tolist(), decoding.blank).startswith(settled) else ""


def windows_through(batcher: Batcher, job: Job, run: Run, ends: list):
    """Each window of a one-file run with its kept frames, in order: (window, audio, first kept frame, logits). Its
    audio is read at most READ_AHEAD_SECONDS ahead of the model's output."""
    rate = run.engine.sampling_rate
    pending, ahead, limit = collections.deque(), 0, READ_AHEAD_SECONDS * rate
    for i, window in enumerate(run.windows):
        for _, audio, start in run.read([window], ends):
            # A whole file read short (an MP3 cut off decodes what it holds, silently), as preprocessing judges it
            if window.whole and len(audio) < TRUNCATION_TOLERANCE * (window.end - window.start):
                raise BadAudio(f"truncated audio (its header says {(window.end - window.start) / rate:.2f} s, it "
                               f"holds {len(audio) / rate:.2f} s)")
            pending.append((window, audio, batcher.submit(job, window, audio, start)))
            ahead += len(audio)
        while pending and (i == len(run.windows) - 1 or ahead > limit):
            done, audio, future = pending.popleft()
            ahead -= len(audio)
            kept = future.result()  # CancelledError once the request is cancelled
            if job.cancelled:
                raise concurrent.futures.CancelledError
            yield done, audio, *kept


def transcribe_file(engine: Engine, batcher: Batcher, job: Job, path: str, decoding=None,
                    on_text: Optional[Callable] = None) -> Transcript:
    """One file's Transcript, its windows run by the batcher (the same text and words as Engine.transcribe).
    `decoding`: the request's own (hotwords); `on_text(delta)`: called with text as windows settle it, whose pieces
    join into the final text. Raises BadAudio with the reason a file cannot be transcribed."""
    run, ends = Run(engine, [path], decoding), []
    if 0 not in run.files:
        raise BadAudio(run.reasons[0])
    settled = SettledText(run.decoding)
    for window, audio, first_frame, logits in windows_through(batcher, job, run, ends):
        run.add(window, audio, first_frame, logits, ends)
        if on_text is not None and (delta := settled.delta(run.frames.get(0))):
            on_text(delta)
    for window in ends:
        run.finish(window.file, run.frames.pop(window.file, None))
    if 0 in run.short:
        seconds = run.files[0][2]
        raise BadAudio(f"truncated audio (its header says {seconds:.2f} s, it holds about "
                       f"{run.records[0].duration if 0 in run.records else 0:.2f} s)")
    if 0 not in run.records:
        raise BadAudio(run.reasons[-1] if run.reasons else "no audio the model can take")
    if on_text is not None and (rest := settled.rest(run.records[0].text)):
        on_text(rest)
    return run.records[0]
