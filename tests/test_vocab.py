"""Subword vocabularies built from the data (--vocab_type bpe|unigram --vocab_size N)."""

import csv
import importlib.util
import logging
import os

import jiwer
import numpy as np
import pytest
import transformers
from conftest import DATA_DIR, base_args, read_json, rescore
from tiny_models import NEW_FAMILIES, make_checkpoint, torchaudio_problem

from ctc_finetune.audio import load_audio
from ctc_finetune.families import ctc_decode, decode_labels, processor_class
from ctc_finetune.faults import UserError
from ctc_finetune.lm import kenlm_binary
from ctc_finetune.preprocessing import encode_labels
from ctc_finetune.text import normalize_text
from ctc_finetune.vocabulary import train_subword_vocab
import run_speech_recognition_ctc as ctc
import transcribe

TEST_DIR = os.path.join(DATA_DIR, "test")


def fixture_texts(split: str) -> dict[str, str]:
    with open(os.path.join(DATA_DIR, split, "metadata.csv"), newline="", encoding="utf-8") as f:
        return {r["file_name"]: normalize_text(r["sentence"], None) for r in csv.DictReader(f)}


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_vocabulary_trained_on_the_transcripts_round_trips_them(tmp_path, kind):
    texts = list(fixture_texts("train").values())
    trained = train_subword_vocab(texts, kind, 60, "[UNK]", "[PAD]")
    assert trained.token_to_id("[UNK]") == 0 and trained.token_to_id("[PAD]") == 1
    assert 40 <= trained.get_vocab_size() <= 60
    tokenizer = transformers.ParakeetTokenizer(tokenizer_object=trained, unk_token="[UNK]", pad_token="[PAD]")
    tokenizer.save_pretrained(tmp_path)
    reloaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in texts + list(fixture_texts("test").values()):
        ids = encode_labels(reloaded, text)
        assert reloaded.unk_token_id not in ids
        assert decode_labels(reloaded, ids) == text  # word boundaries come back from ▁
        assert len(ids) < len(text)  # pieces, not characters
        frames = [i for t in ids for i in (t, reloaded.pad_token_id)]  # a CTC path with blanks between pieces
        assert ctc_decode(reloaded, frames, reloaded.pad_token_id) == text


def test_vocab_size_under_the_character_inventory_is_an_error():
    with pytest.raises(UserError, match=r"--vocab_size 10 is under the text's \d+ characters"):
        train_subword_vocab(list(fixture_texts("train").values()), "bpe", 10, "[UNK]", "[PAD]")


@pytest.mark.parametrize("argv, message", [
    (["--vocab_type", "wordpiece"], "--vocab_type wordpiece is not one of char, bpe, unigram"),
    (["--vocab_type", "bpe", "--phoneme_language", "en-us"], "phoneme mode keeps phonemes"),
    (["--vocab_size", "100"], "with --vocab_type bpe or unigram"),
    (["--vocab_type", "bpe", "--tokenizer_name_or_path", "x"], "pass only one"),
])
def test_bad_vocabulary_flags_are_one_line_errors(argv, message):
    with pytest.raises(UserError, match=message):
        ctc.parse_args(["--model_name_or_path", "m", "--dataset_name", "d", "--output_dir", "o", *argv])


@pytest.mark.parametrize("arch", ["wav2vec2", *[
    pytest.param(a, marks=pytest.mark.skipif(torchaudio_problem() is not None, reason=str(torchaudio_problem())))
    if a == "granite_speech5_ctc" else a for a in NEW_FAMILIES]])
def test_bpe_run_trains_evaluates_reloads_and_transcribes(tmp_path, arch, caplog):
    model = make_checkpoint(str(tmp_path / "model"), arch)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        results = ctc.main(base_args(model, DATA_DIR, str(out), vocab_type="bpe", vocab_size=80,
                                     per_device_eval_batch_size=1))
    assert "Vocabulary: bpe," in caplog.text and "new CTC head" in caplog.text
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert type(tokenizer).__name__ == "ParakeetTokenizer" and len(tokenizer) <= 80
    assert read_json(out / "config.json")["vocab_size"] == len(tokenizer)
    assert type(transformers.AutoProcessor.from_pretrained(out)) is processor_class(arch)
    assert np.isfinite(results["train_loss"])
    report = read_json(out / "data_report.json")["train"]
    seconds = report["hours"] * 3600
    chars_per_second = sum(len(t) for t in fixture_texts("train").values()) / seconds
    assert report["vocabulary"] == f"subword pieces, {len(tokenizer)} tokens"
    assert 0 < report["label_tokens_per_second"] < chars_per_second / 2  # pieces: labels at least twice shorter
    # References come back whole; the WER of transcribe.py's independent clip-by-clip output is eval_wer.
    rows = {r["clip_id"]: r for r in csv.DictReader(open(out / "eval_predictions.csv", encoding="utf-8"))}
    texts = fixture_texts("test")
    paths = [os.path.join(TEST_DIR, f) for f in sorted(texts)]
    assert [rows[p]["reference"] for p in paths] == [texts[os.path.basename(p)] for p in paths]
    hyps = dict(transcribe.main([str(out), *paths, "--batch_seconds", "0.1"]))
    assert [hyps[p] for p in paths] == [rows[p]["hypothesis"] for p in paths]
    assert results["eval_wer"] == pytest.approx(jiwer.wer([texts[os.path.basename(p)] for p in paths],
                                                          [hyps[p] for p in paths]))
    if arch != "omniasr_ctc":  # the pipeline's OmniASR bug: see test_families
        asr = transformers.pipeline("automatic-speech-recognition", model=str(out), device="cpu")
        assert asr(load_audio(paths[0], 16000))["text"].startswith(hyps[paths[0]])  # see test_families
    assert (out / "README.md").is_file()  # the model card
    # Evaluating the output folder on its own loads that tokenizer and scores the same.
    again = ctc.main(base_args(str(out), DATA_DIR, str(tmp_path / "eval"), do_train=None, per_device_eval_batch_size=1))
    assert again["eval_wer"] == results["eval_wer"]


LM_INSTALLED = all(importlib.util.find_spec(p) for p in ("pyctcdecode", "pygtrie", "kenlm")) and kenlm_binary("lmplz")


@pytest.mark.skipif(not LM_INSTALLED, reason="n-gram LM extras not installed: bash tools/install_extras.sh lm")
def test_bpe_vocabulary_with_an_ngram_lm(tmp_path):
    model = make_checkpoint(str(tmp_path / "model"), "wav2vec2")
    out = tmp_path / "out"
    # 16 beams: an untrained model's pieces are near-flat, and the default 100 beams take minutes
    results = ctc.main(base_args(model, DATA_DIR, str(out), vocab_type="bpe", vocab_size=80, lm_text="train",
                                 lm_beam_width=16))
    assert results["eval_wer_lm"] == pytest.approx(rescore(out, column="hypothesis_lm"))
    assert (out / "language_model").is_dir()
    rows = list(csv.DictReader(open(out / "eval_predictions.csv", encoding="utf-8")))
    assert all("▁" not in r["hypothesis_lm"] for r in rows)  # pieces joined into words
