"""Shared fixtures: offline hub, real audio fixtures, tiny random checkpoints, and a way to run the script."""

import atexit
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]

# No test may reach the hub; set before transformers/datasets are imported by the tests.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Keep the datasets cache (and our preprocessing cache inside it) out of the user's home.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="ctc-tests-hf-")
atexit.register(shutil.rmtree, os.environ["HF_HOME"], ignore_errors=True)
# Under pytest-xdist (`-n auto`, as the README runs the suite) each worker process, and what it launches, computes on
# one thread: N workers on N cores rather than N x N threads spinning against each other (on 2 cores the suite took
# 11.5 minutes so, 7.5 with one thread each; the tiny models gain nothing from a second thread).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import jiwer  # noqa: E402
import torch  # noqa: E402
from tiny_models import make_checkpoint  # noqa: E402
from transformers import AutoModelForCTC, AutoProcessor, Wav2Vec2CTCTokenizer  # noqa: E402

from ctc_finetune.audio import load_audio  # noqa: E402
from ctc_finetune.columns import predictions_file  # noqa: E402
from ctc_finetune.text import build_vocab  # noqa: E402

DATA_DIR = os.path.join(HERE, "fixtures", "commands")  # 12 train MP3, 4 validation and 4 test FLAC clips
SCRIPT = os.path.join(ROOT, "run_speech_recognition_ctc.py")


@pytest.fixture(scope="session")
def data_dir():
    return DATA_DIR


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory):
    """A bare wav2vec2 encoder without a CTC head (the way facebook/wav2vec2-base ships)."""
    return make_checkpoint(str(tmp_path_factory.mktemp("encoder")), "wav2vec2")


def base_args(model: str, data: str, out: str, **overrides) -> list[str]:
    """A short train+eval command line on the fixture corpus; keyword overrides replace or add flags."""
    flags = {
        "model_name_or_path": model, "dataset_name": data, "output_dir": out,
        "train_split_name": "train", "eval_split_name": "test", "text_column_name": "sentence",
        "do_train": True, "do_eval": True, "max_steps": 4, "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 2, "learning_rate": 1e-3, "report_to": "none", "seed": 42,
        "eval_metrics": ["wer", "cer"], "save_strategy": "no",
    }
    flags.update(overrides)
    argv = []
    for key, value in flags.items():
        if value is None:
            continue
        argv.append(f"--{key}")
        if isinstance(value, list):
            argv.extend(str(v) for v in value)
        elif value is not True:
            argv.append(str(value))
    return argv


def run_in_process(cli, argv: list, monkeypatch, capsys) -> subprocess.CompletedProcess:
    """A command's cli() run with sys.argv set, as `python SCRIPT ARGV` runs it, in this process (a subprocess costs
    seconds of imports): its exit status and stderr. Any exception but SystemExit propagates (a traceback)."""
    monkeypatch.setattr(sys, "argv", ["command", *map(str, argv)])
    with pytest.raises(SystemExit) as e:
        cli()
    return subprocess.CompletedProcess(argv, e.value.code, "", capsys.readouterr().err)


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def copy_fixture_with_audio_column(dst: str, column: str) -> str:
    """The fixture corpus with its `file_name` column renamed (e.g. to Common Voice's `path`)."""
    shutil.copytree(DATA_DIR, dst)
    for split in os.listdir(dst):
        meta = os.path.join(dst, split, "metadata.csv")
        with open(meta, encoding="utf-8") as f:
            text = f.read()
        with open(meta, "w", encoding="utf-8") as f:
            f.write(text.replace("file_name", column, 1))
    return dst


def read_csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def step_losses(out) -> dict[int, float]:
    """The training loss logged at each step of a run, from its trainer_state.json."""
    history = read_json(os.path.join(out, "trainer_state.json"))["log_history"]
    return {e["step"]: e["loss"] for e in history if "loss" in e}


def rescore(out, key: str = "eval", column: str = "hypothesis", measure=jiwer.wer) -> float:
    """A split's corpus-level WER (or `measure`) recomputed with jiwer from the run's predictions file (clips with an
    empty reference left out, as the script scores): what the run's {key}_wer must equal."""
    name = predictions_file(key)
    rows = [r for r in read_csv(os.path.join(out, name)) if r["reference"].strip()]
    return measure([r["reference"] for r in rows], [r[column] for r in rows])


def transcribe(model_dir: str, paths: list[str]) -> list[str]:
    """Independent greedy transcription, one clip at a time (no padding anywhere)."""
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForCTC.from_pretrained(model_dir).eval()
    texts = []
    for path in paths:
        audio = load_audio(path, processor.feature_extractor.sampling_rate)
        inputs = processor(audio, sampling_rate=processor.feature_extractor.sampling_rate, return_tensors="pt")
        with torch.no_grad():
            ids = model(**inputs).logits.argmax(-1)
        texts.append(processor.batch_decode(ids)[0])
    return texts


def hypothesis_of(out, clip: str, key: str = "eval") -> str:
    """What the run's own evaluation transcribed for `clip` (its row in the predictions file, found by file name)."""
    name = predictions_file(key)
    (row,) = [r for r in read_csv(os.path.join(out, name)) if os.path.basename(r["clip_id"]) == os.path.basename(clip)]
    return row["hypothesis"]


def make_finetuned(path, arch: str = "wav2vec2") -> str:
    """A random-weight 'fine-tuned' CTC model (of a wav2vec2-era family, or Wav2Vec2-BERT) with its own tokenizer:
    predictions full of characters."""
    os.makedirs(path, exist_ok=True)
    vocab = build_vocab(["abcdefghijklmnopqrstuvwxyz'"], "|", "[UNK]", "[PAD]")
    with open(os.path.join(path, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    tokenizer = Wav2Vec2CTCTokenizer(os.path.join(path, "vocab.json"), unk_token="[UNK]", pad_token="[PAD]")
    make_checkpoint(str(path), arch, ctc_vocab_size=len(tokenizer))
    tokenizer.save_pretrained(str(path))
    return str(path)


def with_flat_lm(model_dir: str, path) -> str:
    """A copy of a character model at `path` with a pyctcdecode decoder saved beside it: a flat bigram LM of the
    fixture's training words (kenlm needs order 2 or more), enough to exercise --lm, not to help it."""
    from pyctcdecode import build_ctcdecoder
    from transformers import AutoTokenizer

    with open(os.path.join(DATA_DIR, "train", "metadata.csv"), encoding="utf-8") as f:
        words = sorted({w for row in csv.DictReader(f) for w in row["sentence"].split()})
    unigrams = [f"-1.0\t{w}\t0" for w in ["<unk>", "</s>", *words]] + ["0\t<s>\t0"]
    bigrams = [f"-1.0\t<s> {w}" for w in words]
    shutil.copytree(model_dir, path)
    arpa = os.path.join(path, "flat.arpa")
    with open(arpa, "w") as f:
        f.write("\n".join(["\\data\\", f"ngram 1={len(unigrams)}", f"ngram 2={len(bigrams)}", "", "\\1-grams:",
                           *unigrams, "", "\\2-grams:", *bigrams, "", "\\end\\", ""]))
    vocab = AutoTokenizer.from_pretrained(model_dir).get_vocab()
    labels = [{"|": " ", "[PAD]": ""}.get(t, t) for t in sorted(vocab, key=vocab.get)]
    build_ctcdecoder(labels, kenlm_model_path=arpa, unigrams=words).save_to_dir(str(path))
    return str(path)


@pytest.fixture(scope="session")
def finetuned_dir(tmp_path_factory):
    return make_finetuned(tmp_path_factory.mktemp("finetuned"))
