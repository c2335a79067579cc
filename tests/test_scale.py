"""Large corpora: on-the-fly setup decodes nothing; tar shards (WebDataset) train and evaluate."""

import csv
import io
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest
from conftest import DATA_DIR, ROOT, base_args, read_json, rescore
from conftest import transcribe

from ctc_finetune import preprocessing
from ctc_finetune.audio import load_audio
from ctc_finetune.faults import UserError
import run_speech_recognition_ctc as ctc

MAKE_SHARDS = os.path.join(ROOT, "tools", "make_shards.py")


def count_decodes(monkeypatch) -> list:
    """Every clip decoded from now on, in this process (the DataLoader must run without workers)."""
    calls = []
    real = load_audio
    monkeypatch.setattr(preprocessing, "load_audio", lambda *a, **k: calls.append(str(a[0])) or real(*a, **k))
    return calls


def test_on_the_fly_setup_decodes_nothing(tmp_path, encoder_dir, monkeypatch):
    # Length grouping, the data report and the logged samples read the header scan; the only clips decoded are
    # the ones the training steps and the evaluation consume.
    calls = count_decodes(monkeypatch)
    for strategy in ({"train_sampling_strategy": "group_by_length"}, {"max_batch_duration": 8}):
        calls.clear()
        out = tmp_path / next(iter(strategy))
        ctc.main(base_args(encoder_dir, DATA_DIR, str(out), preprocess_on_the_fly=True, max_steps=1,
                           per_device_train_batch_size=2, **strategy))
        train = [c for c in calls if "/train/" in c]
        assert 1 <= len(train) <= 4  # of 12: the step's batch and the one the loader fetches ahead, at most 2 clips each
        assert len(calls) - len(train) == read_json(out / "eval_results.json")["eval_samples"]


SHARD_ARGS = {"text_column_name": "text", "max_steps": 3, "per_device_train_batch_size": 2}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """The fixture corpus as tar shards, written by the converter: train 12 clips in 4 shards, test 4 in 2."""
    out = tmp_path_factory.mktemp("shards")
    proc = subprocess.run([sys.executable, MAKE_SHARDS, "--dataset_name", DATA_DIR, "--splits", "train", "test",
                           "--text_column_name", "sentence", "--clips_per_shard", "3", "--output_dir", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "train: 12 clips in 4 shards" in proc.stdout
    return str(out)


def test_shards_stream_training_and_evaluate_map_style(tmp_path, encoder_dir, shards, caplog):
    out = tmp_path / "out"
    with caplog.at_level("INFO"):
        results = ctc.main(base_args(encoder_dir, shards, str(out), **SHARD_ARGS))
    assert "Streaming [train]: 4 tar shards" in caplog.text
    assert results["train_samples"] == 6 and results["train_clips_dropped"] == 0  # 3 steps of 2 clips
    assert results["eval_samples"] == 4 and results["eval_wer"] == pytest.approx(rescore(out))
    state = read_json(out / "trainer_state.json")
    assert state["global_step"] == 3 and all(math.isfinite(e["loss"]) for e in state["log_history"] if "loss" in e)
    assert read_json(out / "data_report.json")["train"]["streamed_shards"] == 4
    with open(out / "eval_predictions.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["clip_id"].split("/")[0] for r in rows) == ["shard-000000.tar"] * 3 + ["shard-000001.tar"]
    # The saved model is the one evaluated: a test clip transcribes to one of the split's hypotheses.
    assert transcribe(str(out), [os.path.join(DATA_DIR, "test", "test-00005.flac")])[0] in {r["hypothesis"] for r in rows}


def test_a_corrupt_member_of_a_shard_is_skipped_and_counted(tmp_path, encoder_dir, shards):
    corpus = tmp_path / "corpus"
    shutil.copytree(shards, corpus)
    with tarfile.open(corpus / "train" / "shard-000004.tar", "w") as tar:  # a fifth shard: one garbage clip
        for name, data in (("bad.mp3", b"not audio at all" * 100), ("bad.txt", b"turn on the light")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    # 13 clips, one bad: 12 steps of 2 clips read the stream twice over
    results = ctc.main(base_args(encoder_dir, str(corpus), str(tmp_path / "out"), **{**SHARD_ARGS, "max_steps": 12}))
    assert results["train_clips_dropped"] >= 1  # counted each epoch it is read
    assert results["train_samples"] == 24


def test_shards_need_max_steps_and_fixed_size_batches(tmp_path, encoder_dir, shards):
    with pytest.raises(UserError, match="give --max_steps"):
        ctc.main(base_args(encoder_dir, shards, str(tmp_path / "a"), **{**SHARD_ARGS, "max_steps": None}))
    with pytest.raises(UserError, match="--max_batch_duration needs every clip's length"):
        ctc.main(base_args(encoder_dir, shards, str(tmp_path / "b"), **SHARD_ARGS, max_batch_duration=8))


def test_a_shard_without_transcripts_is_one_clear_error(tmp_path, encoder_dir):
    (tmp_path / "corpus" / "train").mkdir(parents=True)
    with tarfile.open(tmp_path / "corpus" / "train" / "a.tar", "w") as tar:
        tar.add(os.path.join(DATA_DIR, "train", "train-00000.mp3"), arcname="clip1.mp3")
    with pytest.raises(UserError, match=r"has members mp3; a shard pairs KEY\.flac\|wav"):
        ctc.main(base_args(encoder_dir, str(tmp_path / "corpus"), str(tmp_path / "out"), **SHARD_ARGS))


def test_torchrun_ranks_read_disjoint_shards(tmp_path, encoder_dir, shards):
    from test_distributed import launch

    argv = base_args(encoder_dir, shards, str(tmp_path / "out"), **SHARD_ARGS, use_cpu=True)
    proc = launch(["torchrun"], argv, 29521)
    seen = {}
    for rank in (0, 1):
        line = re.search(rf"Streamed \[train\] process {rank}/2: 6 clips trained on from shards (.*); dropped: none",
                         proc.stdout)
        assert line, proc.stdout[-3000:]
        seen[rank] = set(line.group(1).split(", "))
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == {f"shard-{i:06d}.tar" for i in range(4)}
    assert read_json(tmp_path / "out" / "all_results.json")["eval_samples"] == 4
