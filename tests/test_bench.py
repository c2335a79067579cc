"""The benchmarks: every script's default corpus is in the repository, the corpus helpers (durations, clips
repeated), the bench corpus's grammar, the training-speed benchmark's FLOP count (for MFU) and one run end to end on
the fixture corpus, and recipe_gain's records."""

import argparse
import glob
import hashlib
import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import sys

import pytest
import soundfile as sf
import torch
from conftest import DATA_DIR, ROOT
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoConfig, Wav2Vec2ForCTC

sys.path[:0] = [os.path.join(ROOT, "bench"), os.path.join(ROOT, "tools")]
import corpus  # noqa: E402
import make_bench_corpus  # noqa: E402
import train_speed  # noqa: E402

HELPERS = ("corpus.py", "shapes.py", "naive_server.py")  # what the benchmarks import or start, not benchmarks
BENCH_SCRIPTS = sorted(p for p in glob.glob(os.path.join(ROOT, "bench", "*.py")) if not p.endswith(HELPERS))


class Parsed(Exception):
    """Raised in place of parsing: carries the parser a script built."""


def parser_of(script: str, monkeypatch) -> tuple[argparse.ArgumentParser, str]:
    """The argument parser a bench script's main() builds (main stops where it would parse), and its docstring."""
    def stop(parser, *args, **kwargs):
        raise Parsed(parser)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", stop)
    monkeypatch.setattr(sys, "argv", [script])
    spec = importlib.util.spec_from_file_location(f"bench_{os.path.basename(script)[:-3]}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(Parsed) as parsed:
        module.main()
    return parsed.value.args[0], module.__doc__


def test_every_bench_script_is_in_the_development_page_s_table():
    with open(os.path.join(ROOT, "docs", "development.md"), encoding="utf-8") as f:
        listed = set(re.findall(r"^\| `(bench/\w+\.py)` \|", f.read(), re.M))
    assert listed == {os.path.relpath(p, ROOT) for p in BENCH_SCRIPTS} and len(listed) >= 12


@pytest.mark.parametrize("script", BENCH_SCRIPTS, ids=os.path.basename)
def test_every_bench_scripts_default_corpus_is_in_the_repository_and_its_docstring_says_which(script, monkeypatch):
    parser, doc = parser_of(script, monkeypatch)
    default = next(a.default for a in parser._actions if a.dest == "corpus")
    default = os.path.abspath(default)
    assert os.path.commonpath([default, ROOT]) == ROOT, f"{default} is outside the repository"
    assert os.path.isfile(os.path.join(default, "metadata.csv")) or os.path.isfile(
        os.path.join(default, "train", "metadata.csv")), f"{default} holds no corpus"
    assert os.path.relpath(default, ROOT) in doc
    if default == corpus.DEFAULT_CORPUS:  # the recorded figures used the commands corpus: the docstring says how
        assert "python tools/make_bench_corpus.py DIR" in doc and "--corpus DIR" in doc


def test_a_missing_corpus_is_one_error_line_naming_the_default_and_the_tool(tmp_path):
    with pytest.raises(SystemExit) as e:
        corpus.require(str(tmp_path), "train", "test")
    message = str(e.value.code)
    assert message.startswith("error: no ") and "\n" not in message and "pass --corpus DIR" in message
    assert "examples/demo_corpus" in message and "python tools/make_bench_corpus.py DIR" in message


def test_durations_come_from_the_metadata_or_else_the_audio_headers():
    demo = corpus.read_split(corpus.DEFAULT_CORPUS, "test")  # no duration column: read from the headers
    assert len(demo) == 100 and all(0.5 < r["duration"] < 10 and os.path.isfile(r["path"]) for r in demo)
    with_column = corpus.read_split(DATA_DIR, "train")
    headers = [sf.info(r["path"]).duration for r in with_column]
    assert [r["duration"] for r in with_column] == pytest.approx(headers, abs=1e-3)


def test_clips_are_repeated_cyclically_with_one_line_saying_so(capsys):
    assert corpus.repeated([1, 2, 3], 2, "x") == [1, 2] and capsys.readouterr().out == ""
    assert corpus.repeated([1, 2, 3], 7, "x") == [1, 2, 3, 1, 2, 3, 1]
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "repeating them cyclically" in out


def test_a_train_split_too_small_is_repeated_in_a_corpus_folder_the_script_reads(tmp_path, capsys):
    from ctc_finetune.corpora import detect_layout, load_local_split

    assert corpus.with_train_clips(DATA_DIR, 12, str(tmp_path)) == DATA_DIR  # the fixture's 12 clips: as it is
    data = corpus.with_train_clips(DATA_DIR, 30, str(tmp_path))
    assert "has 12 clips, fewer than the 30 asked for" in capsys.readouterr().out
    rows = corpus.read_split(data, "train")
    original = [r["path"] for r in corpus.read_split(DATA_DIR, "train")]
    assert [r["path"] for r in rows] == (original * 3)[:30]
    train = load_local_split(data, detect_layout(data), "train")
    assert len(train) == 30 and all(os.path.isfile(p) for p in train["audio"])
    assert len(load_local_split(data, "splits", "test")) == len(load_local_split(DATA_DIR, "splits", "test"))


def test_the_bench_corpus_draws_its_grammar_voices_and_formats():
    rng = random.Random(1)
    plans = {split: make_bench_corpus.plan(rng, split, count, extension, split)
             for split, (count, extension) in make_bench_corpus.SPLITS.items()}
    rows = [row for split_rows, _ in plans.values() for row in split_rows]
    assert [len(r) for r, _ in plans.values()] == [2000, 250, 250]
    assert {os.path.splitext(j[-1])[1] for j in plans["train"][1]} == {".mp3"}
    assert {os.path.splitext(j[-1])[1] for j in plans["test"][1]} == {".flac"}
    assert len({word for r in rows for word in r["sentence"].split()}) == 57
    assert all(130 <= r["rate"] <= 210 for r in rows)
    flite = [r for r in rows if r["speaker"] in make_bench_corpus.FLITE_VOICES]
    assert 0.2 < len(flite) / len(rows) < 0.3 and {r["speaker"] for r in flite} == {"kal16", "slt", "rms"}
    assert len({r["speaker"] for r in rows} - set(make_bench_corpus.FLITE_VOICES)) == 70  # 7 accents x 10 variants


@pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("flite")), reason="needs espeak-ng and flite")
def test_the_bench_corpus_tool_writes_a_corpus_the_benchmarks_read(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_bench_corpus.py"), str(tmp_path),
                           "--train", "3", "--validation", "1", "--test", "2"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for split, count in (("train", 3), ("validation", 1), ("test", 2)):
        rows = corpus.read_split(str(tmp_path), split)
        assert len(rows) == count and list(rows[0])[:5] == ["file_name", "sentence", "speaker", "rate", "duration"]
        assert [r["duration"] for r in rows] == pytest.approx([sf.info(r["path"]).duration for r in rows], abs=1e-3)


@pytest.mark.parametrize("model", ["speed_model", "base_model"])
def test_forward_flops_match_torchs_flop_counter(model):
    config = AutoConfig.from_pretrained(os.path.join(ROOT, "bench", model))
    net = Wav2Vec2ForCTC._from_config(config, attn_implementation="eager").eval()
    for samples in (16_000, 80_000):  # attention grows with the square of the length
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(torch.randn(1, samples))
        assert train_speed.forward_flops(config, samples) == pytest.approx(counter.get_total_flops(), rel=1e-3)


def test_benchmark_runs_and_prints_the_table():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "train_speed.py"), "--corpus", DATA_DIR,
                           "--clips", "12", "--precision", "fp32", "--peak_tflops", "1"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    gflops = float(re.search(r"([\d.]+) GFLOP per training audio second", lines[0])[1])
    rows = {}
    for line in lines:
        m = re.match(r"\((a|b)\)\s+([\d.]+) audio s/s\s+padding\s+([\d.]+)%.*MFU ([\d.]+)%", line)
        if m:
            rows[m[1]] = [float(x) for x in m.groups()[1:]]
    assert set(rows) == {"a", "b"}, proc.stdout
    for speed, _, mfu in rows.values():  # MFU = audio s/s x FLOPs per audio second / the 1 TFLOP/s peak given
        assert mfu == pytest.approx(speed * gflops / 1000 * 100, rel=0.05, abs=0.1)
    assert rows["b"][1] < rows["a"][1]  # duration-capped batches pad less than fixed batches of 8
    ratio = float(lines[-1].removeprefix("ratio b/a: "))
    assert ratio == pytest.approx(rows["b"][0] / rows["a"][0], rel=0.05)


def test_benchmark_without_a_corpus_says_which_flag_to_pass(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "train_speed.py"), "--corpus", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "pass --corpus" in proc.stderr.strip().splitlines()[-1]


def test_recipe_gain_settings_are_levers_joined_by_plus(tmp_path):
    import argparse

    import recipe_gain

    assert recipe_gain.levers("baseline") == [] and recipe_gain.levers("speed+average") == ["speed", "average"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown lever 'nois'"):
        recipe_gain.setting("speed+nois")
    args = recipe_gain.run_args(["speed", "noise"], "CORPUS", str(tmp_path / "out"), 4800, 43, "NOISE")
    assert args[args.index("--speed_perturbation") + 1:][:3] == ["0.9", "1.0", "1.1"]
    assert args[args.index("--noise_dir") + 1] == "NOISE" and args[args.index("--seed") + 1] == "43"
    assert "--average_checkpoints" not in args and args[args.index("--max_steps") + 1] == "4800"
    args = recipe_gain.run_args(recipe_gain.levers("speed+tristage"), "CORPUS", str(tmp_path / "out"), 4800, 42, "N")
    assert args[args.index("--lr_scheduler_type") + 1] == "tri_stage" and "--noise_dir" not in args
    args = recipe_gain.run_args(recipe_gain.levers("speed+colourednoise"), "CORPUS", "OUT", 4800, 42, "NOISE")
    assert args[args.index("--noise_dir") + 1] == "NOISE/coloured"  # make_noise's coloured noise, no babble
    args = recipe_gain.run_args(recipe_gain.levers("headfirst"), "CORPUS", "OUT", 4800, 42, "NOISE", start="DIR")
    assert args[args.index("--freeze_encoder_steps") + 1] == "400"
    args = recipe_gain.run_args([], "CORPUS", "OUT", 4800, 42, "NOISE", start="outputs/demo")
    assert args[args.index("--model_name_or_path") + 1] == "outputs/demo" and "--config_name" not in args
    assert "--config_name" in recipe_gain.run_args([], "CORPUS", "OUT", 4800, 42, "NOISE")  # from scratch


def test_recipe_gain_keeps_a_finished_runs_results_in_its_record_and_reads_them_back(tmp_path, monkeypatch):
    import recipe_gain

    out, record = tmp_path / "baseline-4800-seed42", tmp_path / "records" / "baseline-4800-seed42.json"
    out.mkdir()
    (out / "all_results.json").write_text('{"eval_wer": 0.31, "eval_cer": 0.12}')
    (out / "wall_seconds.txt").write_text("3000\n")
    r = recipe_gain.run("seed 42", [], str(out), 1, str(record))  # finished: read from the folder, then recorded
    assert r["eval_wer"] == 0.31 and r["wall_seconds"] == 3000.0 and record.is_file()
    # A fresh checkout: no output folder. The record is read and nothing trains (training would fail here).
    monkeypatch.setattr(recipe_gain.subprocess, "run", lambda *a, **k: pytest.fail("trained again"))
    r = recipe_gain.run("seed 42", [], str(tmp_path / "gone"), 1, str(record))
    assert r == {"eval_wer": 0.31, "eval_cer": 0.12, "wall_seconds": 3000.0}
    assert recipe_gain.test_metric(r, "wer") == 0.31
    # A fine-tuning run's record names its start by the weights' hash: the pinned start in bench/start_model
    (out / "x").mkdir()
    (out / "x" / "model.safetensors").write_bytes(b"weights")
    r = recipe_gain.run("seed 42", [], str(out), 1, str(tmp_path / "ft.json"), start=str(out / "x"))
    assert r["start_model_sha256"] == hashlib.sha256(b"weights").hexdigest()[:12]
    (out / "x" / "model.safetensors").unlink()  # a start without model.safetensors: the record is written anyway
    r = recipe_gain.run("seed 42", [], str(out), 1, str(tmp_path / "ft2.json"), start=str(out / "x"))
    assert r["start_model_sha256"] is None and (tmp_path / "ft2.json").is_file()
    # A run that trains (the script stood in for by writing its results) is recorded with its start's hash too
    (out / "x" / "model.safetensors").write_bytes(b"weights")
    fresh = tmp_path / "ft-fresh"

    def train(*a, **k):
        fresh.mkdir()
        (fresh / "all_results.json").write_text('{"eval_wer": 0.2, "eval_cer": 0.1}')

    monkeypatch.setattr(recipe_gain.subprocess, "run", train)
    r = recipe_gain.run("seed 42", [], str(fresh), 1, str(tmp_path / "ft3.json"), start=str(out / "x"))
    assert r["start_model_sha256"] == hashlib.sha256(b"weights").hexdigest()[:12] and r["wall_seconds"] is not None
    assert json.loads((tmp_path / "ft3.json").read_text())["eval_wer"] == 0.2
    # The committed records of earlier sittings are all readable and hold a test WER
    for name in os.listdir(recipe_gain.RECORDS):
        with open(os.path.join(recipe_gain.RECORDS, name)) as f:
            assert 0 < recipe_gain.test_metric(json.load(f), "wer") < 1


def test_recipe_gain_table_gives_the_mean_and_each_seeds_change_against_the_same_seeds_baseline(capsys):
    import recipe_gain

    rows = {"baseline": {42: {"eval_wer": 0.40, "eval_cer": 0.2}, 43: {"eval_wer": 0.20, "eval_cer": 0.1}},
            "speed": {42: {"eval_test_wer": 0.36, "eval_test_cer": 0.2}, 44: {"eval_wer": 0.30, "eval_cer": 0.1}}}
    recipe_gain.table(rows)
    speed = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| speed"))
    # mean 0.33 against 0.30: +10.0%; seed 42 against its baseline 0.40: -10.0%; seed 44 has no baseline to pair with
    assert speed == "| speed | 0.3600, 0.3000 | 0.3300 | 0.0600 | 0.1500 | +10.0% | -10.0% |"


def test_recipe_gain_table_reads_the_committed_records_and_trains_nothing(tmp_path):
    import recipe_gain

    # No corpus and an empty work folder: anything that trained or made noise would fail. The committed records are
    # the commands corpus's: a --corpus folder of that name, even one not there, reads them
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "recipe_gain.py"), "--table", "--corpus",
                           str(tmp_path / "commands"), "--work", str(tmp_path), "--settings", "baseline", "speed",
                           "tristage"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    baseline = next(line for line in proc.stdout.splitlines() if line.startswith("| baseline |"))
    assert len(baseline.split("|")[2].split(",")) == 3  # the three seeds recorded in bench/results/recipe_gain
    assert "| tristage |" not in proc.stdout and os.listdir(tmp_path) == []
    # The default corpus, the demo's: its runs are named after it, so the commands corpus's records are not its own
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "recipe_gain.py"), "--table", "--work",
                           str(tmp_path), "--settings", "baseline"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "| baseline |" not in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert recipe_gain.corpus_tag("x/demo_corpus") == "demo_corpus-" and recipe_gain.corpus_tag("y/commands/") == ""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "recipe_gain.py"), "--table", "--throughput",
                           "10", "--work", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "drop --throughput" in proc.stderr and os.listdir(tmp_path) == []


def test_onset_edges_cut_a_clip_to_its_sound_and_put_the_asked_silence_around_it():
    import numpy as np
    import onset

    from ctc_finetune.audio import load_audio

    clip = load_audio(os.path.join(DATA_DIR, "train", "train-00000.mp3"), 16000)
    framed = np.concatenate([np.zeros(4000, np.float32), clip, np.zeros(8000, np.float32)])
    loud = np.flatnonzero(np.abs(framed) > onset.EDGE_LEVEL)
    cut = onset.re_edged(framed, 0.05, 0.2)
    assert len(cut) == 800 + (loud[-1] + 1 - loud[0]) + 3200
    assert not cut[:800].any() and not cut[-3200:].any()
    assert abs(cut[800]) > onset.EDGE_LEVEL and abs(cut[-3201]) > onset.EDGE_LEVEL
    assert np.array_equal(cut[800:-3200], framed[loud[0]:loud[-1] + 1])
    assert onset.edges_arg("0.05:0.3") == (0.05, 0.3)
    for bad in ("0.1", "0.1:-1", "a:b", "1:2:3"):
        with pytest.raises(argparse.ArgumentTypeError, match="takes LEAD:TAIL"):
            onset.edges_arg(bad)


def test_serve_bench_recording_says_where_each_utterance_ends_a_silent_clip_included(tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.syspath_prepend(os.path.join(ROOT, "bench"))
    spec = importlib.util.spec_from_file_location("bench_serve", os.path.join(ROOT, "bench", "serve.py"))
    serve_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve_bench)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8000, np.float32), 16000)
    clips = [{"path": os.path.join(DATA_DIR, "train", "train-00000.mp3")}, {"path": str(silent)}]
    ends = serve_bench.joined_recording(clips, 4, str(tmp_path / "stream.wav"))
    audio, rate = sf.read(tmp_path / "stream.wav", dtype="float32")
    assert rate == 16000 and len(ends) >= 3 and ends == sorted(ends) and ends[-1] <= len(audio) / rate
    first = round(ends[0] * rate)  # the first clip's sound is over by its end, and goes on until shortly before it
    assert np.abs(audio[first:first + 800]).max() < np.abs(audio[first - 1600:first]).max()


def test_segment_training_recording_holds_every_clip_once_in_its_texts_order(tmp_path):
    import numpy as np
    import segment_training

    from ctc_finetune.audio import load_audio

    rows = corpus.read_split(DATA_DIR, "train")[:4]
    audio = [load_audio(row["path"], 16000) for row in rows]
    wav, txt = segment_training.write_recording(rows, audio, str(tmp_path))
    recording, rate = sf.read(wav, dtype="float32")
    lines = open(txt, encoding="utf-8").read().splitlines()
    assert rate == 16000 and sorted(lines) == sorted(r["sentence"] for r in rows)
    assert sf.info(wav).subtype == "PCM_16"
    # Each line's clip lies in the recording in the text's order, 0.3-1.0 s of digital silence before it
    at = 0
    for line in lines:
        clip = audio[next(i for i, r in enumerate(rows) if r["sentence"] == line)]
        loud = at + int(np.flatnonzero(np.abs(recording[at:]) > 1e-3)[0])
        start = loud - int(np.flatnonzero(np.abs(clip) > 1e-3)[0])
        assert 0.3 * rate <= start - at <= 1.0 * rate + 1 and not recording[at:start].any()
        assert np.abs(recording[start:start + len(clip)] - clip).max() < 2 / 32768  # the clip, to a 16-bit step
        at = start + len(clip)
    assert at == len(recording)


def test_segment_training_table_pairs_the_segments_with_each_seeds_clips(capsys):
    import segment_training

    results = {"clips": {42: {"eval_wer": 0.20}, 43: {"eval_wer": 0.30}},
               "clips16": {43: {"eval_wer": 0.40}},
               "segments": {42: {"eval_wer": 0.21}, 43: {"eval_wer": 0.36}}}
    segment_training.table(results, [42, 43])
    out = capsys.readouterr().out.splitlines()
    assert "| clips16 | - | 0.400 | 0.400 |" in out
    assert "| segments - clips | +0.010 | +0.060 | **+0.035** |" in out
    assert "| segments - clips16 | - | -0.040 | **-0.040** |" in out  # in its seed's column


def test_segment_training_table_reads_the_committed_records_and_trains_nothing(tmp_path):
    # No corpus and an empty work folder: anything that segmented or trained would fail or write there
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "segment_training.py"), "--table", "--corpus",
                           str(tmp_path / "demo_corpus"), "--work", str(tmp_path), "--seeds", "42", "43"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines() if line.startswith("| ")}
    assert {"clips", "clips16", "segments", "segments - clips", "segments - clips16"} <= set(rows)
    assert re.fullmatch(r"\| segments - clips \| [+-]0\.\d{3} \| [+-]0\.\d{3} \| \*\*[+-]0\.\d{3}\*\* \|",
                        rows["segments - clips"])
    assert os.listdir(tmp_path) == []


def test_a_failed_bench_run_is_one_error_line_naming_its_log(tmp_path):
    import recipe_gain

    out = str(tmp_path / "run")
    with pytest.raises(SystemExit) as e:
        recipe_gain.run("baseline, seed 42", ["--dataset_name", str(tmp_path / "no_corpus"), "--output_dir", out],
                        out, threads=1)
    message = str(e.value.code)
    assert message.startswith("error: the run baseline, seed 42 failed") and f"{out}.log" in message
    assert "\n" not in message and os.path.getsize(f"{out}.log") > 0
