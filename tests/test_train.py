"""End-to-end runs of the real script on real audio with tiny random checkpoints."""

import json
import os
import subprocess
import sys

import jiwer
import numpy as np
import pytest
import torch
from conftest import (
    DATA_DIR,
    SCRIPT,
    base_args,
    copy_fixture_with_audio_column,
    hypothesis_of,
    read_csv,
    rescore,
    read_json,
    transcribe,
)
from safetensors.torch import load_file
from tiny_models import ARCHITECTURES, make_checkpoint
from transformers import Wav2Vec2CTCTokenizer

import transformers

from ctc_finetune.faults import UserError
from ctc_finetune.text import build_vocab
import run_speech_recognition_ctc as ctc

TEST_CLIPS = os.path.join(DATA_DIR, "test")


def test_train_eval_save_reload_transcribe(tmp_path, encoder_dir, caplog):
    out = tmp_path / "out"
    with caplog.at_level("INFO"):
        results = ctc.main(base_args(encoder_dir, DATA_DIR, str(out), save_strategy="steps", save_steps=2))
    import csv
    import re

    with open(os.path.join(DATA_DIR, "train", "metadata.csv"), encoding="utf-8") as f:
        sentences = {r["sentence"] for r in csv.DictReader(f)}
    samples = re.findall(r"Sample \d+ of train: [\d.]+ s, label '(.*)'", caplog.text)
    assert len(samples) == 3 and set(samples) <= sentences  # labels decode back to the transcripts

    for name in ("vocab.json", "config.json", "model.safetensors", "train_results.json", "eval_results.json",
                 "all_results.json", "trainer_state.json", "README.md"):
        assert (out / name).exists(), name
    all_results = read_json(out / "all_results.json")
    assert all_results["eval_wer"] == pytest.approx(rescore(out))  # the scores are those of the predictions file
    assert all_results["eval_cer"] == pytest.approx(rescore(out, measure=jiwer.cer))
    assert all_results["train_samples"] == 12 and all_results["eval_samples"] == 4
    assert np.isfinite(all_results["train_loss"]) and results["eval_wer"] == all_results["eval_wer"]
    vocab = read_json(out / "vocab.json")
    assert vocab["|"] == 0 and (vocab["[UNK]"], vocab["[PAD]"]) == (len(vocab) - 2, len(vocab) - 1)

    # The saved model and processor, and every checkpoint on its own, reload and transcribe a real file.
    clip = os.path.join(TEST_CLIPS, "test-00005.flac")
    texts = {name: transcribe(str(out / name), [clip])[0] for name in ("", "checkpoint-2", "checkpoint-4")}
    assert texts[""] == texts["checkpoint-4"] == hypothesis_of(str(out), clip)  # the final model is step 4's
    card = (out / "README.md").read_text()
    assert "commands" in card and str(tmp_path) not in card


@pytest.mark.parametrize("eval_batch_size", [1, 3])
def test_eval_only_wer_matches_independent_transcription(tmp_path, finetuned_dir, eval_batch_size):
    # Upstream decodes the Trainer's -100 padding as [UNK] and the frames of padded audio as text, so its WER
    # changes with the eval batch size; ours must equal a clip-by-clip evaluation of the same model.
    out = tmp_path / "out"
    ctc.main(base_args(finetuned_dir, DATA_DIR, str(out), do_train=None, per_device_eval_batch_size=eval_batch_size))
    metrics = read_json(out / "eval_results.json")
    assert read_json(out / "vocab.json") == read_json(os.path.join(finetuned_dir, "vocab.json"))  # reused as is

    import csv

    with open(os.path.join(TEST_CLIPS, "metadata.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    hyps = transcribe(finetuned_dir, [os.path.join(TEST_CLIPS, r["file_name"]) for r in rows])
    refs = [r["sentence"] for r in rows]
    assert metrics["eval_wer"] == pytest.approx(jiwer.wer(refs, hyps), abs=1e-6)
    assert metrics["eval_cer"] == pytest.approx(jiwer.cer(refs, hyps), abs=1e-6)


def test_train_only_and_eval_only_runs(tmp_path, encoder_dir):
    # Upstream crashes in both single-split cases (vocabulary from one split; eval without a train split).
    out = tmp_path / "out"
    ctc.main(base_args(encoder_dir, DATA_DIR, str(out), do_eval=None, bf16=True, use_cpu=True))
    assert (out / "train_results.json").exists() and not (out / "eval_results.json").exists()
    vocab_before = (out / "vocab.json").read_text()
    evaluated = tmp_path / "eval"
    ctc.main(base_args(str(out), DATA_DIR, str(evaluated), do_train=None))
    assert read_json(evaluated / "eval_results.json")["eval_wer"] == pytest.approx(rescore(evaluated))
    assert (out / "vocab.json").read_text() == vocab_before


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_trains_from_a_bare_encoder(tmp_path, arch, caplog):
    model = make_checkpoint(str(tmp_path / "model"), arch)
    out = tmp_path / "out"
    with caplog.at_level("INFO"):
        ctc.main(base_args(model, DATA_DIR, str(out), max_steps=2, eval_metrics=["cer"]))
    assert "new CTC head" in caplog.text
    assert np.isfinite(read_json(out / "all_results.json")["eval_cer"])
    assert read_json(out / "config.json")["model_type"] == arch
    # The output reloads with the Auto classes and transcribes (transcribe.py, and the clip-by-clip reference).
    import transcribe as transcribe_cli

    clip = os.path.join(TEST_CLIPS, "test-00005.flac")
    assert transcribe_cli.main([str(out), clip]) == [(clip, transcribe(str(out), [clip])[0])]


def test_finetuned_model_with_other_vocabulary_gets_a_new_head(tmp_path, caplog):
    model = make_checkpoint(str(tmp_path / "model"), "wav2vec2", ctc_vocab_size=50, norm="group")
    out = tmp_path / "out"
    with caplog.at_level("INFO"):
        ctc.main(base_args(model, DATA_DIR, str(out), max_steps=2))
    assert "another vocabulary size" in caplog.text
    vocab_size = len(read_json(out / "vocab.json"))
    assert read_json(out / "config.json")["vocab_size"] in (vocab_size, vocab_size + 2)  # + <s>, </s>


SEED_SINGLE_GPU = """--dataset_name=common_voice --model_name_or_path=facebook/wav2vec2-large-xlsr-53
--dataset_config_name=tr --output_dir=./wav2vec2-common_voice-tr-demo --overwrite_output_dir
--num_train_epochs=15 --per_device_train_batch_size=16 --gradient_accumulation_steps=2 --learning_rate=3e-4
--warmup_steps=500 --evaluation_strategy=steps --text_column_name=sentence --save_steps=400 --eval_steps=100
--layerdrop=0.0 --save_total_limit=3 --freeze_feature_extractor --gradient_checkpointing
--chars_to_ignore , ? . ! - ; : " “ % ‘ ” � --fp16 --group_by_length --push_to_hub --do_train --do_eval"""

SEED_MULTI_GPU = """--dataset_name=common_voice --model_name_or_path=facebook/wav2vec2-large-xlsr-53
--dataset_config_name=tr --output_dir=./wav2vec2-common_voice-tr-demo-dist --overwrite_output_dir
--num_train_epochs=15 --per_device_train_batch_size=4 --learning_rate=3e-4 --warmup_steps=500
--evaluation_strategy=steps --audio_column_name=path --text_column_name=sentence --save_steps=400 --eval_steps=100
--logging_steps=1 --layerdrop=0.0 --save_total_limit=3 --freeze_feature_extractor --gradient_checkpointing
--chars_to_ignore , ? . ! - ; : " “ % ‘ ” � --fp16 --group_by_length --push_to_hub --do_train --do_eval"""


@pytest.mark.parametrize("seed_command", [SEED_SINGLE_GPU, SEED_MULTI_GPU], ids=["single_gpu", "multi_gpu"])
def test_seed_command_lines_parse_and_train(tmp_path, encoder_dir, seed_command):
    argv = seed_command.split()  # what the shell hands over (quotes and backslashes removed)
    with pytest.warns(UserWarning):
        model_args, data_args, training_args, _ = ctc.parse_args(argv)
    assert data_args.chars_to_ignore == [",", "?", ".", "!", "-", ";", ":", '"', "“", "%", "‘", "”", "�"]
    assert training_args.eval_strategy == "steps" and training_args.train_sampling_strategy == "group_by_length"
    assert model_args.freeze_feature_encoder and training_args.overwrite_output_dir and training_args.push_to_hub

    # Swap in local data and model, a few CPU steps, no hub: later flags win.
    data = copy_fixture_with_audio_column(str(tmp_path / "data"), "path") if "audio_column_name=path" in seed_command else DATA_DIR
    local = ["--dataset_name", data, "--model_name_or_path", encoder_dir, "--output_dir", str(tmp_path / "out"),
             "--train_split_name", "train", "--eval_split_name", "test", "--max_steps", "3", "--eval_steps", "2",
             "--per_device_eval_batch_size", "2", "--push_to_hub", "False", "--fp16", "False", "--no_cuda",
             "--report_to", "none"]
    ctc.main(argv + local)
    metrics = read_json(tmp_path / "out" / "all_results.json")
    assert "eval_wer" in metrics and metrics["train_samples"] == 12


def test_unknown_characters_of_a_reused_tokenizer_stop_the_run(tmp_path, encoder_dir):
    vocab = build_vocab(["xyz"], "|", "[UNK]", "[PAD]")
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "vocab.json").write_text(json.dumps(vocab))
    Wav2Vec2CTCTokenizer(str(tmp_path / "tok" / "vocab.json")).save_pretrained(str(tmp_path / "tok"))
    with pytest.raises(UserError, match="unknown to the tokenizer"):
        ctc.main(base_args(encoder_dir, DATA_DIR, str(tmp_path / "out"), tokenizer_name_or_path=str(tmp_path / "tok")))


def test_upper_case_tokenizer_gets_upper_case_text(tmp_path, encoder_dir):
    # A reused upper-case vocabulary (as facebook/wav2vec2-base-960h) must not turn every label into [UNK].
    vocab = build_vocab(["ABCDEFGHIJKLMNOPQRSTUVWXYZ"], "|", "<unk>", "<pad>")
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "vocab.json").write_text(json.dumps(vocab))
    Wav2Vec2CTCTokenizer(str(tmp_path / "tok" / "vocab.json"), unk_token="<unk>", pad_token="<pad>").save_pretrained(
        str(tmp_path / "tok")
    )
    out = tmp_path / "out"
    ctc.main(base_args(encoder_dir, DATA_DIR, str(out), tokenizer_name_or_path=str(tmp_path / "tok"), max_steps=1))
    assert read_json(out / "eval_results.json")["eval_wer"] == pytest.approx(rescore(out))
    sentences = {r["sentence"] for r in read_csv(os.path.join(DATA_DIR, "test", "metadata.csv"))}
    assert {r["reference"] for r in read_csv(out / "eval_predictions.csv")} == {s.upper() for s in sentences}
    assert "A" in read_json(out / "vocab.json") and "a" not in read_json(out / "vocab.json")


def run_cli(*argv, env=None):
    return subprocess.run([sys.executable, SCRIPT, *argv], capture_output=True, text=True, env=env, timeout=300)


def test_help_lists_every_argument():
    proc = run_cli("--help")
    assert proc.returncode == 0
    import dataclasses

    for cls in (ctc.ModelArguments, ctc.DataTrainingArguments):
        for f in dataclasses.fields(cls):
            assert f"--{f.name}" in proc.stdout, f.name
    assert "--overwrite_output_dir" in proc.stdout and "--group_by_length" in proc.stdout
    with open(os.path.join(os.path.dirname(SCRIPT), "docs", "arguments.md"), encoding="utf-8") as f:
        page = f.read()  # generated from the classes (tests/test_docs.py keeps it current): none may be left out
    ours = {f.name for f in dataclasses.fields(ctc.TrainingArguments)} - {
        f.name for f in dataclasses.fields(transformers.TrainingArguments)}
    assert ours >= {"max_batch_duration", "group_by_length"}
    for name in [f.name for cls in (ctc.ModelArguments, ctc.DataTrainingArguments) for f in dataclasses.fields(cls)] \
            + sorted(ours):
        assert f"`--{name}`" in page, f"docs/arguments.md does not document --{name}"


def test_run_sh_passes_overrides_and_extra_arguments(tmp_path, encoder_dir):
    env = {**os.environ, "DATASET": DATA_DIR, "MODEL": encoder_dir, "OUTPUT_DIR": str(tmp_path / "out")}
    proc = subprocess.run(
        ["bash", os.path.join(os.path.dirname(SCRIPT), "run.sh"), "--train_split_name", "train", "--eval_split_name",
         "test", "--max_steps", "2", "--fp16", "False", "--push_to_hub", "False", "--use_cpu", "--report_to", "none",
         "--per_device_eval_batch_size", "2"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "eval_wer" in read_json(tmp_path / "out" / "all_results.json")


def test_rerun_resumes_from_the_last_checkpoint_not_from_the_model_dir(tmp_path, encoder_dir, caplog):
    out = tmp_path / "out"
    args = dict(save_strategy="steps", save_steps=2, max_steps=4, do_eval=None)
    ctc.main(base_args(encoder_dir, DATA_DIR, str(out), **args))
    assert read_json(out / "trainer_state.json")["global_step"] == 4
    with caplog.at_level("INFO"):
        ctc.main(base_args(encoder_dir, DATA_DIR, str(out), **{**args, "max_steps": 6}))
    assert f"Resuming from {out / 'checkpoint-4'}" in caplog.text
    assert read_json(out / "trainer_state.json")["global_step"] == 6 and (out / "checkpoint-6").is_dir()


def test_preprocessing_only_fills_the_cache_and_stops(tmp_path, encoder_dir, caplog):
    out = tmp_path / "out"
    with caplog.at_level("INFO"):
        assert ctc.main(base_args(encoder_dir, DATA_DIR, str(out), preprocessing_only=True)) == {}
    assert "cache files" in caplog.text and ".arrow" in caplog.text
    assert not (out / "model.safetensors").exists()


@pytest.mark.parametrize("carry", [True, False])
def test_a_new_vocabulary_starts_the_shared_tokens_rows_from_the_old_head(tmp_path, caplog, carry):
    model = make_checkpoint(str(tmp_path / "model"), "wav2vec2", ctc_vocab_size=7)
    old_vocab = {"<pad>": 0, "<unk>": 1, "|": 2, "e": 3, "o": 4, "t": 5, "q": 6}  # q: not in the fixture text
    (tmp_path / "old_vocab.json").write_text(json.dumps(old_vocab))
    Wav2Vec2CTCTokenizer(str(tmp_path / "old_vocab.json")).save_pretrained(model)
    out = tmp_path / "out"
    with caplog.at_level("INFO"):  # learning rate 0: the saved head is the head as it started
        ctc.main(base_args(model, DATA_DIR, str(out), max_steps=1, learning_rate=0.0, warmup_steps=0,
                           carry_ctc_head_rows=carry))
    old, new = (load_file(os.path.join(d, "model.safetensors")) for d in (model, out))
    vocab = read_json(out / "vocab.json")
    assert len(vocab) > len(old_vocab) and "q" not in vocab
    # the blank and the unknown token by their role (the built vocabulary calls them [PAD] and [UNK]), letters by text
    shared = [("[PAD]", "<pad>"), ("[UNK]", "<unk>"), ("|", "|"), ("e", "e"), ("o", "o"), ("t", "t")]
    same = [torch.equal(new["lm_head.weight"][vocab[n]], old["lm_head.weight"][old_vocab[o]]) for n, o in shared]
    assert all(same) if carry else not any(same)
    if carry:
        assert all(torch.equal(new["lm_head.bias"][vocab[n]], old["lm_head.bias"][old_vocab[o]]) for n, o in shared)
    assert ("6 rows of the tokens both vocabularies share carried over" in caplog.text) == carry
