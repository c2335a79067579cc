"""The training-speed benchmark: its FLOP count (for MFU) and one run end to end on the fixture corpus."""

import os
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
    rows = {line[1]: line for line in lines if line.startswith(("(a)", "(b)"))}
    assert set(rows) == {"a", "b"} and all("audio s/s" in r and "padding" in r and "MFU" in r for r in rows.values())
    ratio = float(lines[-1].removeprefix("ratio b/a: "))
    assert ratio > 0
