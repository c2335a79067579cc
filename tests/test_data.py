"""Every local corpus layout and manifest format, bad input, caching and on-the-fly decoding, end to end."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
from conftest import DATA_DIR, base_args, read_json

from ctc_finetune.audio import load_audio
from ctc_finetune.faults import UserError
import run_speech_recognition_ctc as ctc


def fixture_rows(split: str) -> list[dict]:
    with open(os.path.join(DATA_DIR, split, "metadata.csv"), encoding="utf-8") as f:
        return list(csv.DictReader(f))


def clip(split: str, row: dict) -> str:
    return os.path.join(DATA_DIR, split, row["file_name"])


def train_on(model: str, out, **flags) -> dict:
    """A few training steps plus evaluation; returns all_results.json."""
    args = {"train_split_name": None, "eval_split_name": None, "text_column_name": None, "max_steps": 2, **flags}
    ctc.main(base_args(model, flags.pop("dataset_name", None), str(out), **args))
    return read_json(out / "all_results.json")


def test_common_voice_release(tmp_path, encoder_dir):
    cv = tmp_path / "cv-corpus-tr"
    (cv / "clips").mkdir(parents=True)
    for tsv, split in (("train", "train"), ("dev", "validation"), ("test", "test")):
        with open(cv / f"{tsv}.tsv", "w", encoding="utf-8") as f:
            f.write("client_id\tpath\tsentence\tup_votes\tdown_votes\n")
            for i, row in enumerate(fixture_rows(split)):
                shutil.copy(clip(split, row), cv / "clips" / row["file_name"])
                f.write(f'c{i}\t{row["file_name"]}\t"{row["sentence"].capitalize()}."\t2\t0\n')  # raw quotes, as CV
    # Upstream's defaults: train split train+validation (= dev.tsv), eval split test; audio column found as `path`.
    results = train_on(encoder_dir, tmp_path / "out", dataset_name=str(cv), text_column_name="sentence",
                       chars_to_ignore=['"', "."])
    assert results["train_samples"] == 16 and results["eval_samples"] == 4
    report = read_json(tmp_path / "out" / "data_report.json")
    assert '"' not in report["train"]["characters"] and report["train"]["dropped"] == {}


def test_librispeech_tree_with_hub_split_names(tmp_path, encoder_dir):
    root = tmp_path / "LibriSpeech"
    for split, name in (("train", "train-clean-100"), ("test", "test-clean")):
        chapter = root / name / "103" / "1240"
        chapter.mkdir(parents=True)
        lines = []
        for i, row in enumerate(fixture_rows(split)):
            utt = f"103-1240-{i:04d}"
            audio = load_audio(clip(split, row), 16000)
            sf.write(chapter / f"{utt}.flac", audio, 16000)
            lines.append(f"{utt} {row['sentence'].upper()}")
        (chapter / "103-1240.trans.txt").write_text("\n".join(lines) + "\n")
    results = train_on(encoder_dir, tmp_path / "out", dataset_name=str(root), train_split_name="train.clean.100",
                       eval_split_name="test-clean")
    assert results["train_samples"] == 12 and results["eval_samples"] == 4
    assert read_json(tmp_path / "out" / "data_report.json")["train"]["sampling_rates"] == [16000]


def test_save_to_disk_directory_with_audio_bytes(tmp_path, encoder_dir):
    import datasets

    splits = {}
    for split in ("train", "test"):
        rows = fixture_rows(split)
        splits[split] = datasets.Dataset.from_dict(
            {"audio": [{"bytes": open(clip(split, r), "rb").read(), "path": r["file_name"]} for r in rows],
             "text": [r["sentence"] for r in rows]}
        ).cast_column("audio", datasets.Audio())
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "saved"))
    results = train_on(encoder_dir, tmp_path / "out", dataset_name=str(tmp_path / "saved"), train_split_name="train",
                       eval_split_name="test[:3]")
    assert results["train_samples"] == 12 and results["eval_samples"] == 3


def test_split_folders_with_slices(tmp_path, encoder_dir):
    results = train_on(encoder_dir, tmp_path / "out", dataset_name=DATA_DIR, train_split_name="train[:50%]+validation",
                       eval_split_name="test[-2:]", text_column_name="sentence")
    assert results["train_samples"] == 10 and results["eval_samples"] == 2


@pytest.mark.parametrize("splits, fix", [
    (("train", "test"), "--train_split_name train --eval_split_name test"),
    (("train", "validation"), "--train_split_name train --eval_split_name validation"),  # validation not trained on
], ids=["train+test", "train+validation"])
def test_a_missing_split_names_the_flags_that_work(tmp_path, encoder_dir, splits, fix):
    corpus = tmp_path / "my_corpus"
    for split in splits:
        shutil.copytree(os.path.join(DATA_DIR, split), corpus / split)
    with pytest.raises(UserError) as error:  # the defaults: train on train+validation, evaluate on test
        train_on(encoder_dir, tmp_path / "failed", dataset_name=str(corpus), text_column_name="sentence")
    missing = ({"train", "validation", "test"} - set(splits)).pop()
    assert str(error.value) == (f"split {missing!r} not found in {corpus} (its splits: {', '.join(sorted(splits))}); "
                                f"pass {fix}")
    words = fix.split()  # the fix runs as written
    flags = {flag.removeprefix("--"): value for flag, value in zip(words[::2], words[1::2])}
    results = train_on(encoder_dir, tmp_path / "out", dataset_name=str(corpus), text_column_name="sentence", **flags)
    assert results["train_samples"] == 12 and results["eval_samples"] == 4


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl_nemo"])
def test_manifests(tmp_path, encoder_dir, fmt):
    def write(split, name):
        rows = fixture_rows(split)
        path = tmp_path / "manifests" / name
        path.parent.mkdir(exist_ok=True)
        rel = [os.path.relpath(clip(split, r), path.parent) for r in rows]  # relative to the manifest
        if fmt in ("csv", "tsv"):
            sep = "," if fmt == "csv" else "\t"
            lines = [f"audio{sep}text"] + [f"{p}{sep}{r['sentence']}" for p, r in zip(rel, rows)]
            path.write_text("\n".join(lines) + "\n")
        elif fmt == "json":
            path.write_text(json.dumps([{"audio": p, "text": r["sentence"]} for p, r in zip(rel, rows)]))
        else:  # NeMo: absolute audio_filepath, text, duration
            path.write_text("".join(
                json.dumps({"audio_filepath": clip(split, r), "text": r["sentence"], "duration": float(r["duration"])})
                + "\n" for r in rows
            ))
        return str(path)

    ext = {"jsonl_nemo": "jsonl"}.get(fmt, fmt)
    results = train_on(encoder_dir, tmp_path / "out", train_file=write("train", f"train.{ext}"),
                       eval_file=write("test", f"test.{ext}"))
    assert results["train_samples"] == 12 and results["eval_samples"] == 4


def write_wav(path, audio, rate):
    sf.write(str(path), audio, rate)
    return str(path)


@pytest.fixture
def messy_manifest(tmp_path):
    """Good rows plus every kind of bad or awkward input, as one CSV manifest."""
    d = tmp_path / "messy"
    d.mkdir()
    rows = [(clip("train", r), r["sentence"]) for r in fixture_rows("train")[:8]]
    speech = load_audio(clip("train", fixture_rows("train")[2]), 44100)
    flac = open(clip("test", fixture_rows("test")[0]), "rb").read()
    (d / "truncated.flac").write_bytes(flac[: len(flac) // 3])  # FLAC loses sync: undecodable
    mp3 = open(clip("train", fixture_rows("train")[3]), "rb").read()
    (d / "truncated.mp3").write_bytes(mp3[: len(mp3) // 3])  # MP3 decodes a third of its header's length
    (d / "noise.mp3").write_bytes(np.random.default_rng(0).bytes(4000))
    bad = {
        "truncated.flac": "move the white light",
        "truncated.mp3": "open the door",
        "missing.wav": "open the door",
        "noise.mp3": "open the door",
        write_wav(d / "zero.wav", np.zeros(0, np.float32), 16000): "open the door",
        clip("train", fixture_rows("train")[9]): "",
        write_wav(d / "blip.wav", speech[:1500], 44100): "yes",  # 34 ms: too short for SpecAugment
        write_wav(d / "short.wav", speech[:44100 // 5], 44100): "stop the fan in the hallway and the garage",  # CTC
        write_wav(d / "long.wav", np.tile(speech, 15)[: 30 * 44100], 44100): "stop the fan in the hallway",  # 30 s
    }
    good_ones = {
        write_wav(d / "stereo44k.wav", np.stack([speech, speech * 0.5], axis=1), 44100): "stop the fan in the hallway",
        write_wav(d / "eight_khz.wav", load_audio(clip("train", fixture_rows("train")[2]), 8000), 8000):
            "stop the fan in the hallway",
    }
    with open(d / "train.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["audio", "text"])
        w.writerows(rows + list(bad.items()) + list(good_ones.items()))
    return str(d / "train.csv")


def test_messy_manifest_trains_and_reports_every_skip(tmp_path, encoder_dir, messy_manifest):
    eval_file = str(tmp_path / "eval.csv")
    long_clip = os.path.join(os.path.dirname(messy_manifest), "long.wav")
    with open(eval_file, "w", encoding="utf-8") as f:
        f.write("audio,text\n" + "".join(f"{clip('test', r)},{r['sentence']}\n" for r in fixture_rows("test")))
        f.write(f"{long_clip},stop the fan in the hallway\n")  # eval keeps a 30 s clip: WER covers the whole split
    results = train_on(encoder_dir, tmp_path / "out", train_file=messy_manifest, eval_file=eval_file,
                       per_device_train_batch_size=4)
    report = read_json(tmp_path / "out" / "data_report.json")
    assert report["train"]["dropped"] == {
        "unreadable audio": 1, "missing file": 1, "empty audio": 1, "empty transcript": 1,
        "too short for SpecAugment's --mask_time_length": 1, "transcript too long for the audio (CTC)": 1,
        "longer than --max_duration_in_seconds": 1, "undecodable audio": 1, "truncated audio": 1,
    }, report["train"]["dropped"]
    assert results["train_samples"] == 10  # 8 good rows + the stereo 44.1 kHz and the 8 kHz files
    assert sorted(report["train"]["sampling_rates"]) == [8000, 16000, 22050, 44100]
    assert report["train"]["channels"] == [1, 2]
    assert results["eval_samples"] == 5 and results["eval_clips_dropped"] == 0
    assert report["eval"]["seconds_min_median_max"][2] == pytest.approx(30.0, abs=0.01)


def test_strict_data_turns_skips_into_an_error(tmp_path, encoder_dir, messy_manifest):
    with pytest.raises(UserError, match="--strict_data"):
        train_on(encoder_dir, tmp_path / "out", train_file=messy_manifest, do_eval=None, strict_data=True)


def test_cache_is_reused_and_on_the_fly_decoding_gives_the_same_wer(tmp_path, caplog):
    from conftest import make_finetuned

    model = make_finetuned(tmp_path / "model")
    args = dict(do_train=None, preprocessing_num_workers=2, per_device_eval_batch_size=3)
    ctc.main(base_args(model, DATA_DIR, str(tmp_path / "a"), **args))
    with caplog.at_level("INFO"):
        ctc.main(base_args(model, DATA_DIR, str(tmp_path / "b"), **args))
    assert "features-eval: reusing the cache" in caplog.text
    ctc.main(base_args(model, DATA_DIR, str(tmp_path / "c"), preprocess_on_the_fly=True, dataloader_num_workers=2,
                       **args))
    wers = [read_json(tmp_path / d / "eval_results.json")["eval_wer"] for d in "abc"]
    assert wers[0] == wers[1] == wers[2]


def test_unknown_layout_is_one_clear_error(tmp_path):
    (tmp_path / "corpus" / "stuff").mkdir(parents=True)
    with pytest.raises(UserError, match="no known corpus layout. Looked for: split sub-directories"):
        ctc.main(base_args("m", str(tmp_path / "corpus"), str(tmp_path / "out")))
