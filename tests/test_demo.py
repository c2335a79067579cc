"""The README's first command, shortened: the demo configuration trains, evaluates, summarises and fine-tunes on."""

import csv
import json
import os

import pytest

from conftest import DATA_DIR, ROOT, base_args, read_json, rescore

import run_speech_recognition_ctc as ctc

DEMO = os.path.join(ROOT, "examples", "demo.json")


def test_demo_config_runs_shortened_and_can_be_fine_tuned_further(tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(ROOT)  # the demo's paths are relative to the repository root, as in the README
    with open(DEMO, encoding="utf-8") as f:
        config = json.load(f)
    config.update(output_dir=str(tmp_path / "demo"), max_steps=3, max_train_samples=64, logging_steps=1)
    short = tmp_path / "demo.json"
    short.write_text(json.dumps(config))
    with caplog.at_level("INFO"):
        results = ctc.main([str(short)])
    assert results["eval_wer"] == pytest.approx(rescore(tmp_path / "demo")) and results["eval_samples"] == 100
    assert "Summary: WER" in caplog.text and "audio hours per hour" in caplog.text
    with open(tmp_path / "demo" / "eval_predictions.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 100 and set(rows[0]) == {"clip_id", "reference", "hypothesis", "wer", "cer", "seconds", "speaker"}
    assert [float(r["wer"]) for r in rows] == sorted((float(r["wer"]) for r in rows), reverse=True)
    assert all(os.path.isfile(r["clip_id"]) for r in rows)

    # The trained demo model is a fine-tuned checkpoint now: go on from it on a corpus with other characters.
    caplog.clear()
    with caplog.at_level("INFO"):
        ctc.main(base_args(str(tmp_path / "demo"), DATA_DIR, str(tmp_path / "more"), max_steps=2))
    # Same head size (26), other characters: without a re-initialised head, its rows would mean the wrong letters.
    assert "new CTC head for 26 tokens (its CTC head was trained on another vocabulary" in caplog.text
    vocab = read_json(tmp_path / "more" / "vocab.json")
    assert "y" in vocab and "k" not in vocab  # the fixture corpus's characters, not the demo's
