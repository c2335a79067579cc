"""Unit tests of the script's pure helpers."""

import os

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, ROOT
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor

from ctc_finetune.audio import load_audio
from ctc_finetune.batching import DataCollatorCTCWithPadding
from ctc_finetune.checkpoints import resume_or_clear_output_dir
from ctc_finetune.columns import (
    AUDIO_COLUMN,
    DROP_COLUMN,
    LABEL_PAD_ID,
    LENGTH_COLUMN,
    MIN_FRAMES_COLUMN,
    SOURCE_RATE_COLUMN,
    TARGET_TEXT_COLUMN,
)
from ctc_finetune.corpora import parse_split_expression, slice_dataset
from ctc_finetune.faults import UserError
from ctc_finetune.metrics import decode_predictions, score
from ctc_finetune.modeling import carry_head_rows, head_row_map
from ctc_finetune.preprocessing import (ClipForm, LabelEncoder, ctc_min_frames, drop_reasons, featurize_batch,
                                        scan_batch)
from ctc_finetune.text import build_vocab, chars_to_ignore_regex, normalize_text, vocabulary_case
from ctc_finetune.vocabulary import clear_vocabulary, text_report
import run_speech_recognition_ctc as ctc

SEED_CHARS = [",", "?", ".", "!", "-", ";", ":", '"', "“", "%", "‘", "”", "�"]  # the seed README's list


def test_chars_to_ignore_are_escaped():
    # Upstream joins the list unescaped: `!-;` becomes a range that also deletes digits, `'`, `(`, `)`, `+`.
    regex = chars_to_ignore_regex(SEED_CHARS)
    assert normalize_text("I'm 25 (really) a+b, ok?", regex) == "i'm 25 (really) a+b ok"
    assert normalize_text("a-b; c“d”", regex) == "ab cd"


def test_chars_to_ignore_handles_regex_metacharacters():
    regex = chars_to_ignore_regex(["]", "\\", "^", "["])
    assert normalize_text("a]b\\c^d[e", regex) == "abcde"
    assert chars_to_ignore_regex(None) is None


def test_normalize_text_case_and_spaces():
    assert normalize_text("  Hello   World ", None) == "hello world"
    assert normalize_text("Hello", None, case="upper") == "HELLO"
    assert normalize_text(None, None) == ""


def test_build_vocab_follows_upstream_id_scheme():
    vocab = build_vocab(["ab a", "ba"], word_delimiter_token="|", unk_token="[UNK]", pad_token="[PAD]")
    assert vocab == {"|": 0, "a": 1, "b": 2, "[UNK]": 3, "[PAD]": 4}
    # A corpus of one-word clips still gets the delimiter.
    assert "|" in build_vocab(["yes", "no"], "|", "[UNK]", "[PAD]")


def test_vocabulary_case():
    assert vocabulary_case({"A": 0, "B": 1, "|": 2, "<pad>": 3}) == "upper"
    assert vocabulary_case({"a": 0, "b": 1, "[PAD]": 2}) == "lower"
    assert vocabulary_case({"1": 0, "|": 1}) == "lower"


def test_parse_split_expression():
    assert parse_split_expression("train+validation") == [("train", None, None), ("validation", None, None)]
    assert parse_split_expression("train[:80%] + test-clean") == [("train", None, "80%"), ("test-clean", None, None)]


@pytest.fixture
def tokenizer(tmp_path):
    vocab = build_vocab(["hello world"], "|", "[UNK]", "[PAD]")
    (tmp_path / "vocab.json").write_text(__import__("json").dumps(vocab))
    return Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), unk_token="[UNK]", pad_token="[PAD]")


def test_decode_keeps_double_letters_in_labels_and_ignores_padding(tokenizer):
    ids = tokenizer(["hello", "ll"]).input_ids
    labels = np.full((2, 6), LABEL_PAD_ID)
    labels[0, :5], labels[1, :2] = ids[0], ids[1]
    pad, h, e, l, o = tokenizer.pad_token_id, *tokenizer.convert_tokens_to_ids(list("helo"))
    # CTC output: repeats collapse, a blank separates the two l's, -100 marks frames past the clip's end.
    preds = np.array([[h, e, l, l, pad, l, o, -100], [l, pad, l, -100, -100, -100, -100, -100]])
    predictions, references = decode_predictions(preds, labels, tokenizer, pad)
    assert references == ["hello", "ll"]
    assert predictions == ["hello", "ll"]


def test_score_wer_cer_and_empty_references():
    metrics = score(["hello world", "x"], ["hello word", ""], ["wer", "cer"])
    assert metrics["wer"] == pytest.approx(0.5)
    assert metrics["cer"] == pytest.approx(1 / 10)


def test_collator_pads_labels_with_minus_100(tokenizer):
    fe = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    collate = DataCollatorCTCWithPadding(fe)
    batch = collate(
        [
            {"input_values": np.ones(400, np.float32), "labels": [1, 2, 3]},
            {"input_values": np.ones(250, np.float32), "labels": [4]},
        ]
    )
    assert batch["input_values"].shape == (2, 400)
    assert batch["labels"].tolist() == [[1, 2, 3], [4, -100, -100]]
    assert batch["input_lengths"].tolist() == [400, 250]
    assert batch["attention_mask"].dtype == torch.long
    # A group-norm extractor (wav2vec2-base) gets no attention mask, as upstream.
    batch = DataCollatorCTCWithPadding(Wav2Vec2FeatureExtractor(return_attention_mask=False))(
        [{"input_values": np.ones(10, np.float32), "labels": [1]}]
    )
    assert "attention_mask" not in batch


def test_collator_skips_clips_that_failed_to_decode_on_the_fly(tokenizer, caplog):
    collate = DataCollatorCTCWithPadding(Wav2Vec2FeatureExtractor(return_attention_mask=True))
    with caplog.at_level("WARNING"):
        batch = collate([{"input_values": np.ones(300, np.float32), "labels": [1, 2]},
                         {"input_values": np.zeros(0, np.float32), "labels": [3]}])
    assert batch["labels"].tolist() == [[1, 2]] and "Skipped 1 clip(s)" in caplog.text
    with pytest.raises(RuntimeError, match="every clip of a batch failed to decode"):
        collate([{"input_values": np.zeros(0, np.float32), "labels": [3]}])


def test_load_audio_resamples_and_downmixes(tmp_path):
    import soundfile as sf

    stereo = np.stack([np.sin(np.linspace(0, 100, 44100)), np.zeros(44100)], axis=1).astype(np.float32)
    sf.write(tmp_path / "s.wav", stereo, 44100)
    audio = load_audio(str(tmp_path / "s.wav"), 16000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16000) <= 1
    mp3 = load_audio(os.path.join(DATA_DIR, "train", "train-00000.mp3"), 16000)
    assert 1.0 < len(mp3) / 16000 < 1.5


def test_scan_and_featurize_mark_bad_clips(tmp_path, tokenizer):
    import soundfile as sf

    (tmp_path / "bad.mp3").write_bytes(os.urandom(2000))
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    flac = open(os.path.join(DATA_DIR, "test", "test-00004.flac"), "rb").read()
    (tmp_path / "truncated.flac").write_bytes(flac[: len(flac) // 3])
    good = os.path.join(DATA_DIR, "test", "test-00005.flac")  # 22.05 kHz, 1.36 s
    paths = [good, str(tmp_path / "bad.mp3"), str(tmp_path / "missing.wav"), str(tmp_path / "empty.wav"), good,
             str(tmp_path / "truncated.flac")]
    batch = {AUDIO_COLUMN: paths, TARGET_TEXT_COLUMN: ["hello", "hello", "hello", "hello", "", "hello"]}
    scanned = scan_batch(batch, encode=LabelEncoder(tokenizer), sampling_rate=16000)
    assert scanned[DROP_COLUMN] == ["", "unreadable audio", "missing file", "empty audio", "empty transcript", ""]
    assert abs(scanned[LENGTH_COLUMN][0] - 1.36 * 16000) < 200 and scanned[SOURCE_RATE_COLUMN][0] == 22050
    assert scanned[MIN_FRAMES_COLUMN][0] == 6  # h e l [blank] l o
    featurized = featurize_batch(
        {AUDIO_COLUMN: [good, paths[5]], LENGTH_COLUMN: [scanned[LENGTH_COLUMN][0], 30000]},
        form=ClipForm(Wav2Vec2FeatureExtractor()),
    )
    assert featurized[DROP_COLUMN][0] == "" and featurized[DROP_COLUMN][1] in ("undecodable audio", "truncated audio")
    assert abs(float(np.mean(featurized["input_values"][0]))) < 1e-3  # normalised by the feature extractor


def test_ctc_min_frames():
    assert ctc_min_frames([]) == 0
    assert ctc_min_frames([1, 2, 2, 3, 3, 3]) == 9


def test_drop_reasons_apply_duration_and_ctc_limits_to_train_only():
    scanned = {
        DROP_COLUMN: ["", "", "", "", "", "missing file"],
        LENGTH_COLUMN: [16000, 400000, 16000, 800, 16000, 0],
        MIN_FRAMES_COLUMN: [10, 10, 80, 1, 10, 1],
    }
    frames = np.array([50, 1250, 50, 2, 50, 0])
    kwargs = dict(min_len=0, max_len=20 * 16000, mask_time_frames=10)
    train = drop_reasons(scanned, frames, train=True, **kwargs)
    assert list(train) == [
        "", "longer than --max_duration_in_seconds", "transcript too long for the audio (CTC)",
        "too short for SpecAugment's --mask_time_length", "", "missing file",
    ]
    assert list(drop_reasons(scanned, frames, train=False, **kwargs)) == ["", "", "", "", "", "missing file"]


def test_slice_dataset():
    import datasets

    ds = datasets.Dataset.from_dict({"x": list(range(10))})
    assert slice_dataset(ds, None, "80%")["x"] == list(range(8))
    assert slice_dataset(ds, "-3", None)["x"] == [7, 8, 9]
    assert slice_dataset(ds, "2", "4")["x"] == [2, 3]
    with pytest.raises(UserError, match="split expression"):
        parse_split_expression("train[x]")


def test_model_card_has_no_local_paths(tmp_path):
    model_args = ctc.ModelArguments(model_name_or_path=str(tmp_path))
    data_args = ctc.DataTrainingArguments(dataset_name=DATA_DIR)
    card = ctc.model_card_kwargs(model_args, data_args)
    assert str(tmp_path) not in str(card) and os.path.dirname(DATA_DIR) not in str(card)
    assert card["finetuned_from"] == tmp_path.name and card["dataset"] == "COMMANDS - NA"


def test_legacy_flags_map_to_todays_arguments(tmp_path):
    with pytest.warns(UserWarning):
        model_args, data_args, training_args, _ = ctc.parse_args(
            ["--model_name_or_path", "m", "--dataset_name", "d", "--output_dir", str(tmp_path),
             "--evaluation_strategy", "steps", "--group_by_length", "--no_cuda", "--freeze_feature_extractor", "False",
             "--overwrite_output_dir"]
        )
    assert training_args.eval_strategy == "steps"
    assert training_args.train_sampling_strategy == "group_by_length"
    assert training_args.use_cpu is True and training_args.overwrite_output_dir is True
    assert training_args.length_column_name == LENGTH_COLUMN
    assert model_args.freeze_feature_encoder is False


def test_bad_arguments_raise_user_errors(tmp_path):
    with pytest.raises(UserError, match="--eval_metrics bleu"):
        ctc.parse_args(["--model_name_or_path", "m", "--dataset_name", "d", "--output_dir", "o", "--eval_metrics", "bleu"])
    with pytest.raises(UserError, match="does not exist"):
        ctc.parse_args([str(tmp_path / "missing.json")])


def test_resume_or_clear_output_dir(tmp_path):
    args = ctc.TrainingArguments(output_dir=str(tmp_path), do_train=True)
    assert resume_or_clear_output_dir(args) is None  # empty directory
    (tmp_path / "vocab.json").write_text("{}")
    assert resume_or_clear_output_dir(args) is None  # only files the script itself writes
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="--overwrite_output_dir"):
        resume_or_clear_output_dir(args)
    (tmp_path / "checkpoint-7").mkdir()
    (tmp_path / "checkpoint-7" / "trainer_state.json").write_text("{}")
    assert resume_or_clear_output_dir(args).endswith("checkpoint-7")
    args = ctc.TrainingArguments(output_dir=str(tmp_path), do_train=True, overwrite_output_dir=True)
    assert resume_or_clear_output_dir(args) is None
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "vocab.json"]  # checkpoints cleared, user files kept
    clear_vocabulary(args, "tur")  # --target_language adds its language to the per-language vocab.json
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "vocab.json"]
    clear_vocabulary(args, None)  # a fresh start builds its vocabulary anew
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_text_report_logs_eval_only_characters_and_stops_on_unknown(tokenizer, caplog):
    import datasets

    raw = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({TARGET_TEXT_COLUMN: ["hello world"]}),
         "eval": datasets.Dataset.from_dict({TARGET_TEXT_COLUMN: ["hello wörld"]})}
    )
    args = ctc.DataTrainingArguments(dataset_name="d", max_unk_share=0.1)
    with caplog.at_level("INFO"):
        stats = text_report(raw, tokenizer, args)
    assert "only in the eval text (never trained): ö" in caplog.text
    assert stats["eval"] == {"characters": "dehlorw|ö", "distinct": 9, "unknown_character_share": round(1 / 11, 4),
                             "vocabulary": f"characters, {len(tokenizer)} tokens"}
    with pytest.raises(UserError, match=r"9.1% of the eval labels .* ö"):
        text_report(raw, tokenizer, ctc.DataTrainingArguments(dataset_name="d", max_unk_share=0.05))


def test_fast_character_labels_match_the_tokenizer(tokenizer):
    # The header scan's dictionary lookup gives the ids the tokenizer gives, unknown characters, delimiters and
    # multi-character tokens included.
    encode = LabelEncoder(tokenizer)
    texts = ["hello world", "héllo wörld", "h e l l o", "x[UNK]y", "a|b", "<s>hello</s>", "", "ll  oo", "HELLO"]
    for text in texts:
        assert encode(text) == tokenizer(text, add_special_tokens=False).input_ids, text


def test_the_docstring_map_names_what_exists():
    """The recipe's docstring maps every package module to a step, and the "Where to change what" names (module.name)
    of docs/development.md exist in the package."""
    import importlib
    import pkgutil
    import re

    import ctc_finetune

    house = ctc.__doc__
    with open(os.path.join(ROOT, "docs", "development.md"), encoding="utf-8") as f:
        where = f.read().split("## Where to change what")[1].split("\n## ")[0]
    modules = {m.name for m in pkgutil.iter_modules(ctc_finetune.__path__)}
    assert {"corpora", "text", "preprocessing", "trainer", "metrics"} <= modules
    for module in modules:
        assert re.search(rf"\b{module}\b", house), f"the docstring's map of the house leaves out ctc_finetune.{module}"
    names = {(m, n) for m, n in re.findall(r"\b([a-z_]+)\.([A-Za-z_]\w*)", where) if n not in ("py", "json", "md")}  # not file names
    assert {("text", "normalize_text"), ("preprocessing", "drop_reasons"), ("batching", "DurationBatchSampler"),
            ("analysis", "clip_error"), ("families", "ENCODER_LAYERS")} <= names
    for module, name in names:
        assert module in modules, f"the docstring map names {module}.{name}: ctc_finetune has no module {module}"
        obj = importlib.import_module(f"ctc_finetune.{module}")
        assert hasattr(obj, name), f"the docstring map names {module}.{name}, which ctc_finetune.{module} lacks"


def test_head_row_map_pairs_shared_tokens_and_the_blank_and_unk_by_role(tmp_path):
    def tokenizer(name, vocab, pad, unk):
        (tmp_path / f"{name}.json").write_text(__import__("json").dumps(vocab))
        return Wav2Vec2CTCTokenizer(str(tmp_path / f"{name}.json"), pad_token=pad, unk_token=unk)

    old = tokenizer("old", {"<pad>": 0, "<unk>": 1, "|": 2, "a": 3, "q": 4, "<blank>": 5}, "<pad>", "<unk>")
    new = tokenizer("new", {"|": 0, "a": 1, "b": 2, "[UNK]": 3, "[PAD]": 4}, "[PAD]", "[UNK]")
    rows = head_row_map(old, new)  # (the tokenizers add <s> and </s> to both, 5 and 6 here, 6 and 7 there)
    assert {k: rows[k] for k in (0, 1, 3, 4)} == {0: 2, 1: 3, 3: 1, 4: 0} and 2 not in rows  # b is new; q is gone
    assert head_row_map(old, new, old_blank=5)[4] == 5  # a blank of its own (OmniASR's blank_token_id)

    head = torch.nn.Module()
    head.lm_head = torch.nn.Linear(3, 5)
    saved = {"model.lm_head.weight": torch.arange(18.0).reshape(6, 3), "model.lm_head.bias": torch.arange(6.0)}
    fresh = head.lm_head.weight.detach().clone()
    assert carry_head_rows(head, saved, rows) == 4  # ids beyond either head are left out
    assert torch.equal(head.lm_head.weight[[0, 1, 3, 4]], saved["model.lm_head.weight"][[2, 3, 1, 0]])
    assert torch.equal(head.lm_head.weight[2], fresh[2]) and head.lm_head.bias.tolist()[:2] == [2.0, 3.0]
    other = torch.nn.Module()
    other.lm_head = torch.nn.Linear(4, 5)  # another hidden size: nothing to carry
    assert carry_head_rows(other, saved, head_row_map(old, new)) == 0


MAX_IMPORT_LAYERS = 6  # the package's import graph: modules that import no other at layer 1
SCRIPTS = ("run_speech_recognition_ctc", "transcribe", "export_onnx", "report", "serve", "align")


def imported_names(path: str) -> tuple[set, set]:
    """The package modules a file imports (relative or as ctc_finetune.X), and the top-level modules it imports."""
    import ast

    package, top = set(), set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            package.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
        elif isinstance(node, ast.ImportFrom) and node.module:
            top.add(node.module.split(".")[0])
            if node.module.startswith("ctc_finetune."):
                package.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            top.update(a.name.split(".")[0] for a in node.names)
    return package, top


def test_the_package_imports_no_script_has_no_circles_and_is_at_most_six_layers_deep():
    import glob

    modules = {os.path.basename(p)[:-3]: p for p in glob.glob(os.path.join(ROOT, "ctc_finetune", "*.py"))}
    deps = {}
    for name, path in modules.items():
        package, top = imported_names(path)
        assert not top & set(SCRIPTS), f"ctc_finetune/{name}.py imports a script"
        deps[name] = package & set(modules)
    layer = {}

    def depth(name, stack=()):
        assert name not in stack, f"import circle: {' -> '.join(stack + (name,))}"
        if name not in layer:
            layer[name] = 1 + max((depth(d, stack + (name,)) for d in deps[name]), default=0)
        return layer[name]

    deepest = max(modules, key=depth)
    assert layer[deepest] <= MAX_IMPORT_LAYERS, f"ctc_finetune/{deepest}.py is {layer[deepest]} layers deep"
    for script in SCRIPTS:  # no command script imports another, nor does a tool or a benchmark (tests may)
        assert not imported_names(os.path.join(ROOT, script + ".py"))[1] & (set(SCRIPTS) - {script}), script
    for path in glob.glob(os.path.join(ROOT, "bench", "*.py")) + glob.glob(os.path.join(ROOT, "tools", "*.py")):
        assert not imported_names(path)[1] & set(SCRIPTS), path
