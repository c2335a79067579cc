"""ONNX deployment: export_onnx.py exports and checks a model, transcribe.py --onnx runs it (tiny random models,
real clips)."""

import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import DATA_DIR, ROOT, make_finetuned, run_in_process, with_flat_lm
from tiny_models import ALL_FAMILIES, make_checkpoint, torchaudio_problem
from transformers import AutoFeatureExtractor, AutoModelForCTC

import export_onnx
import transcribe
from ctc_finetune.audio import load_audio
from ctc_finetune.export import CHECK_SECONDS, example_batch, export_onnx as export_model, exporter_error, time_axes
from ctc_finetune.faults import UserError, run_command
from ctc_finetune.onnx_runtime import INT8_FILE, ONNX_FILE, OnnxCTCModel

pytestmark = pytest.mark.skipif(not all(importlib.util.find_spec(p) for p in ("onnx", "onnxruntime", "onnxscript")),
                                reason="needs the onnx extra: bash tools/install_extras.sh onnx")

TEST_DIR = os.path.join(DATA_DIR, "test")
CLIPS = sorted(os.path.join(TEST_DIR, n) for n in os.listdir(TEST_DIR) if n.endswith(".flac"))
SHORT_WINDOWS = ["--chunk_seconds", "2", "--context_seconds", "0.5"]
HOTWORD_READY = all(importlib.util.find_spec(p) for p in ("pyctcdecode", "pygtrie"))
LM_READY = HOTWORD_READY and importlib.util.find_spec("kenlm") is not None
# The families torch 2.13 cannot export (Granite Speech: an Unfold over a dynamic length)
NOT_EXPORTED = {"granite_speech5_ctc"}


@pytest.fixture(scope="module", params=["wav2vec2", "parakeet_ctc"])
def exported(request, tmp_path_factory):
    """A wav2vec2-era and a newer family's model, exported (fp32 and int8) by export_onnx.py, and its summary."""
    path = str(tmp_path_factory.mktemp(request.param))
    if request.param == "wav2vec2":
        make_finetuned(path)  # a character vocabulary of its own
    else:
        make_checkpoint(path, request.param)  # the release's tokenizer
    summary = export_onnx.main([path, "--int8", "--int8_tolerance", "1e9"])  # random weights: int8 may flip ties
    return path, summary


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """The fixture test clips joined with pauses into one recording of about 10 s."""
    rate = 16000
    parts = []
    for path in CLIPS:
        parts += [load_audio(path, rate), np.zeros(rate // 2, np.float32)]
    path = str(tmp_path_factory.mktemp("long") / "recording.wav")
    sf.write(path, np.concatenate(parts), rate, subtype="FLOAT")
    return path


def run_cli(script, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT)


def test_export_writes_both_files_and_its_check(exported):
    path, summary = exported
    assert os.path.getsize(os.path.join(path, ONNX_FILE)) > 0 and os.path.getsize(os.path.join(path, INT8_FILE)) > 0
    assert summary["clips"] == len(CLIPS)
    assert summary["fp32"]["relative_logit_diff"] < 1e-4  # fp32 reproduces PyTorch's logits
    assert summary["fp32"]["transcripts_identical"] == 1.0 and summary["fp32"]["cer_against_pytorch"] == 0.0
    assert 0 < summary["int8"]["max_logit_diff"]  # int8 changed the weights, and
    assert summary["int8"]["bytes"] < summary["fp32"]["bytes"]  # made the file smaller
    with open(os.path.join(path, export_onnx.CHECK_FILE)) as f:
        assert json.load(f)["fp32"] == summary["fp32"]


def test_onnx_logits_match_pytorch_at_other_shapes(exported):
    path, _ = exported
    model = AutoModelForCTC.from_pretrained(path).eval()
    feature_extractor = AutoFeatureExtractor.from_pretrained(path)
    onnx_model = OnnxCTCModel(path)
    batch = example_batch(feature_extractor, (2.3, 0.4, 1.1, 0.9), seed=7)  # a batch of 4 the graph never saw
    with torch.no_grad():
        expected = model(**batch).logits
    got = onnx_model(**batch).logits
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-4)


def test_transcribe_onnx_gives_pytorch_transcripts(exported):
    path, _ = exported
    pytorch = transcribe.main([path, *CLIPS])
    assert transcribe.main([path, *CLIPS, "--onnx"]) == pytorch
    assert transcribe.main([path, *CLIPS, "--onnx", "--batch_seconds", "1"]) == pytorch  # batching changes nothing
    int8 = transcribe.main([path, *CLIPS, "--onnx", "int8"])
    assert [p for p, _ in int8] == CLIPS


def test_onnx_long_recording_words_and_times_match_pytorch(exported, recording, tmp_path):
    path, _ = exported
    records = {}
    for name, flags in (("pytorch", []), ("onnx", ["--onnx"])):
        out = tmp_path / f"{name}.json"
        transcribe.main([path, recording, "--output", str(out), *SHORT_WINDOWS, *flags])
        records[name] = json.loads(out.read_text())
    (pytorch,), (onnx,) = records["pytorch"], records["onnx"]
    assert onnx["text"] == pytorch["text"]
    assert [(w["word"], w["start"], w["end"]) for w in onnx["words"]] == \
        [(w["word"], w["start"], w["end"]) for w in pytorch["words"]]
    assert np.allclose([w["confidence"] for w in onnx["words"]], [w["confidence"] for w in pytorch["words"]],
                       atol=1e-3)


@pytest.mark.skipif(not HOTWORD_READY, reason="needs pyctcdecode (bash tools/install_extras.sh lm)")
def test_onnx_beam_search_with_hotwords_matches_pytorch(exported):
    path, _ = exported
    flags = ["--hotwords", "zeal", "--beam_width", "8"]
    assert transcribe.main([path, *CLIPS, *flags, "--onnx"]) == transcribe.main([path, *CLIPS, *flags])


@pytest.mark.skipif(not LM_READY, reason="needs pyctcdecode and kenlm (bash tools/install_extras.sh lm)")
@pytest.mark.parametrize("exported", ["wav2vec2"], indirect=True)  # the flat LM is built for characters
def test_onnx_beam_search_with_the_n_gram_lm_matches_pytorch(exported, tmp_path):
    path, _ = exported
    with_lm = with_flat_lm(path, tmp_path / "with_lm")  # the ONNX files are copied with the model
    flags = ["--lm", "--beam_width", "8"]
    onnx = transcribe.main([with_lm, *CLIPS, *flags, "--onnx"])
    assert onnx == transcribe.main([with_lm, *CLIPS, *flags]) and any(text for _, text in onnx)


def test_missing_or_broken_onnx_file_is_one_error_line(tmp_path, monkeypatch, capsys):
    path = make_finetuned(str(tmp_path / "model"))
    missing = run_in_process(transcribe.cli, [path, CLIPS[0], "--onnx"], monkeypatch, capsys)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "export it first: python export_onnx.py" in missing.stderr
    (tmp_path / "model" / ONNX_FILE).write_bytes(b"not a graph")
    broken = run_cli("transcribe.py", path, CLIPS[0], "--onnx")  # the real command: stderr holds that line only
    assert broken.returncode == 2
    assert broken.stderr.strip().splitlines() == [broken.stderr.strip().splitlines()[-1]]
    assert "is not a usable ONNX model" in broken.stderr and "Traceback" not in broken.stderr
    on_gpu = run_in_process(transcribe.cli, [path, CLIPS[0], "--onnx", "--device", "cuda"], monkeypatch, capsys)
    assert on_gpu.returncode == 2 and "--onnx runs on the CPU" in on_gpu.stderr


def test_an_export_beyond_the_tolerance_fails_and_is_deleted(tmp_path, monkeypatch, capsys):
    path = make_finetuned(str(tmp_path / "model"))
    result = run_in_process(functools.partial(run_command, export_onnx.main), [path, "--tolerance", "0", "--clips",
                            CLIPS[0]], monkeypatch, capsys)  # as export_onnx.py's __main__ runs it
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: model.onnx disagrees with PyTorch")
    assert not os.path.exists(os.path.join(path, ONNX_FILE))
    not_a_model = run_cli("export_onnx.py", str(tmp_path))  # the real command
    assert not_a_model.returncode == 2 and "is not a model directory" in not_a_model.stderr


# wav2vec2 and parakeet_ctc: the `exported` fixture exports them, through export_onnx.py
@pytest.mark.parametrize("arch", [arch for arch in ALL_FAMILIES if arch not in ("wav2vec2", "parakeet_ctc")])
def test_every_family_exports_or_says_it_cannot(arch, tmp_path):
    if arch == "granite_speech5_ctc" and torchaudio_problem():
        pytest.skip(torchaudio_problem())
    path = make_checkpoint(str(tmp_path), arch, ctc_vocab_size=12)
    model = AutoModelForCTC.from_pretrained(path).eval()
    feature_extractor = AutoFeatureExtractor.from_pretrained(path)
    target = os.path.join(path, ONNX_FILE)
    if arch in NOT_EXPORTED:
        with pytest.raises(UserError, match=f"{arch} does not export to ONNX"):
            export_model(model, feature_extractor, target)
        assert not os.path.exists(target)
        return
    assert export_model(model, feature_extractor, target) in ("dynamo", "torchscript")
    batch = example_batch(feature_extractor, CHECK_SECONDS[::-1], seed=5)
    with torch.no_grad():
        expected = model(**batch).logits
    assert torch.allclose(OnnxCTCModel(path)(**batch).logits, expected, atol=1e-4)


def test_time_axes_and_exporter_errors():
    first = {"input_values": torch.zeros(2, 1, 100), "padding_mask": torch.zeros(2, 100)}
    second = {"input_values": torch.zeros(3, 1, 80), "padding_mask": torch.zeros(3, 80)}
    assert time_axes(first, second) == {"input_values": 2, "padding_mask": 1}
    with pytest.raises(UserError, match="time axis"):
        time_axes({"x": torch.zeros(2, 5, 5)}, {"x": torch.zeros(2, 6, 6)})
    summary = "\x1b[96m<class 'ValueError'>: bad view\x1b[0m"
    wrapped = RuntimeError(f"Failed to export.\n- advice\n## Exception summary\n\n{summary}")
    assert exporter_error(wrapped) == "RuntimeError: <class 'ValueError'>: bad view"
    assert exporter_error(KeyError()) == "KeyError: KeyError"


def test_a_checkpoint_folder_exports_into_itself_with_conv_quantized_statically(tmp_path):
    import onnx

    run = make_finetuned(str(tmp_path / "run"))
    checkpoint = str(tmp_path / "run" / "checkpoint-5")
    shutil.copytree(run, checkpoint, ignore=shutil.ignore_patterns("checkpoint-*"))
    summary = export_onnx.main([checkpoint, "--int8", "--int8_ops", "MatMul", "Conv", "--int8_tolerance", "1e9",
                                "--clips", *CLIPS])
    assert os.path.isfile(os.path.join(checkpoint, ONNX_FILE)) and not os.path.exists(os.path.join(run, ONNX_FILE))
    ops = {node.op_type for node in onnx.load(os.path.join(checkpoint, INT8_FILE)).graph.node}
    assert {"QLinearConv", "DynamicQuantizeMatMul"} <= ops or {"QLinearConv", "MatMulInteger"} <= ops
    assert "Conv" not in ops and summary["int8_ops"] == ["MatMul", "Conv"]
    assert [p for p, _ in transcribe.main([checkpoint, *CLIPS, "--onnx", "int8"])] == CLIPS
    assert not [f for f in os.listdir(checkpoint) if ".conv.onnx" in f]  # the intermediate file is gone
