# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Recordings of any length, for transcribe.py, in windows of at most --chunk_seconds that the model sees one at a
time. A window ends in a pause where the recording has one (speech models are trained on utterances, not on
minutes of audio); where speech runs on without a pause, it ends at the chunk's length and is read with context on
both sides, whose frames are dropped, so a word that crosses the cut comes out once and whole. A file is read block
by block (soundfile), never whole, so memory does not grow with the recording's length. Windows of several files
share batches."""

import ctypes
import dataclasses
import sys
from typing import Optional

import numpy as np
import soundfile as sf
import soxr
import torch

from .audio import AUDIO_ERRORS, load_audio
from .columns import LENGTH_COLUMN
from .edges import trim_to_speech, trims
from .families import extract_features, model_input_names, output_frames

DEFAULT_CHUNK_SECONDS = 20.0  # the longest window
DEFAULT_CONTEXT_SECONDS = 4.0  # audio read on each side of a cut that is not in a pause, whose frames are dropped
ENERGY_FRAME_SECONDS = 0.01  # the energy of the recording is measured per 10 ms
PAUSE_SECONDS = 0.25  # quiet this long is a pause a window may end in
QUIET_OVER_FLOOR = 3.0  # quiet: an RMS under 3 times the recording's noise floor (its 5th percentile of RMS),
QUIET_SHARE = 0.001  # or under this share of its loud level (95th percentile), whichever is higher,
QUIET_CEILING = 0.5  # but never above half its loud level (steady noise or music has no pauses); and always
SILENCE_RMS = 1 / 32768  # quiet under one step of 16-bit audio (a stream's first frames have no loud level yet)
MIN_WINDOW_SECONDS = 0.3  # a window ends in a pause only after this much audio
TRIM_LEVEL = 1.5 / 32768  # a window's edge in a pause is trimmed to its first (last) sample louder than this: 1.5
# steps of 16-bit audio, so that a 16-bit recording and its float original give the same windows (a quiet onset
# rounds to 0 or 1 step in 16 bits; a 2-step sample is louder in both)
SOUND_OVER_FLOOR = 3.0  # and louder than 3 times the pause's floor (the peak of its quietest frames; 0 in digital
# silence): a steady noise's samples stay under that, a word's first sound passes it within milliseconds
LEAD_SECONDS = 0.05  # quiet kept before a window's first sound (a clip's own leading silence)
TRAILING_QUIET_SECONDS = 0.15  # quiet kept after a window's last sound (a clip's own trailing silence)
BLANK_FILL_LOGIT = -30.0  # the other tokens' logits in a frame filled in as blank for the beam search
MALLOC_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
BIG_BLOCK_BYTES = 4 * 2**20  # blocks this big are mapped and unmapped, never kept in the heap


@dataclasses.dataclass(frozen=True)
class Window:
    """A stretch of one file that runs through the model at once, in samples at the model's rate."""

    file: int  # the file's position among the inputs
    start: int  # first sample read
    end: int  # one past the last sample read
    keep_start: Optional[int]  # first output frame kept, in the file's numbering; None: from the first speech sample
    keep_end: Optional[int]  # one past the last frame kept; None: to the window's last frame
    whole: bool  # the window is the whole file (read by load_audio, as a short clip always was)
    last: bool  # the file's last window
    quiet_before: float = -1.0  # the window starts in a pause of this floor (peak amplitude): its leading quiet is
    quiet_after: float = -1.0  # trimmed (trim_quiet), and its trailing quiet in a pause of quiet_after; -1: none


def frame_hop(model, feature_extractor) -> int:
    """Samples (at the model's rate) per output frame: 320 for wav2vec2's 20 ms frames, 1,280 for Parakeet's 80 ms;
    from the model's own length arithmetic, so every family gets its own."""
    rate = feature_extractor.sampling_rate
    one, sixty_one = output_frames(model, feature_extractor, [rate, 61 * rate])
    return round(60 * rate / (sixty_one - one))


def frame_energy(path: str, source_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """The RMS and the peak amplitude of every 10 ms of a file, read block by block (a second at a time). A file cut
    short (its data ends before its header says) gives the energy of what it holds; one unreadable from its start
    raises."""
    frame = max(round(source_rate * ENERGY_FRAME_SECONDS), 1)
    rms, peak = [], []
    blocks = sf.blocks(path, blocksize=frame * 100, dtype="float32", always_2d=True)
    while True:
        try:
            block = next(blocks)
        except StopIteration:
            break
        except AUDIO_ERRORS:
            if not rms:
                raise
            break  # read_window then finds the same end, and transcribe.py says the file is cut short
        mono = block.mean(axis=1)
        frames = mono[: len(mono) // frame * frame].reshape(-1, frame)
        rms.append(np.sqrt(np.mean(frames ** 2, axis=1)))
        peak.append(np.abs(frames).max(axis=1, initial=0.0))
    return (np.concatenate(rms), np.concatenate(peak)) if rms else (np.zeros(0), np.zeros(0))


def quiet_threshold(rms: np.ndarray) -> float:
    """The RMS under which a 10 ms frame is quiet (see QUIET_OVER_FLOOR), from the RMS of a recording's frames."""
    loud = np.percentile(rms, 95)
    relative = min(max(QUIET_OVER_FLOOR * np.percentile(rms, 5), QUIET_SHARE * loud), QUIET_CEILING * loud)
    return float(max(relative, SILENCE_RMS))


def find_pauses(rms: np.ndarray, peak: np.ndarray) -> list[tuple[float, float, float]]:
    """Every pause (quiet for PAUSE_SECONDS or longer): its start and end in seconds, and its floor (see below)."""
    if not rms.size:
        return []
    quiet = np.concatenate([[False], rms < quiet_threshold(rms), [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    pauses = []
    for start, stop in zip(edges[::2], edges[1::2]):  # runs of quiet frames: [start, stop)
        if stop - start >= round(PAUSE_SECONDS / ENERGY_FRAME_SECONDS):
            # Its floor: the peak of its quietest frames (0 in digital silence); a window edge in it is trimmed to
            # the sound (sound_level), keeping LEAD_SECONDS before it, as a training clip starts
            floor = float(np.percentile(peak[start:stop], 10))
            pauses.append((start * ENERGY_FRAME_SECONDS, stop * ENERGY_FRAME_SECONDS, floor))
    return pauses


def plan_windows(file: int, samples: int, total_frames: int, pauses: list, chunk: int, context: int, hop: int,
                 rate: int) -> list[Window]:
    """The windows of a file of `samples` samples (at `rate`) with `total_frames` output frames. A window ends in the
    middle of the first pause (find_pauses) after MIN_WINDOW_SECONDS and the next starts there; both trim the pause's
    quiet at that edge (read_window), so each holds speech as a training clip does (and a live stream of the same
    audio is cut the same way: streaming.py). Without a pause within `chunk` samples, a window ends there, and the
    cut is read with `context` samples on both sides (kept frames tile the file exactly). A file no longer than a chunk plus its context is one window, the whole file."""
    if samples <= chunk + context:
        return [Window(file, 0, samples, 0, total_frames, whole=True, last=True)]
    windows, start, keep_start, quiet_before = [], 0, 0, -1.0
    if pauses and pauses[0][0] == 0:  # the file starts in a pause: its first window's leading quiet is trimmed
        keep_start, quiet_before = None, pauses[0][2]
    # A file that ends in a pause: its last window's trailing quiet is trimmed (and not cut in)
    ends_in_pause = pauses and round(pauses[-1][1] * rate) >= samples - round(ENERGY_FRAME_SECONDS * rate)
    ends_quiet = pauses[-1][2] if ends_in_pause else -1.0
    cuts = [p for p in pauses[:len(pauses) - 1 if ends_in_pause else None] if p[0] > 0]  # pauses a window may end in
    following = 0  # the next of them
    while True:
        # The first pause amid which to cut, at least MIN_WINDOW_SECONDS after the window's start
        while following < len(cuts) and (cuts[following][0] + cuts[following][1]) / 2 * rate \
                < start + MIN_WINDOW_SECONDS * rate:
            following += 1
        if following < len(cuts) and (cuts[following][0] + cuts[following][1]) / 2 * rate < start + chunk:
            begin, end, floor = cuts[following]  # cut amid the pause; both windows trim its quiet at their edge
            middle = round((begin + end) / 2 * rate)
            windows.append(Window(file, start, middle, keep_start, None, False, False, quiet_before, floor))
            start, keep_start, quiet_before = middle, None, floor
        elif samples - start <= chunk:
            windows.append(Window(file, start, samples, keep_start, total_frames, False, True, quiet_before,
                                  ends_quiet))
            return windows
        else:  # speech runs on: cut at the chunk's end, with context on both sides
            cut = (start + chunk) // hop * hop
            windows.append(Window(file, start if keep_start is None else max(0, start - context),
                                  min(samples, cut + context), keep_start, cut // hop, False, False, quiet_before))
            start, keep_start, quiet_before = cut, cut // hop, -1.0


def read_window(path: str, window: Window, source_rate: int, rate: int) -> tuple[np.ndarray, int, bool]:
    """The window's audio, mono float32 at `rate`, read from its own blocks of the file, with the quiet of the pauses
    at its edges trimmed; where its audio starts, in samples from the file's start; and whether the file held all
    of it (False: the file is shorter than its header says, and this window got what there is, maybe nothing)."""
    if window.whole:
        return load_audio(path, rate), 0, True
    first, stop = round(window.start * source_rate / rate), round(window.end * source_rate / rate)
    with sf.SoundFile(path) as f:
        try:
            f.seek(first)
            audio = f.read(stop - first, dtype="float32", always_2d=True).mean(axis=1)
        except AUDIO_ERRORS:  # past the data's end: a file cut short, whose header promises more
            return np.zeros(0, np.float32), window.start, False
    complete = len(audio) == stop - first
    if source_rate != rate:  # each window resampled alone: its edges lie in pauses or in dropped context
        audio = soxr.resample(audio, source_rate, rate).astype(np.float32, copy=False)
    audio, lead = trim_quiet(audio, window, rate)
    return audio, window.start + lead, complete


def sound_level(floor: float) -> float:
    """The amplitude over which a sample at a window's edge is sound, where the window starts (ends) in a pause of
    this floor (TRIM_LEVEL, SOUND_OVER_FLOOR)."""
    return max(SOUND_OVER_FLOOR * floor, TRIM_LEVEL)


def trim_quiet(audio: np.ndarray, window: Window, rate: int) -> tuple[np.ndarray, int]:
    """A window's audio with the quiet of the pauses at its edges trimmed (LEAD_SECONDS and TRAILING_QUIET_SECONDS
    kept), and how many samples went from its start."""
    loud = np.abs(audio)
    lead, tail = 0, len(audio)
    if window.quiet_before >= 0 and loud.size:
        lead = max(0, int(np.argmax(loud > sound_level(window.quiet_before))) - round(LEAD_SECONDS * rate))
    if window.quiet_after >= 0 and loud.size:
        tail = len(audio) - int(np.argmax(loud[::-1] > sound_level(window.quiet_after)))
    tail = min(len(audio), tail + round(TRAILING_QUIET_SECONDS * rate))
    return audio[lead:max(tail, lead + 1)], lead


def batches_of_windows(windows: list[Window], batch_seconds: float, rate: int) -> list[list[Window]]:
    """Windows in batches of at most `batch_seconds` of padded audio, each file's windows in order (a file's frames
    are joined as they come). Consecutive windows are near the same length, so padding stays small."""
    batches, batch, longest = [], [], 0
    for window in windows:
        length = window.end - window.start
        if batch and max(longest, length) * (len(batch) + 1) > batch_seconds * rate:
            batches.append(batch)
            batch, longest = [], 0
        batch.append(window)
        longest = max(longest, length)
    return batches + [batch] if batch else batches


@torch.inference_mode()
def kept_logits(windows: list[Window], audios: list[np.ndarray], starts: list[int], model, feature_extractor,
                collate, hop: int) -> list[tuple[int, torch.Tensor]]:
    """Each window's kept frames: the file's number of the first one, and their logits [frames, vocabulary] (padding
    and context dropped). `starts`: where each window's audio starts in the file (read_window)."""
    name, _ = model_input_names(feature_extractor)
    if trims(feature_extractor):  # --trim_silence: each edge in a pause cut as the model's training clips were
        cut = [trim_to_speech(a, feature_extractor.sampling_rate, lead=w.whole or w.quiet_before >= 0,
                              tail=w.whole or w.quiet_after >= 0) for w, a in zip(windows, audios)]
        audios, starts = [a for a, _ in cut], [start + lead for start, (_, lead) in zip(starts, cut)]
    batch = collate([{name: extract_features(feature_extractor, a), LENGTH_COLUMN: len(a)} for a in audios])
    samples = batch.pop("input_lengths")
    logits = model(**{k: v.to(model.device) for k, v in batch.items()}).logits.float().cpu()
    frames = output_frames(model, feature_extractor, samples)  # each window's frames of real audio
    kept = []
    for window, clip, n, start in zip(windows, logits, frames, starts):
        first = round(start / hop)  # the file's number of the window's first frame
        if first < 0:  # a file given silence before it (edges): its frames count from the file's first
            first = 0
        lo = first if window.keep_start is None else max(window.keep_start, first)
        hi = first + n if window.keep_end is None else min(window.keep_end, first + n)  # never a padding frame
        kept.append((lo, clip[lo - first:max(hi - first, lo - first)]))
    return kept


def keep_memory_flat() -> None:
    """Have glibc give every block of 4 MiB or more (a batch's tensors) back to the system when it is freed, instead
    of keeping it in a heap that windows of many lengths fragment: without this, a 4-hour recording peaked 30% above
    a 10-minute one. Nothing to do without glibc. (Training does the opposite, for speed: trainer.reuse_cpu_memory.)"""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(MALLOC_MMAP_THRESHOLD, BIG_BLOCK_BYTES)
    except (OSError, AttributeError):  # not glibc
        pass


class FileFrames:
    """One file's kept frames, joined in order: each frame's greedy token and its probability (what the words, their
    times and confidence come from), and, for a beam search, the logits not searched yet and what the search has
    made of the stretches before them (`texts`, `words`). Frames between two windows that neither produced (a
    window's last conv frame, at a cut in a pause) are filled in as blank."""

    def __init__(self, path: str, seconds: float, blank: int, boundary: Optional[int], keep_logits: bool):
        self.path, self.seconds, self.blank, self.keep_logits = path, seconds, blank, keep_logits
        self.boundary = boundary  # the word delimiter's id (character vocabularies), set in a pause between windows
        self.ids, self.probs, self.logits = [], [], []
        self.texts, self.words = [], []
        self.next_frame = 0  # the file's frame number that the next kept frame has
        self.last_token = None  # the last greedy token that is not blank
        self.peak = 0.0  # the loudest sample read: 0 for a silent file

    def add(self, first_frame: int, logits: torch.Tensor, audio: np.ndarray) -> None:
        """The kept logits of a window whose first kept frame is the file's frame `first_frame`. Frames the previous
        window already gave (a model's last frame can reach past a cut in a pause) are dropped."""
        overlap = self.next_frame - first_frame
        if overlap > 0:
            logits, first_frame = logits[overlap:], self.next_frame
        probs = torch.softmax(logits, -1).max(-1)
        ids = probs.indices.numpy().astype(np.int32)
        spoken = ids[ids != self.blank]
        gap = first_frame - self.next_frame
        if gap > 0:  # frames of a pause no window covered: blank, with a word boundary amid them
            filled = np.full(gap, self.blank, np.int32)
            # No second boundary where a window's edge already gives one: two would be two spaces in the text
            if self.boundary is not None and self.next_frame > 0 and self.last_token != self.boundary \
                    and not (spoken.size and spoken[0] == self.boundary):
                filled[gap // 2] = self.boundary
                self.last_token = self.boundary
            self.ids.append(filled)
            self.probs.append(np.ones(gap, np.float32))
            if self.keep_logits:
                filler = np.full((gap, logits.shape[-1]), BLANK_FILL_LOGIT, np.float32)
                filler[np.arange(gap), filled] = 0.0
                self.logits.append(filler)
        self.ids.append(ids)
        self.probs.append(probs.values.numpy().astype(np.float32))
        if self.keep_logits:
            self.logits.append(logits.numpy())
        if spoken.size:
            self.last_token = int(spoken[-1])
        self.next_frame = first_frame + len(logits)
        self.peak = max(self.peak, float(np.abs(audio).max()) if audio.size else 0.0)

    def frames(self) -> tuple[np.ndarray, np.ndarray]:
        """Every frame's greedy token id and probability, in order (joined once: a beam search asks again and
        again)."""
        if len(self.ids) != 1:
            self.ids = [np.concatenate(self.ids) if self.ids else np.zeros(0, np.int32)]
            self.probs = [np.concatenate(self.probs) if self.probs else np.zeros(0, np.float32)]
        return self.ids[0], self.probs[0]

    def take_logits(self, upto: Optional[int] = None) -> np.ndarray:
        """The buffered logits (of frames after the last take) up to frame `upto` of the buffer, removed from it."""
        joined = np.concatenate(self.logits) if self.logits else np.zeros((0, 0), np.float32)
        upto = len(joined) if upto is None else upto
        self.logits = [joined[upto:]] if upto < len(joined) else []
        return joined[:upto]

    def buffered(self) -> int:
        return sum(len(x) for x in self.logits)
