"""tools/compare_outputs.py, the refactoring check: timings are ignored, anything else that differs is named."""

import json
import os
import subprocess
import sys

from conftest import ROOT


def write_run(root, runtime: float, hypothesis: str, targets=("q_proj", "v_proj"), rank: int = 4):
    run = root / "train_lm"
    run.mkdir(parents=True)
    (run / "eval_results.json").write_text(json.dumps({"eval_wer": 0.5, "eval_runtime": runtime, "epoch": 4.0,
                                                       "train_peak_rss_gb": runtime / 3}))
    (run / "checkpoint-6").mkdir()
    (run / "checkpoint-6" / "training_args.bin").write_bytes(os.urandom(8))
    (run / "checkpoint-6" / "adapter_config.json").write_text(json.dumps({"r": rank, "target_modules": list(targets)}))
    (run / "eval_predictions.csv").write_text(f"clip_id,reference,hypothesis\na.flac,turn on,{hypothesis}\n")
    (run / "README.md").write_text(f"- eval_wer: 0.5\n- eval_runtime: {runtime}\n")
    (run / "report.html").write_text(f'<p>written 2026-12-01 0{int(runtime)}:00</p><path id="m0123456789"/>')
    (run / "training_args.bin").write_bytes(os.urandom(8))


def compare(old, new):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "compare_outputs.py"), str(old), str(new)],
                          capture_output=True, text=True)


def test_runs_that_differ_only_in_timings_are_identical(tmp_path):
    write_run(tmp_path / "old", 1.0, "turn on")
    write_run(tmp_path / "new", 2.0, "turn on", targets=("v_proj", "q_proj"))  # peft's sets, in another order
    result = compare(tmp_path / "old", tmp_path / "new")
    assert result.returncode == 0 and result.stdout.strip() == "identical"


def test_a_changed_transcript_or_a_missing_file_is_named(tmp_path):
    write_run(tmp_path / "old", 1.0, "turn on")
    write_run(tmp_path / "new", 1.0, "turn of", rank=8)
    os.remove(tmp_path / "new" / "train_lm" / "README.md")
    result = compare(tmp_path / "old", tmp_path / "new")
    assert result.returncode == 1
    assert result.stdout.split("\n")[:3] == ["only in old: train_lm/README.md",
                                             "differs: train_lm/checkpoint-6/adapter_config.json",
                                             "differs: train_lm/eval_predictions.csv"]
