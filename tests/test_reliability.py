"""Interrupted runs resume, bad input gets one clear line, nothing is lost or leaked."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import DATA_DIR, SCRIPT, base_args, read_json, run_in_process, step_losses

import transformers

from ctc_finetune.checkpoints import OWN_OUTPUT_FILES
from ctc_finetune.faults import USER_ERROR_EXIT, UserError
import run_speech_recognition_ctc as ctc


@pytest.mark.parametrize("lora", [None, 4], ids=["full", "lora"])
def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path, encoder_dir, lora):
    # A LoRA run's checkpoints hold its adapters and head; it resumes from them as exactly
    args = dict(max_steps=30, save_strategy="steps", save_steps=3, logging_steps=1, do_eval=None,
                per_device_train_batch_size=2, learning_rate=3e-4 if lora is None else 3e-3, lora_rank=lora)
    reference = tmp_path / "reference"
    ctc.main(base_args(encoder_dir, DATA_DIR, str(reference), **args))

    out = tmp_path / "killed"
    argv = [sys.executable, SCRIPT, *base_args(encoder_dir, DATA_DIR, str(out), **args)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (out / "checkpoint-3" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "train_results.json").exists(), "killed too late: the run had finished"
    # A checkpoint being written when the process died: no trainer_state.json yet.
    (out / "checkpoint-900").mkdir()
    (out / "checkpoint-900" / "model.safetensors").write_bytes(b"half written")

    resumed = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from" in resumed.stdout and "checkpoint-900" not in os.listdir(out)
    assert read_json(out / "trainer_state.json")["global_step"] == 30
    # Same data order, dropout and SpecAugment draws after the resume point (RNG states are checkpointed).
    expected, got = step_losses(reference), step_losses(out)
    assert sorted(got) == sorted(expected) == list(range(1, 31))
    np.testing.assert_allclose([got[s] for s in range(1, 31)], [expected[s] for s in range(1, 31)], rtol=1e-3)
    from conftest import transcribe

    clip = os.path.join(DATA_DIR, "test", "test-00005.flac")
    assert transcribe(str(out), [clip]) == transcribe(str(reference), [clip])  # the same model as without the kill


def test_a_run_that_died_before_its_first_checkpoint_restarts_with_the_same_command(tmp_path, encoder_dir):
    out = tmp_path / "out"
    ctc.main(base_args(encoder_dir, DATA_DIR, str(out), preprocessing_only=True))  # writes vocab.json, data report
    assert (out / "vocab.json").exists()
    ctc.main(base_args(encoder_dir, DATA_DIR, str(out), max_steps=2))
    assert read_json(out / "all_results.json")["train_samples"] == 12


def test_non_finite_loss_stops_the_run_with_the_step(tmp_path, encoder_dir):
    with pytest.raises(UserError, match=r"the training loss became (nan|inf) at step \d+; likely causes"):
        ctc.main(base_args(encoder_dir, DATA_DIR, str(tmp_path / "out"), max_steps=30, learning_rate=1e12,
                           max_grad_norm=0, do_eval=None, adam_epsilon=1e-30, warmup_steps=0))


def run_cli(argv, **env):
    return subprocess.run([sys.executable, SCRIPT, *argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


USER_ERRORS = {
    # name: (flag overrides, text the error line must contain)
    "missing dataset directory": ({"dataset_name": "./no/such/corpus"}, "no such directory"),
    "manifest given as dataset": ({"dataset_name": "MANIFEST"}, "pass manifests as --train_file/--eval_file"),
    "unknown local layout": ({"dataset_name": "LAYOUT"}, "no known corpus layout"),
    "missing audio column": ({"audio_column_name": "wav"}, "--audio_column_name 'wav' not found"),
    "missing text column": ({"text_column_name": "words"}, "its columns are: audio, sentence, speaker"),
    "missing eval split": ({"eval_split_name": "dev"}, f"split 'dev' not found in {DATA_DIR} (its splits: test, "
                           "train, validation); pass --train_split_name train --eval_split_name test"),
    "nothing left after filtering": ({"max_duration_in_seconds": 0.5}, "no train clips left"),
    "foreign files in output_dir": ({"output_dir": "FOREIGN"}, "pass --overwrite_output_dir"),
    "tokenizer lacking characters": ({"tokenizer_name_or_path": "TOKENIZER"}, "unknown to the tokenizer"),
    "argument of the wrong type": ({"max_steps": "many"}, "invalid int value: 'many'"),
    "missing argument file": (None, "does not exist"),
    "missing model directory": ({"model_name_or_path": "/no/such/model"}, "could not load a model config"),
    "push to hub while offline": ({"push_to_hub": True}, "--push_to_hub needs network access"),
    "unknown flag": ({"no_such_flag": 1}, "not used by the HfArgumentParser"),
    "missing LM text file": ({"lm_text": "./no/such/text.txt"}, "--lm_text ./no/such/text.txt is not a file"),
    "PER without phoneme mode": ({"eval_metrics": "per"}, "add --phoneme_language"),
    "non-positive batch duration": ({"max_batch_duration": 0}, "--max_batch_duration must be a number of seconds"),
    "unknown predict split": ({"do_predict": True, "predict_split_name": "dev"},
                              f"split 'dev' not found in {DATA_DIR} (its splits: test, train, validation); "
                              "pass --predict_split_name test"),
    "missing reporting integration": ({"report_to": "mlflow"}, "--report_to: mlflow is not installed; pip install "
                                                               "mlflow, or pass --report_to none."),
    "nothing to do": ({"do_train": None, "do_eval": None}, "nothing to do: add --do_train"),
}


# These run as a real subprocess, the others in this process through cli() (a subprocess costs seconds of imports);
# the reporting case, because a half-built integration callback prints its traceback as the process exits.
SUBPROCESS_CASES = {"argument of the wrong type", "missing reporting integration"}


@pytest.mark.parametrize("case", sorted(USER_ERRORS))
def test_user_errors_are_one_actionable_line(tmp_path, encoder_dir, case, monkeypatch, capsys):
    overrides, expected = USER_ERRORS[case]
    out = tmp_path / "out"
    (out / "checkpoint-2").mkdir(parents=True)  # a user's earlier work that no error may destroy
    (out / "checkpoint-2" / "trainer_state.json").write_text("{}")
    if overrides is None:
        argv = [str(tmp_path / "missing.json")]
    else:
        layout = tmp_path / "strange"
        (layout / "stuff").mkdir(parents=True)
        foreign = tmp_path / "foreign"
        foreign.mkdir()
        (foreign / "notes.txt").write_text("mine")
        tokenizer = tmp_path / "tokenizer"
        tokenizer.mkdir()
        (tokenizer / "vocab.json").write_text('{"|": 0, "x": 1, "[UNK]": 2, "[PAD]": 3}')
        transformers.Wav2Vec2CTCTokenizer(str(tokenizer / "vocab.json")).save_pretrained(str(tokenizer))
        swap = {"LAYOUT": str(layout), "FOREIGN": str(foreign), "TOKENIZER": str(tokenizer),
                "MANIFEST": os.path.join(DATA_DIR, "train", "metadata.csv")}
        overrides = {k: swap.get(v, v) if isinstance(v, str) else v for k, v in overrides.items()}
        argv = base_args(encoder_dir, DATA_DIR, str(out), **overrides)
    proc = run_cli(argv) if case in SUBPROCESS_CASES else run_in_process(ctc.cli, argv, monkeypatch, capsys)
    assert proc.returncode == USER_ERROR_EXIT  # the same status for every user mistake, in every command
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and expected in lines[0], proc.stderr[-3000:]
    assert (out / "checkpoint-2" / "trainer_state.json").read_text() == "{}"  # nothing destroyed
    assert set(os.listdir(out)) - {"checkpoint-2"} <= OWN_OUTPUT_FILES  # at most the script's own files added


def test_tokens_and_local_paths_stay_out_of_logs_and_files(tmp_path, encoder_dir):
    secret = "hf_SECRETtoken1234567890"
    out = tmp_path / "out"
    proc = run_cli(base_args(encoder_dir, DATA_DIR, str(out), token=secret, hub_token=secret, max_steps=2,
                             save_strategy="steps", save_steps=2))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert secret not in proc.stdout + proc.stderr
    for root, _, files in os.walk(out):
        for name in files:
            data = open(os.path.join(root, name), "rb").read()
            assert secret.encode() not in data, name
            if name.endswith((".json", ".md")) and name != "trainer_state.json":
                assert str(tmp_path).encode() not in data, f"{name} holds a local path"
    assert read_json(out / "config.json").get("trust_remote_code") in (None, False)
