"""The training-speed benchmark: its FLOP count (for MFU) and one run end to end on the fixture corpus."""

import hashlib
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import DATA_DIR, ROOT
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoConfig, Wav2Vec2ForCTC

sys.path.insert(0, os.path.join(ROOT, "bench"))
import train_speed  # noqa: E402


@pytest.mark.parametrize("model", ["speed_model", "base_model"])
def test_forward_flops_match_torchs_flop_counter(model):
    config = AutoConfig.from_pretrained(os.path.join(ROOT, "bench", model))
    net = Wav2Vec2ForCTC._from_config(config, attn_implementation="eager").eval()
    for samples in (16_000, 80_000):  # attention grows with the square of the length
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(torch.randn(1, samples))
        assert train_speed.forward_flops(config, samples) == pytest.approx(counter.get_total_flops(), rel=1e-3)


def test_benchmark_runs_and_prints_the_table():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "train_speed.py"), "--corpus", DATA_DIR,
                           "--clips", "12", "--precision", "fp32", "--peak_tflops", "1"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    gflops = float(re.search(r"([\d.]+) GFLOP per training audio second", lines[0])[1])
    rows = {}
    for line in lines:
        m = re.match(r"\((a|b)\)\s+([\d.]+) audio s/s\s+padding\s+([\d.]+)%.*MFU ([\d.]+)%", line)
        if m:
            rows[m[1]] = [float(x) for x in m.groups()[1:]]
    assert set(rows) == {"a", "b"}, proc.stdout
    for speed, _, mfu in rows.values():  # MFU = audio s/s x FLOPs per audio second / the 1 TFLOP/s peak given
        assert mfu == pytest.approx(speed * gflops / 1000 * 100, rel=0.05, abs=0.1)
    assert rows["b"][1] < rows["a"][1]  # duration-capped batches pad less than fixed batches of 8
    ratio = float(lines[-1].removeprefix("ratio b/a: "))
    assert ratio == pytest.approx(rows["b"][0] / rows["a"][0], rel=0.05)


def test_benchmark_without_a_corpus_says_which_flag_to_pass(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "train_speed.py"), "--corpus", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "pass --corpus" in proc.stderr.strip().splitlines()[-1]


def test_recipe_gain_settings_are_levers_joined_by_plus(tmp_path):
    import argparse

    import recipe_gain

    assert recipe_gain.levers("baseline") == [] and recipe_gain.levers("speed+average") == ["speed", "average"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown lever 'nois'"):
        recipe_gain.setting("speed+nois")
    args = recipe_gain.run_args(["speed", "noise"], "CORPUS", str(tmp_path / "out"), 4800, 43, "NOISE")
    assert args[args.index("--speed_perturbation") + 1:][:3] == ["0.9", "1.0", "1.1"]
    assert args[args.index("--noise_dir") + 1] == "NOISE" and args[args.index("--seed") + 1] == "43"
    assert "--average_checkpoints" not in args and args[args.index("--max_steps") + 1] == "4800"
    args = recipe_gain.run_args(recipe_gain.levers("speed+tristage"), "CORPUS", str(tmp_path / "out"), 4800, 42, "N")
    assert args[args.index("--lr_scheduler_type") + 1] == "tri_stage" and "--noise_dir" not in args
    args = recipe_gain.run_args(recipe_gain.levers("speed+colourednoise"), "CORPUS", "OUT", 4800, 42, "NOISE")
    assert args[args.index("--noise_dir") + 1] == "NOISE/coloured"  # make_noise's coloured noise, no babble
    args = recipe_gain.run_args(recipe_gain.levers("headfirst"), "CORPUS", "OUT", 4800, 42, "NOISE", start="DIR")
    assert args[args.index("--freeze_encoder_steps") + 1] == "400"
    args = recipe_gain.run_args([], "CORPUS", "OUT", 4800, 42, "NOISE", start="outputs/demo")
    assert args[args.index("--model_name_or_path") + 1] == "outputs/demo" and "--config_name" not in args
    assert "--config_name" in recipe_gain.run_args([], "CORPUS", "OUT", 4800, 42, "NOISE")  # from scratch


def test_recipe_gain_keeps_a_finished_runs_results_in_its_record_and_reads_them_back(tmp_path, monkeypatch):
    import recipe_gain

    out, record = tmp_path / "baseline-4800-seed42", tmp_path / "records" / "baseline-4800-seed42.json"
    out.mkdir()
    (out / "all_results.json").write_text('{"eval_wer": 0.31, "eval_cer": 0.12}')
    (out / "wall_seconds.txt").write_text("3000\n")
    r = recipe_gain.run("seed 42", [], str(out), 1, str(record))  # finished: read from the folder, then recorded
    assert r["eval_wer"] == 0.31 and r["wall_seconds"] == 3000.0 and record.is_file()
    # A fresh checkout: no output folder. The record is read and nothing trains (training would fail here).
    monkeypatch.setattr(recipe_gain.subprocess, "run", lambda *a, **k: pytest.fail("trained again"))
    r = recipe_gain.run("seed 42", [], str(tmp_path / "gone"), 1, str(record))
    assert r == {"eval_wer": 0.31, "eval_cer": 0.12, "wall_seconds": 3000.0}
    assert recipe_gain.test_metric(r, "wer") == 0.31
    # A fine-tuning run's record names its start by the weights' hash: the pinned start in bench/start_model
    (out / "x").mkdir()
    (out / "x" / "model.safetensors").write_bytes(b"weights")
    r = recipe_gain.run("seed 42", [], str(out), 1, str(tmp_path / "ft.json"), start=str(out / "x"))
    assert r["start_model_sha256"] == hashlib.sha256(b"weights").hexdigest()[:12]
    (out / "x" / "model.safetensors").unlink()  # a start without model.safetensors: the record is written anyway
    r = recipe_gain.run("seed 42", [], str(out), 1, str(tmp_path / "ft2.json"), start=str(out / "x"))
    assert r["start_model_sha256"] is None and (tmp_path / "ft2.json").is_file()
    # A run that trains (the script stood in for by writing its results) is recorded with its start's hash too
    (out / "x" / "model.safetensors").write_bytes(b"weights")
    fresh = tmp_path / "ft-fresh"

    def train(*a, **k):
        fresh.mkdir()
        (fresh / "all_results.json").write_text('{"eval_wer": 0.2, "eval_cer": 0.1}')

    monkeypatch.setattr(recipe_gain.subprocess, "run", train)
    r = recipe_gain.run("seed 42", [], str(fresh), 1, str(tmp_path / "ft3.json"), start=str(out / "x"))
    assert r["start_model_sha256"] == hashlib.sha256(b"weights").hexdigest()[:12] and r["wall_seconds"] is not None
    assert json.loads((tmp_path / "ft3.json").read_text())["eval_wer"] == 0.2
    # The committed records of earlier sittings are all readable and hold a test WER
    for name in os.listdir(recipe_gain.RECORDS):
        with open(os.path.join(recipe_gain.RECORDS, name)) as f:
            assert 0 < recipe_gain.test_metric(json.load(f), "wer") < 1


def test_recipe_gain_table_gives_the_mean_and_each_seeds_change_against_the_same_seeds_baseline(capsys):
    import recipe_gain

    rows = {"baseline": {42: {"eval_wer": 0.40, "eval_cer": 0.2}, 43: {"eval_wer": 0.20, "eval_cer": 0.1}},
            "speed": {42: {"eval_test_wer": 0.36, "eval_test_cer": 0.2}, 44: {"eval_wer": 0.30, "eval_cer": 0.1}}}
    recipe_gain.table(rows)
    speed = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| speed"))
    # mean 0.33 against 0.30: +10.0%; seed 42 against its baseline 0.40: -10.0%; seed 44 has no baseline to pair with
    assert speed == "| speed | 0.3600, 0.3000 | 0.3300 | 0.0600 | 0.1500 | +10.0% | -10.0% |"


def test_recipe_gain_table_reads_the_committed_records_and_trains_nothing(tmp_path):
    # No corpus and an empty work folder: anything that trained or made noise would fail
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "recipe_gain.py"), "--table", "--corpus",
                           str(tmp_path / "no_corpus"), "--work", str(tmp_path), "--settings", "baseline", "speed",
                           "tristage"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    baseline = next(line for line in proc.stdout.splitlines() if line.startswith("| baseline |"))
    assert len(baseline.split("|")[2].split(",")) == 3  # the three seeds recorded in bench/results/recipe_gain
    assert "| tristage |" not in proc.stdout and os.listdir(tmp_path) == []
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "recipe_gain.py"), "--table", "--throughput",
                           "10", "--work", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "drop --throughput" in proc.stderr and os.listdir(tmp_path) == []
