"""align.py: forced alignment (the Viterbi and its helpers on emissions we write ourselves, then the demo's trained
model pinned in tests/fixtures/demo_model on the demo corpus's clips joined into recordings whose boundaries we
know), the output formats, segmentation into a corpus the training script trains on, and bad input."""

import csv
import itertools
import json
import math
import os
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import SCRIPT, base_args, read_json, transcribe
from tiny_models import make_checkpoint
from transformers import Wav2Vec2CTCTokenizer

import align
from ctc_finetune import alignment
from ctc_finetune.alignment import (LINE_SKIP_PENALTY, FileAligner, Spelling, Trellis, alignment_record,
                                    build_trellis, emission_columns, run_stretches, viterbi)
from ctc_finetune.audio import load_audio
from ctc_finetune.faults import UserError
from ctc_finetune.longform import LEAD_SECONDS, TRAILING_QUIET_SECONDS, TRIM_LEVEL
from ctc_finetune.segmentation import NOT_FOUND
from ctc_finetune.sources import text_lines
from ctc_finetune.text import build_vocab

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "tests", "fixtures", "demo_model")  # the demo's trained model, pinned (20 ms frames)
DEMO_TEST = os.path.join(ROOT, "examples", "demo_corpus", "test")
# Demo test clips the pinned model transcribes exactly, one by one (voices it never heard)
CLIPS = ["test-0001.mp3", "test-0004.mp3", "test-0010.mp3", "test-0011.mp3", "test-0017.mp3", "test-0019.mp3",
         "test-0024.mp3", "test-0029.mp3"]
PAUSES = [0.4, 0.7, 0.5, 0.9, 0.6, 0.45, 0.8, 0.55]  # seconds of digital silence before each clip
RATE = 16_000
FRAME = 0.02  # seconds per frame of the pinned model
SHORT_WINDOWS = ["--chunk_seconds", "3", "--context_seconds", "1"]


# The Viterbi and its helpers, on emissions written by hand ---------------------------------------------------------

@pytest.fixture(scope="module")
def spelling(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vocab")
    (folder / "vocab.json").write_text(json.dumps(build_vocab(["abcdefghijklmnopqrstuvwxyz'"], "|", "[UNK]",
                                                              "[PAD]")))
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="[UNK]", pad_token="[PAD]")
    return Spelling(tokenizer, tokenizer.pad_token_id)


def spoken(lines: list[str], pause: int = 10) -> list:
    """The frames of lines spoken one after another: each character for 2 frames then a blank (None), '|' between
    words, `pause` blank frames before each line; and each word's first and stop frame."""
    frames, words = [None] * pause, []
    for line in lines:
        for i, word in enumerate(line.split()):
            if i:
                frames += ["|", None]
            first = len(frames)
            for c in word:
                frames += [c, c, None]
            words.append((first, len(frames) - 1))
        frames += [None] * pause
    return frames, words


def log_probs(frames: list, spelling: Spelling, sure: float = 0.9) -> torch.Tensor:
    """[frames, vocabulary] log-probabilities: each frame's token (None: the blank) at `sure`, the rest shared."""
    size = len(spelling.vocab)
    out = torch.full((len(frames), size), math.log((1 - sure) / (size - 1)))
    for t, token in enumerate(frames):
        out[t, spelling.blank if token is None else spelling.vocab[token]] = math.log(sure)
    return out


def align_frames(lines: list[str], emissions: torch.Tensor, spelling: Spelling, pieces: int = 1):
    """An Alignment of `lines` in emissions fed in `pieces` (as windows arrive), at 20 ms per frame."""
    aligner = FileAligner(lines, spelling, len(emissions), FRAME)
    for piece in torch.tensor_split(emissions, pieces):
        aligner.feed(piece)
        run_stretches([aligner])
    aligner.ended = True
    run_stretches([aligner])
    return alignment_record("x.wav", len(emissions) * FRAME, lines, aligner.words, spelling, FRAME)


def frames_of(record) -> list[tuple[int, int]]:
    return [(round(w["start"] / FRAME), round(w["end"] / FRAME)) for w in record.words]


def test_the_viterbi_finds_the_best_path_of_every_trellis_in_a_batch(spelling):
    # Every path through tiny trellises, enumerated: the batched Viterbi's path scores the best of them.
    rng = np.random.default_rng(0)
    words = spelling.words(["abb b", "c"])  # a doubled letter (a blank between), a delimiter, a line's skip
    trellises = [build_trellis(words, 0, len(words), spelling, len(spelling.vocab), final=f) for f in (True, False)]
    emissions = [emission_columns(torch.log_softmax(torch.tensor(rng.normal(0, 3, (n, len(spelling.vocab))),
                                                                 dtype=torch.float32), -1), spelling)
                 for n in (8, 6)]
    paths = viterbi(emissions, trellises)
    for path, em, trellis in zip(paths, emissions, trellises):
        best = max(path_score(p, em, trellis) for p in every_path(trellis, len(em)))
        assert path is not None and path_score(list(path), em, trellis) == pytest.approx(best, abs=1e-3)
        alone = viterbi([em], [trellis])[0]  # the batch changes nothing
        assert list(alone) == list(path)


def every_path(trellis: Trellis, frames: int):
    """Every state sequence the trellis allows over `frames` frames (stay, next, skip a blank, skip a line)."""
    states = len(trellis.columns)
    for moves in itertools.product(range(4), repeat=frames - 1):
        for first in (0, 1):
            path, ok = [first], True
            for move in moves:
                s = path[-1]
                target = (s, s + 1, s + 2, None)[move]
                if move == 3:
                    target = next((k for k in range(states) if trellis.jump_from[k] == s), None)
                ok = target is not None and target < states and (move != 2 or trellis.skip_ok[target])
                if not ok:
                    break
                path.append(target)
            if ok and (not trellis.final or path[-1] >= states - 2):
                yield path


def path_score(path: list, em: torch.Tensor, trellis: Trellis) -> float:
    score = sum(float(em[t, trellis.columns[s]]) for t, s in enumerate(path))
    return score - LINE_SKIP_PENALTY * sum(1 for a, b in zip(path, path[1:]) if trellis.jump_from[b] == a and b > a + 2)


def test_a_doubled_letter_keeps_a_blank_between_its_two_tokens(spelling):
    # "abb" in four frames that all but say a, b, b, b: CTC needs a blank between the two b's, so one b-frame is it.
    words = spelling.words(["abb"])
    trellis = build_trellis(words, 0, 1, spelling, len(spelling.vocab), final=True)
    (path,) = viterbi([emission_columns(log_probs(["a", "b", "b", "b"], spelling), spelling)], [trellis])
    assert [int(trellis.columns[s]) for s in path] == [spelling.vocab[c] for c in "ab"] + [spelling.blank,
                                                                                         spelling.vocab["b"]]


def test_words_are_timed_where_they_are_spoken_with_scores(spelling):
    lines = ["the cat sat", "on a mat"]
    frames, expected = spoken(lines)
    record = align_frames(lines, log_probs(frames, spelling), spelling)
    assert frames_of(record) == expected
    assert all(w["score"] == pytest.approx(0.0, abs=1e-3) and w["confidence"] > 0.85 for w in record.words)
    assert [line["score"] for line in record.lines] == pytest.approx([0.0, 0.0], abs=1e-3)
    # Spoken less clearly (the right token at 0.5): lower confidence, still the best token, score 0
    unsure = align_frames(lines, log_probs(frames, spelling, sure=0.5), spelling)
    assert frames_of(unsure) == expected and unsure.words[0]["confidence"] < 0.6


def test_a_word_outside_the_vocabulary_is_placed_between_its_neighbours_and_flagged(spelling):
    frames, expected = spoken(["ab cd"])
    record = align_frames(["ab 2014 £13.60 cd"], log_probs(frames, spelling), spelling)
    ab, year, price, cd = record.words
    assert frames_of(record)[0] == expected[0] and frames_of(record)[3] == expected[1]
    assert year["aligned"] is False and price["aligned"] is False and year["score"] is None
    assert ab["end"] == year["start"] < year["end"] == price["start"] < price["end"] == cd["start"]
    assert "aligned" not in ab and record.lines[0]["score"] == pytest.approx(0.0, abs=1e-3)


def test_a_line_the_audio_lacks_is_left_out_and_its_neighbours_keep_their_times(spelling):
    frames, expected = spoken(["abc def", "mno pqr"])
    emissions = log_probs(frames, spelling)
    record = align_frames(["abc def", "ghij klm", "mno pqr"], emissions, spelling)
    assert frames_of(record)[:2] + frames_of(record)[4:] == expected
    assert record.lines[1]["score"] is None and all(w.get("aligned") is False for w in record.words[2:4])
    assert record.lines[0]["score"] == pytest.approx(0.0, abs=1e-3) == record.lines[2]["score"]


def test_a_line_whose_audio_is_other_speech_is_left_out(spelling):
    # The text's second line is not what was said there. With a peaky model (blank unlikely on speech), taking the
    # other speech as blanks would cost more than forcing the wrong line over it; the gap takes it instead, and
    # the wrong line is left out.
    frames, expected = spoken(["abc def", "stuvw xyz", "mno pqr"])
    record = align_frames(["abc def", "ghij klm", "mno pqr"], log_probs(frames, spelling, sure=0.999), spelling)
    assert record.lines[1]["score"] is None and all(w.get("aligned") is False for w in record.words[2:4])
    assert frames_of(record)[:2] + frames_of(record)[4:] == expected[:2] + expected[4:]


def test_the_last_words_are_placed_even_where_the_model_doubts_them(spelling):
    # The recording ends in a word the model hears faintly (its letters under the blank): the alignment must still
    # reach the end of the text, so it is timed, with a low score.
    frames, expected = spoken(["abc def"])
    emissions = log_probs(frames, spelling)
    faint = slice(expected[1][0], expected[1][1])
    emissions[faint] = torch.log_softmax(emissions[faint] / 8, -1)  # flatter: the blank now beats most letters
    emissions[faint, spelling.blank] += 1.0
    record = align_frames(["abc def"], torch.log_softmax(emissions, -1), spelling)
    assert "aligned" not in record.words[1] and record.words[1]["score"] < -0.05
    assert frames_of(record)[0] == expected[0]


def test_audio_the_text_lacks_goes_to_the_gap_between_lines(spelling):
    frames, expected = spoken(["abc def", "stuvw xyz", "mno pqr"])
    record = align_frames(["abc def", "mno pqr"], log_probs(frames, spelling), spelling)
    assert frames_of(record) == expected[:2] + expected[4:]
    assert all(line["score"] == pytest.approx(0.0, abs=1e-3) for line in record.lines)


def test_stretch_by_stretch_gives_the_times_of_one_pass(spelling, monkeypatch):
    # 40 lines (about 26 s at 20 ms a frame), aligned in one stretch, then in 2-second stretches fed in 7 pieces.
    rng = np.random.default_rng(1)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    lines = [" ".join("".join(rng.choice(letters, rng.integers(2, 6))) for _ in range(rng.integers(1, 4)))
             for _ in range(40)]
    frames, expected = spoken(lines, pause=8)
    emissions = log_probs(frames, spelling)
    monkeypatch.setattr(alignment, "STRETCH_SECONDS", 1000.0)
    whole = align_frames(lines, emissions, spelling)
    monkeypatch.setattr(alignment, "STRETCH_SECONDS", 2.0)
    monkeypatch.setattr(alignment, "OVERLAP_SECONDS", 0.5)
    stretched = align_frames(lines, emissions, spelling, pieces=7)
    assert len(frames) * FRAME > 10 * 2.0  # many stretches
    assert frames_of(whole) == frames_of(stretched) == expected


def test_text_lines_and_sentences():
    assert text_lines("  one line \n\n two  lines\n") == ["one line", "two  lines"]
    text = "First sentence. Second one? Yes!\nIt goes on\nover lines. Last"
    assert text_lines(text, split_sentences=True) == ["First sentence.", "Second one?", "Yes!",
                                                      "It goes on over lines.", "Last"]


# The pinned demo model on recordings of the demo corpus's clips -----------------------------------------------------

def onset(audio: np.ndarray) -> float:
    """Where speech starts in a clip: the first 10 ms whose RMS passes 2% of the clip's loudest 10 ms (seconds)."""
    frame = RATE // 100
    rms = np.sqrt(np.mean(audio[:len(audio) // frame * frame].reshape(-1, frame) ** 2, axis=1))
    return float(np.argmax(rms > 0.02 * rms.max())) * frame / RATE


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """The clips joined with pauses into a 16-bit recording (as recorders write audio), its text (a line per clip),
    each line's speech onset in the recording, and each clip alone as a window of the recording holds it (from
    LEAD_SECONDS before its first sound to TRAILING_QUIET_SECONDS after its last)."""
    folder = tmp_path_factory.mktemp("recording")
    with open(os.path.join(DEMO_TEST, "metadata.csv"), encoding="utf-8") as f:
        texts = {row["file_name"]: row["sentence"] for row in csv.DictReader(f)}
    parts, starts, onsets, alone = [], [], [], []
    lead, tail = round(LEAD_SECONDS * RATE), round(TRAILING_QUIET_SECONDS * RATE)
    for i, (name, pause) in enumerate(zip(CLIPS, PAUSES)):
        audio = load_audio(os.path.join(DEMO_TEST, name), RATE)
        loud = np.flatnonzero(np.abs(audio) > TRIM_LEVEL)
        clip = np.concatenate([np.zeros(lead), audio[loud[0]:loud[-1] + 1], np.zeros(tail)]).astype(np.float32)
        alone.append(str(folder / f"clip-{i}.wav"))
        sf.write(alone[-1], clip, RATE, subtype="PCM_16")
        parts.append(np.zeros(round(pause * RATE) - lead, np.float32))
        starts.append(sum(len(p) for p in parts) / RATE)
        onsets.append(starts[-1] + onset(clip))
        parts.append(clip)
    parts.append(np.zeros(RATE // 2, np.float32))
    path, text = str(folder / "recording.wav"), folder / "recording.txt"
    sf.write(path, np.concatenate(parts), RATE, subtype="PCM_16")
    lines = [texts[name] for name in CLIPS]
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"audio": path, "text": str(text), "lines": lines, "starts": starts, "onsets": onsets, "alone": alone,
            "folder": folder}


def run_align(*argv) -> list:
    return align.main([MODEL, *map(str, argv)])


def test_each_line_starts_where_its_speech_starts(recording):
    (result,) = run_align(recording["audio"], recording["text"])
    assert [line["text"] for line in result.lines] == recording["lines"]
    errors = [abs(line["start"] - at) for line, at in zip(result.lines, recording["onsets"])]
    assert max(errors) <= 3 * FRAME, errors
    assert all(line["score"] > -1.0 for line in result.lines)
    assert all(w["start"] < w["end"] <= v["start"] for w, v in zip(result.words, result.words[1:]))


def test_in_a_room_s_noise_each_line_still_starts_where_its_speech_starts(recording, tmp_path):
    # A steady noise under the whole recording (-60 dBFS, a quiet room): its pauses are noise, not digital silence.
    # A window still starts at its speech (longform.SOUND_OVER_FLOOR), not amid the pause, and so do the lines.
    audio, _ = sf.read(recording["audio"], dtype="float32")
    noisy = audio + np.random.default_rng(0).normal(0, 1e-3, len(audio)).astype(np.float32)
    sf.write(tmp_path / "noisy.wav", noisy, RATE, subtype="PCM_16")
    (result,) = run_align(tmp_path / "noisy.wav", recording["text"])
    errors = [abs(line["start"] - at) for line, at in zip(result.lines, recording["onsets"])]
    assert max(errors) <= 3 * FRAME, errors


def test_a_recording_in_many_windows_and_stretches_aligns_as_its_clips_one_by_one(recording, monkeypatch):
    # Each clip alone (a manifest of clip and line, aligned in one batch) against the recording in 3-second windows
    # and 3-second stretches: every word at the same time, moved by where its clip starts (within a frame).
    manifest = recording["folder"] / "clips.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("audio", "text"), *zip(recording["alone"], recording["lines"])])
    alone = run_align(manifest)
    monkeypatch.setattr(alignment, "STRETCH_SECONDS", 3.0)
    monkeypatch.setattr(alignment, "OVERLAP_SECONDS", 1.0)
    (whole,) = run_align(recording["audio"], recording["text"], *SHORT_WINDOWS)
    shifted = [(w["start"] + s, w["end"] + s) for record, s in zip(alone, recording["starts"]) for w in record.words]
    np.testing.assert_allclose([(w["start"], w["end"]) for w in whole.words], shifted, atol=FRAME + 1e-3)


@pytest.mark.parametrize("extension", [".json", ".ctm", ".srt", ".vtt", ".TextGrid"])
def test_every_output_format_parses(recording, tmp_path, extension):
    out = tmp_path / f"aligned{extension}"
    (result,) = run_align(recording["audio"], recording["text"], "--output", out)
    words = [w["word"] for w in result.words]
    if extension == ".json":
        (record,) = json.loads(out.read_text(encoding="utf-8"))
        assert set(record) == {"path", "text", "duration", "words", "lines"}
        assert [w["word"] for w in record["words"]] == words == " ".join(recording["lines"]).split()
        assert all(set(w) == {"word", "start", "end", "confidence", "score"} for w in record["words"])
        assert [line["text"] for line in record["lines"]] == recording["lines"]
    elif extension == ".ctm":
        rows = [line.split() for line in out.read_text().splitlines()]
        assert [r[4] for r in rows] == words and all(len(r) == 6 and r[:2] == ["recording", "1"] for r in rows)
        assert [float(r[2]) for r in rows] == [w["start"] for w in result.words]
    elif extension == ".srt":
        import srt

        cues = list(srt.parse(out.read_text(encoding="utf-8")))
        assert " ".join(c.content.replace("\n", " ") for c in cues).split() == words
    elif extension == ".vtt":
        import webvtt

        assert " ".join(c.text.replace("\n", " ") for c in webvtt.read(str(out))).split() == words
    else:
        from praatio import textgrid

        grid = textgrid.openTextgrid(str(out), includeEmptyIntervals=False)
        assert list(grid.tierNames) == ["words", "tokens"]
        assert [e.label for e in grid.getTier("words").entries] == words
        tokens = "".join(e.label for e in grid.getTier("tokens").entries)
        assert tokens == "".join(recording["lines"]).replace(" ", "")


def test_segmentation_writes_clips_of_their_lines_and_the_training_script_trains_on_them(recording, tmp_path,
                                                                                           monkeypatch):
    corpus = tmp_path / "corpus"
    run_align(recording["audio"], recording["text"], "--segment", corpus, "--verify", "--max_cer", "0.2")
    rows = list(csv.DictReader(open(corpus / "train" / "metadata.csv", encoding="utf-8")))
    assert list(rows[0]) == ["file_name", "sentence", "start", "end", "score"]
    assert len(rows) >= len(CLIPS) - 1  # the model may mishear one clip cut from a recording
    paths = [str(corpus / "train" / r["file_name"]) for r in rows]
    heard = transcribe(MODEL, paths)
    assert sum(h == r["sentence"] for h, r in zip(heard, rows)) >= len(rows) - 1
    assert all(sf.info(p).format == "FLAC" for p in paths)
    onsets = dict(zip(recording["lines"], recording["onsets"]))
    assert all(float(r["start"]) < onsets[r["sentence"]] < float(r["end"]) for r in rows)
    # The corpus as it is: a split folder for --dataset_name
    import run_speech_recognition_ctc as ctc

    out = tmp_path / "trained"
    argv = base_args(make_checkpoint(str(tmp_path / "tiny"), "wav2vec2"), str(corpus), str(out),
                     eval_split_name="train", max_steps=2, per_device_train_batch_size=2)
    monkeypatch.setattr(sys, "argv", [SCRIPT, *argv])
    ctc.main()
    assert read_json(out / "train_results.json")["train_samples"] == len(rows)


def test_a_line_not_in_the_audio_is_dropped_with_its_reason_and_the_others_keep_their_times(recording, tmp_path,
                                                                                            caplog):
    lines = list(recording["lines"])
    lines.insert(4, "please water the plants before you leave for work")
    text = tmp_path / "text.txt"
    text.write_text("\n".join(lines), encoding="utf-8")
    (right,) = run_align(recording["audio"], recording["text"])
    caplog.set_level("INFO", logger="align")
    (result,) = run_align(recording["audio"], text, "--segment", tmp_path / "corpus")
    others = result.lines[:4] + result.lines[5:]
    assert [(x["start"], x["end"]) for x in others] == [(x["start"], x["end"]) for x in right.lines]
    dropped = list(csv.DictReader(open(tmp_path / "corpus" / "dropped.csv", encoding="utf-8")))
    assert [(d["line"], d["reason"]) for d in dropped] == [("5", NOT_FOUND)]
    kept = list(csv.DictReader(open(tmp_path / "corpus" / "train" / "metadata.csv", encoding="utf-8")))
    assert [r["sentence"] for r in kept] == recording["lines"]
    summary = caplog.records[-1].getMessage()
    assert "Segmented 9 lines of 1 recording(s)" in summary and "kept 8" in summary
    assert "1 not in the audio" in summary and "retention 88.9%" in summary


def test_a_subword_model_gives_every_word_a_time(recording, tmp_path):
    # A Parakeet-shaped tiny model (random weights, 80 ms frames, its own SentencePiece vocabulary): the text is
    # spelt in pieces, and every word gets a time in order.
    model = make_checkpoint(str(tmp_path / "parakeet"), "parakeet_ctc")
    (result,) = align.main([model, recording["audio"], recording["text"]])
    assert [w["word"] for w in result.words] == " ".join(recording["lines"]).split()
    assert all(w["start"] <= w["end"] <= v["start"] + 1e-6 for w, v in zip(result.words, result.words[1:]))


# Bad input -----------------------------------------------------------------------------------------------------------

def user_error(argv, capsys, monkeypatch) -> str:
    """Run the command line in process; return its single stderr line after checking the exit code is 2."""
    monkeypatch.setattr(sys, "argv", ["align.py", *map(str, argv)])
    with pytest.raises(SystemExit) as exit_info:
        align.cli()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_bad_input_is_one_error_line(recording, tmp_path, capsys, monkeypatch):
    audio, text = recording["audio"], recording["text"]
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, np.float32), RATE)  # a header, no samples
    (tmp_path / "broken.flac").write_bytes(b"not audio at all")
    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 ol\xe9".encode("latin-1"))
    (tmp_path / "digits.txt").write_text("2014 13.60 42\n")
    cases = [([tmp_path / "no.wav", text], "does not exist"), ([tmp_path / "empty.wav", text], "empty audio"),
             ([tmp_path / "broken.flac", text], "unreadable audio"), ([audio, tmp_path / "no.txt"], "does not exist"),
             ([audio, tmp_path / "empty.txt"], "is empty"), ([audio, tmp_path / "latin1.txt"], "is not UTF-8"),
             ([audio], "no TEXT"), ([audio, tmp_path / "digits.txt"], "nothing alignable"),
             ([audio, text, "--output", tmp_path / "no" / "x.json"], f"directory {tmp_path / 'no'} does not exist")]
    for argv, expected in cases:
        assert expected in user_error([MODEL, *argv], capsys, monkeypatch)
    with pytest.raises(SystemExit):  # an unknown format is a usage error, before anything runs
        align.parse_args([MODEL, audio, text, "--output", "x.docx"])


def test_a_manifest_skips_rows_without_their_files_and_counts_them(recording, tmp_path, caplog):
    (tmp_path / "line.txt").write_text(recording["lines"][1] + "\n")
    manifest = tmp_path / "pairs.csv"
    rows = [("audio", "text"), (recording["alone"][0], recording["lines"][0]), ("missing.wav", "hello there"),
            (recording["alone"][1], "line.txt"), (recording["alone"][2], "no_such_text.txt"),
            (recording["alone"][3], "")]
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    caplog.set_level("INFO", logger="align")
    results = align.main([MODEL, str(manifest), "--output", str(tmp_path / "tg.TextGrid")])
    assert [r.path for r in results] == [recording["alone"][0], recording["alone"][1]]
    assert [r.lines[0]["text"] for r in results] == recording["lines"][:2]
    assert sorted(os.listdir(tmp_path / "tg.TextGrid")) == ["clip-0.TextGrid", "clip-1.TextGrid"]
    summary = caplog.records[-1].getMessage()
    assert "3 skipped" in summary and "missing file" in summary and "missing text file" in summary
    assert "empty text" in summary
    with pytest.raises(UserError, match="needs an audio column"):
        (tmp_path / "bad.csv").write_text("sentence\nhello\n")
        align.main([MODEL, str(tmp_path / "bad.csv")])
    with pytest.raises(UserError, match="no row to align"):
        (tmp_path / "textless.csv").write_text(f"audio,text\n{recording['alone'][0]},gone.txt\n")
        align.main([MODEL, str(tmp_path / "textless.csv")])
