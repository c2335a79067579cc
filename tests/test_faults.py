"""What clusters do to a run: signals, full disks, corrupted files, out of memory; each survived or one line."""

import errno
import logging
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, SCRIPT, base_args, read_json, step_losses

import transformers

from ctc_finetune import preprocessing
from ctc_finetune.faults import REQUEUE_EXIT, StopOnSignal, Stopped, UserError
from ctc_finetune.preprocessing import featurize_batch
from ctc_finetune.trainer import CTCTrainer
import run_speech_recognition_ctc as ctc

RESUMABLE = dict(max_steps=40, save_strategy="steps", save_steps=100, logging_steps=1, do_eval=None,
                 per_device_train_batch_size=2, learning_rate=3e-4)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, encoder_dir):
    """The per-step losses of an uninterrupted run."""
    out = tmp_path_factory.mktemp("reference")
    ctc.main(base_args(encoder_dir, DATA_DIR, str(out), **RESUMABLE))
    return step_losses(out)


def start(argv, launcher=(sys.executable,)) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    return subprocess.Popen([*launcher, SCRIPT, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)


def wait_for(proc: subprocess.Popen, text: str, timeout: float = 240) -> str:
    """Read the run's output until a line holds `text`; return what was read."""
    seen, deadline = [], time.time() + timeout
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return "".join(seen)
        assert time.time() < deadline, "".join(seen)[-3000:]
    raise AssertionError(f"the run ended before {text!r}:\n" + "".join(seen)[-3000:])


def check_resumes_like_reference(argv, out, stop_step: int, reference: dict, launcher=(sys.executable,)):
    assert (out / f"checkpoint-{stop_step}" / "trainer_state.json").exists()
    assert not (out / "train_results.json").exists()
    proc = start(argv, launcher)
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log[-3000:]
    assert f"Resuming from {out / f'checkpoint-{stop_step}'}" in log
    got = step_losses(out)
    assert sorted(got) == sorted(reference) == list(range(1, 41))
    np.testing.assert_allclose([got[s] for s in got], [reference[s] for s in got], rtol=1e-3)


def test_a_signal_saves_a_checkpoint_exits_for_requeue_and_the_rerun_matches(tmp_path, encoder_dir, reference):
    sig = signal.SIGTERM  # SIGUSR1 and SIGINT reach the same handler (the next test); torchrun's test sends SIGUSR1
    out = tmp_path / "out"
    argv = base_args(encoder_dir, DATA_DIR, str(out), **RESUMABLE)
    proc = start(argv)
    wait_for(proc, "First training step done")
    proc.send_signal(sig)
    log = proc.communicate(timeout=120)[0]
    assert proc.returncode == REQUEUE_EXIT, log[-3000:]
    line = [x for x in log.splitlines() if f"stopped by {sig.name} at step" in x]
    assert len(line) == 1 and "run the same command to resume" in line[0], log[-3000:]
    stop_step = int(line[0].split(" at step ")[1].split(":")[0])
    assert 1 <= stop_step < 40 and "Traceback" not in log
    check_resumes_like_reference(argv, out, stop_step, reference)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT], ids=lambda s: s.name)
def test_each_stop_signal_asks_for_a_checkpoint_at_the_step_s_end_and_the_old_handlers_come_back(sig):
    before = signal.getsignal(sig)
    with StopOnSignal() as stop:
        assert signal.getsignal(sig) == stop.handle
        stop.training = True
        os.kill(os.getpid(), sig)  # a real signal: Python runs the handler before the next line
        assert stop.received == sig.name
        control = transformers.TrainerControl()
        stop.on_step_end(None, None, control)
        assert control.should_save and control.should_training_stop
    assert signal.getsignal(sig) == before


def test_a_second_ctrl_c_stops_at_once(monkeypatch, capsys):
    # Two signals sent together reach Python as one, so the handler is driven directly; then the exit status.
    stop = StopOnSignal()
    stop.training = True
    stop.handle(signal.SIGINT, None)  # the first: finish the step, save, stop
    assert stop.received == "SIGINT"
    with pytest.raises(KeyboardInterrupt):
        stop.handle(signal.SIGINT, None)

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(ctc, "main", interrupted)
    monkeypatch.setattr(sys, "argv", ["run_speech_recognition_ctc.py", "--do_train"])
    with pytest.raises(SystemExit) as e:
        ctc.cli()
    assert e.value.code == 130 and "interrupted" in capsys.readouterr().err


def test_sigusr1_to_one_rank_stops_every_rank_at_the_same_checkpoint(tmp_path, encoder_dir, reference):
    import psutil

    out = tmp_path / "out"
    argv = base_args(encoder_dir, DATA_DIR, str(out), **{**RESUMABLE, "per_device_train_batch_size": 1},
                     use_cpu=True)
    launcher = ("torchrun", "--nproc_per_node", "2", "--master_port", "29531")
    proc = start(argv, launcher)
    wait_for(proc, "First training step done")
    ranks = [p for p in psutil.Process(proc.pid).children(recursive=True) if SCRIPT in " ".join(p.cmdline())]
    assert len(ranks) == 2
    ranks[-1].send_signal(signal.SIGUSR1)  # one rank only: the other learns of it at the end of the step
    log = proc.communicate(timeout=180)[0]
    assert proc.returncode != 0
    # the two ranks write to one pipe, so their lines may interleave: count the messages, not the lines
    steps = re.findall(r"stopped by SIGUSR1 at step (\d+):", log)
    assert len(steps) == 2 and len(set(steps)) == 1, log[-3000:]
    stop_step = int(steps[0])
    proc = start(argv, launcher)
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log[-3000:]
    assert f"Resuming from {out / f'checkpoint-{stop_step}'}" in log
    assert read_json(out / "trainer_state.json")["global_step"] == 40


def test_a_signal_during_preprocessing_stops_without_a_partial_cache(tmp_path, encoder_dir, monkeypatch):
    cache = tmp_path / "cache"
    real = featurize_batch

    def terminated(*args, **kwargs):  # SIGTERM arrives while the audio is being decoded
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(preprocessing, "featurize_batch", terminated)
    argv = base_args(encoder_dir, DATA_DIR, str(tmp_path / "out"), cache_dir=str(cache), max_steps=2)
    with pytest.raises(Stopped, match="stopped by SIGTERM while preprocessing"):
        ctc.main(argv)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    assert not [f for f in os.listdir(cache / "ctc_preprocessing") if f.startswith("features-")]
    monkeypatch.setattr(preprocessing, "featurize_batch", real)
    assert ctc.main(argv)["train_samples"] == 12


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_previous_one(tmp_path, encoder_dir, monkeypatch, caplog):
    import transformers.modeling_utils

    out = tmp_path / "out"
    argv = base_args(encoder_dir, DATA_DIR, str(out), max_steps=4, save_strategy="steps", save_steps=2,
                     do_eval=None)
    real, calls = transformers.modeling_utils.safe_save_file, []

    def fills_the_disk(tensors, filename, *args, **kwargs):
        calls.append(filename)
        if len(calls) == 2:  # the second checkpoint: half a file, then ENOSPC
            with open(filename, "wb") as f:
                f.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", fills_the_disk)
    with pytest.raises(UserError, match=r"no space left on device writing .*checkpoint-4.*free"):
        ctc.main(argv)
    # The partial checkpoint-4 lacks trainer_state.json: the rerun removes it and resumes from checkpoint-2.
    assert not (out / "checkpoint-4" / "trainer_state.json").exists()
    assert (out / "checkpoint-2" / "trainer_state.json").exists()
    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", real)
    with caplog.at_level(logging.INFO):
        ctc.main(argv)
    assert "incomplete checkpoint" in caplog.text and f"Resuming from {out / 'checkpoint-2'}" in caplog.text
    assert read_json(out / "trainer_state.json")["global_step"] == 4
    assert read_json(out / "checkpoint-4" / "trainer_state.json")["global_step"] == 4


def test_a_full_disk_while_caching_features_is_one_line_with_the_space_needed(tmp_path, encoder_dir, monkeypatch):
    import datasets.arrow_writer

    real = datasets.arrow_writer.ArrowWriter.write_batch

    def full(writer, *args, **kwargs):  # only the preprocessing cache's disk is full
        if "ctc_preprocessing" in str(writer._path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(writer, *args, **kwargs)

    monkeypatch.setattr(datasets.arrow_writer.ArrowWriter, "write_batch", full)
    with pytest.raises(UserError, match=r"no space left on device writing the preprocessing cache in .*MB"):
        ctc.main(base_args(encoder_dir, DATA_DIR, str(tmp_path / "out"), cache_dir=str(tmp_path / "cache")))


def test_a_truncated_cache_file_is_rebuilt(tmp_path, encoder_dir, caplog):
    cache = tmp_path / "cache"
    argv = base_args(encoder_dir, DATA_DIR, str(tmp_path / "a"), cache_dir=str(cache), do_train=None,
                     model_name_or_path=make_trained(tmp_path / "model", encoder_dir))
    first = ctc.main(argv)
    root = cache / "ctc_preprocessing"
    for name in os.listdir(root):
        if name.startswith("features-eval") and name.endswith(".arrow"):
            path = root / name
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    argv[argv.index("--output_dir") + 1] = str(tmp_path / "b")
    with caplog.at_level("WARNING"):
        second = ctc.main(argv)
    assert "unreadable or incomplete (truncated?): rebuilding it" in caplog.text
    assert second["eval_samples"] == first["eval_samples"] == 4 and second["eval_wer"] == first["eval_wer"]


def make_trained(path, encoder_dir) -> str:
    ctc.main(base_args(encoder_dir, DATA_DIR, str(path), max_steps=2, do_eval=None))
    return str(path)


def test_a_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path, encoder_dir, caplog):
    out = tmp_path / "out"
    ctc.main(base_args(encoder_dir, DATA_DIR, str(out), max_steps=4, save_strategy="steps", save_steps=2,
                       do_eval=None))
    weights = out / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with caplog.at_level("INFO"):
        ctc.main(base_args(encoder_dir, DATA_DIR, str(out), max_steps=6, save_strategy="steps", save_steps=2,
                           do_eval=None))
    assert f"{weights} is truncated or corrupt" in caplog.text
    assert f"Resuming from {out / 'checkpoint-2'}" in caplog.text
    assert read_json(out / "trainer_state.json")["global_step"] == 6


def test_a_truncated_model_is_one_line_naming_the_file(tmp_path, encoder_dir):
    model = make_trained(tmp_path / "model", encoder_dir)
    weights = os.path.join(model, "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    with pytest.raises(UserError, match=f"{weights} is truncated or corrupt"):
        ctc.main(base_args(model, DATA_DIR, str(tmp_path / "out"), do_train=None))


def test_out_of_memory_is_one_line_with_the_step_and_the_remedies(tmp_path, encoder_dir, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(CTCTrainer, "compute_loss", oom)
    with pytest.raises(UserError, match=r"out of memory at step 1 on a batch of 4 clips, [\d.]+ s of audio "
                                            r"\(longest [\d.]+ s\).*--max_batch_duration.*--gradient_checkpointing"):
        ctc.main(base_args(encoder_dir, DATA_DIR, str(tmp_path / "out")))


def test_out_of_memory_in_evaluation_is_one_line_and_keeps_the_model(tmp_path, encoder_dir, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(transformers.Trainer, "prediction_step", oom)
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"out of memory evaluating a batch of 2 clips, [\d.]+ s of audio "
                                            r"\(longest [\d.]+ s\).*--per_device_eval_batch_size.*--bf16_full_eval"):
        ctc.main(base_args(encoder_dir, DATA_DIR, str(out)))
    assert (out / "model.safetensors").is_file() and (out / "train_results.json").is_file()  # training was not lost


def test_nothing_to_do_and_a_bare_run_say_what_to_type(tmp_path, encoder_dir):
    with pytest.raises(UserError, match="nothing to do: add --do_train, --do_eval and/or --do_predict"):
        ctc.main(base_args(encoder_dir, DATA_DIR, str(tmp_path / "out"), do_train=None, do_eval=None))
    proc = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "examples/demo.json" in proc.stderr and "Traceback" not in proc.stderr
