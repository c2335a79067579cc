"""The levers for a lower WER at the same compute: speed perturbation, noise and reverberation, head-first training,
the tri-stage schedule, several eval sets with model selection and early stopping, and checkpoint averaging."""

import glob
import os
import random
import subprocess
import sys

import jiwer
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import DATA_DIR, ROOT, SCRIPT, base_args, read_csv, read_json, rescore, step_losses
from safetensors.torch import load_file, save_file

from ctc_finetune.audio import load_audio
from ctc_finetune.augment import PCM16_STEP, Augmenter, fastest_speeds, noise_floor, pad_with_quiet, trailing_quiet
from ctc_finetune.batching import DataCollatorCTCWithPadding
from ctc_finetune.columns import FASTEST_SPEED_COLUMN, LABELS_COLUMN, LENGTH_COLUMN, WAVEFORM_COLUMN
from ctc_finetune.corpora import eval_set_key
from ctc_finetune.faults import UserError
from ctc_finetune.schedules import tri_stage_steps
from ctc_finetune.selection import average_checkpoints, best_checkpoints
import run_speech_recognition_ctc as ctc

RATE = 16000
CLIP = os.path.join(DATA_DIR, "test", "test-00005.flac")
try:
    import audiomentations  # noqa: F401 - only whether the extra is there
    HAS_AUGMENT = True
except ImportError:
    HAS_AUGMENT = False
# Noise and reverberation need the augment extra, which CI installs (there a missing one fails the test)
needs_augment = pytest.mark.skipif(not HAS_AUGMENT and not os.environ.get("CI"),
                                   reason="needs the augment extra: bash tools/install_extras.sh augment")


def noise_folder(path, seconds: float = 3.0, seed: int = 0) -> str:
    """A folder with one white-noise WAV file."""
    os.makedirs(path, exist_ok=True)
    noise = np.random.default_rng(seed).standard_normal(int(seconds * RATE)).astype(np.float32) * 0.1
    sf.write(os.path.join(path, "white.wav"), noise, RATE)
    return str(path)


# Speed perturbation ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturbation_plays_a_clip_at_its_factor(factor):
    audio = load_audio(CLIP, RATE)
    played, changed = Augmenter(RATE, speeds=[factor])(audio)
    assert changed["speed"] and abs(len(played) - len(audio) / factor) <= 1
    # Played by resampling: the same samples read at another rate, so pitch and tempo move together
    expected = load_audio(CLIP, round(RATE / factor))
    n = min(len(expected), len(played))
    assert np.corrcoef(played[:n], expected[:n])[0, 1] > 0.99
    assert Augmenter(RATE, speeds=[1.0])(audio)[0] is audio  # factor 1: untouched


def test_fastest_speeds_keeps_each_clip_feasible_for_ctc():
    def frames(samples, before_adapter=False):
        return np.asarray(samples) // 320  # 50 frames per second at 16 kHz

    lengths, min_frames = [16000, 16000, 16000], [40, 48, 60]  # 50 frames at 1.0; 45 at 1.1; 41 at 1.2
    assert fastest_speeds(lengths, min_frames, frames, 0, [0.9, 1.0, 1.1, 1.2]).tolist() == [1.2, 1.0, 1.0]
    assert fastest_speeds(lengths, [45, 45, 45], frames, 0, [1.1]).tolist() == [1.1] * 3
    assert fastest_speeds(lengths, [0, 0, 0], frames, 48, [1.1]).tolist() == [1.0] * 3  # SpecAugment's mask


def test_one_speed_per_batch_within_every_clip_s_fastest(tmp_path):
    from transformers import Wav2Vec2FeatureExtractor

    extractor = Wav2Vec2FeatureExtractor(sampling_rate=RATE, do_normalize=True, return_attention_mask=True)
    collator = DataCollatorCTCWithPadding(extractor, augmenter=Augmenter(RATE, speeds=[0.5, 1.0, 2.0]))
    audio = load_audio(CLIP, RATE)
    rows = [{WAVEFORM_COLUMN: audio[:n], LABELS_COLUMN: [3], LENGTH_COLUMN: n, FASTEST_SPEED_COLUMN: 2.0}
            for n in (len(audio), len(audio) - 800, len(audio) - 1600)]
    seen = set()
    for seed in range(12):
        random.seed(seed)
        lengths = collator(rows)["input_lengths"].numpy()
        ratios = lengths / np.array([r[LENGTH_COLUMN] for r in rows])
        assert np.ptp(ratios) < 0.01  # every clip of the batch at the same factor: no padding added
        seen.add(round(float(ratios[0]), 1))
    assert seen == {0.5, 1.0, 2.0}  # factors 2, 1 and 0.5 all drawn over the batches
    random.seed(0)
    slow = [dict(r, **{FASTEST_SPEED_COLUMN: 1.0}) if i == 1 else r for i, r in enumerate(rows)]
    assert all(collator(slow)["input_lengths"][0] >= len(audio) for _ in range(12))  # one clip allows at most 1.0


def test_the_collator_augments_waveform_rows_only(tmp_path):
    from transformers import Wav2Vec2FeatureExtractor

    extractor = Wav2Vec2FeatureExtractor(sampling_rate=RATE, do_normalize=True, return_attention_mask=False)
    audio = load_audio(CLIP, RATE)
    collator = DataCollatorCTCWithPadding(extractor, augmenter=Augmenter(RATE, speeds=[0.5]))
    train = collator([{WAVEFORM_COLUMN: audio, LABELS_COLUMN: [3, 4, 5], LENGTH_COLUMN: len(audio)}])
    assert train["input_lengths"].tolist() == [2 * len(audio)]  # played at half speed: twice as long
    assert train[LABELS_COLUMN].tolist() == [[3, 4, 5]]  # labels kept
    assert train["augmented"].tolist() == [1, 1, 0, 0, 0]  # 1 clip: speed changed it, no reverb, noise or padding
    features = extractor(audio, sampling_rate=RATE).input_values[0]
    evaluated = collator([{"input_values": features, LABELS_COLUMN: [3], LENGTH_COLUMN: len(audio)}])
    assert "augmented" not in evaluated and evaluated["input_values"][0].numpy() == pytest.approx(features)


@pytest.mark.parametrize("on_the_fly", [False, True])
def test_the_waveform_path_at_factor_one_trains_as_the_feature_path(tmp_path, encoder_dir, on_the_fly):
    # --speed_perturbation 1.0 keeps the training split's waveforms and featurizes them in the collator, changing
    # nothing: every step's loss must be the plain run's (same clips, same batches, same features)
    losses = {}
    for name, speeds in (("plain", None), ("waveforms", [1.0])):
        out = tmp_path / name
        ctc.main(base_args(encoder_dir, DATA_DIR, str(out), speed_perturbation=speeds, logging_steps=1, max_steps=6,
                           do_eval=None, preprocess_on_the_fly=on_the_fly or None))
        losses[name] = step_losses(str(out))
    assert len(losses["plain"]) == 6 and losses["waveforms"] == losses["plain"]


@pytest.mark.parametrize("mode", ["cached", "on_the_fly", "shards"])
def test_speed_perturbation_trains_on_played_clips_and_never_touches_evaluation(tmp_path, encoder_dir, mode,
                                                                                caplog):
    data, flags = DATA_DIR, {"per_device_train_batch_size": 4, "max_steps": 3}
    if mode == "on_the_fly":
        flags["preprocess_on_the_fly"] = True
    if mode == "shards":
        data = str(tmp_path / "shards")
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_shards.py"), "--dataset_name", DATA_DIR,
                        "--splits", "train", "test", "--text_column_name", "sentence", "--clips_per_shard", "6",
                        "--output_dir", data], check=True, capture_output=True, timeout=300)
        flags["text_column_name"] = "text"
    runs = {}
    for name, lever in (("plain", {}), ("slow", {"speed_perturbation": [0.5]}),
                        ("padded", {"silence_padding": 0.5, "silence_padding_prob": 1.0})):
        out = tmp_path / name
        with caplog.at_level("INFO"):
            runs[name] = ctc.main(base_args(encoder_dir, data, str(out), **lever, **flags))
        runs[name]["rows"] = read_csv(out / "eval_predictions.csv")
    plain, slow, padded = runs["plain"], runs["slow"], runs["padded"]
    # The same 12 clips trained, each played at half speed: twice the audio (hours are rounded to 0.0001)
    assert slow["train_audio_hours"] / plain["train_audio_hours"] == pytest.approx(2, abs=0.05)
    assert slow["train_augmented_speed_share"] == 1.0 and "train_augmented_speed_share" not in plain
    assert "speed 100%" in caplog.text
    # Evaluation sees the clips as they are (rows come worst first, so they are matched by clip)
    seconds = {name: {r["clip_id"]: r["seconds"] for r in run["rows"]} for name, run in runs.items()}
    assert len(seconds["slow"]) == 4 and seconds["slow"] == seconds["plain"] == seconds["padded"]
    assert slow["eval_samples"] == plain["eval_samples"] == padded["eval_samples"] == 4
    # Silence padding: every clip starts 0 to 0.5 s later, behind its own trailing quiet first (so it grows by less)
    assert padded["train_augmented_pad_share"] == 1.0
    assert "0-0.5 s of quiet before the clips of 100% of batches (their own trailing quiet first)" in caplog.text
    assert 1.0 <= padded["train_audio_hours"] / plain["train_audio_hours"] < 1.3


def test_duration_batches_are_sized_for_the_slowest_speed(tmp_path, encoder_dir):
    # Played at half speed, every clip is twice as long: batches of at most 6 s of audio hold half as many clips, so
    # an epoch has about twice the batches and 2 steps cover half as much of it
    epochs = {}
    for name, speeds in (("plain", None), ("slow", [0.5])):
        results = ctc.main(base_args(encoder_dir, DATA_DIR, str(tmp_path / name), max_batch_duration=6, max_steps=2,
                                     speed_perturbation=speeds, do_eval=None))
        epochs[name] = results["epoch"]
    assert epochs["slow"] == pytest.approx(epochs["plain"] / 2, rel=0.35)


# Silence padding ---------------------------------------------------------------------------------------------------
def test_silence_padding_puts_quiet_around_the_clip_and_keeps_it_whole():
    audio, rng = load_audio(CLIP, RATE), np.random.default_rng(0)
    floor = 0.002
    padded = pad_with_quiet(audio, 800, 1600, floor, rng)  # at a noise floor: the clip itself untouched
    assert len(padded) == len(audio) + 2400 and np.array_equal(padded[800:-1600], audio)
    assert np.std(padded[:800]) == pytest.approx(floor, rel=0.15)
    assert np.std(padded[-1600:]) == pytest.approx(floor, rel=0.15)
    pcm16 = pad_with_quiet(audio, 800, 1600, None, rng)  # as a dithered 16-bit recording
    steps = pcm16 / PCM16_STEP
    assert np.array_equal(steps, np.round(steps)) and np.abs(steps[:800]).max() <= 1  # a step of noise at most
    assert np.abs(pcm16[800:-1600] - audio).max() <= 1.5 * PCM16_STEP  # the clip within a step and a half
    assert noise_floor(padded, RATE) < 2 * floor and noise_floor(np.zeros(RATE, np.float32), RATE) == 0


def speech_end(audio):
    return len(audio) - int(np.argmax(np.abs(audio[::-1]) > 0.01))  # well above a 16-bit step of dither


def test_silence_padding_moves_each_clip_s_onset_within_its_padding_taking_its_trailing_quiet_first():
    clip = load_audio(CLIP, RATE)
    speech = clip[:speech_end(clip)]  # cut where its speech ends: no trailing quiet to move
    ending_quiet = np.concatenate([speech, np.zeros(RATE // 2, np.float32)])  # 0.5 s of trailing silence
    assert trailing_quiet(speech, RATE) < 0.02 * RATE and trailing_quiet(ending_quiet, RATE) >= 0.49 * RATE
    onset = int(np.argmax(np.abs(speech) > 0.1))  # far above the added quiet (the clip's floor, 0.006 here)
    augmenter, padding = Augmenter(RATE, pad_seconds=0.25, pad_prob=1.0), 4000
    random.seed(0)
    leads, grown = [], []
    for audio in [speech] * 100 + [ending_quiet] * 100:
        padded, changed = augmenter(audio, padding=padding)
        assert changed["pad"]
        leads.append(int(np.argmax(np.abs(padded) > 0.1)) - onset)
        grown.append(len(padded) - len(audio))
        # The clip's speech is whole, in order, and ends at least KEEP_TAIL_SECONDS before the padded clip does
        assert np.abs(padded[leads[-1] + onset:][:len(speech) - onset] - speech[onset:]).max() <= 1.5 * PCM16_STEP
    assert min(leads) >= 0 and max(leads) <= padding and np.std(leads) > padding / 5  # all over the padding
    assert grown[:100] == leads[:100]  # a clip without trailing quiet grows by its lead
    assert not any(grown[100:]) and all(len(p) - speech_end(p) >= 0.1 * RATE - 1 for p in [  # one that has it: not
        augmenter(ending_quiet, padding=padding)[0] for _ in range(20)])  # at all, and keeps 0.1 s of it
    assert augmenter(speech, padding=0)[0] is speech


def test_silence_padding_draws_its_share_once_a_batch_and_sizes_batches_for_the_most():
    from transformers import Wav2Vec2FeatureExtractor

    audio = load_audio(CLIP, RATE)
    audio = audio[:speech_end(audio)]  # no trailing quiet: each clip grows by its lead
    augmenter = Augmenter(RATE, pad_seconds=0.6, pad_prob=0.5)
    collator = DataCollatorCTCWithPadding(Wav2Vec2FeatureExtractor(sampling_rate=RATE, return_attention_mask=True),
                                          augmenter=augmenter)
    rows = [{WAVEFORM_COLUMN: audio[:n], LABELS_COLUMN: [3], LENGTH_COLUMN: n} for n in (len(audio), 8000)]
    random.seed(0)
    added = []
    for _ in range(200):
        batch = collator(rows)
        grown = batch["input_lengths"].numpy() - [len(audio), 8000]
        assert batch[LABELS_COLUMN].tolist() == [[3], [3]]
        assert grown.all() or not grown.any()  # a batch is padded or not (a lead of exactly 0 is 1 in 9,601)
        added += grown.tolist()
    padded = [a for a in added if a]
    assert 0.4 < len(padded) / len(added) < 0.6 and max(padded) <= 0.6 * RATE
    assert np.percentile(padded, 10) < 0.2 * RATE < 0.4 * RATE < np.percentile(padded, 90)  # spread, not fixed
    assert Augmenter(RATE, speeds=[0.5, 1.0], pad_seconds=0.1).longest(np.array([1000])).tolist() == [2000 + 1600]
    with pytest.raises(UserError, match="--silence_padding takes the most seconds of quiet"):
        ctc.parse_args(["--model_name_or_path", "m", "--dataset_name", "d", "--output_dir", "o",
                        "--silence_padding", "-1"])


# Noise and reverberation -------------------------------------------------------------------------------------------
@needs_augment
def test_noise_is_added_at_the_snr_asked_for(tmp_path):
    audio = load_audio(CLIP, RATE)
    augmenter = Augmenter(RATE, noise_files=[os.path.join(noise_folder(tmp_path / "noise"), "white.wav")],
                          snr_db=(10.0, 10.0), noise_prob=1.0)
    noisy, changed = augmenter(audio)
    noise = noisy - audio
    assert changed["noise"] and len(noisy) == len(audio)
    assert 10 * np.log10(np.mean(audio ** 2) / np.mean(noise ** 2)) == pytest.approx(10.0, abs=0.1)
    never = Augmenter(RATE, noise_files=augmenter.steps["noise"].sound_file_paths, noise_prob=0.0)
    assert np.array_equal(never(audio)[0], audio) and not never(audio)[1]["noise"]


@needs_augment
def test_reverberation_convolves_with_the_impulse_response(tmp_path):
    folder = tmp_path / "rir"
    folder.mkdir()
    response = np.zeros(800, np.float32)
    response[0], response[400] = 1.0, 0.5  # the sound, and an echo 25 ms later
    sf.write(folder / "room.wav", response, RATE)
    audio = load_audio(CLIP, RATE)
    played, changed = Augmenter(RATE, rir_files=[str(folder / "room.wav")], rir_prob=1.0)(audio)
    echoed = audio.copy()
    echoed[400:] += 0.5 * audio[:-400]
    assert changed["reverb"] and len(played) == len(audio)
    assert np.corrcoef(played, echoed)[0, 1] > 0.999


@needs_augment
def test_noise_trains_end_to_end(tmp_path, encoder_dir, caplog):
    with caplog.at_level("INFO"):
        results = ctc.main(base_args(encoder_dir, DATA_DIR, str(tmp_path / "out"),
                                     noise_dir=noise_folder(tmp_path / "noise"), noise_prob=1.0,
                                     rir_dir=noise_folder(tmp_path / "rir", seconds=0.05), rir_prob=1.0))
    assert results["train_augmented_noise_share"] == 1.0 and results["train_augmented_reverb_share"] == 1.0
    assert "noise from 1 files at 5-20 dB SNR on 100% of clips" in caplog.text
    assert np.isfinite(results["train_loss"]) and results["eval_samples"] == 4


def test_a_bad_noise_dir_is_one_error_line(tmp_path, encoder_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    (unreadable / "broken.wav").write_bytes(b"RIFF not really a wave file")
    for folder, says in ((tmp_path / "missing", "is not a folder"), (empty, "holds no audio files"),
                         (unreadable, "1 of 1 files")):
        with pytest.raises(UserError, match=says):
            ctc.main(base_args(encoder_dir, DATA_DIR, str(tmp_path / "out"), noise_dir=str(folder)))
    # From the command line: one line, before any work
    proc = subprocess.run([sys.executable, SCRIPT, *base_args(encoder_dir, DATA_DIR, str(tmp_path / "out"),
                                                              noise_dir=str(unreadable))],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --noise_dir: 1 of 1 files in {unreadable} are unreadable or empty (first: {unreadable}/broken.wav); "
        "remove or re-encode them."]
    assert not (tmp_path / "out" / "vocab.json").exists()


# Schedules ---------------------------------------------------------------------------------------------------------
def test_head_first_trains_only_the_head_for_the_first_steps(tmp_path, encoder_dir):
    out = tmp_path / "out"
    ctc.main(base_args(encoder_dir, DATA_DIR, str(out), max_steps=4, freeze_encoder_steps=2,
                       save_strategy="steps", save_steps=2, freeze_feature_encoder=False))
    start = {f"wav2vec2.{k}": v for k, v in load_file(os.path.join(encoder_dir, "model.safetensors")).items()}
    at = {step: load_file(str(out / f"checkpoint-{step}" / "model.safetensors")) for step in (2, 4)}
    assert start and all(torch.equal(at[2][k], v) for k, v in start.items())  # the encoder frozen for steps 1, 2
    assert not torch.equal(at[2]["lm_head.weight"], at[4]["lm_head.weight"])  # the head trained throughout
    assert any(not torch.equal(at[4][k], v) for k, v in start.items())  # then the encoder too


def test_tri_stage_schedule_warms_up_holds_and_decays(tmp_path, encoder_dir):
    assert tri_stage_steps([0.1, 0.4, 0.5], 20) == (2, 10)
    out = tmp_path / "out"
    ctc.main(base_args(encoder_dir, DATA_DIR, str(out), max_steps=20, logging_steps=1, lr_scheduler_type="tri_stage",
                       learning_rate=1e-3, per_device_train_batch_size=2, do_eval=False))
    rates = [e["learning_rate"] for e in read_json(out / "trainer_state.json")["log_history"] if "learning_rate" in e]
    assert len(rates) == 20 and rates[0] < 1e-3  # warm-up: steps 1 and 2
    assert rates[2:10] == pytest.approx([1e-3] * 8)  # hold: 40%
    assert all(a > b for a, b in zip(rates[10:], rates[11:])) and rates[-1] < 0.1e-3  # decay: 50%, to 5%


def test_tri_stage_ratios_need_tri_stage(tmp_path, encoder_dir):
    with pytest.raises(UserError, match="tri_stage"):
        ctc.main(base_args(encoder_dir, DATA_DIR, str(tmp_path), tri_stage_ratios=[0.1, 0.4, 0.5]))


# Several eval sets, model selection, early stopping --------------------------------------------------------------
def test_several_eval_sets_report_separately_and_early_stopping_stops(tmp_path, encoder_dir):
    out = tmp_path / "out"
    # A learning rate of 0: the selection metric never improves, so patience 1 stops at the second evaluation
    results = ctc.main(base_args(encoder_dir, DATA_DIR, str(out), eval_split_name="test,validation", max_steps=40,
                                 learning_rate=0, eval_strategy="steps", eval_steps=2, save_strategy="steps",
                                 save_steps=2, metric_for_best_model="validation_cer", load_best_model_at_end=True,
                                 early_stopping_patience=1))
    state = read_json(out / "trainer_state.json")
    assert state["global_step"] == 4  # of 40
    assert [e["step"] for e in state["log_history"] if "eval_validation_cer" in e] == [2, 4]
    for name in ("test", "validation"):
        assert (out / f"eval_{name}_predictions.csv").is_file() and (out / f"eval_{name}_results.json").is_file()
        assert results[f"eval_{name}_wer"] == pytest.approx(rescore(out, f"eval_{name}"))
        assert results[f"eval_{name}_cer"] == pytest.approx(rescore(out, f"eval_{name}", measure=jiwer.cer))
        assert results[f"eval_{name}_samples"] == 4
    assert "eval_wer" not in results
    assert state["best_model_checkpoint"].endswith("checkpoint-2")  # the first of two equal scores
    report = (out / "report.html").read_text()
    assert "eval_test split" in report and "eval_validation split" in report
    # the curves draw each set's loss and error rates (matplotlib writes each legend label as a comment)
    for label in ("test", "validation", "test WER", "validation CER"):
        assert f"<!-- {label} -->" in report, label


def test_eval_set_names_and_selection_errors(tmp_path, encoder_dir):
    assert eval_set_key("test-other") == "eval_test-other" and eval_set_key("test[:100]") == "eval_test_100"
    with pytest.raises(UserError, match="each once"):
        ctc.main(base_args(encoder_dir, DATA_DIR, str(tmp_path), eval_split_name="test,test"))
    with pytest.raises(UserError, match="add it to --eval_metrics"):
        ctc.main(base_args(encoder_dir, DATA_DIR, str(tmp_path), eval_metrics=["wer"], metric_for_best_model="cer",
                           eval_strategy="steps", eval_steps=2))
    with pytest.raises(UserError, match="--eval_strategy steps"):
        ctc.main(base_args(encoder_dir, DATA_DIR, str(tmp_path), early_stopping_patience=2))
    with pytest.raises(UserError, match="--save_strategy steps"):
        ctc.main(base_args(encoder_dir, DATA_DIR, str(tmp_path), average_checkpoints=2, eval_strategy="steps",
                           eval_steps=2))


# Checkpoint averaging ----------------------------------------------------------------------------------------------
def test_best_checkpoints_are_the_lowest_scores_later_first_on_ties():
    scores = {"out/checkpoint-2": 0.5, "out/checkpoint-4": 0.3, "out/checkpoint-6": 0.3, "out/checkpoint-8": 0.9}
    assert best_checkpoints(scores, 2, greater_is_better=False) == ["out/checkpoint-6", "out/checkpoint-4"]
    assert best_checkpoints(scores, 1, greater_is_better=True) == ["out/checkpoint-8"]


class FakeTrainer:
    """What average_checkpoints uses of a Trainer, with an evaluation that returns a chosen score."""

    def __init__(self, output_dir, log_history, averaged_score):
        from types import SimpleNamespace

        self.model = torch.nn.Linear(2, 1, bias=False)
        self.args = SimpleNamespace(output_dir=str(output_dir), metric_for_best_model="eval_wer",
                                    greater_is_better=False)
        self.state = SimpleNamespace(log_history=log_history)
        self.accelerator = SimpleNamespace(unwrap_model=lambda m: m)
        self.averaged_score = averaged_score

    def evaluate(self, metric_key_prefix):
        self.evaluated = self.model.weight.detach().clone()
        return {f"{metric_key_prefix}_wer": self.averaged_score}


@pytest.mark.parametrize("averaged_score, kept", [(0.2, "average"), (0.4, "checkpoint-4")])
def test_averaging_averages_the_n_best_and_keeps_the_better_of_average_and_best(tmp_path, averaged_score, kept):
    weights = {2: [1.0, 1.0], 4: [3.0, 5.0], 6: [5.0, 7.0], 8: [100.0, 100.0]}
    scores = {2: 0.9, 4: 0.3, 6: 0.35, 8: 0.8}
    for step, w in weights.items():
        os.makedirs(tmp_path / f"checkpoint-{step}")
        save_file({"weight": torch.tensor([w])}, str(tmp_path / f"checkpoint-{step}" / "model.safetensors"))
    history = [{"step": s, "eval_wer": v} for s, v in scores.items()]
    trainer = FakeTrainer(tmp_path, history, averaged_score)
    result = average_checkpoints(trainer, 2)
    assert trainer.evaluated.tolist() == [[4.0, 6.0]]  # the mean of checkpoints 4 and 6, the two best
    assert result == {"averaged_checkpoints": "checkpoint-4,checkpoint-6", "averaged_eval_wer": averaged_score,
                      "best_checkpoint_eval_wer": 0.3, "final_model": kept}
    final = [[4.0, 6.0]] if kept == "average" else [weights[4]]
    assert trainer.model.weight.tolist() == final


def test_averaging_end_to_end_keeps_the_n_best_checkpoints(tmp_path, encoder_dir, caplog):
    out = tmp_path / "out"
    with caplog.at_level("INFO"):
        results = ctc.main(base_args(encoder_dir, DATA_DIR, str(out), max_steps=8, eval_strategy="steps",
                                     eval_steps=2, save_strategy="steps", save_steps=2, average_checkpoints=2,
                                     save_total_limit=1, metric_for_best_model="cer"))
    history = read_json(out / "trainer_state.json")["log_history"]
    scores = {f"checkpoint-{e['step']}": e["eval_cer"] for e in history if "eval_cer" in e}
    best = best_checkpoints(scores, 2, greater_is_better=False)
    assert results["averaged_checkpoints"] == ",".join(best)
    left = sorted(os.path.basename(p) for p in glob.glob(str(out / "checkpoint-*")))
    assert set(left) <= {*best, "checkpoint-8"} and set(best) <= set(left)  # the 2 best and the last kept
    assert results["best_checkpoint_eval_cer"] == scores[best[0]]
    assert results["final_model"] in ("average", best[0]) and "Averaging: 2 best checkpoints" in caplog.text
    final = load_file(str(out / "model.safetensors"))
    if results["final_model"] == "average":
        assert results["averaged_eval_cer"] < results["best_checkpoint_eval_cer"]
        assert results["eval_cer"] == pytest.approx(results["averaged_eval_cer"])
    else:
        kept = load_file(str(out / best[0] / "model.safetensors"))
        assert all(torch.equal(final[k], kept[k]) for k in kept)
        assert results["eval_cer"] == pytest.approx(results["best_checkpoint_eval_cer"])
