"""ctc_finetune/engine.py: the transcription engine transcribe.py runs, called from Python on paths and on arrays."""

import os

import numpy as np
import pytest
import soundfile as sf
import soxr
from conftest import DATA_DIR, make_finetuned

import transcribe
from ctc_finetune.audio import load_audio
from ctc_finetune.engine import Engine, EngineOptions
from ctc_finetune.faults import UserError

TEST_DIR = os.path.join(DATA_DIR, "test")
CLIPS = sorted(os.path.join(TEST_DIR, name) for name in os.listdir(TEST_DIR) if name.endswith(".flac"))


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(make_finetuned(tmp_path_factory.mktemp("finetuned")), EngineOptions(device="cpu"))


def test_the_engine_gives_what_transcribe_py_writes(engine, tmp_path):
    out = tmp_path / "words.json"
    written = transcribe.main([engine.model_dir, *CLIPS, "--output", str(out), "--device", "cpu"])
    results, skipped = engine.transcribe_many(CLIPS)
    assert not skipped and [(r.path, r.text) for r in results] == written
    assert [r.as_dict() for r in results] == transcribe_json(out)
    one = engine.transcribe(CLIPS[0])
    assert one.as_dict() == results[0].as_dict() and one.duration == pytest.approx(sf.info(CLIPS[0]).duration, 1e-3)


def transcribe_json(path):
    import json

    with open(path, encoding="utf-8") as f:
        return json.load(f)


def test_an_array_transcribes_as_its_file_does(engine):
    audio = load_audio(CLIPS[1], engine.sampling_rate)
    from_file = engine.transcribe(CLIPS[1])
    from_array = engine.transcribe(audio)
    assert from_array.path == "<array>" and from_array.text == from_file.text
    assert from_array.words == from_file.words
    # int16 samples, as a microphone or a 16-bit upload gives them, are read as their float values
    int16 = engine.transcribe(np.round(audio * 32767).astype(np.int16))
    assert int16.duration == from_file.duration and int16.words and all(
        0 <= w["start"] <= w["end"] <= int16.duration + 0.05 for w in int16.words)
    # Samples at another rate are resampled when it is given
    at_8k = load_audio(CLIPS[1], 8000)
    resampled = engine.transcribe(at_8k, sampling_rate=8000)
    assert resampled.duration == pytest.approx(from_file.duration, abs=1e-3)
    assert resampled.text == engine.transcribe(soxr.resample(at_8k, 8000, engine.sampling_rate)).text
    # Segments are the words between pauses: every word in one segment, in order
    segments = from_file.segments
    assert segments and " ".join(s["text"] for s in segments) == " ".join(w["word"] for w in from_file.words)
    assert all(a["end"] <= b["start"] for a, b in zip(segments, segments[1:]))


def test_bad_arrays_and_options_name_the_fix(engine):
    with pytest.raises(UserError, match=r"float samples \(or int16\)"):
        engine.transcribe(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(UserError, match="silent audio"):
        engine.transcribe(np.zeros(16000, np.float32))
    with pytest.raises(UserError, match="--batch_seconds must be > 0"):
        EngineOptions(batch_seconds=0)
    with pytest.raises(UserError, match="not a model directory"):
        Engine(DATA_DIR)


def test_a_model_folder_without_its_vocabulary_or_weights_names_what_to_pass(engine, tmp_path):
    import shutil

    from conftest import ROOT

    # A config folder never trained (bench/base_model: config and feature extractor, no vocab.json)
    with pytest.raises(UserError, match=r"no usable feature extractor or tokenizer files .*pass a trained model"):
        Engine(os.path.join(ROOT, "bench", "base_model"))
    # A trained model's folder without its weights
    shutil.copytree(engine.model_dir, tmp_path / "model", ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    with pytest.raises(UserError, match=r"no usable weights .*pass a trained model folder"):
        Engine(str(tmp_path / "model"))


def test_engine_options_are_transcribe_py_flags_with_their_defaults():
    import dataclasses
    import re

    from conftest import ROOT

    parser_defaults = vars(transcribe.parse_args([DATA_DIR, CLIPS[0]]))
    fields = {f.name: f.default for f in dataclasses.fields(EngineOptions)}
    assert {name: parser_defaults[name] for name in fields} == {**fields, "hotwords": []}
    with open(os.path.join(ROOT, "docs", "transcribe.md"), encoding="utf-8") as f:
        page = f.read()
    listed = re.search(r"`EngineOptions` has one field per flag.*?:(.*?)\. ", page, re.S).group(1)
    assert re.findall(r"`(\w+)`", listed) == list(fields)
