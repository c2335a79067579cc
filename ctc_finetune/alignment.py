# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Forced alignment for align.py: the words of a known text timed in audio by CTC Viterbi over the model's
emissions (log-probabilities per frame), with a score per word and per line.

The text is normalised as training normalised it (case folded to the vocabulary's) and spelt in the model's
vocabulary; characters the vocabulary lacks are left out, and a word with nothing left is placed between its
neighbours afterwards, flagged. The trellis is the usual CTC one (each token between blanks, a repeated token
needs a blank between) with two additions for text and audio that do not match:

- between lines (and before the first, after the last) the blank is a *gap* that also takes a frame of speech, at
  GAP_PENALTY below the frame's best token: audio the text lacks goes there instead of stretching its neighbours;
- a line may be left out whole for LINE_SKIP_PENALTY: text the audio lacks; its words are placed and flagged.

A word's score is the mean, over its frames, of the aligned path's log-probability minus the frame's best one: 0
where the model would have said the same, more negative the less the audio sounds like the text. A line's score
is the same mean over its words' frames.

A long recording is aligned stretch by stretch (STRETCH_SECONDS of frames at a time, with a share of the text
that runs a little ahead): each stretch keeps the words that end before its last OVERLAP_SECONDS, and the next
starts after the last word kept. Memory depends on the stretch, not on the recording's length."""

import bisect
import contextlib
import dataclasses
from collections import Counter
from typing import Optional

import numpy as np
import torch

from .audio import AUDIO_ERRORS
from .engine import Run
from .families import is_character_tokenizer
from .longform import (FileFrames, batches_of_windows, find_pauses, frame_energy, keep_memory_flat, kept_logits,
                       plan_windows, sound_level)
from .text import normalize_text, vocabulary_case

NEG_INF = -1e30  # the score of a state no path reaches (sums of a few stay finite in float32)
GAP_PENALTY = 3.0  # nats per frame: what a gap pays, under the frame's best token, for speech no line covers
LINE_SKIP_PENALTY = 30.0  # nats: what leaving a whole line out costs (a line the audio does not hold)
STRETCH_SECONDS = 30.0  # frames aligned at a time in a long recording
OVERLAP_SECONDS = 6.0  # the end of a stretch whose words wait for the next stretch
TOKEN_MARGIN = 2.0  # a stretch gets this many times the recording's mean tokens per frame of text
MIN_STRETCH_TOKENS = 100  # and at least this many tokens
SUBWORD_BOUNDARY = "▁"  # SentencePiece's word start: a piece of nothing else spells no sound
VITERBI_BYTES = 16 * 2**20  # frames x states x items of one batched Viterbi pass (5 bytes each: emission, move)


@dataclasses.dataclass
class Word:
    """A word of the text as written, its line, its alignable token ids, and where the alignment put it: frames
    [first, stop) of the file, its summed score over the frames the path gave it, and its tokens' (id, first, stop)
    frames."""

    text: str
    line: int
    tokens: list
    first: int = -1  # -1: not placed (no alignable token, or its line left out)
    stop: int = -1
    score_sum: float = 0.0
    scored: int = 0  # the frames score_sum is summed over
    confidence: float = 0.0
    spans: list = dataclasses.field(default_factory=list)

    @property
    def placed(self) -> bool:
        return self.first >= 0


class Spelling:
    """How a model's vocabulary spells text: token ids per word, the blank and the word delimiter (`|` of character
    vocabularies; subword pieces carry their own `▁`)."""

    def __init__(self, tokenizer, blank: int):
        self.tokenizer, self.blank = tokenizer, blank
        self.vocab = tokenizer.get_vocab()
        self.case = vocabulary_case(self.vocab)
        self.characters = is_character_tokenizer(tokenizer)
        delimiter = getattr(tokenizer, "word_delimiter_token", None) if self.characters else None
        self.delimiter = self.vocab.get(delimiter) if delimiter else None
        self.unusable = {blank, self.delimiter, tokenizer.unk_token_id, tokenizer.pad_token_id,
                         *tokenizer.all_special_ids} - {None}

    def tokens(self, word: str) -> list[int]:
        """The ids of a word's alignable tokens (characters the vocabulary lacks left out)."""
        text = normalize_text(word, None, self.case)
        if self.characters:
            ids = [self.vocab[c] for c in text if c in self.vocab]
        else:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = [i for i in ids if i not in self.unusable]
        names = self.tokenizer.convert_ids_to_tokens(ids)
        return ids if any(n.strip(SUBWORD_BOUNDARY) for n in names) else []

    def spelt(self, text: str) -> str:
        """The text as the model would transcribe it: normalised, characters outside its vocabulary left out."""
        text = normalize_text(text, None, self.case)
        if self.characters:
            text = "".join(c for c in text if c == " " or (c in self.vocab and self.vocab[c] not in self.unusable))
        return " ".join(text.split())

    def words(self, lines: list[str]) -> list[Word]:
        return [Word(w, i, self.tokens(w)) for i, line in enumerate(lines) for w in line.split()]


@contextlib.contextmanager
def one_thread():
    """torch on one thread for small tensors (a window's frames, a Viterbi step): a second thread costs more to
    hand the work to than it saves (one window's log_softmax: 33 µs on one thread, 5 ms on two threads of a busy
    2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclasses.dataclass
class Trellis:
    """A stretch's CTC states: each state's emission column (a token id, the blank, or the gap column), the word
    whose token it is (-1 for blanks and gaps), whether it may be entered from two states back (skipping a blank),
    and where a line's skip comes from (-1: none). The first state is a gap; a path starts in it or in state 1."""

    columns: np.ndarray
    owner: np.ndarray
    skip_ok: np.ndarray
    jump_from: np.ndarray
    final: bool  # the path must end in the last token or the state after it (the recording's end)


def build_trellis(words: list[Word], start: int, stop: int, spelling: Spelling, gap: int, final: bool) -> Trellis:
    """The trellis of words[start:stop] (the tokens of the rest of a line go on in the next stretch). `gap` is the
    column of the gap emission."""
    columns, owner, jump_from = [gap], [-1], [-1]
    # Where each line's skip starts: the gap before it; none for a line begun in the stretch before (its skip would
    # leave out half a line)
    line_gap = {words[start].line: -1} if start > 0 and words[start - 1].line == words[start].line else {}
    line = None
    for index in range(start, stop):
        word = words[index]
        if not word.tokens:
            continue
        if word.line != line:
            if line is not None:
                close_line(columns, jump_from, line_gap, line, gap)
            line_gap.setdefault(word.line, len(columns) - 1)
            line = word.line
        elif spelling.delimiter is not None:
            columns += [spelling.delimiter, spelling.blank]
            owner += [-1, -1]
            jump_from += [-1, -1]
        for token in word.tokens:
            columns += [token, spelling.blank]
            owner += [index, -1]
            jump_from += [-1, -1]
    if line is not None and (stop == len(words) or words[stop].line != line):
        close_line(columns, jump_from, line_gap, line, gap)
    columns = np.array(columns)
    skip_ok = np.zeros(len(columns), bool)
    skip_ok[3::2] = columns[3::2] != columns[1:-2:2]  # token states sit at odd positions
    return Trellis(columns, np.array(owner), skip_ok, np.array(jump_from), final)


def close_line(columns: list, jump_from: list, line_gap: dict, line: int, gap: int) -> None:
    """A line's last blank becomes a gap, which the line's skip reaches from the gap before the line."""
    columns[-1] = gap
    jump_from[-1] = line_gap[line]


def emission_columns(log_probs: torch.Tensor, spelling: Spelling) -> torch.Tensor:
    """[frames, vocabulary + 2]: the log-probabilities, then the gap's (the blank's, the delimiter's, or speech at
    GAP_PENALTY under the best token, whichever is highest), then NEG_INF (the column of padding states)."""
    free = log_probs[:, [spelling.blank] + ([spelling.delimiter] if spelling.delimiter is not None else [])]
    gap = torch.maximum(free.max(1).values, log_probs.max(1).values - GAP_PENALTY)
    return torch.cat([log_probs, gap[:, None], torch.full_like(gap[:, None], NEG_INF)], 1)


@torch.inference_mode()
def viterbi(emissions: list[torch.Tensor], trellises: list[Trellis]) -> list[Optional[np.ndarray]]:
    """The best path of each trellis through its emissions ([frames, columns], emission_columns): the state of every
    frame, or None where no path reaches an allowed end (fewer frames than tokens). Batched: one pass over the
    longest item's frames, states padded."""
    batch, frames = len(trellises), max(len(e) for e in emissions)
    states = max(len(t.columns) for t in trellises)
    padding = emissions[0].shape[1] - 1  # the NEG_INF column
    em = torch.full((batch, frames, padding + 1), NEG_INF)
    columns = torch.full((batch, states), padding, dtype=torch.long)
    jump_from, jump_penalty = torch.zeros((batch, states), dtype=torch.long), torch.full((batch, states), NEG_INF)
    skip_ok = torch.zeros((batch, states), dtype=torch.bool)
    for b, (e, t) in enumerate(zip(emissions, trellises)):
        em[b, :len(e)] = e
        n = len(t.columns)
        columns[b, :n], skip_ok[b, :n] = torch.from_numpy(t.columns), torch.from_numpy(t.skip_ok)
        jumps = torch.from_numpy(t.jump_from)
        jump_from[b, :n] = torch.where(jumps >= 0, jumps, torch.arange(n))
        jump_penalty[b, :n][jumps >= 0] = -LINE_SKIP_PENALTY
    lengths = [len(e) for e in emissions]
    back, last = forward_pass(em, columns, skip_ok, jump_from, jump_penalty, lengths)
    return [backtrack(back[:n, b], last[b][:len(t.columns)], t) for b, (n, t) in enumerate(zip(lengths, trellises))]


def forward_pass(em: torch.Tensor, columns, skip_ok, jump_from, jump_penalty, lengths: list[int]):
    """The Viterbi recursion over emissions [batch, frames, columns] and states [batch, states] (their columns):
    each frame's best move into each state (0 stay, 1 from the state before, 2 from two before, 3 a line's skip)
    as uint8 [frames, batch, states], and each item's scores at its last frame."""
    (batch, frames, _), states = em.shape, columns.shape[1]
    emit = em.gather(2, columns[:, None, :].expand(batch, frames, states)).transpose(0, 1).contiguous()
    # moves[0] is the score so far (staying): the others are read from it, shifted
    moves = torch.full((4, batch, states), NEG_INF)
    moves[0, :, :2] = emit[0, :, :2]
    back = torch.zeros((frames, batch, states), dtype=torch.uint8)
    best, arg, no_skip = torch.empty((batch, states)), torch.empty((batch, states), dtype=torch.long), ~skip_ok
    jumps = bool((jump_penalty > NEG_INF).any())
    ends = {}
    for b, n in enumerate(lengths):
        ends.setdefault(n - 1, []).append(b)
    last = [moves[0, b].clone() for b in range(batch)]
    for t in range(1, frames):
        moves[1, :, 1:] = moves[0, :, :-1]
        moves[2, :, 2:] = moves[0, :, :-2]
        moves[2].masked_fill_(no_skip, NEG_INF)
        if jumps:
            torch.gather(moves[0], 1, jump_from, out=moves[3])
            moves[3] += jump_penalty
        torch.max(moves, 0, out=(best, arg))
        back[t] = arg
        torch.add(best, emit[t], out=moves[0])
        for b in ends.get(t, ()):
            last[b] = moves[0, b].clone()
    return back.numpy(), [s.numpy() for s in last]


def backtrack(back: np.ndarray, score: np.ndarray, trellis: Trellis) -> Optional[np.ndarray]:
    """The state at every frame ([frames, states] moves of one item), from the best end its trellis allows."""
    allowed = score.copy()
    if trellis.final:
        allowed[:max(len(allowed) - 2, 0)] = NEG_INF
    state = int(allowed.argmax())
    if allowed[state] <= NEG_INF / 2:
        return None
    step = (0, 1, 2)
    path = np.empty(len(back), np.int64)
    for t in range(len(back) - 1, 0, -1):
        path[t] = state
        move = back[t, state]
        state = int(trellis.jump_from[state]) if move == 3 else state - step[move]
    path[0] = state
    return path


def place(path: np.ndarray, trellis: Trellis, em: np.ndarray, offset: int, words: list[Word]) -> None:
    """Put the words the path spells where it spells them: frames (the stretch starts at the file's frame
    `offset`), score and confidence, and each token's frames. `em` is the stretch's emission_columns."""
    columns = trellis.columns[path]
    frame_score = em[np.arange(len(path)), columns] - em[:, :-2].max(1)  # 0 where the path takes the best token
    summed = np.concatenate([[0.0], np.cumsum(frame_score, dtype=np.float64)])
    changes = np.flatnonzero(np.diff(path)) + 1
    starts, stops = np.concatenate([[0], changes]), np.concatenate([changes, [len(path)]])
    runs = {}
    for first, stop in zip(starts, stops):
        index = int(trellis.owner[path[first]])
        if index >= 0:
            runs.setdefault(index, []).append((int(columns[first]), int(first), int(stop)))
    for index, spans in runs.items():
        word, first, stop = words[index], spans[0][1], spans[-1][2]
        word.first, word.stop = first + offset, stop + offset
        word.score_sum, word.scored = float(summed[stop] - summed[first]), stop - first
        word.confidence = float(np.mean([np.exp(em[t, c]) for c, a, b in spans for t in range(a, b)]))
        word.spans = [(c, a + offset, b + offset) for c, a, b in spans]


class FileAligner:
    """One file's lines and their words, aligned stretch by stretch as its log-probabilities arrive (feed).
    `frames` is the file's length in frames, from which the text's pace (tokens per frame) is estimated."""

    def __init__(self, lines: list[str], spelling: Spelling, frames: float, seconds_per_frame: float):
        self.lines, self.words, self.spelling = lines, spelling.words(lines), spelling
        self.pending, self.buffered = [], 0  # log-probabilities not aligned yet, and how many frames
        self.offset, self.next_word, self.ended = 0, 0, False
        self.stretch = max(round(STRETCH_SECONDS / seconds_per_frame), 1)
        self.overlap = min(round(OVERLAP_SECONDS / seconds_per_frame), self.stretch // 2)
        self.pace = sum(len(w.tokens) for w in self.words) / max(frames, 1.0)
        self.leads = []  # (first frame, frame of the first sound) of each window that keeps quiet before its sound

    def lead(self, first_frame: int, sound_frame: int) -> None:
        """A window whose frames from `first_frame` to `sound_frame` are quiet (a file's own, or what read_window
        keeps before a window's first sound)."""
        if sound_frame > first_frame:
            self.leads.append((first_frame, sound_frame))

    def start_at_sound(self, word: Word) -> None:
        """A word the model starts in the quiet before a window's first sound starts at that sound: the quiet is
        there for the model (its training clips begin so), it holds no speech."""
        at = bisect.bisect_right(self.leads, (word.first, float("inf"))) - 1
        if at >= 0 and word.first < self.leads[at][1] < word.stop:
            token, _, stop = word.spans[0]
            word.first = self.leads[at][1]
            word.spans[0] = (token, min(word.first, stop - 1), stop)

    def feed(self, log_probs: torch.Tensor) -> None:
        self.pending.append(log_probs)
        self.buffered += len(log_probs)

    @property
    def done(self) -> bool:
        return self.ended and (self.next_word == len(self.words) or not self.buffered)

    def job(self) -> Optional[tuple]:
        """The next stretch to align, (emissions, trellis, first word, end word), or None while too few frames
        have arrived (or none are left)."""
        if self.next_word == len(self.words) or not self.buffered:
            return None
        if not self.ended and self.buffered < self.stretch:
            return None
        final = self.ended and self.buffered <= self.stretch
        joined = torch.cat(self.pending) if len(self.pending) > 1 else self.pending[0]
        self.pending = [joined]
        emissions = emission_columns(joined[:self.stretch], self.spelling)
        stop = len(self.words) if final else self.text_end(len(emissions))
        trellis = build_trellis(self.words, self.next_word, stop, self.spelling, emissions.shape[1] - 2, final)
        return emissions, trellis, self.next_word, stop

    def text_end(self, frames: int) -> int:
        """Where a stretch's text ends: TOKEN_MARGIN times what the pace says its frames hold, whole words."""
        budget, stop = max(MIN_STRETCH_TOKENS, TOKEN_MARGIN * self.pace * frames), self.next_word
        while stop < len(self.words) and budget > 0:
            budget -= len(self.words[stop].tokens)
            stop += 1
        return stop

    def apply(self, job: tuple, path: Optional[np.ndarray]) -> None:
        """Keep what a stretch's path says of its words: all of them at the recording's end, else those that end
        before the stretch's overlap; the frames before the last word kept are done with."""
        emissions, trellis, start, stop = job
        if path is not None:
            place(path, trellis, emissions.numpy(), self.offset, self.words)
            for word in self.words[start:stop]:
                if word.placed:
                    self.start_at_sound(word)
        if trellis.final:
            self.next_word, self.buffered, self.pending = stop, 0, []
            return
        limit = self.offset + len(emissions) - self.overlap
        kept = [i for i in range(start, stop) if 0 <= self.words[i].stop <= limit]
        for word in self.words[kept[-1] + 1 if kept else start:stop]:
            word.first = word.stop = -1
        done = (kept[-1] + 1, self.words[kept[-1]].stop - self.offset) if kept else (start, len(emissions) -
                                                                                       self.overlap)
        self.next_word = done[0]
        self.pending = [self.pending[0][done[1]:]]
        self.buffered -= done[1]
        self.offset += done[1]


@dataclasses.dataclass
class Alignment:
    """One recording's alignment: its words ({"word", "start", "end", "confidence", "score"}, seconds; "aligned":
    False on a word placed between its neighbours), its lines ({"text", "start", "end", "score"}) and its tokens
    ({"token", "start", "end"}, for the TextGrid's token tier)."""

    path: str
    duration: float
    words: list
    lines: list
    tokens: list

    @property
    def text(self) -> str:
        return " ".join(line["text"] for line in self.lines)

    def as_dict(self) -> dict:
        """transcribe.py's JSON record, with the lines: {"path", "text", "duration", "words", "lines"}."""
        return {"path": self.path, "text": self.text, "duration": self.duration, "words": self.words,
                "lines": self.lines}


def word_records(words: list[Word], seconds_per_frame: float, duration: float) -> list[dict]:
    """The words in seconds; a word not placed shares the time between its placed neighbours with the others
    there, and is flagged ("aligned": False, score None)."""
    records = [{"word": w.text, "start": round(w.first * seconds_per_frame, 3),
                "end": round(w.stop * seconds_per_frame, 3), "confidence": round(w.confidence, 3),
                "score": round(w.score_sum / w.scored, 3)} if w.placed else None for w in words]
    index = 0
    while index < len(records):
        if records[index] is not None:
            index += 1
            continue
        run_end = next((i for i in range(index, len(records)) if records[i] is not None), len(records))
        low = records[index - 1]["end"] if index else 0.0
        high = max(records[run_end]["start"] if run_end < len(records) else duration, low)
        share = (high - low) / (run_end - index)
        for k in range(index, run_end):
            records[k] = {"word": words[k].text, "start": round(low + (k - index) * share, 3),
                          "end": round(low + (k - index + 1) * share, 3), "confidence": 0.0, "score": None,
                          "aligned": False}
        index = run_end
    return records


def line_records(lines: list[str], words: list[Word], records: list[dict]) -> list[dict]:
    """Each line's text, its first word's start, its last word's end, and its score: the mean score over its
    placed words' frames (None: no word of it placed)."""
    by_line = [[] for _ in lines]
    for i, word in enumerate(words):
        by_line[word.line].append(i)
    out = []
    for text, mine in zip(lines, by_line):
        placed = [words[i] for i in mine if words[i].placed]
        frames = sum(w.scored for w in placed)
        out.append({"text": text, "start": records[mine[0]]["start"], "end": records[mine[-1]]["end"],
                    "score": round(sum(w.score_sum for w in placed) / frames, 3) if frames else None})
    return out


def alignment_record(path: str, duration: float, lines: list[str], words: list[Word], spelling: Spelling,
                     seconds_per_frame: float) -> Alignment:
    records = word_records(words, seconds_per_frame, duration)
    used = sorted({c for w in words for c, _, _ in w.spans})
    names = dict(zip(used, spelling.tokenizer.convert_ids_to_tokens(used)))
    tokens = [{"token": names[c], "start": round(a * seconds_per_frame, 3), "end": round(b * seconds_per_frame, 3)}
              for w in words for c, a, b in w.spans]
    return Alignment(path, round(duration, 3), records, line_records(lines, words, records), tokens)


class AlignmentRun(Run):
    """The engine's planning of one call's files (headers, pauses, windows; unreadable files skipped and counted),
    with a file short enough to be one window cut at its pauses too: a window holding several utterances and the
    quiet between them makes a model emit a line's first letters early, in the quiet."""

    def plan(self) -> tuple[dict, list]:
        files, windows = super().plan()
        return files, [w for window in windows for w in (self.utterances(window, files) if window.whole
                                                           else [window])]

    def utterances(self, window, files: dict) -> list:
        """A whole-file window cut at the file's pauses (plan_windows with a chunk as long as the file), or as it
        is where no pause ends an utterance."""
        path, source_rate, _ = files[window.file]
        try:
            pauses = find_pauses(*frame_energy(path, source_rate))
        except AUDIO_ERRORS:  # read_window says so, once
            return [window]
        hop = self.engine.hop
        cut = plan_windows(window.file, window.end, window.keep_end, pauses, window.end - hop, 0, hop,
                           self.engine.sampling_rate)
        return [window] if any(w.keep_end is not None and not w.last for w in cut) else cut


def run_stretches(aligners: list[FileAligner]) -> None:
    """Every stretch the aligners have ready, aligned in batches of similar length (a file's stretches one after
    another: each starts where the one before kept its last word)."""
    with one_thread():
        align_ready(aligners)


def align_ready(aligners: list[FileAligner]) -> None:
    while True:
        jobs = sorted(((a, j) for a in aligners for j in [a.job()] if j is not None), key=lambda aj: len(aj[1][0]))
        if not jobs:
            return
        group = []
        for aligner, job in jobs + [(None, None)]:
            if group and (job is None or (len(group) + 1) * len(job[0]) * max(len(job[1].columns), *(
                    len(j[1].columns) for _, j in group)) > VITERBI_BYTES):
                paths = viterbi([j[0] for _, j in group], [j[1] for _, j in group])
                for (a, j), path in zip(group, paths):
                    a.apply(j, path)
                group = []
            if job is not None:
                group.append((aligner, job))


def align_files(engine, pairs: list[tuple[str, list[str]]]) -> tuple[list[Optional[Alignment]], Counter]:
    """Each (audio path, text lines) pair aligned by the engine's model: an Alignment per pair in input order (None
    for one skipped with a warning), and the skips by reason. The windows of all files share forward passes, and
    stretches ready at the same time share a Viterbi pass."""
    run = AlignmentRun(engine, [audio for audio, _ in pairs])
    spelling = Spelling(engine.tokenizer, engine.decoding.blank)
    seconds_per_frame = engine.hop / engine.sampling_rate
    aligners, frames, results = {}, {}, {}
    for index, (path, _, seconds) in run.files.items():
        aligner = FileAligner(pairs[index][1], spelling, seconds / seconds_per_frame, seconds_per_frame)
        if any(w.tokens for w in aligner.words):
            aligners[index] = aligner
        else:
            run.skip(path, "nothing alignable (no character of its text is in the model's vocabulary)")
    keep_memory_flat()
    windows = [w for w in run.windows if w.file in aligners]
    for batch in batches_of_windows(windows, engine.batch_seconds, engine.sampling_rate):
        ends = []
        read = run.read(batch, ends)
        kept = kept_logits(*map(list, zip(*read)), engine.model, engine.feature_extractor, engine.collate,
                           engine.hop) if read else []
        with one_thread():
            for (window, audio, start), (first, logits) in zip(read, kept):
                feed_window(run, engine, aligners[window.file], frames, window, audio, start, first, logits)
                if window.last:
                    ends.append(window)
        for window in ends:
            aligners[window.file].ended = True
        run_stretches([a for i, a in aligners.items() if i not in run.failed])
        for window in ends:
            finish_file(run, window.file, aligners.pop(window.file), frames.pop(window.file, None), results,
                        seconds_per_frame)
    return [results.get(i) for i in range(len(pairs))], run.skipped


def feed_window(run, engine, aligner: FileAligner, frames: dict, window, audio: np.ndarray, start: int, first: int,
                logits: torch.Tensor) -> None:
    """A window's kept frames joined to its file's (FileFrames: a pause no window covered is blank) and given to the
    file's aligner as log-probabilities, with where the window's sound starts."""
    path, _, seconds = run.files[window.file]
    if window.whole or window.quiet_before >= 0:  # the window starts in quiet: where does its sound start?
        sound = start + int(np.argmax(np.abs(audio) > sound_level(window.quiet_before)))
        aligner.lead(round(start / engine.hop), sound // engine.hop)
    file_frames = frames.setdefault(window.file, FileFrames(path, seconds, aligner.spelling.blank,
                                                            engine.decoding.boundary, keep_logits=True))
    file_frames.add(first, logits, audio)
    aligner.feed(torch.log_softmax(torch.from_numpy(file_frames.take_logits()), -1))


def finish_file(run, index: int, aligner: FileAligner, file_frames: Optional[FileFrames], results: dict,
                seconds_per_frame: float) -> None:
    """A file whose last window is done: its Alignment, or a counted skip (no sound, or undecodable)."""
    path, _, seconds = run.files[index]
    if index in run.failed:
        return
    if file_frames is None or file_frames.peak == 0.0:
        run.skip(path, "silent audio (every sample is zero)" if file_frames else
                 "truncated audio (nothing where its header says)")
        return
    results[index] = alignment_record(path, seconds, aligner.lines, aligner.words, aligner.spelling,
                                      seconds_per_frame)
