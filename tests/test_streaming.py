"""Live streams (ctc_finetune/streaming.py): a stream cut as it arrives gives the words of the recording transcribed
whole, partial text comes before the final, and the windows close where the pauses are."""

import os

import numpy as np
import pytest
import soundfile as sf
from conftest import DATA_DIR, make_finetuned

from ctc_finetune.audio import load_audio
from ctc_finetune.engine import Engine, EngineOptions
from ctc_finetune.longform import (ENERGY_FRAME_SECONDS, LEAD_SECONDS, PAUSE_SECONDS, TRAILING_QUIET_SECONDS,
                                   TRIM_LEVEL, find_pauses, frame_energy, plan_windows, read_window)
from ctc_finetune.streaming import CLOSE_SECONDS, SETTLE_SECONDS, StreamSession, StreamWindows

RATE = 16_000
CLIPS = [os.path.join(DATA_DIR, split, name) for split in ("test", "validation")
         for name in sorted(os.listdir(os.path.join(DATA_DIR, split))) if name.endswith(".flac")]
PAUSES = [0.4, 0.7, 0.5, 0.9, 0.6, 0.45, 0.8, 0.55, 0.27, 1.2]  # before each clip; 0.27 s: barely a pause


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """The fixture clips twice over, joined with pauses of digital silence, as a 16-bit WAV (37 s): its path and
    samples."""
    parts = []
    for path, pause in zip(CLIPS * 2, PAUSES * 2):
        parts += [np.zeros(round(pause * RATE), np.float32), load_audio(path, RATE)]
    parts.append(np.zeros(RATE // 2, np.float32))
    path = str(tmp_path_factory.mktemp("stream") / "recording.wav")
    sf.write(path, np.concatenate(parts), RATE, subtype="PCM_16")
    return path, sf.read(path, dtype="float32")[0]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_finetuned(tmp_path_factory.mktemp("finetuned"))


def stream(engine, samples, chunk_seconds=0.1) -> list[dict]:
    session, events, step = StreamSession(engine), [], round(chunk_seconds * RATE)
    for i in range(0, len(samples), step):
        events += session.feed(samples[i:i + step])
    return events + session.finish()


@pytest.mark.parametrize("chunk", [20.0, 3.0])
def test_a_stream_in_100_ms_pieces_ends_with_the_words_of_the_file(model_dir, recording, chunk):
    # chunk 3 s: some utterances (up to 3.3 s) are cut with context mid-speech, as the file's are
    path, samples = recording
    engine = Engine(model_dir, EngineOptions(device="cpu", chunk_seconds=chunk, context_seconds=1.0))
    expected = engine.transcribe(path).words
    events = stream(engine, samples)
    finals = [e for e in events if e["type"] == "final"]
    assert [w for e in finals for w in e["words"]] == expected
    assert len(finals) == len(CLIPS) * 2  # one per utterance: each pause closed a window
    starts = [e["start"] for e in finals]
    assert starts == sorted(starts) and all(e["end"] <= len(samples) / RATE for e in finals)


def test_partials_come_as_audio_arrives_and_finals_follow_them(model_dir, recording):
    _, samples = recording
    engine = Engine(model_dir, EngineOptions(device="cpu"))
    events = stream(engine, samples[:RATE * 8])
    kinds = [e["type"] for e in events]
    assert kinds[0] == "speech_started" and kinds.count("partial") >= 4
    first_final = kinds.index("final")
    assert "partial" in kinds[:first_final]  # text came before the utterance ended
    items = [e["item"] for e in events if e["type"] in ("partial", "final")]
    assert items == sorted(items)  # a partial belongs to the item its final closes


def test_a_window_runs_through_the_model_before_its_pause_closes_it(model_dir, recording):
    # SETTLE_SECONDS into a pause the window's audio is all there: it runs then, and the close (a piece or so
    # later) only decodes it, so a final waits for no forward pass. The words stay the file's (test above).
    _, samples = recording
    engine, feeds, step = Engine(model_dir, EngineOptions(device="cpu")), [], round(0.1 * RATE)

    def forward(pieces):
        feeds[-1]["ran"] += len(pieces)
        return session.run_pieces(pieces)

    session = StreamSession(engine, forward=forward)
    for i in range(0, len(samples), step):
        feeds.append({"ran": 0})
        feeds[-1]["finals"] = sum(e["type"] == "final" for e in session.feed(samples[i:i + step]))
    closing = [f for f in feeds if f["finals"]]
    assert sum(f["finals"] for f in closing) == len(CLIPS) * 2  # the recording ends in a pause too
    ran_ahead = [f for f in closing if f["ran"] == 0]
    assert len(ran_ahead) >= len(closing) // 2  # no piece boundary fell SETTLE_SECONDS to CLOSE_SECONDS into a
    # pause in the rest: those windows ran at the close


def test_the_window_run_ahead_holds_what_the_close_holds():
    samples = np.concatenate([silence(0.5), burst(1.0), silence(0.6), burst(0.6, seed=1), silence(0.6)])
    cutter = StreamWindows(RATE, 20 * RATE // 320 * 320, RATE // 320 * 320, 320)
    step, settled, closed = round(0.01 * RATE), [], []
    for i in range(0, round(2.4 * RATE), step):
        closed += cutter.feed(samples[i:i + step])
        if not closed and (piece := cutter.settled_piece()) is not None:
            settled.append(((i + step) / RATE, piece))
    when, first = settled[0]
    assert when == pytest.approx(1.5 + SETTLE_SECONDS, abs=0.011)
    assert first.start == closed[0].start and np.array_equal(first.audio, closed[0].audio)
    assert all(p.start == first.start and len(p.audio) == len(first.audio) for _, p in settled)


def burst(seconds: float, level: float = 0.1, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(round(seconds * RATE)) * level).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), np.float32)


def windows_of(samples: np.ndarray, piece_seconds: float = 0.1, chunk_seconds: float = 20.0) -> list:
    cutter = StreamWindows(RATE, round(chunk_seconds * RATE) // 320 * 320, RATE // 320 * 320, 320)
    step, closes = round(piece_seconds * RATE), []
    for i in range(0, len(samples), step):
        closes += [(p, (i + step) / RATE) for p in cutter.feed(samples[i:i + step])]
    return closes, cutter.finish(0)


def test_a_pause_closes_its_window_close_seconds_in_and_the_speech_stays_whole():
    samples = np.concatenate([silence(0.5), burst(1.0), silence(0.8), burst(0.6, seed=1), silence(0.6)])
    closes, last = windows_of(samples)
    (piece, when), (second, second_when) = closes  # the stream's trailing pause closed the second utterance
    assert second_when == pytest.approx(2.9 + CLOSE_SECONDS, abs=0.1 + 1e-9)
    assert second.window.start == round(1.9 * RATE)  # the pause's middle, where the file's window starts
    assert when == pytest.approx(0.5 + 1.0 + CLOSE_SECONDS, abs=0.1 + 1e-9)  # ended within a piece of the close
    assert piece.start == round((0.5 - LEAD_SECONDS) * RATE)  # the leading pause trimmed, LEAD_SECONDS kept
    assert piece.start + len(piece.audio) == round((1.5 + TRAILING_QUIET_SECONDS) * RATE)
    assert last == []  # after the last close the stream held only quiet
    _, tail = windows_of(samples[:round(3.0 * RATE)])  # cut 0.1 s after the second utterance: no pause to close it
    assert len(tail) == 1 and tail[0].window.last and tail[0].start == round((2.3 - LEAD_SECONDS) * RATE)


def test_the_shortest_pause_closes_the_window_before_speech_resumes():
    # A pause of PAUSE_SECONDS and a little more, as a file is cut at: the final comes while the pause lasts, not
    # when the next utterance starts (a close at 0.3 s waited for it).
    samples = np.concatenate([silence(0.5), burst(1.0), silence(PAUSE_SECONDS + 0.03), burst(0.6, seed=1),
                              silence(0.6)])
    closes, _ = windows_of(samples, piece_seconds=0.01)
    piece, when = closes[0]
    assert when <= 1.5 + PAUSE_SECONDS + 0.01 + 1e-9  # within a 10 ms piece of the pause reaching PAUSE_SECONDS
    assert piece.start + len(piece.audio) == round((1.5 + TRAILING_QUIET_SECONDS) * RATE)


def test_a_fading_end_holds_the_close_until_its_kept_quiet_has_arrived():
    # After the burst, 0.2 s of a fading sound: quiet by its energy (the pause starts at 1.5 s), but with samples
    # above TRIM_LEVEL until 1.7 s, so the window keeps quiet until 1.85 s, past the usual close at 1.75 s. The
    # close waits for it and the window holds all of it, as the file's window (cut amid the pause) does.
    fade = (np.random.default_rng(2).standard_normal(round(0.2 * RATE)) * 5e-5).astype(np.float32)
    samples = np.concatenate([silence(0.5), burst(1.0), fade, silence(0.6), burst(0.6, seed=1), silence(0.6)])
    closes, _ = windows_of(samples, piece_seconds=0.01)
    piece, when = closes[0]
    last_sound = int(np.flatnonzero(np.abs(samples[:round(2.0 * RATE)]) > TRIM_LEVEL)[-1])
    assert last_sound > round((1.5 + CLOSE_SECONDS - TRAILING_QUIET_SECONDS) * RATE)  # past the usual close's reach
    assert piece.start + len(piece.audio) == last_sound + 1 + round(TRAILING_QUIET_SECONDS * RATE)
    assert when == pytest.approx((last_sound + 1) / RATE + TRAILING_QUIET_SECONDS, abs=0.021)


def test_a_stream_that_starts_in_noise_trims_it_from_its_first_window_as_a_file_does(tmp_path):
    # A steady noise (-60 dBFS) under everything: until speech sets a loud level, the stream cannot tell its first
    # frames from quiet; once it can, the leading pause is trimmed, and the first window starts LEAD_SECONDS before
    # the speech, where the file's does (not at the stream's first sample).
    samples = np.concatenate([silence(0.8), burst(1.0), silence(0.8), burst(0.6, seed=1), silence(0.6)])
    samples = samples + np.random.default_rng(3).normal(0, 1e-3, len(samples)).astype(np.float32)
    closes, _ = windows_of(samples)
    first = closes[0][0]
    assert first.start == pytest.approx((0.8 - LEAD_SECONDS) * RATE, abs=0.01 * RATE)
    path = str(tmp_path / "noisy.wav")
    sf.write(path, samples, RATE, subtype="FLOAT")
    window = plan_windows(0, len(samples), len(samples) // 320, find_pauses(*frame_energy(path, RATE)), 2 * RATE,
                          RATE // 4, 320, RATE)[0]  # a file longer than a chunk: cut into windows
    _, start, _ = read_window(path, window, RATE, RATE)
    assert abs(first.start - start) <= 0.01 * RATE


def test_speech_without_pauses_is_cut_at_the_chunk_with_context():
    closes, last = windows_of(burst(7.0), chunk_seconds=3.0)
    cuts = [p.window for p, _ in closes]
    assert [w.keep_end for w in cuts] == [150, 300]  # 3 s = 150 frames of 20 ms, cut as a file is
    assert [w.start for w in cuts] == [0, 3 * RATE - RATE] and last[0].window.keep_start == 300


def test_a_file_is_cut_at_every_pause_but_the_one_it_ends_in():
    samples = np.concatenate([burst(1.0), silence(0.5), burst(1.0), silence(0.5), burst(1.0), silence(0.5)])
    rms = np.sqrt(np.mean(samples.reshape(-1, round(ENERGY_FRAME_SECONDS * RATE)) ** 2, axis=1))
    pauses = find_pauses(rms, rms)
    assert len(pauses) == 3
    windows = plan_windows(0, len(samples), len(samples) // 320, pauses, 20 * RATE, 0, 320, RATE)
    assert len(windows) == 1  # no longer than a chunk: the file is one window
    windows = plan_windows(0, len(samples), len(samples) // 320, pauses, 4 * RATE, 0, 320, RATE)
    assert [w.end for w in windows] == [round(1.25 * RATE), round(2.75 * RATE), len(samples)]
    assert windows[-1].quiet_after >= 0  # the pause it ends in is trimmed, not cut in
