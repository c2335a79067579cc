"""Every CTC family of transformers 5.x: output lengths, configuration routing, and end-to-end fine-tuning of the
newer families from checkpoints shaped like their releases (tiny random weights, real audio, no network)."""

import csv
import logging
import os

import jiwer
import numpy as np
import pytest
import torch
import transformers
from conftest import DATA_DIR, base_args, read_csv, read_json
from tiny_models import ALL_FAMILIES, CYRILLIC_TEXT, NEW_FAMILIES, make_checkpoint, torchaudio_problem
from transformers import AutoConfig, AutoModelForCTC, AutoProcessor

from ctc_finetune import preprocessing
from ctc_finetune.audio import load_audio
from ctc_finetune.batching import DataCollatorCTCWithPadding
from ctc_finetune.columns import LABEL_PAD_ID, LENGTH_COLUMN
from ctc_finetune.families import (
    blank_token_id,
    configure_model,
    ctc_decode,
    decode_labels,
    extract_features,
    freeze_front_end,
    has_channel_axis,
    has_spec_augment,
    model_input_names,
    output_frames,
    processor_class,
    set_ctc_vocabulary,
)
from ctc_finetune.faults import UserError
from ctc_finetune.preprocessing import CTC_INFEASIBLE, encode_labels
import run_speech_recognition_ctc as ctc
from ctc_finetune.distributed import configure_distributed
import transcribe

TEST_DIR = os.path.join(DATA_DIR, "test")
RATE = 16000
needs_torchaudio = pytest.mark.skipif(torchaudio_problem() is not None, reason=f"{torchaudio_problem()}")


def family_param(arch):
    """A pytest param for a family; Granite Speech needs torchaudio (tools/install_extras.sh granite)."""
    return pytest.param(arch, marks=needs_torchaudio) if arch == "granite_speech5_ctc" else arch


def fixture_sentences(split: str) -> dict[str, str]:
    """file name -> transcript of a fixture split."""
    return {r["file_name"]: r["sentence"] for r in read_csv(os.path.join(DATA_DIR, split, "metadata.csv"))}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny checkpoint of each family as its releases ship (lazily built)."""
    root, built = tmp_path_factory.mktemp("families"), {}

    def get(arch):
        if arch not in built:
            built[arch] = make_checkpoint(str(root / arch), arch)
        return built[arch]

    return get


# ----------------------------------------------------------------------------------------------------------------------
# The model-agnostic layer, family by family
@pytest.mark.parametrize("arch", [family_param(a) for a in ALL_FAMILIES])
def test_output_frames_equal_the_logits_the_model_produces(checkpoints, arch):
    path = checkpoints(arch)
    config = AutoConfig.from_pretrained(path)
    if not config.architectures[0].endswith("ForCTC"):  # a bare encoder: give it a head
        config.vocab_size = 10
    model = AutoModelForCTC.from_pretrained(path, config=config).eval()
    processor = transformers.AutoFeatureExtractor.from_pretrained(path)
    collate = DataCollatorCTCWithPadding(processor, channel_axis=has_channel_axis(processor))
    name, _ = model_input_names(processor)
    rng = np.random.default_rng(0)
    lengths = [11_680, 16_000, 16_001, 16_159, 37_920, 80_000]  # 0.73 s ... 5 s, and odd sample counts
    clips = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in lengths]
    expected = output_frames(model, processor, lengths)
    assert (expected > 0).all()
    with torch.no_grad():
        for clip, frames in zip(clips, expected):  # each clip on its own: no padding anywhere
            batch = collate([{name: extract_features(processor, clip), LENGTH_COLUMN: len(clip)}])
            batch.pop("input_lengths")
            assert model(**batch).logits.shape[1] == frames, (arch, len(clip))
        # In a padded batch, the model's own output mask agrees with our count wherever it reports one.
        batch = collate([{name: extract_features(processor, c), LENGTH_COLUMN: len(c)} for c in clips])
        assert batch.pop("input_lengths").tolist() == lengths
        assert model(**batch).logits.shape[1] == expected.max()
    # SpecAugment's frames are the output frames unless an adapter subsamples after the masking.
    assert (output_frames(model, processor, lengths, before_adapter=True) == expected).all()


def test_output_frames_before_an_adapter_are_the_masked_frames(checkpoints):
    config = AutoConfig.from_pretrained(checkpoints("wav2vec2-bert"))
    config.update({"vocab_size": 10, "add_adapter": True, "num_adapter_layers": 1, "adapter_stride": 2})
    model = AutoModelForCTC.from_pretrained(checkpoints("wav2vec2-bert"), config=config).eval()
    processor = transformers.AutoFeatureExtractor.from_pretrained(checkpoints("wav2vec2-bert"))
    features = extract_features(processor, np.zeros(RATE, np.float32))
    with torch.no_grad():
        logits = model(torch.from_numpy(features)[None], attention_mask=torch.ones(1, len(features))).logits
    assert output_frames(model, processor, [RATE])[0] == logits.shape[1] == 25  # 49 fbank frames, stride 2
    assert output_frames(model, processor, [RATE], before_adapter=True)[0] == len(features) == 49


def test_regularisation_flags_go_where_each_family_reads_them(caplog):
    flags = ctc.ModelArguments(model_name_or_path="m", hidden_dropout=0.2, layerdrop=0.05, mask_time_prob=0.1)
    parakeet = transformers.ParakeetCTCConfig()
    assert configure_model(parakeet, flags) == ["mask_time_prob"]  # no SpecAugment in Parakeet
    assert (parakeet.encoder_config.dropout, parakeet.encoder_config.layerdrop) == (0.2, 0.05)
    assert parakeet.ctc_zero_infinity is True  # unset: the checkpoint's own value stays
    assert parakeet.encoder_config.attention_dropout == transformers.ParakeetEncoderConfig().attention_dropout
    assert not has_spec_augment(parakeet)

    omni = transformers.OmniASRCTCConfig()
    configure_model(omni, flags)
    assert (omni.audio_config.hidden_dropout, omni.audio_config.layerdrop) == (0.2, 0.05)

    # wav2vec2-era: every unset flag gets upstream's default, as upstream writes them all.
    w2v = transformers.Wav2Vec2Config(hidden_dropout=0.3, attention_dropout=0.3, ctc_zero_infinity=True)
    assert configure_model(w2v, flags) == []
    assert (w2v.hidden_dropout, w2v.attention_dropout, w2v.mask_time_prob, w2v.ctc_zero_infinity) == (0.2, 0.0, 0.1, False)
    assert has_spec_augment(w2v)
    with pytest.raises(UserError, match="--add_adapter: parakeet_ctc models have no adapter"):
        configure_model(transformers.ParakeetCTCConfig(), ctc.ModelArguments(model_name_or_path="m", add_adapter=True))


def test_new_vocabulary_sizes_the_head_and_sets_the_blank_everywhere():
    vocab = {"|": 0, "a": 1, "b": 2, "[UNK]": 3, "[PAD]": 4}
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "vocab.json"), "w") as f:
            json.dump(vocab, f)
        tokenizer = transformers.Wav2Vec2CTCTokenizer(os.path.join(tmp, "vocab.json"), unk_token="[UNK]",
                                                      pad_token="[PAD]")
    size = len(tokenizer)  # with <s> and </s>
    granite = transformers.GraniteSpeech5CTCConfig()
    set_ctc_vocabulary(granite, tokenizer)
    assert (granite.vocab_size, granite.encoder_config.vocab_size, granite.pad_token_id) == (size, size, 4)
    omni = transformers.OmniASRCTCConfig()
    assert blank_token_id(omni, tokenizer) == 0  # the release's blank is <s>, not the pad token
    set_ctc_vocabulary(omni, tokenizer)
    assert (omni.blank_token_id, omni.pad_token_id) == (4, 4)


@pytest.mark.parametrize("arch, frozen", [
    ("wav2vec2", "wav2vec2.feature_extractor."), ("parakeet_ctc", "encoder.subsampling."),
    ("lasr_ctc", "encoder.subsampler."), ("omniasr_ctc", "model.audio_tower.subsampling."),
    ("wav2vec2-bert", None), pytest.param("granite_speech5_ctc", None, marks=needs_torchaudio),
])
def test_freeze_feature_encoder_freezes_the_front_end_or_nothing(checkpoints, arch, frozen):
    config = AutoConfig.from_pretrained(checkpoints(arch))
    config.vocab_size = config.vocab_size or 10
    model = AutoModelForCTC.from_pretrained(checkpoints(arch), config=config)
    said = freeze_front_end(model)
    still = {n for n, p in model.named_parameters() if not p.requires_grad}
    if frozen is None:
        assert still == set() and "froze nothing" in said
    else:
        assert still and all(n.startswith(frozen) for n in still)
        assert {n for n, _ in model.named_parameters() if n.startswith(frozen)} == still


def test_ctc_decode_drops_the_blank_and_joins_subword_pieces(checkpoints):
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoints("omniasr_ctc"))
    ids = tokenizer("open the door", add_special_tokens=False).input_ids
    blank = 0  # OmniASR's blank is <s>, not its pad
    frames = [blank, ids[0], ids[0], blank, *[i for t in ids[1:] for i in (t, blank)], LABEL_PAD_ID]
    assert ctc_decode(tokenizer, frames, blank) == "open the door"
    assert decode_labels(tokenizer, [*ids, LABEL_PAD_ID]) == "open the door"
    lasr = transformers.AutoTokenizer.from_pretrained(checkpoints("lasr_ctc"))
    assert encode_labels(lasr, "door")[-1] != lasr.eos_token_id  # no </s> in labels
    assert decode_labels(lasr, encode_labels(lasr, "door")) == "door"  # the double o survives


# ----------------------------------------------------------------------------------------------------------------------
# End to end: every new family as released trains, evaluates, reloads and transcribes with default flags
@pytest.mark.parametrize("arch", [family_param(a) for a in NEW_FAMILIES])
def test_new_family_fine_tunes_evaluates_reloads_and_transcribes(tmp_path, checkpoints, arch, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        results = ctc.main(base_args(checkpoints(arch), DATA_DIR, str(out), per_device_eval_batch_size=1))
    assert np.isfinite(results["train_loss"])
    # Audio is counted in seconds whatever the model reads (feature frames are not samples).
    assert 0.004 < results["train_audio_hours"] < 0.02  # 4 steps of 4 clips of 1.3-2.3 s
    if arch == "wav2vec2-bert":
        assert "new CTC head" in caplog.text and "froze nothing" in caplog.text
    else:
        assert "Tokenizer: the checkpoint's own" in caplog.text and "new CTC head" not in caplog.text
        assert type(transformers.AutoTokenizer.from_pretrained(out)) is type(
            transformers.AutoTokenizer.from_pretrained(checkpoints(arch)))

    # The family's own processor comes back from AutoProcessor, with the model, from the output folder.
    processor = AutoProcessor.from_pretrained(out)
    assert type(processor) is processor_class(arch)
    model = AutoModelForCTC.from_pretrained(out)
    assert model.config.model_type == arch

    # References are the fixture transcripts (no </s>), and eval_wer equals transcribe.py's clip-by-clip output.
    rows = read_csv(out / "eval_predictions.csv")
    sentences = fixture_sentences("test")
    assert {r["reference"] for r in rows} == set(sentences.values())
    paths = [os.path.join(TEST_DIR, f) for f in sorted(sentences)]
    caplog.set_level(logging.INFO, logger="transcribe")
    transcripts = dict(transcribe.main([str(out), *paths, "--batch_seconds", "0.1"]))
    seconds = sum(load_audio(p, RATE).size for p in paths) / RATE  # audio seconds, not feature frames
    assert f"Transcribed 4 clips ({seconds:,.1f} s of audio" in caplog.text
    refs = [sentences[os.path.basename(p)] for p in paths]
    hyps = [transcripts[p] for p in paths]
    by_clip = {r["clip_id"]: r["hypothesis"] for r in rows}
    assert hyps == [by_clip[p] for p in paths]
    assert results["eval_wer"] == pytest.approx(jiwer.wer(refs, hyps))

    # The pipeline loads the folder as it is. In transformers 5.24 it hands OmniASR an `attention_mask`, which that
    # model does not take (it reads `padding_mask`): a bug of the pipeline's, documented in the README.
    asr = transformers.pipeline("automatic-speech-recognition", model=str(out), device="cpu")
    if arch == "omniasr_ctc":
        with pytest.raises(TypeError, match="attention_mask"):
            asr(load_audio(paths[0], RATE))
    else:
        # Our transcript, then at most what the pipeline decodes of the frames past the clip's end (it does not cut).
        assert asr(load_audio(paths[0], RATE))["text"].startswith(by_clip[paths[0]])


def over_long_manifest(tmp_path) -> str:
    """The fixture train split as a manifest, with one transcript far too long for its clip."""
    rows = read_csv(os.path.join(DATA_DIR, "train", "metadata.csv"))
    rows[0]["sentence"] = " ".join(["turn the kitchen light on and open the garage door"] * 6)
    path = tmp_path / "train.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "file_name": os.path.join(DATA_DIR, "train", r["file_name"])} for r in rows)
    return str(path)


@pytest.mark.parametrize("arch", ["wav2vec2-bert", "parakeet_ctc"])  # feature frames at 50/s; subword at 12.5/s
def test_over_long_transcript_is_dropped_and_counted(tmp_path, checkpoints, arch):
    out = tmp_path / "out"
    argv = base_args(checkpoints(arch), None, str(out), dataset_name=None, train_file=over_long_manifest(tmp_path),
                     eval_file=os.path.join(TEST_DIR, "metadata.csv"), max_steps=2)
    results = ctc.main(argv)
    assert read_json(out / "data_report.json")["train"]["dropped"] == {CTC_INFEASIBLE: 1}
    assert results["train_samples"] == 11 and np.isfinite(results["train_loss"])


def test_uncovered_shipped_tokenizer_takes_the_new_vocabulary_path(tmp_path, caplog):
    # A shipped subword tokenizer of another script: a character vocabulary is built, with a new head and blank.
    model = make_checkpoint(str(tmp_path / "model"), "omniasr_ctc", tokenizer_text=CYRILLIC_TEXT)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        results = ctc.main(base_args(model, DATA_DIR, str(out), max_steps=2))
    assert "the checkpoint's own leaves" in caplog.text and "building a new vocabulary" in caplog.text
    assert "new CTC head" in caplog.text and np.isfinite(results["train_loss"])
    vocab = read_json(out / "vocab.json")
    config = read_json(out / "config.json")
    assert config["vocab_size"] == len(transformers.AutoTokenizer.from_pretrained(out))
    assert config["blank_token_id"] == config["pad_token_id"] == vocab["[PAD]"]


def test_character_vocabulary_on_an_8x_model_stops_with_the_numbers(tmp_path):
    model = make_checkpoint(str(tmp_path / "model"), "parakeet_ctc", tokenizer_text=CYRILLIC_TEXT)
    with pytest.raises(UserError, match=r"of 12 training clips \(\d+%\) have transcripts too long for this "
                                            r"model's 12.5 output frames per second .*--tokenizer_name_or_path"):
        ctc.main(base_args(model, DATA_DIR, str(tmp_path / "out"), max_steps=2))


def test_tokenizer_name_or_path_takes_a_subword_tokenizer(tmp_path, checkpoints, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        results = ctc.main(base_args(checkpoints("wav2vec2-bert"), DATA_DIR, str(out), max_steps=2,
                                     tokenizer_name_or_path=checkpoints("parakeet_ctc")))
    assert "unknown" not in caplog.text.split("Data [train]")[1].split("\n")[0].replace("0.00% unknown", "")
    assert np.isfinite(results["train_loss"])
    assert type(transformers.AutoTokenizer.from_pretrained(out)).__name__ == "ParakeetTokenizer"
    assert {r["reference"] for r in read_csv(out / "eval_predictions.csv")} == set(fixture_sentences("test").values())


def test_torch_feature_extractors_in_parallel_preprocessing_workers(tmp_path, checkpoints):
    # LASR's (and Parakeet's, Granite's) feature extractor runs torch: in a forked datasets worker it deadlocked on
    # the OpenMP pool copied from the parent. A subprocess with a timeout turns a hang into a failure.
    import subprocess
    import sys

    from conftest import SCRIPT

    out = tmp_path / "out"
    argv = base_args(checkpoints("lasr_ctc"), DATA_DIR, str(out), max_steps=1, preprocessing_num_workers=2)
    proc = subprocess.run([sys.executable, SCRIPT, *argv], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_json(out / "all_results.json")["train_samples"] == 12


@pytest.mark.parametrize("arch", [family_param(a) for a in NEW_FAMILIES])
def test_our_inputs_give_the_logits_of_the_family_feature_extractor(checkpoints, arch):
    # What the collator builds (features cut to their valid frames, padded, with the family's mask name and shape)
    # must mean the same to the model as the family's own feature extractor output.
    config = AutoConfig.from_pretrained(checkpoints(arch))
    config.vocab_size = config.vocab_size or 10
    model = AutoModelForCTC.from_pretrained(checkpoints(arch), config=config).eval()
    fe = transformers.AutoFeatureExtractor.from_pretrained(checkpoints(arch))
    clip = load_audio(os.path.join(TEST_DIR, "test-00005.flac"), RATE)
    name, _ = model_input_names(fe)
    collate = DataCollatorCTCWithPadding(fe, channel_axis=has_channel_axis(fe))
    ours = collate([{name: extract_features(fe, clip), LENGTH_COLUMN: len(clip)}])
    ours.pop("input_lengths")
    theirs = fe(clip, sampling_rate=RATE, return_attention_mask=True, return_tensors="pt")
    with torch.no_grad():
        a, b = model(**ours).logits, model(**dict(theirs)).logits
    n = output_frames(model, fe, [len(clip)])[0]
    assert a.shape[1] == n and b.shape[1] >= n
    torch.testing.assert_close(a[:, :n], b[:, :n], atol=1e-4, rtol=1e-4)


def test_granite_without_torchaudio_is_one_line_naming_the_install(tmp_path, checkpoints, monkeypatch):
    # What transformers raises for GraniteSpeech5FeatureExtractor when torchaudio is missing (or does not import).
    def missing(*args, **kwargs):
        raise ImportError("GraniteSpeech5FeatureExtractor requires the torchaudio library but it was not found")

    monkeypatch.setattr(transformers.AutoFeatureExtractor, "from_pretrained", missing)
    with pytest.raises(UserError, match=r"needs a package that is missing .*torchaudio.*install_extras.sh granite"):
        ctc.main(base_args(checkpoints("parakeet_ctc"), DATA_DIR, str(tmp_path / "out"), max_steps=1))


def test_transcribe_without_torchaudio_is_one_line_naming_the_install(checkpoints, monkeypatch):
    def missing(*args, **kwargs):
        raise ImportError("GraniteSpeech5FeatureExtractor requires the torchaudio library but it was not found")

    monkeypatch.setattr(transformers.AutoFeatureExtractor, "from_pretrained", missing)
    with pytest.raises(UserError, match=r"needs a missing package .*install_extras.sh granite"):
        transcribe.main([checkpoints("parakeet_ctc"), os.path.join(TEST_DIR, "test-00005.flac")])


def test_layerdrop_in_a_sub_config_turns_on_ddp_unused_parameter_search(tmp_path):
    # Parakeet keeps layerdrop (0.1 by default) in encoder_config; DDP must then look for unused parameters.
    args = ctc.TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    assert args.ddp_find_unused_parameters is None
    from types import SimpleNamespace  # what configure_distributed reads of a model (a real 0.6B one is too big)

    configure_distributed(SimpleNamespace(config=transformers.ParakeetCTCConfig()), args)
    assert args.ddp_find_unused_parameters is True
    quiet = ctc.TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    configure_distributed(SimpleNamespace(config=transformers.ParakeetCTCConfig(encoder_config={"layerdrop": 0.0})),
                              quiet)
    assert quiet.ddp_find_unused_parameters is None


def test_head_first_training_turns_on_ddp_unused_parameter_search_unless_the_user_chose(tmp_path):
    from ctc_finetune.schedules import HeadFirst, ScheduleArguments, schedule_callbacks

    model = AutoModelForCTC.from_pretrained(make_checkpoint(str(tmp_path / "w"), "wav2vec2"))
    args = ctc.TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    assert schedule_callbacks(ScheduleArguments(), model, args) == [] and args.ddp_find_unused_parameters is None
    callbacks = schedule_callbacks(ScheduleArguments(freeze_encoder_steps=3), model, args)
    assert [type(c) for c in callbacks] == [HeadFirst] and args.ddp_find_unused_parameters is True
    chosen = ctc.TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none",
                                   ddp_find_unused_parameters=False)
    schedule_callbacks(ScheduleArguments(freeze_encoder_steps=3), model, chosen)
    assert chosen.ddp_find_unused_parameters is False


def test_subword_tokenizer_that_misses_the_text_stops_naming_the_characters(tmp_path):
    # A given subword tokenizer of another script: the unknown share counts label tokens, and names the letters
    # (not the word delimiter, which a subword tokenizer has no need for).
    other = make_checkpoint(str(tmp_path / "cyrillic"), "parakeet_ctc", tokenizer_text=CYRILLIC_TEXT)
    encoder = make_checkpoint(str(tmp_path / "encoder"), "wav2vec2")
    with pytest.raises(UserError, match=r"of the train labels are unknown to the tokenizer \(most frequent: [a-z]") as e:
        ctc.main(base_args(encoder, DATA_DIR, str(tmp_path / "out"), tokenizer_name_or_path=other, max_steps=1))
    assert "|" not in str(e.value).split("most frequent:")[1].split(")")[0]


def test_on_the_fly_data_report_decodes_no_audio(tmp_path, checkpoints, monkeypatch):
    # The report and the logged samples read lengths, rates, channels and labels from the header scan, not
    # through the decoding transform.
    calls = []
    real = load_audio
    monkeypatch.setattr(preprocessing, "load_audio", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    out = tmp_path / "out"
    ctc.main(base_args(checkpoints("wav2vec2-bert"), DATA_DIR, str(out), preprocess_on_the_fly=True,
                       preprocessing_only=True))
    assert read_json(out / "data_report.json")["train"]["clips"] == 12
    assert calls == []
