"""Two CPU processes (gloo) through torchrun and through the legacy torch.distributed.launch, on real audio."""

import os
import subprocess
import sys

from conftest import DATA_DIR, SCRIPT, base_args, copy_fixture_with_audio_column, read_json
from conftest import hypothesis_of, transcribe
from test_train import SEED_MULTI_GPU

from ctc_finetune.batching import DurationBatchSampler
import run_speech_recognition_ctc as ctc

LAUNCH = ["--nproc_per_node", "2", "--master_port"]


def launch(launcher: list[str], argv: list[str], port: int) -> subprocess.CompletedProcess:
    env = {**os.environ}
    env.pop("OMP_NUM_THREADS", None)
    proc = subprocess.run([*launcher, *LAUNCH, str(port), SCRIPT, *argv], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


def check_outputs(proc, out):
    for rank in (0, 1):  # every rank reports its device at start-up and got through to the end
        assert f"Process rank {rank}," in proc.stdout + proc.stderr
    assert (proc.stdout + proc.stderr).count("  eval_wer ") == 1  # final metrics logged by the main process only
    assert "Every rank done: process group closed" in proc.stdout + proc.stderr  # none left open to abort at exit
    files = os.listdir(out)
    assert files.count("vocab.json") == 1 and files.count("model.safetensors") == 1
    assert "eval_wer" in read_json(os.path.join(out, "all_results.json"))
    clip = os.path.join(DATA_DIR, "test", "test-00005.flac")
    assert transcribe(str(out), [clip])[0] == hypothesis_of(str(out), clip)  # the saved model is the one evaluated


def test_seed_8_gpu_command_through_the_legacy_launcher(tmp_path, encoder_dir):
    data = copy_fixture_with_audio_column(str(tmp_path / "data"), "path")  # the seed reads Common Voice's `path`
    argv = SEED_MULTI_GPU.split() + [
        "--dataset_name", data, "--model_name_or_path", encoder_dir, "--output_dir", str(tmp_path / "out"),
        "--train_split_name", "train", "--eval_split_name", "test", "--max_steps", "3", "--eval_steps", "2",
        "--per_device_eval_batch_size", "2", "--push_to_hub", "False", "--fp16", "False", "--no_cuda",
        "--report_to", "none",
    ]
    proc = launch([sys.executable, "-m", "torch.distributed.launch"], argv, 29511)
    check_outputs(proc, tmp_path / "out")


def test_torchrun_reuses_a_preprocessing_only_cache_with_layerdrop_and_checkpointing(tmp_path, encoder_dir):
    out = str(tmp_path / "out")
    argv = base_args(encoder_dir, DATA_DIR, out, max_steps=4, use_cpu=True, layerdrop=0.5,
                     gradient_checkpointing=True, per_device_train_batch_size=2, group_by_length=True)
    ctc.main(argv + ["--preprocessing_only"])
    proc = launch(["torchrun"], argv, 29512)
    assert "features-train: reusing the cache" in proc.stdout
    assert "ddp_find_unused_parameters=True" in proc.stdout
    check_outputs(proc, out)
    assert read_json(os.path.join(out, "trainer_state.json"))["global_step"] == 4


def test_torchrun_with_duration_batches_gives_every_rank_the_same_batch_count(tmp_path, encoder_dir):
    # 12 clips in duration-capped batches: an odd number of batches, dealt out evenly by cycling, over two epochs.
    import math

    import soundfile as sf

    out = str(tmp_path / "out")
    argv = base_args(encoder_dir, DATA_DIR, out, max_steps=None, num_train_epochs=2, use_cpu=True,
                     max_batch_duration=6.0)
    proc = launch(["torchrun"], argv, 29513)
    check_outputs(proc, out)
    train = os.path.join(DATA_DIR, "train")
    lengths = [round(i.frames * 16000 / i.samplerate) for i in
               (sf.info(os.path.join(train, n)) for n in sorted(os.listdir(train)) if n.endswith(".mp3"))]
    batches = len(DurationBatchSampler(lengths, 6.0 * 16000, seed=42))
    assert batches % 2 == 1  # so the even split is exercised
    assert read_json(os.path.join(out, "trainer_state.json"))["global_step"] == 2 * math.ceil(batches / 2)
    assert "padding" in proc.stdout and "audio s/s" in proc.stdout  # per-epoch throughput lines


def test_fsdp_wraps_each_encoder_layer_and_matches_ddp_with_and_without_lora(tmp_path, encoder_dir):
    from safetensors.torch import load_file

    losses = {}
    for lora in (None, 4):
        for mode, flags in (("ddp", {}), ("fsdp", {"fsdp": "full_shard auto_wrap"})):
            out = str(tmp_path / f"{mode}-{lora}")
            argv = base_args(encoder_dir, DATA_DIR, out, max_steps=4, use_cpu=True, per_device_train_batch_size=2,
                             learning_rate=3e-3, lora_rank=lora, gradient_checkpointing=lora is not None, **flags)
            proc = launch(["torchrun"], argv, 29513 + len(losses))
            check_outputs(proc, out)  # a full model saved, which reloads and transcribes as evaluated
            assert ("FSDP: each encoder layer (Wav2Vec2EncoderLayerStableLayerNorm) is wrapped" in proc.stdout) \
                == ("FSDP on CPU ranks: torch's FSDP2 shards the model" in proc.stdout) == (mode == "fsdp")
            weights = load_file(os.path.join(out, "model.safetensors"))
            assert not any("lora_" in k for k in weights) and weights["lm_head.weight"].shape[1] == 32
            losses[mode, lora] = read_json(os.path.join(out, "all_results.json"))["eval_loss"]
    for lora in (None, 4):  # the same training, sharded or replicated
        assert abs(losses["fsdp", lora] - losses["ddp", lora]) <= 1e-3 * abs(losses["ddp", lora]), losses
