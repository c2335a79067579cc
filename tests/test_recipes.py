"""The seed's results tables as recipes (recipes.sh, run.sh, run_dist.sh): listed, printed, parsed, and one run."""

import os
import re
import shlex
import subprocess
import warnings

import pytest
from conftest import DATA_DIR, SCRIPT, read_json, rescore

from ctc_finetune.phonemes import PHONEME_INSTALL, phonemizer_available
import run_speech_recognition_ctc as ctc

ROOT = os.path.dirname(SCRIPT)
RUN_SH, RUN_DIST_SH = os.path.join(ROOT, "run.sh"), os.path.join(ROOT, "run_dist.sh")
# The env overrides the scripts read, cleared so that the caller's environment cannot change what they print.
OVERRIDES = ("DATASET", "CONFIG", "MODEL", "OUTPUT_DIR", "DATA_DIR", "NPROC_PER_NODE", "NNODES", "NODE_RANK")

# The seed README's figures, one per row of its four results tables (duplicate rows once, the streaming row is
# another script): what `--list` must show.
SEED_FIGURES = {
    "timit-wav2vec2-base": "WER 0.21", "timit-unispeech-large-1500h-cv": "WER 0.22",
    "timit-sew-mid-100k": "WER 0.30", "timit-distilhubert": "WER 0.68",
    "librispeech-100h-wavlm-large": "WER 0.049", "librispeech-100h-wavlm-base-plus": "WER 0.068",
    "librispeech-100h-wav2vec2-large-lv60": "WER 0.042", "librispeech-100h-hubert-large-ll60k": "WER 0.088",
    "librispeech-100h-sew-mid-100k": "WER 0.167",
    "common-voice-tr-xls-r-300m-phoneme": "PER 0.099", "common-voice-it-xls-r-300m-phoneme": "PER 0.077",
    "common-voice-sv-se-xls-r-300m-phoneme": "PER 0.099",
    "common-voice-tr-xlsr-53": "WER 0.35", "common-voice-tr-xlsr-53-dist": "WER 0.36",
    "common-voice-tr-xlsr-53-ft": "WER 0.31", "common-voice-tr-xls-r-300m": "WER 0.31",
    "common-voice-tr-xls-r-1b": "WER 0.21",
    "mls-german-xlsr-53": "WER 0.13", "mls-german-xls-r-300m": "WER 0.15",
    "common-voice-mn-w2v-bert-2.0": "WER 0.32",  # not a seed row: the published w2v-BERT 2.0 recipe
    "common-voice-tr-mms-1b-all-adapter": "WER n/a",  # not a seed row: the published MMS adapter recipe
}


def run_script(script, *args, cwd=None, **env):
    clean = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
    proc = subprocess.run(
        ["bash", script, *args], capture_output=True, text=True, env={**clean, **env}, cwd=cwd, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def listed(script):
    """{name: (figure, gpus)} from `script --list`."""
    rows = {}
    for line in run_script(script, "--list").splitlines()[1:]:
        name, metric, value, gpus = line.split()[:4]
        rows[name] = (f"{metric} {value}", int(gpus))
    return rows


def split_command(printed):
    """A printed command split as the shell would: (launcher words, the script's argv)."""
    words = shlex.split(printed.replace("\\\n", " "))
    at = next(i for i, w in enumerate(words) if w.endswith("run_speech_recognition_ctc.py"))
    return words[:at], words[at + 1:]


def printed_command(script, *args, **env):
    """`script --print ...` split as the shell would: (launcher words, the script's argv)."""
    return split_command(run_script(script, "--print", *args, **env))


def parse(argv):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy flags (--group_by_length, --overwrite_output_dir) warn once each
        return ctc.parse_args(argv)


def test_list_shows_every_row_of_the_seed_tables():
    rows = listed(RUN_SH)
    assert {name: figure for name, (figure, _) in rows.items()} == SEED_FIGURES
    assert listed(RUN_DIST_SH) == rows
    # Every recipe that recipes.sh defines is listed (a leaf of its case table that --list would skip is a bug).
    with open(os.path.join(ROOT, "recipes.sh"), encoding="utf-8") as f:
        defined = set(re.findall(r"^\t+([a-z][a-z0-9.-]*)\)", f.read(), flags=re.M))
    assert defined == set(SEED_FIGURES)


@pytest.mark.parametrize("name", sorted(SEED_FIGURES))
def test_every_recipe_prints_a_command_the_script_accepts(name):
    gpus = listed(RUN_SH)[name][1]
    _, argv = printed_command(RUN_SH, name)
    if name.endswith("-phoneme") and not phonemizer_available():  # --phoneme_language checks espeak-ng as it is read
        pytest.skip(f"phonemizer + espeak-ng missing: {PHONEME_INSTALL}")
    _, data_args, training_args, features = parse(argv)
    assert training_args.do_train and training_args.do_eval and training_args.fp16
    assert training_args.train_sampling_strategy == "group_by_length"
    assert data_args.text_column_name == ("sentence" if name.startswith("common-voice") else "text")
    assert (features.vocabulary.phoneme_language is not None) == name.endswith("-phoneme")
    launcher, dist_argv = printed_command(RUN_DIST_SH, name)
    assert launcher[0] == "torchrun" and launcher[launcher.index("--nproc_per_node") + 1] == str(gpus)
    assert dist_argv == argv


def test_w2v_bert_recipe_is_the_published_one():
    model, data, training, _ = parse(printed_command(RUN_SH, "common-voice-mn-w2v-bert-2.0")[1])
    assert (model.model_name_or_path, data.dataset_config_name) == ("facebook/w2v-bert-2.0", "mn")
    assert model.add_adapter and model.mask_time_prob == 0.0 and model.layerdrop == 0.0
    assert (training.learning_rate, training.per_device_train_batch_size, training.gradient_accumulation_steps,
            training.num_train_epochs, training.save_steps) == (5e-5, 16, 2, 10, 600)
    assert {"»", "'", "q", "Q", ","} <= set(data.chars_to_ignore)


def test_defaults_are_the_seed_commands():
    data, single = parse(printed_command(RUN_SH)[1])[1:3]
    assert (data.dataset_name, data.dataset_config_name) == ("common_voice", "tr")
    assert (data.train_split_name, data.eval_split_name) == ("train+validation", "test")
    assert (single.per_device_train_batch_size, single.gradient_accumulation_steps) == (16, 2)
    assert (single.learning_rate, single.num_train_epochs, single.warmup_steps) == (3e-4, 15, 500)
    assert single.output_dir.endswith("wav2vec2-common_voice-tr-demo") and single.push_to_hub
    launcher, argv = printed_command(RUN_DIST_SH)
    assert launcher[launcher.index("--nproc_per_node") + 1] == "8"
    dist = parse(argv)[2]
    assert (dist.per_device_train_batch_size, dist.gradient_accumulation_steps, dist.logging_steps) == (4, 1, 1)
    assert dist.output_dir.endswith("wav2vec2-common_voice-tr-demo-dist")


def test_data_dir_and_overrides_reach_the_command(tmp_path):
    _, argv = printed_command(RUN_SH, "librispeech-100h-wavlm-large", "--learning_rate", "1e-5",
                              DATA_DIR=DATA_DIR, MODEL="my/model", OUTPUT_DIR=str(tmp_path))
    model, data, training, _ = parse(argv)
    assert data.dataset_name == DATA_DIR and model.model_name_or_path == "my/model"
    assert (data.train_split_name, data.eval_split_name) == ("train-clean-100", "dev-clean")  # the local names
    assert training.learning_rate == 1e-5  # the pass-through argument comes last and wins
    launcher, _ = printed_command(RUN_DIST_SH, "librispeech-100h-wavlm-large", NPROC_PER_NODE="2", NNODES="2")
    assert launcher[launcher.index("--nproc_per_node") + 1] == "2" and launcher[launcher.index("--nnodes") + 1] == "2"


@pytest.mark.parametrize("script", [RUN_SH, RUN_DIST_SH], ids=["run.sh", "run_dist.sh"])
def test_another_corpus_says_which_recipe_settings_it_keeps(tmp_path, script):
    corpus = tmp_path / "my_corpus"
    corpus.mkdir()
    args = ("--print", "--train_split_name", "train", "--eval_split_name=test", "--fp16", "False")
    clean = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
    proc = subprocess.run(["bash", script, *args], capture_output=True, text=True, timeout=60,
                          env={**clean, "DATASET": str(corpus), "MODEL": "my/model"})
    assert proc.returncode == 0, proc.stderr
    notes = proc.stderr.splitlines()
    assert len(notes) == 2 and all(line.startswith("note: ") for line in notes), proc.stderr
    recipe = "common-voice-tr-xlsr-53" + ("-dist" if script == RUN_DIST_SH else "")
    assert f"runs recipe {recipe} on {corpus} with the recipe's" in notes[0]
    for kept in ("--dataset_config_name tr", "--text_column_name sentence", "--push_to_hub", "--overwrite_output_dir",
                 "--output_dir ./wav2vec2-common_voice-tr-demo", "--learning_rate 3e-4", "--num_train_epochs 15",
                 "--chars_to_ignore (13 values)"):
        assert kept in proc.stderr, kept
    for given in ("--train_split_name", "--eval_split_name", "--fp16", "--model_name_or_path", "my/model"):
        assert given not in proc.stderr, given  # set by the caller: not the recipe's any more
    assert "Extra arguments override any of these (later ones win)" in notes[1]
    # The printed command is what the note says: the recipe's settings, then the caller's, which win.
    _, data, training, _ = parse(split_command(proc.stdout)[1])
    assert (data.dataset_name, data.dataset_config_name, data.text_column_name) == (str(corpus), "tr", "sentence")
    assert (data.train_split_name, data.eval_split_name, training.fp16) == ("train", "test", False)
    assert training.push_to_hub and training.learning_rate == 3e-4
    # The recipe's own corpus, or no override: no note.
    for env in ({}, {"DATASET": "common_voice"}):
        proc = subprocess.run(["bash", script, "--print"], capture_output=True, text=True, timeout=60,
                              env={**clean, **env})
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_unknown_recipe_is_one_error_line():
    proc = subprocess.run(["bash", RUN_SH, "timit-wav2vec3"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: unknown recipe 'timit-wav2vec3'")


def test_recipe_runs_end_to_end_with_local_model_and_audio(tmp_path, encoder_dir):
    out = tmp_path / "out"
    run_script(
        RUN_SH, "timit-wav2vec2-base", "--text_column_name", "sentence", "--max_steps", "2", "--fp16", "False",
        "--push_to_hub", "False", "--use_cpu", "--report_to", "none", "--per_device_eval_batch_size", "2",
        cwd=tmp_path, MODEL=encoder_dir, DATA_DIR=os.path.relpath(DATA_DIR, tmp_path), OUTPUT_DIR=str(out),
    )  # DATA_DIR relative to the caller's directory, not the repository's
    results = read_json(out / "all_results.json")
    assert results["eval_wer"] == pytest.approx(rescore(out)) and results["train_samples"] == 12
