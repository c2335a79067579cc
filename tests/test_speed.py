"""Speed features: duration-capped batches, the collator, attention kernels, per-epoch throughput."""

import shutil

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, base_args, read_json
from transformers import Wav2Vec2FeatureExtractor

from ctc_finetune.batching import DataCollatorCTCWithPadding, DurationBatchSampler
from ctc_finetune.trainer import reuse_cpu_memory
import run_speech_recognition_ctc as ctc


def padding(batches, lengths) -> float:
    real = sum(lengths[i] for b in batches for i in b)
    return 1 - real / sum(max(lengths[i] for i in b) * len(b) for b in batches)


def test_duration_batches_cover_every_clip_once_within_the_cap_with_little_padding():
    lengths = np.random.default_rng(0).integers(11_000, 240_000, size=2000)  # 0.7 to 15 s at 16 kHz
    sampler = DurationBatchSampler(lengths, max_samples=30 * 16000, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(2000)) and len(batches) == len(sampler)
    assert all(max(lengths[i] for i in b) * len(b) <= 30 * 16000 for b in batches)
    assert padding(batches, lengths) < 0.02
    # Random batches of 8, for scale: the padding duration-capped batches avoid.
    random_batches = np.random.default_rng(0).permutation(2000).reshape(-1, 8)
    assert padding(random_batches, lengths) > 0.3


def test_duration_batches_are_reshuffled_per_epoch_and_reproducible():
    lengths = np.random.default_rng(0).integers(1000, 9000, size=300)
    a, b = DurationBatchSampler(lengths, 20_000, seed=3), DurationBatchSampler(lengths, 20_000, seed=3)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and sorted(map(tuple, a)) == sorted(map(tuple, first))  # same batches, new order
    b.set_epoch(1)
    assert list(b) == list(a)
    assert list(DurationBatchSampler(lengths, 20_000, seed=4)) != first


def test_duration_batches_reshuffle_each_epoch_when_sharded_for_ddp():
    """accelerate wraps the sampler for each of several processes; the Trainer's set_epoch must still reach it."""
    from accelerate.data_loader import prepare_data_loader
    from torch.utils.data import DataLoader

    lengths = np.random.default_rng(0).integers(1_000, 20_000, 60)
    loader = DataLoader(list(range(60)), batch_sampler=DurationBatchSampler(lengths, 40_000, seed=3))
    shards = [prepare_data_loader(loader, num_processes=2, process_index=rank, put_on_device=False) for rank in (0, 1)]
    first = [[b.tolist() for b in shard] for shard in shards]
    for shard in shards:
        shard.set_epoch(1)
    second = [[b.tolist() for b in shard] for shard in shards]
    assert first[0] != second[0]  # a new order in the new epoch
    for epoch in (first, second):  # the two processes share out every batch once
        assert sorted(i for rank in epoch for b in rank for i in b) == list(range(60))


def test_a_clip_longer_than_the_cap_gets_a_batch_of_its_own():
    sampler = DurationBatchSampler([100, 5000, 120], max_samples=1000, seed=0)
    assert sorted(map(sorted, sampler)) == [[0, 2], [1]]


@pytest.mark.parametrize("mask", [True, False])
def test_collator_pads_inputs_and_labels_like_the_feature_extractor(mask):
    fe = Wav2Vec2FeatureExtractor(return_attention_mask=mask, padding_value=0.0)
    features = [{"input_values": np.arange(n, dtype=np.float32) + 1, "labels": list(range(n // 2))} for n in (4, 7, 2)]
    batch = DataCollatorCTCWithPadding(fe)(features)
    reference = fe.pad([{"input_values": f["input_values"]} for f in features], padding="longest",
                       return_attention_mask=True, return_tensors="pt")
    assert torch.equal(batch["input_values"], reference["input_values"])
    assert batch["input_lengths"].tolist() == [4, 7, 2]
    assert ("attention_mask" in batch) == mask
    if mask:
        assert torch.equal(batch["attention_mask"], reference["attention_mask"].long())
    assert batch["labels"].tolist() == [[0, 1, -100], [0, 1, 2], [0, -100, -100]]


def test_duration_batches_train_and_report_throughput(tmp_path, encoder_dir, caplog):
    out = tmp_path / "out"
    with caplog.at_level("INFO"):
        ctc.main(base_args(encoder_dir, DATA_DIR, str(out), max_steps=None, num_train_epochs=1, max_batch_duration=4))
    metrics = read_json(out / "train_results.json")
    train = read_json(out / "data_report.json")["train"]
    assert metrics["train_audio_hours"] == pytest.approx(train["hours"], abs=1e-4)  # one epoch: every clip once
    assert 0 <= metrics["train_padding_fraction"] < 0.1 and metrics["train_audio_seconds_per_second"] > 0
    assert "Epoch 1.00:" in caplog.text and "sdpa attention" in caplog.text
    assert "freed blocks are kept for reuse" in caplog.text  # CPU default


def test_reuse_cpu_memory_can_be_turned_off(caplog):
    _, _, training_args, _ = ctc.parse_args(base_args("m", DATA_DIR, "out", reuse_cpu_memory="False", use_cpu=True))
    with caplog.at_level("INFO"):
        reuse_cpu_memory(training_args)
    assert "kept for reuse" not in caplog.text


def test_models_without_sdpa_fall_back_to_eager(tmp_path, caplog):
    from tiny_models import make_checkpoint

    encoder = make_checkpoint(str(tmp_path / "wavlm"), "wavlm")
    with caplog.at_level("INFO"):
        ctc.main(base_args(encoder, DATA_DIR, str(tmp_path / "out"), max_steps=1, do_eval=None))
    assert "no sdpa attention here" in caplog.text and "eager attention" in caplog.text


def test_resuming_mid_epoch_continues_the_same_duration_batches(tmp_path, encoder_dir):
    # Several epochs of duration-capped batches with checkpoints; a run resumed from a mid-epoch checkpoint must
    # see the same batches in the same order as the uninterrupted run: its per-step losses match.
    args = dict(max_steps=14, max_batch_duration=6, save_strategy="steps", save_steps=4, logging_steps=1,
                do_eval=None, learning_rate=3e-4)
    reference = tmp_path / "reference"
    ctc.main(base_args(encoder_dir, DATA_DIR, str(reference), **args))
    state = read_json(reference / "trainer_state.json")
    steps_per_epoch = round(state["global_step"] / state["epoch"])
    assert 1 < state["epoch"] and 8 % steps_per_epoch, "checkpoint-8 must fall inside an epoch after the first"

    resumed = tmp_path / "resumed"
    shutil.copytree(reference, resumed, ignore=lambda d, names: [
        n for n in names if (n.startswith("checkpoint-") and n != "checkpoint-8") or n.endswith("results.json")])
    ctc.main(base_args(encoder_dir, DATA_DIR, str(resumed), **args))  # finds checkpoint-8 and resumes from it
    losses = [{e["step"]: e["loss"] for e in read_json(out / "trainer_state.json")["log_history"] if "loss" in e}
              for out in (reference, resumed)]
    assert sorted(losses[1]) == list(range(1, 15))
    np.testing.assert_allclose([losses[1][s] for s in range(9, 15)], [losses[0][s] for s in range(9, 15)], rtol=1e-3)


def test_torch_compile_trains_and_saves_a_model_that_reloads(tmp_path, encoder_dir):
    from transformers import AutoModelForCTC

    torch._dynamo.reset()
    out = tmp_path / "out"
    # aot_eager: dynamo's graphs and AOT autograd without inductor's code generation (which took 70 s on two cores)
    results = ctc.main(base_args(encoder_dir, DATA_DIR, str(out), torch_compile=True, max_steps=1,
                                 torch_compile_backend="aot_eager", max_batch_duration=6, do_eval=None))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # the step really ran compiled
    assert np.isfinite(results["train_loss"])
    _, info = AutoModelForCTC.from_pretrained(out, output_loading_info=True)  # no "_orig_mod." key prefixes
    assert not info["missing_keys"] and not info["unexpected_keys"]
