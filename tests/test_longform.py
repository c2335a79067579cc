"""Recordings of any length (transcribe.py): windows cut in pauses or with context, word times and confidence,
subtitles, hotwords, and the skips of bad files; on real audio joined into recordings."""

import csv
import importlib.util
import json
import os

import numpy as np
import pytest
import soundfile as sf
from conftest import DATA_DIR, ROOT, make_finetuned
from tiny_models import NEW_FAMILIES, make_checkpoint, torchaudio_problem

import transcribe
from ctc_finetune.audio import load_audio
from ctc_finetune.longform import (LEAD_SECONDS, TRAILING_QUIET_SECONDS, TRIM_LEVEL, Window, find_pauses, frame_energy,
                                   plan_windows, read_window)
from ctc_finetune.subtitles import MAX_CUE_SECONDS, MAX_LINE_CHARS, cues, wrap
from ctc_finetune.words import greedy_words, pause_cut, token_runs

RATE = 16_000
CLIPS = [os.path.join(DATA_DIR, split, name) for split in ("test", "validation")
         for name in sorted(os.listdir(os.path.join(DATA_DIR, split))) if name.endswith(".flac")]
PAUSES = [0.4, 0.7, 0.5, 0.9, 0.6, 0.45, 0.8, 0.55]  # seconds of digital silence before each clip
SHORT_WINDOWS = ["--chunk_seconds", "3", "--context_seconds", "1"]  # a few seconds of audio make several windows
HOTWORD_READY = all(importlib.util.find_spec(p) for p in ("pyctcdecode", "pygtrie"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_finetuned(tmp_path_factory.mktemp("finetuned"))


@pytest.fixture(scope="module")
def joined(tmp_path_factory):
    """The fixture clips as speech a window holds (from the first to the last sound, with the quiet a window keeps
    before and after it), each written alone, and all of them joined with pauses into one recording: their paths,
    and where each clip starts in the recording (seconds)."""
    folder = tmp_path_factory.mktemp("joined")
    parts, starts, clips = [], [], []
    leading = np.zeros(round(LEAD_SECONDS * RATE), np.float32)
    trailing = np.zeros(round(TRAILING_QUIET_SECONDS * RATE), np.float32)
    for i, (path, pause) in enumerate(zip(CLIPS, PAUSES)):
        audio = load_audio(path, RATE)
        loud = np.flatnonzero(np.abs(audio) > TRIM_LEVEL)
        clip = np.concatenate([leading, audio[loud[0]:loud[-1] + 1], trailing])
        clips.append(str(folder / f"clip-{i}.wav"))
        sf.write(clips[-1], clip, RATE, subtype="FLOAT")
        parts.append(np.zeros(round(pause * RATE) - len(leading), np.float32))
        starts.append(sum(len(p) for p in parts) / RATE)
        parts.append(clip)
    parts.append(np.zeros(RATE // 2, np.float32))
    recording = str(folder / "recording.wav")
    sf.write(recording, np.concatenate(parts), RATE, subtype="FLOAT")
    return clips, recording, starts


def words_of(model_dir, audio: list[str], tmp_path, *flags) -> list[dict]:
    out = tmp_path / "words.json"
    transcribe.main([model_dir, *audio, "--output", str(out), *flags])
    return json.loads(out.read_text())


def test_a_joined_recording_gives_the_words_of_its_clips_at_their_times(model_dir, joined, tmp_path):
    # One window per forward pass in both runs: a random model's near-tied scores would let padding flip a frame.
    clips, recording, starts = joined
    alone = words_of(model_dir, clips, tmp_path, "--batch_seconds", "0.1")
    (whole,) = words_of(model_dir, [recording], tmp_path, *SHORT_WINDOWS, "--batch_seconds", "0.1")
    assert whole["duration"] == pytest.approx(sf.info(recording).duration, abs=1e-3)
    expected = [w for record in alone for w in record["words"]]
    assert len(expected) >= len(clips) and [w["word"] for w in whole["words"]] == [w["word"] for w in expected]
    assert whole["text"] == " ".join(r["text"] for r in alone)
    # Each word where it is in its clip, moved by where the clip starts (within a frame, 20 ms).
    shifted = [(w["start"] + s, w["end"] + s) for record, s in zip(alone, starts) for w in record["words"]]
    got = [(w["start"], w["end"]) for w in whole["words"]]
    np.testing.assert_allclose(got, shifted, atol=0.021)
    assert [w["confidence"] for w in whole["words"]] == pytest.approx([w["confidence"] for w in expected], abs=1e-3)
    assert all(0 < w["confidence"] <= 1 and w["start"] < w["end"] for w in whole["words"])


def window_edges(path: str) -> np.ndarray:
    """Where each window of a recording starts and ends as read_window reads it (samples), 3 s chunks."""
    samples = sf.info(path).frames
    windows = plan_windows(0, samples, samples // 320, find_pauses(*frame_energy(path, RATE)), chunk=3 * RATE,
                           context=RATE, hop=320, rate=RATE)
    edges = []
    for window in windows:
        audio, start, _ = read_window(path, window, RATE, RATE)
        edges.append((start, start + len(audio)))
    return np.array(edges)


def demo_recording() -> np.ndarray:
    """Eight MP3 clips of the demo corpus (decoded: each starts and ends in a quiet ramp) joined with PAUSES of
    digital silence."""
    demo_test = os.path.join(ROOT, "examples", "demo_corpus", "test")
    parts = []
    for name, pause in zip(sorted(n for n in os.listdir(demo_test) if n.endswith(".mp3"))[:8], PAUSES):
        parts += [np.zeros(round(pause * RATE), np.float32), load_audio(os.path.join(demo_test, name), RATE)]
    return np.concatenate([*parts, np.zeros(RATE // 2, np.float32)])


def test_a_16_bit_recording_and_its_float_original_give_the_same_windows(tmp_path, monkeypatch):
    # Eight MP3 clips of the demo corpus (decoded, each starts and ends in a quiet ramp, much of which rounds to
    # silence in 16 bits) joined with pauses, written once as float and once as 16-bit WAV: the windows start and
    # end within a frame (20 ms) of each other.
    audio = demo_recording()
    for subtype in ("FLOAT", "PCM_16"):
        sf.write(str(tmp_path / f"{subtype}.wav"), audio, RATE, subtype=subtype)
    edges = {subtype: window_edges(str(tmp_path / f"{subtype}.wav")) for subtype in ("FLOAT", "PCM_16")}
    assert len(edges["FLOAT"]) == len(edges["PCM_16"]) >= 8
    assert np.abs(edges["FLOAT"] - edges["PCM_16"]).max() <= 320
    # Each window keeps LEAD_SECONDS of quiet before its first sound
    assert all(np.abs(audio[start:start + round(LEAD_SECONDS * RATE) - 1]).max() <= TRIM_LEVEL
               for start, _ in edges["FLOAT"][1:])
    # Trimmed at the first sample above the pause's floor (0 here), as before, the two differed
    monkeypatch.setattr("ctc_finetune.longform.TRIM_LEVEL", 0.0)
    monkeypatch.setattr("ctc_finetune.longform.LEAD_SECONDS", 0.0)
    old = {subtype: window_edges(str(tmp_path / f"{subtype}.wav")) for subtype in ("FLOAT", "PCM_16")}
    assert np.abs(old["FLOAT"] - old["PCM_16"]).max() > 320


def test_a_recording_under_a_steady_noise_is_cut_at_its_speech_as_in_silence(tmp_path, monkeypatch):
    # Demo clips joined with pauses, then a noise at -60 dBFS under all of it (a quiet room): the pauses are noise.
    # The windows start where the clean recording's do (within 30 ms), at the speech, not amid the pause; they end a
    # little earlier, where a word's fading end sinks under the noise.
    audio = demo_recording()
    noisy = audio + np.random.default_rng(0).normal(0, 1e-3, len(audio)).astype(np.float32)
    sf.write(str(tmp_path / "clean.wav"), audio, RATE, subtype="PCM_16")
    sf.write(str(tmp_path / "noisy.wav"), noisy, RATE, subtype="PCM_16")
    clean, edges = window_edges(str(tmp_path / "clean.wav")), window_edges(str(tmp_path / "noisy.wav"))
    assert len(clean) == len(edges) >= 8
    assert np.abs(clean[1:, 0] - edges[1:, 0]).max() <= 0.03 * RATE
    assert np.all(clean[:, 1] - edges[:, 1] <= 0.2 * RATE) and np.all(edges[:, 1] <= clean[:, 1] + 0.03 * RATE)
    monkeypatch.setattr("ctc_finetune.longform.SOUND_OVER_FLOOR", 1.0)  # trimmed at the pause's floor, as before:
    old = window_edges(str(tmp_path / "noisy.wav"))  # the noise kept, up to the pause's middle
    assert np.abs(clean[1:, 0] - old[1:, 0]).max() > 0.1 * RATE


@pytest.mark.parametrize("arch", ["wav2vec2", *[
    pytest.param(a, marks=pytest.mark.skipif(torchaudio_problem() is not None, reason=str(torchaudio_problem())))
    if a == "granite_speech5_ctc" else a for a in NEW_FAMILIES]])
def test_speech_without_pauses_is_cut_with_context_and_no_frame_lost(tmp_path, arch):
    # The clips back to back under steady noise: few pauses to cut in, so most windows end at the chunk's length and
    # overlap by their context. The kept frames tile the file: the words come out in time order and the file's
    # frames are as many as in one window of it (none lost, none doubled).
    speech = np.concatenate([load_audio(path, RATE) for path in CLIPS])
    noisy = str(tmp_path / "noisy.wav")
    sf.write(noisy, speech + np.random.default_rng(0).normal(0, 0.01, len(speech)).astype(np.float32), RATE)
    # Every family as released (feature frames or samples, 20 to 80 ms frames); the wav2vec2-era ones and
    # Wav2Vec2-BERT ship without a CTC head, so they get a character one.
    model = (make_finetuned(tmp_path / arch, arch) if arch in ("wav2vec2", "wav2vec2-bert")
             else make_checkpoint(str(tmp_path / arch), arch))
    (record,) = words_of(model, [noisy], tmp_path, *SHORT_WINDOWS)
    (whole,) = words_of(model, [noisy], tmp_path, "--chunk_seconds", "1000")  # one window
    starts = [w["start"] for w in record["words"]]
    assert record["words"] and starts == sorted(starts)
    assert record["words"][-1]["end"] <= whole["words"][-1]["end"] + 0.1  # no frame added or doubled
    assert record["duration"] == pytest.approx(len(speech) / RATE, abs=1e-3)


def test_plan_windows_tiles_the_frames_of_a_file_without_pauses():
    hop, rate = 320, RATE
    samples = 10 * rate + 123
    total = samples // hop
    windows = plan_windows(0, samples, total, [], chunk=3 * rate, context=rate, hop=hop, rate=rate)
    assert [w.keep_start for w in windows] == [0] + [w.keep_end for w in windows[:-1]]  # contiguous, no gap
    assert windows[-1].keep_end == total and windows[-1].last and not any(w.last for w in windows[:-1])
    assert all(w.end - w.start <= 5 * rate for w in windows)  # chunk + context on both sides at most
    short = plan_windows(1, 2 * rate, 100, [], chunk=3 * rate, context=rate, hop=hop, rate=rate)
    assert short == [Window(1, 0, 2 * rate, 0, 100, whole=True, last=True)]
    # A pause inside the chunk: the window ends amid it and the next starts there, each trimming its quiet.
    paused = plan_windows(0, samples, total, [(2.0, 2.6, 0.0)], chunk=3 * rate, context=rate, hop=hop, rate=rate)
    assert paused[0].end == paused[1].start == round(2.3 * rate) and paused[0].quiet_after == 0.0
    assert paused[1].keep_start is None and paused[1].quiet_before == 0.0


def test_greedy_words_times_and_confidence(tmp_path):
    from transformers import Wav2Vec2CTCTokenizer

    (tmp_path / "vocab.json").write_text(json.dumps({"|": 0, "a": 1, "b": 2, "c": 3, "[UNK]": 4, "[PAD]": 5}))
    tokenizer = Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"))
    #               a  a  _  b  |  _  c  c  c  _
    ids = np.array([1, 1, 5, 2, 0, 5, 3, 3, 3, 5])
    probs = np.array([0.9, 0.7, 1, 0.8, 1, 1, 0.6, 0.6, 0.6, 1])
    assert token_runs(ids, 5) == [(1, 0, 1), (2, 3, 3), (0, 4, 4), (3, 6, 8)]
    words = greedy_words(ids, probs, tokenizer, blank=5, seconds_per_frame=0.02)
    assert [w["word"] for w in words] == ["ab", "c"]
    assert (words[0]["start"], words[0]["end"]) == (0.0, 0.08) and (words[1]["start"], words[1]["end"]) == (0.12, 0.18)
    assert words[0]["confidence"] == pytest.approx((0.9 + 0.7 + 0.8) / 3, abs=1e-3)
    assert words[1]["confidence"] == pytest.approx(0.6, abs=1e-3)
    assert pause_cut(np.array([1, 5, 5, 5, 5, 2, 5, 5, 3]), 5, 3) == 2  # amid frames 1-4
    assert pause_cut(np.array([1, 5, 2, 5, 3]), 5, 3) is None


def test_cues_split_at_pauses_length_and_duration():
    def word(text, start, end):
        return {"word": text, "start": start, "end": end, "confidence": 1.0}

    words = [word("turn", 0.0, 0.3), word("on", 0.35, 0.5), word("the", 0.55, 0.7), word("light", 0.75, 1.1),
             word("open", 2.0, 2.3)]  # a pause of 0.9 s before "open"
    assert [c["lines"] for c in cues(words)] == [["turn on the light"], ["open"]]
    many = [word(f"word{i:02d}", 0.4 * i, 0.4 * i + 0.3) for i in range(40)]  # 16 s of speech, no pause
    got = cues(many)
    assert all(c["end"] - c["start"] <= MAX_CUE_SECONDS for c in got)
    assert all(len(c["lines"]) <= 2 and all(len(line) <= MAX_LINE_CHARS for line in c["lines"]) for c in got)
    assert [w for c in got for line in c["lines"] for w in line.split()] == [w["word"] for w in many]
    assert wrap(["a" * 30, "b" * 20, "c" * 5]) == ["a" * 30, "b" * 20 + " " + "c" * 5]  # the even break
    assert wrap(["short", "cue"]) == ["short cue"]


@pytest.mark.parametrize("extension", [".srt", ".vtt"])
def test_subtitles_parse_and_their_cues_are_in_order(model_dir, joined, tmp_path, extension):
    import srt
    import webvtt

    clips, recording, _ = joined
    out = tmp_path / f"recording{extension}"
    transcribe.main([model_dir, recording, "--output", str(out), *SHORT_WINDOWS])
    if extension == ".srt":
        parsed = [(s.start.total_seconds(), s.end.total_seconds(), s.content.split("\n"))
                  for s in srt.parse(out.read_text(encoding="utf-8"))]
    else:
        seconds = lambda t: sum(float(x) * 60 ** i for i, x in enumerate(reversed(t.split(":"))))  # noqa: E731
        parsed = [(seconds(c.start), seconds(c.end), c.text.split("\n")) for c in webvtt.read(str(out))]
    assert len(parsed) >= len(clips) - 1  # a cue per clip at least (the pauses end cues), bar an empty clip
    for (start, end, lines), following in zip(parsed, parsed[1:] + [None]):
        assert start < end and len(lines) <= 2
        assert following is None or following[0] >= end  # monotonic, no overlap
    # Several inputs: --output is a folder with one subtitle file per input.
    folder = tmp_path / "subtitles"
    transcribe.main([model_dir, *clips[:3], "--output", str(folder) + extension])
    assert sorted(os.listdir(str(folder) + extension)) == [f"clip-{i}{extension}" for i in range(3)]


def test_bad_files_are_counted_skips_and_the_others_go_on(model_dir, tmp_path, caplog):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "garbage.flac").write_bytes(b"not audio at all")
    sf.write(str(tmp_path / "silent.wav"), np.zeros(2 * RATE, np.float32), RATE)
    good = CLIPS[0]
    caplog.set_level("INFO", logger="transcribe")
    out = tmp_path / "out.json"
    rows = transcribe.main([model_dir, str(tmp_path / "empty.wav"), str(tmp_path / "garbage.flac"),
                            str(tmp_path / "silent.wav"), good, "--output", str(out)])
    assert [p for p, _ in rows] == [good]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 3 and all("skipped" in w for w in warnings)
    assert any("silent.wav" in w and "silent audio" in w for w in warnings)
    summary = caplog.records[-1].getMessage()
    assert "3 skipped" in summary and "unreadable audio" in summary and "silent audio" in summary
    (record,) = json.loads(out.read_text())
    assert set(record) == {"path", "text", "duration", "words"} and record["path"] == good
    assert all(set(w) == {"word", "start", "end", "confidence"} for w in record["words"])


def test_a_recording_cut_short_is_transcribed_as_far_as_it_goes(model_dir, joined, tmp_path, caplog):
    # A FLAC whose data ends at 60% of what its header says (a copy killed midway): what it holds is transcribed,
    # with a warning; one cut right after its header (nothing decodable) is a counted skip.
    _, recording, _ = joined
    audio, _ = sf.read(recording, dtype="float32")
    cut, empty = tmp_path / "cut.flac", tmp_path / "header_only.flac"
    for path, share in ((cut, 0.6), (empty, 0.02)):
        sf.write(str(path), audio, RATE)
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.truncate(int(size * share))
    caplog.set_level("INFO", logger="transcribe")
    out = tmp_path / "out.json"
    rows = transcribe.main([model_dir, str(cut), str(empty), CLIPS[0], "--output", str(out), *SHORT_WINDOWS])
    assert [p for p, _ in rows] == [str(cut), CLIPS[0]]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("cut.flac is cut short" in w and "transcribed what it holds" in w for w in warnings)
    assert any("header_only.flac" in w and "skipped" in w for w in warnings)
    assert "1 skipped" in caplog.records[-1].getMessage()
    record = json.loads(out.read_text())[0]
    assert 0.4 * len(audio) / RATE < record["duration"] < 0.8 * len(audio) / RATE
    assert record["words"] and record["words"][-1]["end"] <= record["duration"] + 0.05


@pytest.mark.skipif(not HOTWORD_READY, reason="hotwords need pyctcdecode: bash tools/install_extras.sh lm")
def test_hotwords_pull_the_decode_towards_them(model_dir, joined, tmp_path):
    clips, _, _ = joined
    count = lambda texts, word: sum(t.split().count(word) for t in texts.values())  # noqa: E731
    greedy = dict(transcribe.main([model_dir, *clips]))
    boosted = dict(transcribe.main([model_dir, *clips, "--hotwords", "zeal", "--beam_width", "8"]))
    weak = dict(transcribe.main([model_dir, *clips, "--hotwords", "zeal", "--hotword_weight", "0.5",
                                 "--beam_width", "8"]))
    assert count(greedy, "zeal") == 0 < count(boosted, "zeal")
    assert count(weak, "zeal") <= count(boosted, "zeal")  # less weight, no more of it
    # The beam search's words carry its word offsets as times, in order.
    (record,) = words_of(model_dir, [clips[0]], tmp_path, "--hotwords", "zeal", "--beam_width", "8")
    assert record["text"] == " ".join(w["word"] for w in record["words"]) == boosted[clips[0]]
    starts = [w["start"] for w in record["words"]]
    assert starts == sorted(starts)
    assert all(w["end"] > w["start"] and 0 < w["confidence"] <= 1 for w in record["words"])
    hotwords_file = tmp_path / "hotwords.txt"
    hotwords_file.write_text("zeal\n\n")
    assert dict(transcribe.main([model_dir, *clips, "--hotwords_file", str(hotwords_file), "--beam_width", "8"])) \
        == boosted


def test_json_csv_and_tsv_outputs_agree(model_dir, joined, tmp_path):
    clips, _, _ = joined
    records = words_of(model_dir, clips, tmp_path)
    transcribe.main([model_dir, *clips, "--output", str(tmp_path / "out.csv")])
    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as f:
        rows = [(r["path"], r["transcript"]) for r in csv.DictReader(f)]
    assert rows == [(r["path"], r["text"]) for r in records]
