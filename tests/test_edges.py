"""ctc_finetune/edges.py: --trim_silence cuts every clip to its speech with the same margins, in training,
evaluation and transcription alike."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
from conftest import DATA_DIR, base_args, make_finetuned, read_csv, read_json

import run_speech_recognition_ctc as ctc
from ctc_finetune.audio import load_audio
from ctc_finetune.edges import (EDGE_FRAME_SECONDS, EDGE_LEAD_SECONDS, EDGE_TAIL_SECONDS, TRIM_ATTRIBUTE, speech_span,
                                trim_to_speech)
from ctc_finetune.engine import Engine, EngineOptions

RATE = 16000
CLIP = os.path.join(DATA_DIR, "test", "test-00005.flac")


def quiet_around(audio: np.ndarray, before: float, after: float, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """The clip with `before` and `after` seconds of quiet around it (digital silence, or white noise of RMS
    `noise` under the whole of it)."""
    out = np.concatenate([np.zeros(round(before * RATE)), audio, np.zeros(round(after * RATE))])
    return (out + noise * np.random.default_rng(seed).standard_normal(len(out))).astype(np.float32)


def as_16_bit(audio: np.ndarray) -> np.ndarray:
    return (np.round(audio * 32767) / 32767).astype(np.float32)


def test_a_clip_is_cut_to_its_speech_however_much_quiet_it_came_with():
    clip = load_audio(CLIP, RATE)
    trimmed, start = trim_to_speech(clip, RATE)
    for before, after in ((0.0, 0.0), (0.5, 0.0), (0.0, 0.7), (1.3, 0.4)):
        again, at = trim_to_speech(quiet_around(clip, before, after), RATE)
        # The same samples, wherever they sat (the frames' grid moves with the quiet: within a frame)
        assert at - round(before * RATE) == pytest.approx(start, abs=round(EDGE_FRAME_SECONDS * RATE))
        assert len(again) == pytest.approx(len(trimmed), abs=2 * round(EDGE_FRAME_SECONDS * RATE))
    begin, end = speech_span(clip, RATE)
    assert len(trimmed) == end - begin + round((EDGE_LEAD_SECONDS + EDGE_TAIL_SECONDS) * RATE)
    assert 0 <= begin < 0.2 * RATE and np.abs(trimmed[-round(EDGE_TAIL_SECONDS * RATE) + 160:]).max() < 0.01


def test_16_bit_and_a_noise_floor_give_the_same_edges_as_the_float_clip():
    clip = quiet_around(load_audio(CLIP, RATE), 0.4, 0.4)
    clean = speech_span(clip, RATE)
    frame = round(EDGE_FRAME_SECONDS * RATE)
    for version in (as_16_bit(clip), quiet_around(clip, 0, 0, noise=10 ** (-60 / 20))):
        span = speech_span(version, RATE)
        assert abs(span[0] - clean[0]) <= frame and abs(span[1] - clean[1]) <= frame


def test_silence_and_a_clip_shorter_than_a_frame_stay_whole():
    assert speech_span(np.zeros(RATE, np.float32), RATE) == (0, RATE)
    assert speech_span(np.ones(50, np.float32), RATE) == (0, 50)
    short, start = trim_to_speech(np.ones(50, np.float32), RATE)
    lead, tail = round(EDGE_LEAD_SECONDS * RATE), round(EDGE_TAIL_SECONDS * RATE)
    assert start == -lead and len(short) == lead + 50 + tail and not short[:lead].any()  # made up with silence


def corpus_with_quiet(src: str, dst: str, before: float, after: float) -> str:
    """A copy of the fixture corpus whose test clips have quiet around them, as float WAV files (train and validation
    as they are)."""
    shutil.copytree(src, dst)
    test = os.path.join(dst, "test")
    with open(os.path.join(test, "metadata.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        path = os.path.join(test, row["file_name"])
        row["file_name"] = os.path.splitext(row["file_name"])[0] + ".wav"
        sf.write(os.path.join(test, row["file_name"]), quiet_around(load_audio(path, RATE), before, after), RATE,
                 subtype="FLOAT")
        os.remove(path)
    with open(os.path.join(test, "metadata.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return dst


def saved_trim(out) -> bool:
    """Whether the model saved in `out` cuts its clips to their speech (its processor's feature extractor says)."""
    return read_json(out / "processor_config.json")["feature_extractor"].get(TRIM_ATTRIBUTE, False)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    return make_finetuned(tmp_path_factory.mktemp("finetuned"))


@pytest.mark.parametrize("trim", [True, False])
def test_trim_silence_evaluates_clips_with_quiet_around_them_as_the_clips(tmp_path, finetuned, trim):
    padded = corpus_with_quiet(DATA_DIR, str(tmp_path / "quiet_corpus"), 0.6, 0.9)
    flags = {"do_train": None, "trim_silence": trim or None}
    results = {name: ctc.main(base_args(finetuned, data, str(tmp_path / name), **flags))
               for name, data in (("as_is", DATA_DIR), ("padded", padded))}
    rows = {name: sorted((os.path.splitext(os.path.basename(r["clip_id"]))[0], r["hypothesis"])
                         for r in read_csv(tmp_path / name / "eval_predictions.csv")) for name in results}
    same = rows["as_is"] == rows["padded"] and results["as_is"]["eval_loss"] == pytest.approx(
        results["padded"]["eval_loss"], rel=1e-3)
    assert same == trim  # without the flag the quiet changes what the model hears
    assert saved_trim(tmp_path / "padded") == trim


def test_trim_silence_trains_and_the_model_keeps_it_for_transcription(tmp_path, encoder_dir):
    out = tmp_path / "out"
    ctc.main(base_args(encoder_dir, DATA_DIR, str(out), trim_silence=True, max_steps=2))
    assert saved_trim(out) is True
    # Fine-tuned again without the flag, the model keeps cutting its clips as it was trained
    again = tmp_path / "again"
    ctc.main(base_args(str(out), DATA_DIR, str(again), max_steps=1))
    assert saved_trim(again) is True


def trimming_copy(model_dir: str, path) -> str:
    """A copy of a model that was trained with --trim_silence, as its saved feature extractor says."""
    shutil.copytree(model_dir, path)
    config = os.path.join(path, "preprocessor_config.json")
    with open(config, encoding="utf-8") as f:
        settings = json.load(f)
    with open(config, "w", encoding="utf-8") as f:
        json.dump({**settings, TRIM_ATTRIBUTE: True}, f)
    return str(path)


def test_a_trimming_model_transcribes_a_file_with_quiet_before_it_as_the_clip_later(tmp_path, finetuned):
    trimming = trimming_copy(finetuned, tmp_path / "trimming")
    clip = quiet_around(load_audio(CLIP, RATE), 0.1, 0)  # more quiet than the model keeps: no silence made up
    lead = 0.52  # 26 frames of 20 ms: the same frames, 0.52 s later
    for model, same in ((trimming, True), (finetuned, False)):
        engine = Engine(model, EngineOptions(device="cpu"))
        plain, later = (engine.transcribe(a, RATE) for a in (clip, quiet_around(clip, lead, 0.3)))
        shifted = [{**w, "start": pytest.approx(w["start"] - lead, abs=1e-6),
                    "end": pytest.approx(w["end"] - lead, abs=1e-6)} for w in later.words]
        assert (plain.text == later.text and plain.words == shifted) == same


def test_a_clip_that_starts_right_at_its_speech_keeps_the_frames_over_the_silence_made_up_before_it(tmp_path,
                                                                                                      finetuned):
    trimming = trimming_copy(finetuned, tmp_path / "trimming")
    audio = load_audio(CLIP, RATE)
    begin, _ = speech_span(audio, RATE)
    clip = quiet_around(audio[begin:], 0, 0.5)  # speech from its first sample: the model's 0.05 s are made up
    engine = Engine(trimming, EngineOptions(device="cpu"))
    plain, later = (engine.transcribe(a, RATE) for a in (clip, quiet_around(clip, 0.52, 0)))
    # The same frames (those over the made-up silence too, where a model puts a first letter), numbered from 0
    assert plain.text == later.text and len(plain.words) == len(later.words)
    for word, moved in zip(plain.words, later.words):
        assert moved["start"] - word["start"] == pytest.approx(0.52 - EDGE_LEAD_SECONDS, abs=0.03)


def test_a_trimming_model_streams_a_recording_as_it_transcribes_the_file(tmp_path, finetuned):
    # Windows cut at pauses are trimmed at their edges in a pause as the model's clips were, the stream's as the file's
    from ctc_finetune.streaming import StreamSession

    clips = [os.path.join(DATA_DIR, split, name) for split in ("test", "validation")
             for name in sorted(os.listdir(os.path.join(DATA_DIR, split))) if name.endswith(".flac")]
    parts = []  # 37 s: longer than one window, so the file is cut at its pauses too
    for path, pause in zip(clips * 2, [0.4, 0.7, 0.5, 0.9, 0.6, 0.45, 0.8, 0.55] * 2):
        parts += [np.zeros(round(pause * RATE), np.float32), load_audio(path, RATE)]
    path = str(tmp_path / "recording.wav")
    sf.write(path, np.concatenate(parts + [np.zeros(RATE // 2, np.float32)]), RATE, subtype="PCM_16")
    samples = sf.read(path, dtype="float32")[0]
    engine = Engine(trimming_copy(finetuned, tmp_path / "trimming"), EngineOptions(device="cpu"))
    session, events, step = StreamSession(engine), [], RATE // 10
    for i in range(0, len(samples), step):
        events += session.feed(samples[i:i + step])
    finals = [e for e in events + session.finish() if e["type"] == "final"]
    assert len(finals) == len(clips) * 2
    assert [w for e in finals for w in e["words"]] == engine.transcribe(path).words
