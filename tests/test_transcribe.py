"""transcribe.py on real clips with a tiny random-weight fine-tuned model."""

import csv
import importlib.util
import logging
import os
import shutil
import subprocess
import sys

import pytest
from conftest import DATA_DIR, ROOT, make_finetuned, read_json, with_flat_lm
from conftest import transcribe as reference_transcripts  # one clip at a time, no padding anywhere
from tiny_models import make_checkpoint

import transcribe
from ctc_finetune.engine import LM_PACKAGES

CLI = os.path.join(ROOT, "transcribe.py")
TEST_DIR = os.path.join(DATA_DIR, "test")
ONE_FILE = os.path.join(DATA_DIR, "train", "train-00000.mp3")
MANIFEST = os.path.join(DATA_DIR, "validation", "metadata.csv")  # file_name column, paths relative to it
LM_INSTALLED = all(importlib.util.find_spec(name) for name in LM_PACKAGES)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_finetuned(tmp_path_factory.mktemp("finetuned"))


def expected_paths():
    """What a directory + a file + a manifest expand to, in input order."""
    with open(MANIFEST, encoding="utf-8") as f:
        from_manifest = [os.path.join(DATA_DIR, "validation", row["file_name"]) for row in csv.DictReader(f)]
    from_dir = [os.path.join(TEST_DIR, name) for name in sorted(os.listdir(TEST_DIR)) if name.endswith(".flac")]
    return from_dir + [ONE_FILE] + from_manifest


def run_cli(*args):
    return subprocess.run([sys.executable, CLI, *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def run_main(*args):
    return transcribe.main(list(map(str, args)))


def test_transcripts_match_clip_by_clip_decoding_in_input_order(model_dir):
    # 5 s batches hold two or three clips of different lengths (1.1 to 2.1 s), so there is padding: it must change
    # nothing.
    proc = run_cli(model_dir, TEST_DIR, ONE_FILE, MANIFEST, "--batch_seconds", 5)
    assert proc.returncode == 0, proc.stderr
    paths = expected_paths()
    assert proc.stdout.splitlines() == [f"{p}\t{t}" for p, t in zip(paths, reference_transcripts(model_dir, paths))]
    assert "Traceback" not in proc.stderr
    summary = proc.stderr.strip().splitlines()[-1]
    assert "Transcribed 9 clips" in summary and "real-time factor" in summary and "0 skipped" in summary


def test_one_batch_and_csv_output(tmp_path, model_dir):
    out = tmp_path / "transcripts.csv"
    rows = run_main(model_dir, TEST_DIR, ONE_FILE, MANIFEST, "--batch_seconds", 1000, "--output", out)
    with open(out, newline="", encoding="utf-8") as f:
        written = list(csv.DictReader(f))
    paths = expected_paths()
    assert [(r["path"], r["transcript"]) for r in written] == rows
    assert rows == list(zip(paths, reference_transcripts(model_dir, paths)))


def test_group_norm_model_runs_each_clip_alone(tmp_path, model_dir, caplog):
    # Without an attention mask (wav2vec2-base) padding changes the output, so batches hold one clip each.
    group_norm = tmp_path / "group_norm"
    shutil.copytree(model_dir, group_norm)
    make_checkpoint(str(group_norm), "wav2vec2", ctc_vocab_size=len(read_json(group_norm / "vocab.json")), norm="group")
    caplog.set_level(logging.INFO, logger="transcribe")
    rows = run_main(group_norm, TEST_DIR, "--batch_seconds", 1000)
    paths = expected_paths()[:4]
    assert rows == list(zip(paths, reference_transcripts(str(group_norm), paths)))
    assert any("each clip runs alone" in r.getMessage() for r in caplog.records)


def test_unreadable_file_is_skipped_with_a_warning(tmp_path, model_dir, caplog):
    clips = tmp_path / "clips"
    shutil.copytree(TEST_DIR, clips)
    (clips / "broken.wav").write_bytes(b"not audio at all")
    caplog.set_level(logging.INFO, logger="transcribe")
    rows = run_main(model_dir, clips)
    assert [os.path.basename(p) for p, _ in rows] == sorted(n for n in os.listdir(TEST_DIR) if n.endswith(".flac"))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "broken.wav" in warnings[0] and "unreadable audio" in warnings[0]
    assert "1 skipped" in caplog.records[-1].getMessage()


def test_missing_model_dir_is_one_error_line(tmp_path):
    proc = run_cli(tmp_path / "no_such_model", TEST_DIR)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and "no_such_model" in proc.stderr


def user_error(argv, capsys, monkeypatch) -> str:
    """Run the command line in process; return its single stderr line after checking the exit code is 2."""
    monkeypatch.setattr(sys, "argv", ["transcribe.py", *map(str, argv)])
    with pytest.raises(SystemExit) as exit_info:
        transcribe.cli()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_no_audio_and_all_unreadable_are_errors(tmp_path, model_dir, capsys, monkeypatch):
    (tmp_path / "empty").mkdir()
    assert "no audio found" in user_error([model_dir, tmp_path / "empty"], capsys, monkeypatch)
    assert "does not exist" in user_error([model_dir, tmp_path / "typo.wav"], capsys, monkeypatch)
    (tmp_path / "broken.flac").write_bytes(b"not audio")
    err = user_error([model_dir, tmp_path / "broken.flac"], capsys, monkeypatch)
    assert "none of the 1 audio files could be transcribed" in err
    (tmp_path / "manifest.csv").write_text("sentence\nhello\n")
    assert "no audio column" in user_error([model_dir, tmp_path / "manifest.csv"], capsys, monkeypatch)
    err = user_error([model_dir, ONE_FILE, "--output", tmp_path / "no" / "out.srt"], capsys, monkeypatch)
    assert f"mkdir -p {tmp_path / 'no'}" in err  # the missing folder named, not just "its directory"


def test_lm_without_a_saved_lm_says_so(model_dir, capsys, monkeypatch):
    err = user_error([model_dir, ONE_FILE, "--lm"], capsys, monkeypatch)
    assert "no n-gram language model" in err and "drop --lm" in err


def test_lm_without_pyctcdecode_says_how_to_install(tmp_path, model_dir, capsys, monkeypatch):
    real = importlib.util.find_spec  # pretend the optional package is missing, whether it is installed or not
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyctcdecode" else real(name, *a))
    with_lm = tmp_path / "with_lm"
    shutil.copytree(model_dir, with_lm)
    (with_lm / "language_model").mkdir()
    (with_lm / "alphabet.json").write_text("{}")
    err = user_error([with_lm, ONE_FILE, "--lm"], capsys, monkeypatch)
    assert "--lm needs pyctcdecode" in err and "install them with `bash tools/install_extras.sh lm`" in err


@pytest.mark.skipif(not LM_INSTALLED, reason="--lm decoding needs pyctcdecode, pygtrie and kenlm (optional)")
def test_lm_decoding_does_not_depend_on_batching(tmp_path, model_dir):
    with_lm = with_flat_lm(model_dir, tmp_path / "with_lm")
    args = [with_lm, TEST_DIR, ONE_FILE, "--lm", "--beam_width", 8]
    alone = run_main(*args, "--batch_seconds", 0.1)  # one clip per batch: no padding at all
    assert [p for p, _ in alone] == expected_paths()[:5] and any(t for _, t in alone)  # the LM's words come out
    assert run_main(*args, "--batch_seconds", 1000) == alone
    # The words come from the beam search's word offsets: its text, word by word, with times in order.
    run_main(*args, "--batch_seconds", 0.1, "--output", tmp_path / "words.json")
    records = read_json(tmp_path / "words.json")
    assert [(r["path"], r["text"]) for r in records] == alone
    for record in records:
        assert " ".join(w["word"] for w in record["words"]) == record["text"]
        starts = [w["start"] for w in record["words"]]
        assert starts == sorted(starts) and all(w["end"] <= record["duration"] + 0.05 for w in record["words"])
