"""Phoneme mode (--phoneme_language): phonemized transcripts, a phoneme tokenizer built from the data, PER."""

import csv
import importlib.util
import os

import jiwer
import pytest
from conftest import DATA_DIR, base_args, read_json
from conftest import transcribe

from ctc_finetune.faults import UserError
from ctc_finetune.metrics import SUPPORTED_METRICS
from ctc_finetune.phonemes import PHONEME_INSTALL, phonemizer_available, phonemize_batch
from ctc_finetune.text import build_vocab
import run_speech_recognition_ctc as ctc


needs_espeak = pytest.mark.skipif(not phonemizer_available(),
                                  reason=f"phonemizer + espeak-ng missing: {PHONEME_INSTALL}")


def sentences(split: str) -> dict[str, str]:
    with open(os.path.join(DATA_DIR, split, "metadata.csv"), encoding="utf-8") as f:
        return {os.path.join(DATA_DIR, split, r["file_name"]): r["sentence"] for r in csv.DictReader(f)}


def test_phoneme_vocab_splits_on_spaces_and_keeps_the_delimiter_first():
    vocab = build_vocab(["h ə l oʊ | w ɜː l d", "oʊ"], "|", "[UNK]", "[PAD]", phonemes=True)
    assert list(vocab) == ["|", "d", "h", "l", "oʊ", "w", "ə", "ɜː", "[UNK]", "[PAD]"]
    assert list(vocab.values()) == list(range(10))


def parsed_metrics(*flags: str) -> list[str]:
    _, data_args, _, _ = ctc.parse_args(["--dataset_name", "x", "--output_dir", "out", "--config_name", "x", *flags])
    return data_args.eval_metrics


def test_per_needs_phoneme_mode():
    with pytest.raises(UserError, match="--eval_metrics per scores phonemes"):
        parsed_metrics("--eval_metrics", "per")


@needs_espeak
def test_per_is_the_phoneme_default():
    assert parsed_metrics("--phoneme_language", "tr") == ["per"]
    assert parsed_metrics("--phoneme_language", "tr", "--eval_metrics", "per", "cer") == ["per", "cer"]


def test_missing_phonemizer_is_one_line_with_the_install_command(tmp_path, encoder_dir, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "phonemizer" else real(name, *a))
    with pytest.raises(UserError, match="phonemizer package and espeak-ng: run `bash tools/install_extras.sh"):
        ctc.main(base_args(encoder_dir, DATA_DIR, str(tmp_path / "out"), phoneme_language="en-us"))
    assert not (tmp_path / "out").exists()


@needs_espeak
def test_unknown_language_is_one_line(tmp_path, encoder_dir):
    with pytest.raises(UserError, match="espeak-ng does not know it"):
        ctc.main(base_args(encoder_dir, DATA_DIR, str(tmp_path / "out"), phoneme_language="xx-nope"))


@needs_espeak
def test_phoneme_training_reports_per_and_saves_a_phoneme_tokenizer(tmp_path, encoder_dir, caplog):
    from transformers import AutoProcessor

    out = tmp_path / "out"
    with caplog.at_level("INFO"):
        ctc.main(base_args(encoder_dir, DATA_DIR, str(out), phoneme_language="en-us", eval_metrics=None,
                           preprocessing_num_workers=2))
    metrics = read_json(out / "eval_results.json")
    assert set(k for k in metrics if k.startswith("eval_") and k[5:] in SUPPORTED_METRICS) == {"eval_per"}

    # The saved tokenizer is a phoneme tokenizer whose own phonemization gives the labels the run trained on,
    # and which decodes ids to space-separated phonemes (word delimiters dropped).
    processor = AutoProcessor.from_pretrained(out)
    tokenizer = processor.tokenizer
    assert type(tokenizer).__name__ == "Wav2Vec2PhonemeCTCTokenizer" and tokenizer.phonemizer_lang == "en-us"
    vocab = read_json(out / "vocab.json")
    assert "|" in vocab and {"ð", "ə"} <= set(vocab) and not ({"a", "b", "c"} <= set(vocab) and "ʃ" not in vocab)
    clips = sentences("test")
    ours = phonemize_batch({"target_text": list(clips.values())}, language="en-us", word_delimiter_token="|")
    for text, phonemes in zip(clips.values(), ours["target_text"]):
        ids = tokenizer(text).input_ids
        assert ids == tokenizer.convert_tokens_to_ids(phonemes.split())
        assert tokenizer.unk_token_id not in ids and vocab["|"] in ids
        decoded = tokenizer.decode(ids, group_tokens=False)
        assert "|" not in decoded and len(decoded.split()) == len(ids) - ids.count(vocab["|"])
    assert "Phonemized [train] (en-us)" in caplog.text

    # PER = edit distance over phonemes, equal to an independent clip-by-clip evaluation of the saved model.
    refs = [tokenizer.decode(tokenizer(t).input_ids, group_tokens=False) for t in clips.values()]
    hyps = transcribe(str(out), list(clips))
    assert metrics["eval_per"] == pytest.approx(jiwer.wer(refs, hyps), abs=1e-6)
    report = read_json(out / "data_report.json")
    assert " " in report["train"]["characters"] and report["train"]["distinct"] == len(report["train"]["characters"].split())
