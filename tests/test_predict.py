"""--do_predict and the predictions files, and n-gram LM building + beam-search evaluation (--lm_text)."""

import importlib.util
import os
import subprocess
import sys

import jiwer
import pytest
from conftest import DATA_DIR, ROOT, base_args, read_csv, read_json, rescore, transcribe

from ctc_finetune import lm
from ctc_finetune.columns import LENGTH_COLUMN
from ctc_finetune.faults import UserError
from ctc_finetune.lm import LM_INSTALL, ctc_alphabet, kenlm_binary, lm_sentences
from ctc_finetune.preprocessing import sort_longest_first
from ctc_finetune.text import chars_to_ignore_regex
import run_speech_recognition_ctc as ctc

LM_READY = (all(importlib.util.find_spec(p) for p in ("pyctcdecode", "pygtrie", "kenlm"))
            and all(kenlm_binary(b) for b in ("lmplz", "build_binary")))
needs_lm = pytest.mark.skipif(not LM_READY, reason=f"LM extras missing (pyctcdecode, kenlm, lmplz): {LM_INSTALL}")


def split_clips(split: str) -> dict[str, str]:
    """path -> transcript of a fixture split."""
    rows = read_csv(os.path.join(DATA_DIR, split, "metadata.csv"))
    return {os.path.join(DATA_DIR, split, r["file_name"]): r["sentence"] for r in rows}


def check_predictions_file(path, clips: dict[str, str], model_dir: str) -> list[dict]:
    """Every clip once, with the model's own transcript and its per-clip scores, worst first."""
    rows = read_csv(path)
    assert sorted(r["clip_id"] for r in rows) == sorted(clips)
    expected = dict(zip(clips, transcribe(model_dir, list(clips))))
    for r in rows:
        assert r["reference"] == clips[r["clip_id"]] and r["hypothesis"] == expected[r["clip_id"]]
        assert float(r["wer"]) == pytest.approx(jiwer.wer(r["reference"], r["hypothesis"]), abs=1e-4)
        assert float(r["cer"]) == pytest.approx(jiwer.cer(r["reference"], r["hypothesis"]), abs=1e-4)
        assert 0.5 < float(r["seconds"]) < 5
    assert [float(r["wer"]) for r in rows] == sorted((float(r["wer"]) for r in rows), reverse=True)
    return rows


def test_predict_split_writes_predictions_and_results_beside_eval(tmp_path, finetuned_dir, caplog):
    out = tmp_path / "out"
    with caplog.at_level("INFO"):
        results = ctc.main(base_args(finetuned_dir, DATA_DIR, str(out), do_train=None, do_predict=True,
                                     predict_split_name="validation"))
    check_predictions_file(out / "predictions.csv", split_clips("validation"), finetuned_dir)
    check_predictions_file(out / "eval_predictions.csv", split_clips("test"), finetuned_dir)
    predict = read_json(out / "predict_results.json")
    assert predict["predict_samples"] == 4 and predict["predict_clips_dropped"] == 0
    refs, hyps = zip(*((r["reference"], r["hypothesis"]) for r in read_csv(out / "predictions.csv")))
    assert predict["predict_wer"] == pytest.approx(jiwer.wer(list(refs), list(hyps)), abs=1e-6)
    assert results["predict_wer"] == predict["predict_wer"] and "eval_wer" in results
    assert "Summary: WER" in caplog.text and "4 predict clips" in caplog.text and "worst clips" in caplog.text


@pytest.mark.parametrize("on_the_fly", [False, True])
def test_predictions_stay_with_their_clips_under_group_by_length(tmp_path, finetuned_dir, on_the_fly):
    """The eval split is sorted once, longest first, and scored in that order: --group_by_length (whose eval sampler
    would regroup it) must not pair a clip with another clip's transcript."""
    out = tmp_path / "out"
    ctc.main(base_args(finetuned_dir, DATA_DIR, str(out), do_train=None, group_by_length=True,
                       per_device_eval_batch_size=3, preprocess_on_the_fly=on_the_fly or None))
    check_predictions_file(out / "eval_predictions.csv", split_clips("test"), finetuned_dir)


def test_sort_longest_first_keeps_ties_in_order():
    import datasets

    ds = datasets.Dataset.from_dict({LENGTH_COLUMN: [5, 9, 5, 12], "i": [0, 1, 2, 3]})
    assert sort_longest_first(ds)["i"] == [3, 1, 0, 2]


def test_predict_file_alone(tmp_path, finetuned_dir):
    # A manifest of the validation clips, paths relative to it; no eval split is loaded at all.
    manifest = os.path.join(DATA_DIR, "validation", "metadata.csv")
    out = tmp_path / "out"
    ctc.main(base_args(finetuned_dir, DATA_DIR, str(out), do_train=None, do_eval=None, do_predict=True,
                       predict_file=manifest))
    check_predictions_file(out / "predictions.csv", split_clips("validation"), finetuned_dir)
    assert not (out / "eval_results.json").exists() and not (out / "eval_predictions.csv").exists()


def test_lm_sentences_are_normalised_like_transcripts(tmp_path):
    text = tmp_path / "lm.txt"
    text.write_text("Turn ON the light!\n\n  open   the DOOR.\n", encoding="utf-8")
    regex = chars_to_ignore_regex(["!", "."])
    assert lm_sentences(str(text), None, regex, "lower") == ["turn on the light", "open the door"]
    assert lm_sentences("train", ["a b", "", "c"], regex, "lower") == ["a b", "c"]


def test_ctc_alphabet_maps_blank_and_delimiter(finetuned_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(finetuned_dir)
    labels = ctc_alphabet(tokenizer, len(tokenizer), tokenizer.pad_token_id)
    assert labels[tokenizer.pad_token_id] == "" and labels[tokenizer.convert_tokens_to_ids("|")] == " "
    assert labels[tokenizer.convert_tokens_to_ids("a")] == "a" and len(set(labels)) == len(labels)


def test_missing_lm_extras_stop_before_any_work(tmp_path, finetuned_dir, monkeypatch):
    monkeypatch.setattr(lm, "kenlm_binary", lambda name: None)
    with pytest.raises(UserError, match="lmplz.*tools/install_extras.sh lm"):
        ctc.main(base_args(finetuned_dir, DATA_DIR, str(tmp_path / "out"), lm_text="train"))
    assert not (tmp_path / "out").exists()


@needs_lm
def test_lm_train_only_text_needs_do_train(tmp_path, finetuned_dir):
    with pytest.raises(UserError, match="--lm_text train uses the training transcripts"):
        ctc.main(base_args(finetuned_dir, DATA_DIR, str(tmp_path / "out"), do_train=None, lm_text="train"))


@needs_lm
def test_lm_is_built_evaluated_saved_and_used_by_transcribe(tmp_path, finetuned_dir, caplog):
    out = tmp_path / "out"
    with caplog.at_level("INFO"):
        ctc.main(base_args(finetuned_dir, DATA_DIR, str(out), lm_text="train", lm_beam_width=16, do_predict=True,
                           predict_split_name="validation"))
    assert "Language model: 3-gram from 12 sentences" in caplog.text
    assert (out / "alphabet.json").exists() and (out / "language_model" / "unigrams.txt").exists()
    train_words = {w for t in split_clips("train").values() for w in t.split()}
    assert set((out / "language_model" / "unigrams.txt").read_text().split()) == train_words
    for key in ("eval", "predict"):
        metrics = read_json(out / f"{key}_results.json")
        assert metrics[f"{key}_wer_lm"] == pytest.approx(rescore(out, key, "hypothesis_lm"))
        assert metrics[f"{key}_cer_lm"] == pytest.approx(rescore(out, key, "hypothesis_lm", jiwer.cer))
        assert metrics[f"{key}_wer"] == pytest.approx(rescore(out, key))
    # The final evaluation is logged as trainer.evaluate logs it: the model card lists its scores, LM ones included.
    card, scores = (out / "README.md").read_text(), read_json(out / "eval_results.json")
    for name in ("wer", "cer", "wer_lm", "cer_lm"):
        assert f"- {name.replace('_', ' ').title()}: {round(scores['eval_' + name], 4)}\n" in card, name
    rows = read_csv(out / "predictions.csv")
    assert all(float(r["wer_lm"]) == pytest.approx(jiwer.wer(r["reference"], r["hypothesis_lm"]), abs=1e-4)
               for r in rows)

    # The saved decoder loads as pyctcdecode saves it, the blank (pad) mapped to the empty label.
    from pyctcdecode import BeamSearchDecoderCTC
    from transformers import AutoTokenizer, ProcessorMixin, Wav2Vec2ProcessorWithLM

    decoder = BeamSearchDecoderCTC.load_from_dir(str(out))
    assert decoder._alphabet.labels[AutoTokenizer.from_pretrained(out).pad_token_id] == ""
    # transformers' deprecated Wav2Vec2ProcessorWithLM reads the same files; transformers 5.25 removed the method its
    # from_pretrained calls (_get_arguments_from_pretrained), so there it cannot load any LM.
    if hasattr(ProcessorMixin, "_get_arguments_from_pretrained"):
        processor = Wav2Vec2ProcessorWithLM.from_pretrained(out)
        assert processor.decoder._alphabet.labels[processor.tokenizer.pad_token_id] == ""

    # transcribe.py --lm finds the saved decoder and gives the same beam-search transcripts as the evaluation.
    clips = list(split_clips("validation"))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "transcribe.py"), str(out), *clips, "--lm",
                           "--beam_width", "16"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lm_hyps = {r["clip_id"]: r["hypothesis_lm"] for r in rows}
    assert dict(line.split("\t") for line in proc.stdout.splitlines()) == lm_hyps
