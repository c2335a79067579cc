"""MMS language adapters: --target_language trains adapters and a CTC head only, saved per language, on real audio."""

import json
import os
import shutil

import pytest
import torch
from conftest import DATA_DIR, base_args, read_json
from safetensors.torch import load_file
from tiny_models import make_checkpoint, make_mms_checkpoint
from transformers import AutoProcessor, Wav2Vec2ForCTC

import transcribe
from ctc_finetune.adapters import add_language_vocab
from ctc_finetune.audio import load_audio
from ctc_finetune.faults import UserError
import run_speech_recognition_ctc as ctc

CLIP = os.path.join(DATA_DIR, "test", "test-00005.flac")
ADAPTER_ARGS = {"learning_rate": 1e-2, "max_steps": 3, "per_device_train_batch_size": 4}


@pytest.fixture(scope="module")
def mms(tmp_path_factory):
    return make_mms_checkpoint(str(tmp_path_factory.mktemp("mms")))


def adapter_keys(state: dict) -> set:
    return {k for k in state if ".adapter_layer." in k or k.startswith("lm_head.")}


def test_only_adapters_and_head_train_and_the_adapter_file_reproduces_the_model(tmp_path, mms):
    out = tmp_path / "out"
    results = ctc.main(base_args(mms, DATA_DIR, str(out), target_language="tur", **ADAPTER_ARGS))
    assert results["eval_samples"] == 4
    before, after = load_file(os.path.join(mms, "model.safetensors")), load_file(out / "model.safetensors")
    assert adapter_keys(before) and adapter_keys(after) == adapter_keys(before)
    for key in set(before) - adapter_keys(before):  # the base model is frozen
        assert torch.equal(before[key], after[key]), key
    changed = [k for k in adapter_keys(before) - {"lm_head.weight", "lm_head.bias"}
               if not torch.equal(before[k], after[k])]
    assert changed  # the adapters trained
    vocab = read_json(out / "vocab.json")
    assert set(vocab) == {"eng", "rus", "tur"} and vocab["eng"] == read_json(os.path.join(mms, "vocab.json"))["eng"]
    adapter = load_file(out / "adapter.tur.safetensors")
    assert set(adapter) == adapter_keys(after)

    # The base checkpoint plus adapter.tur.safetensors gives the fine-tuned model's logits.
    base = tmp_path / "base"
    shutil.copytree(mms, base)
    shutil.copy(out / "adapter.tur.safetensors", base)
    rebuilt = Wav2Vec2ForCTC.from_pretrained(str(base)).eval()
    rebuilt.load_adapter("tur")
    tuned = Wav2Vec2ForCTC.from_pretrained(str(out)).eval()
    inputs = AutoProcessor.from_pretrained(str(out)).feature_extractor(
        load_audio(CLIP, 16000), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(**inputs).logits, tuned(**inputs).logits)


def test_two_languages_trained_into_one_folder_both_transcribe(tmp_path, mms):
    out = tmp_path / "out"
    ctc.main(base_args(mms, DATA_DIR, str(out), target_language="tur", **ADAPTER_ARGS))
    ctc.main(base_args(mms, DATA_DIR, str(out), target_language="deu", overwrite_output_dir=True,
                       **{**ADAPTER_ARGS, "learning_rate": 3e-2}))
    assert {"adapter.tur.safetensors", "adapter.deu.safetensors"} <= set(os.listdir(out))
    assert {"eng", "rus", "tur", "deu"} <= set(read_json(out / "vocab.json"))
    for language in ("tur", "deu"):  # transcribe.py's main() in this process (a subprocess costs seconds of imports)
        assert [path for path, _ in transcribe.main([str(out), CLIP, "--language", language])] == [CLIP]
    with pytest.raises(UserError, match="--language xyz") as e:
        transcribe.main([str(out), CLIP, "--language", "xyz"])
    assert "deu" in str(e.value) and "tur" in str(e.value)

    # The script evaluates a language of that folder too.
    results = ctc.main(base_args(str(out), DATA_DIR, str(tmp_path / "eval"), do_train=None, target_language="tur"))
    assert results["eval_samples"] == 4


def test_adapter_mistakes_are_one_line(tmp_path, mms):
    hubert = make_checkpoint(str(tmp_path / "hubert"), "hubert")
    with pytest.raises(UserError, match="hubert models have no language adapters"):
        ctc.main(base_args(hubert, DATA_DIR, str(tmp_path / "a"), target_language="tur"))
    with pytest.raises(UserError, match="--target_language trains an MMS adapter with a character vocabulary"):
        ctc.main(base_args(mms, DATA_DIR, str(tmp_path / "b"), target_language="tur", vocab_type="bpe"))
    with pytest.raises(UserError, match="--adapter_attn_dim sizes MMS language adapters: add --target_language"):
        ctc.main(base_args(mms, DATA_DIR, str(tmp_path / "c"), adapter_attn_dim=16, max_steps=1))
    with pytest.raises(UserError, match="no vocabulary for it"):
        ctc.main(base_args(mms, DATA_DIR, str(tmp_path / "d"), do_train=None, target_language="fra"))


def test_a_language_vocabulary_is_added_or_kept():
    languages = {"eng": {"a": 0}}
    added, said = add_language_vocab(languages, "tur", {"ç": 0}, overwrite=False)
    assert added == {"eng": {"a": 0}, "tur": {"ç": 0}} and said.startswith("added")
    kept, said = add_language_vocab(added, "tur", {"x": 0}, overwrite=False)
    assert kept["tur"] == {"ç": 0} and said.startswith("kept")
    rebuilt, _ = add_language_vocab(added, "tur", {"x": 0}, overwrite=True)
    assert rebuilt["tur"] == {"x": 0} and rebuilt["eng"] == {"a": 0}
    assert json.dumps(languages) == '{"eng": {"a": 0}}'  # the input is not changed
