"""LoRA through peft: adapters on every family's projections, the head trained in full, a merged plain model saved
(and the adapter alone beside it); FSDP's auto-wrap finds each family's encoder layer."""

import os

import pytest
import torch
from conftest import DATA_DIR, base_args, hypothesis_of, read_json, transcribe
from safetensors.torch import load_file
from tiny_models import ALL_FAMILIES, make_checkpoint
from transformers import AutoModelForCTC, AutoProcessor

from ctc_finetune.audio import load_audio
from ctc_finetune.families import ctc_head_name, encoder_layer_classes, front_end_path
from ctc_finetune.faults import UserError
from ctc_finetune.lora import ADAPTER_DIR, LORA_TARGETS, LoraArguments, add_lora, modules_named
import run_speech_recognition_ctc as ctc

CLIP = os.path.join(DATA_DIR, "test", "test-00005.flac")
LORA = LoraArguments(lora_rank=4, lora_dropout=0.0)


def tiny(tmp_path, family):
    try:
        return make_checkpoint(str(tmp_path / family), family, ctc_vocab_size=12)
    except Exception as e:  # noqa: BLE001 - a family this machine cannot build (Granite without torchaudio)
        pytest.skip(f"{family}: {e}")


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_every_family_gets_adapters_on_its_projections_and_a_full_head(tmp_path, family):
    model = AutoModelForCTC.from_pretrained(tiny(tmp_path, family))
    layers = encoder_layer_classes(model)  # what FSDP wraps: the encoder's own layer class(es)
    assert layers and all("Layer" in name or "Block" in name for name in layers)
    targets = LORA_TARGETS[family]
    expected = {n for n, _ in model.named_modules() if any(n.endswith("." + t) for t in targets)}
    assert {t for t in targets if any(n.endswith("." + t) for n in expected)} == set(targets)  # each one exists
    wrapped, text = add_lora(model, LORA)
    trained = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    adapted = {n.removeprefix("base_model.model.").split(".lora_A")[0] for n in trained if ".lora_A" in n}
    assert adapted == expected  # every attention and feed-forward projection of every layer, nothing else
    head = ctc_head_name(wrapped.get_base_model())
    assert any(f"{head}.modules_to_save" in n for n in trained)  # the CTC head trains in full
    assert all(".lora_" in n or ".modules_to_save." in n for n in trained)  # and nothing else (but batch norms)
    assert "parameters trainable" in text


@pytest.mark.parametrize("family", ["wav2vec2", "parakeet_ctc", "wav2vec2-bert"])
def test_an_unfrozen_front_end_trains_in_full_beside_the_adapters(tmp_path, family):
    model = AutoModelForCTC.from_pretrained(tiny(tmp_path, family))
    front_end = front_end_path(model)
    weights = len(list(model.get_submodule(front_end).parameters())) if front_end else 0
    wrapped, text = add_lora(model, LORA, train_front_end=True)
    trained = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    if front_end is None:  # Wav2Vec2-BERT: a linear projection, no front end to train
        assert not any(".modules_to_save." in n and "feature" in n for n in trained) and "front end" not in text
        return
    full = {n for n in trained if f"{front_end}.modules_to_save." in n}
    assert full and f"the front end ({front_end})" in text
    assert len(full) == weights  # all of its weights
    frozen, _ = add_lora(AutoModelForCTC.from_pretrained(str(tmp_path / family)), LORA)
    assert not any(front_end in n for n, p in frozen.named_parameters() if p.requires_grad)  # frozen by default


@pytest.mark.parametrize("family", ["wav2vec2", "parakeet_ctc"])
def test_a_lora_run_saves_a_merged_model_that_reloads_without_peft(tmp_path, family, caplog):
    start = make_checkpoint(str(tmp_path / "start"), family)  # wav2vec2: a bare encoder; Parakeet: with its head
    out = tmp_path / "out"
    with caplog.at_level("INFO"):
        results = ctc.main(base_args(start, DATA_DIR, str(out), lora_rank=4, learning_rate=1e-2))
    assert "LoRA rank 4 (alpha 8" in caplog.text and "parameters trainable" in caplog.text
    # A plain checkpoint: no peft keys, loads with AutoModelForCTC, transcribes as the run's own evaluation did
    merged = load_file(str(out / "model.safetensors"))
    assert not any("lora_" in k or "modules_to_save" in k for k in merged)
    assert transcribe(str(out), [CLIP])[0] == hypothesis_of(str(out), CLIP)
    assert results["eval_samples"] == 4
    # Outside the LoRA targets and the head, every weight is the starting model's; the targets moved. (Buffers, such
    # as Parakeet's batch-norm statistics, follow the data as in any training.)
    base = dict(AutoModelForCTC.from_pretrained(start).named_parameters())
    model = AutoModelForCTC.from_pretrained(str(out))
    head = ctc_head_name(model)
    targets = tuple(f"{t}.weight" for t in LORA_TARGETS[family])
    norms = tuple(n + "." for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm1d))  # go with the head
    kept = [k for k in base if k in merged and not k.startswith((head, *norms)) and not k.endswith(targets)]
    assert kept and all(torch.equal(merged[k], base[k]) for k in kept)
    moved = [k for k in base if k.endswith(targets)]
    assert moved and any(not torch.equal(merged[k], base[k]) for k in moved)
    # The adapter alone reloads with peft onto the starting model and gives the merged model's logits
    from peft import PeftModel

    processor = AutoProcessor.from_pretrained(str(out))
    rate = processor.feature_extractor.sampling_rate
    inputs = processor(load_audio(CLIP, rate), sampling_rate=rate, return_tensors="pt")
    fresh = AutoModelForCTC.from_pretrained(start, vocab_size=model.config.vocab_size, ignore_mismatched_sizes=True)
    adapted = PeftModel.from_pretrained(fresh, str(out / ADAPTER_DIR)).eval()
    with torch.no_grad():
        assert torch.allclose(adapted(**inputs).logits, model.eval()(**inputs).logits, atol=1e-4)
    assert read_json(out / ADAPTER_DIR / "adapter_config.json")["r"] == 4


def test_a_lora_run_with_the_front_end_unfrozen_merges_it_too(tmp_path, encoder_dir, caplog):
    # and with the modules named by --lora_modules_to_save (the feature projection, the norms, the positional conv)
    out = tmp_path / "out"
    with caplog.at_level("INFO"):
        ctc.main(base_args(encoder_dir, DATA_DIR, str(out), lora_rank=4, learning_rate=1e-2,
                           freeze_feature_encoder="False",
                           lora_modules_to_save=["feature_projection", "layer_norm", "final_layer_norm",
                                                 "pos_conv_embed"]))
    merged = load_file(str(out / "model.safetensors"))
    base = dict(AutoModelForCTC.from_pretrained(encoder_dir).named_parameters())

    def moved(prefix):
        keys = [k for k in base if k.startswith(prefix) and k in merged]
        return keys and any(not torch.equal(merged[k], base[k]) for k in keys)

    assert moved("wav2vec2.feature_extractor.")  # the front end trained, and merged
    assert moved("wav2vec2.feature_projection.") and moved("wav2vec2.encoder.layers.0.final_layer_norm.")
    assert moved("wav2vec2.encoder.pos_conv_embed.")  # a weight-normed convolution: merged and reloaded too
    assert not moved("wav2vec2.encoder.layers.0.attention.k_proj.")  # neither a target nor named: as it was
    assert "modules named by --lora_modules_to_save" in caplog.text
    assert transcribe(str(out), [CLIP])[0] == hypothesis_of(str(out), CLIP)
    with pytest.raises(UserError, match="add --lora_rank"):
        ctc.main(base_args(encoder_dir, DATA_DIR, str(tmp_path / "no"), lora_modules_to_save=["layer_norm"]))


def test_modules_to_save_are_found_by_name_outermost_first(tmp_path):
    model = AutoModelForCTC.from_pretrained(tiny(tmp_path, "wav2vec2"))
    layers = model.config.num_hidden_layers
    norms = modules_named(model, ["layer_norm"])  # whole name components: not final_layer_norm
    assert "wav2vec2.encoder.layer_norm" in norms and not any("final_layer_norm" in n for n in norms)
    assert sum(".encoder.layers." in n for n in norms) == layers
    # a module inside another named one goes with it; those in or around what trains in full already are left out
    found = modules_named(model, ["layer_norm", "feature_projection"], inside=["wav2vec2.feature_extractor"])
    assert "wav2vec2.feature_projection" in found and "wav2vec2.feature_projection.layer_norm" not in found
    assert not any(n.startswith("wav2vec2.feature_extractor") for n in found)
    with pytest.raises(UserError, match="no module of this wav2vec2 model is named so"):
        modules_named(model, ["no_such_norm"])


def test_lora_learning_rate_is_the_adapters_own(tmp_path, encoder_dir, caplog):
    # --learning_rate so small that what trains in full (the new head) barely moves; the adapters at their own rate
    merged = {}
    for name, adapter_lr in (("fast", 1e-2), ("still", 1e-9)):
        with caplog.at_level("INFO"):
            ctc.main(base_args(encoder_dir, DATA_DIR, str(tmp_path / name), lora_rank=4, learning_rate=1e-9,
                               lora_learning_rate=adapter_lr, do_eval=None))
        merged[name] = load_file(str(tmp_path / name / "model.safetensors"))
    assert "train at learning rate 0.01, what trains in full at 1e-09" in caplog.text
    head = [k for k in merged["fast"] if k.startswith("lm_head.")]
    assert head and all(torch.allclose(merged["fast"][k], merged["still"][k], atol=1e-5) for k in head)
    targets = [k for k in merged["fast"] if k.endswith("q_proj.weight")]
    assert targets and all((merged["fast"][k] - merged["still"][k]).abs().max() > 1e-4 for k in targets)
    with pytest.raises(UserError, match="add --lora_rank"):
        ctc.main(base_args(encoder_dir, DATA_DIR, str(tmp_path / "no"), lora_learning_rate=1e-3))


def test_a_dora_run_merges_into_a_plain_model_too(tmp_path, encoder_dir, caplog):
    out = tmp_path / "out"
    with caplog.at_level("INFO"):
        ctc.main(base_args(encoder_dir, DATA_DIR, str(out), lora_rank=4, learning_rate=1e-2, lora_use_dora=True))
    assert "DoRA rank 4" in caplog.text
    assert read_json(out / ADAPTER_DIR / "adapter_config.json")["use_dora"] is True
    merged = load_file(str(out / "model.safetensors"))
    assert not any("lora_" in k or "modules_to_save" in k for k in merged)  # the magnitudes merged in too
    assert transcribe(str(out), [CLIP])[0] == hypothesis_of(str(out), CLIP)
    with pytest.raises(UserError, match="add --lora_rank"):
        ctc.main(base_args(encoder_dir, DATA_DIR, str(tmp_path / "no"), lora_use_dora=True))


def test_lora_with_gradient_checkpointing_trains(tmp_path, encoder_dir):
    results = ctc.main(base_args(encoder_dir, DATA_DIR, str(tmp_path / "out"), lora_rank=4, max_steps=2,
                                 gradient_checkpointing=True, do_eval=None))
    assert results["train_loss"] > 0 and (tmp_path / "out" / ADAPTER_DIR / "adapter_model.safetensors").is_file()


def test_lora_and_mms_adapters_are_one_error(tmp_path, encoder_dir):
    with pytest.raises(UserError, match="pick one"):
        ctc.main(base_args(encoder_dir, DATA_DIR, str(tmp_path), lora_rank=4, target_language="tur"))
    with pytest.raises(UserError, match="lora_target_modules"):
        ctc.main(base_args(encoder_dir, DATA_DIR, str(tmp_path), lora_rank=4, lora_target_modules=["no_such"]))
