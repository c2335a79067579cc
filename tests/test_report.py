"""report.py and ctc_finetune/report.py: report.html from a synthetic output_dir whose predictions point at the real fixture audio."""

import base64
import csv
import html.parser
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse

import jiwer
import pytest
import soundfile as sf
from conftest import DATA_DIR, ROOT

import report
from ctc_finetune.analysis import corpus_scores, duration_bucket, frequent_errors
from ctc_finetune.report import build_report

WORST = ("move the white light to the office", "move a light to the office now please thanks")  # S D I I I: 5/7
SCRIPT_REF = "zero seven thirty ten <script>alert(1)</script>"  # against IMG_HYP: 3/5, second worst
IMG_HYP = "zero seven thirty ten <img src=x onerror=alert(1)>"
TAR_CLIP = "shard-000001.tar/000000012.flac"  # how tar shards name a clip: not a file


def audio(split: str, name: str) -> str:
    return os.path.join(DATA_DIR, split, name)


def clips() -> list[tuple]:
    """(clip_id, reference, hypothesis, seconds, speaker) of five clips, four of them real fixture audio."""
    return [
        (audio("test", "test-00000.flac"), *WORST, 1.89, "kal16"),
        (audio("validation", "validation-00002.flac"), SCRIPT_REF, IMG_HYP, 1.51, "en-gb+m3"),
        (audio("test", "test-00005.flac"), "is the door open", "is door open", 1.36, "en-gb+m3"),
        (audio("train", "train-00001.mp3"), "open the office door", "open the office door", 1.35, "kal16"),
        (TAR_CLIP, "set the alarm to twenty ten hours", "set the alarm to twenty ten hours", 7.5, "kal16"),
    ]


def write_predictions(path: str, clips: list[tuple], with_lm: bool = False) -> None:
    """A predictions CSV as the training script writes it (worst first), plus a `speaker` column from the manifest;
    `with_lm`: an LM transcript column too, from an LM that gets every clip right."""
    rows = [{"clip_id": clip_id, "reference": ref, "hypothesis": hyp, "wer": round(jiwer.wer(ref, hyp), 4),
             "cer": round(jiwer.cer(ref, hyp), 4), "seconds": seconds,
             **({"hypothesis_lm": ref, "wer_lm": 0.0} if with_lm else {}), "speaker": speaker}
            for clip_id, ref, hyp, seconds, speaker in clips]
    rows.sort(key=lambda r: (-r["wer"], -r["cer"]))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: str, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


@pytest.fixture
def run_dir(tmp_path):
    """An output_dir as a train + eval run leaves it (no model weights: the report does not read them)."""
    out = str(tmp_path / "out")
    os.makedirs(out)
    write_predictions(os.path.join(out, "eval_predictions.csv"), clips())
    write_json(os.path.join(out, "trainer_state.json"), {"global_step": 4, "log_history": [
        {"loss": 9.5, "learning_rate": 0.001, "step": 1}, {"loss": 6.1, "learning_rate": 0.0008, "step": 2},
        {"eval_loss": 5.2, "eval_wer": 0.95, "eval_cer": 0.7, "step": 2},
        {"loss": 4.0, "learning_rate": 0.0005, "step": 3}, {"loss": 3.3, "learning_rate": 0.0002, "step": 4},
        {"eval_loss": 3.1, "eval_wer": 0.6, "eval_cer": 0.4, "step": 4},
        {"train_runtime": 125.0, "train_loss": 5.7, "step": 4},
    ]})
    write_json(os.path.join(out, "data_report.json"), {
        "train": {"clips": 12, "hours": 0.0051, "seconds_min_median_max": [1.1, 1.5, 2.3], "sampling_rates": [16000],
                  "channels": [1], "dropped": {"too long": 2, "undecodable": 1}},
        "eval": {"clips": 5, "hours": 0.0038, "seconds_min_median_max": [1.3, 1.5, 7.5], "sampling_rates": [16000],
                 "channels": [1], "dropped": {}},
    })
    write_json(os.path.join(out, "all_results.json"), {"eval_wer": 0.4321, "eval_cer": 0.2345, "eval_samples": 5,
                                                      "train_runtime": 125.0, "train_audio_hours": 0.02, "epoch": 1.5})
    write_json(os.path.join(out, "config.json"), {"model_type": "wav2vec2"})
    return out


class Tags(html.parser.HTMLParser):
    """Every start tag of a page, as (name, attributes)."""

    def __init__(self, page: str):
        super().__init__()
        self.tags = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def sources(self, tag="audio"):
        return [attrs["src"] for name, attrs in self.tags if name == tag]


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def worst_clip(page: str) -> str:
    return page.split('<article class="clip">')[1].split("</article>")[0]


# ----------------------------------------------------------------------------------------------------------------------
# Helpers
def test_corpus_scores_pool_errors_over_words():
    # 0 errors in 4 words and 1 in 1 word: 1/5 corpus-level, where the mean of clip WERs would say 0.5.
    scores = corpus_scores(["a b c d", "e", ""], ["a b c d", "x", "ignored"])
    assert scores["wer"] == pytest.approx(0.2) and scores["words"] == 5 and scores["clips"] == 3
    assert scores["cer"] == pytest.approx(1 / 8)  # "a b c d" is 7 characters, "e" one
    assert corpus_scores([""], ["x"])["wer"] is None  # nothing to score


def test_duration_buckets():
    assert [duration_bucket(s) for s in (0.5, 2, 4.99, 5, 12, 20, 300, None)] == [
        "< 2 s", "2–5 s", "2–5 s", "5–10 s", "10–20 s", "≥ 20 s", "≥ 20 s", "unknown"]


def test_frequent_errors_count_words_one_by_one():
    counts = frequent_errors(["the cat sat on the mat", "a b"], ["the bat sat", "a b c"])
    assert counts["substitutions"] == {("cat", "bat"): 1}
    assert counts["deletions"] == {"on": 1, "the": 1, "mat": 1}  # one chunk of three deleted words
    assert counts["insertions"] == {"c": 1}
    assert counts["characters"][("c", "b")] == 1


# ----------------------------------------------------------------------------------------------------------------------
# The page
def test_report_shows_scores_curves_breakdowns_clips_and_errors(run_dir):
    path = build_report(run_dir)
    assert path == os.path.join(run_dir, "report.html")
    page = read(path)
    tags = Tags(page)

    # Headline: model type, split size, scores from all_results.json, training time and audio.
    assert "Error analysis: wav2vec2" in page and "eval split · 5 clips" in page
    assert "43.21 %" in page and "23.45 %" in page
    assert "2 min 05 s" in page and "0.02 h of audio" in page and "4 steps" in page

    # Training curves drawn by matplotlib, inline.
    assert re.search(r'<figure class="curves"[^>]*><svg', page)
    links = [attrs.get("src") or attrs.get("href") for _, attrs in tags.tags if {"src", "href"} & set(attrs)]
    assert links and not [link for link in links if re.match(r"(https?:)?//", link)]  # offline: nothing fetched

    # Data report: drops by reason.
    assert "too long: 2, undecodable: 1" in page

    # Breakdowns: by duration (counts per bucket) and by the extra `speaker` column, corpus-level.
    assert "By clip duration" in page and "By speaker" in page
    by_speaker = page.split("By speaker")[1].split("</table>")[0]
    refs = [WORST[0], "open the office door", "set the alarm to twenty ten hours"]
    hyps = [WORST[1], "open the office door", "set the alarm to twenty ten hours"]
    assert f"{100 * jiwer.wer(refs, hyps):.1f} %" in by_speaker  # kal16: pooled over its three clips
    assert "<td>kal16</td><td class=n>3</td>" in by_speaker

    # Players: one per clip with an audio file, linked relative to output_dir.
    sources = tags.sources()
    assert len(sources) == 4
    for src in sources:
        assert not src.startswith(("/", "file:", "data:"))
        assert os.path.isfile(os.path.join(run_dir, urllib.parse.unquote(src)))
    assert TAR_CLIP in page and "No player" in page

    # The worst clip first, aligned word by word, errors marked in text as well as in colour.
    worst = worst_clip(page)
    assert "test-00000.flac" in worst
    assert '<span class="col sub" title="substituted"><span>the</span><span><b>a</b></span>' in worst
    assert "<del>white</del>" in worst and "<ins>now</ins>" in worst and "<ins>thanks</ins>" in worst
    assert [m for m in re.findall(r'<span class="op">(\w?)</span>', worst) if m] == ["S", "D", "I", "I", "I"]

    # Most frequent errors over the split.
    errors = page.split("Most frequent errors")[1].split("worst clips")[0]
    assert "<td>the → <b>a</b></td><td class=n>1</td>" in errors and "<ins>now</ins></td><td class=n>1</td>" in errors
    assert "<del>white</del></td><td class=n>1</td>" in errors and "<del>the</del></td><td class=n>1</td>" in errors


def breakdown_rows(page: str, column: str) -> list[list[str]]:
    """The cells of a split's "By COLUMN" table, as text."""
    table = page.split(f"<h4>By {column}</h4>")[1].split("</table>")[0].split("<tbody>")[1]
    return [[re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", table)]


def test_numeric_columns_are_grouped_in_ranges(tmp_path):
    # The 20 fixture clips with their manifest's numeric columns: `rate` (words per minute, 17 values) and `duration`
    # (seconds, as the script's own `seconds`), plus `pitch` (3 values) and an `id` column (one value per clip).
    rows = []
    for split in ("train", "validation", "test"):
        with open(os.path.join(DATA_DIR, split, "metadata.csv"), encoding="utf-8") as f:
            rows += [dict(r, split=split) for r in csv.DictReader(f)]
    out = tmp_path / "out"
    out.mkdir()
    with open(out / "eval_predictions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["clip_id", "reference", "hypothesis", "seconds", "speaker", "rate", "duration", "pitch", "id"])
        for i, r in enumerate(rows):
            hyp = " ".join(r["sentence"].split()[:-1]) if int(r["rate"]) > 180 else r["sentence"]  # fast: a deletion
            writer.writerow([audio(r["split"], r["file_name"]), r["sentence"], hyp,
                             round(sf.info(audio(r["split"], r["file_name"])).duration, 2), r["speaker"], r["rate"],
                             r["duration"], 40 + 10 * (i % 3), f"clip{i}"])
    page = read(build_report(str(out)))

    # rate: a few ranges in value order, cut at round numbers, covering every clip, each scored corpus-level.
    table = breakdown_rows(page, "rate")
    assert 2 <= len(table) <= 5
    edges = [[float(x) for x in row[0].split("–")] for row in table]
    rates = sorted(int(r["rate"]) for r in rows)
    assert edges[0][0] == rates[0] and edges[-1][1] == rates[-1]
    assert all(a[1] == b[0] and a[1] % 5 == 0 for a, b in zip(edges, edges[1:]))  # contiguous, round
    assert sum(int(row[1]) for row in table) == len(rows) and all(int(row[1]) >= 2 for row in table)
    for (low, high), row in zip(edges, table):
        inside = [r for r in rows if low <= int(r["rate"]) < high or int(r["rate"]) == high == rates[-1]]
        refs = [r["sentence"] for r in inside]
        hyps = [" ".join(r["sentence"].split()[:-1]) if int(r["rate"]) > 180 else r["sentence"] for r in inside]
        assert int(row[1]) == len(inside) and row[3] == f"{100 * jiwer.wer(refs, hyps):.1f} %", row

    # pitch: few values, one group each, in value order; duration repeats the clip durations; id is one clip a value.
    assert [row[0] for row in breakdown_rows(page, "pitch")] == ["40", "50", "60"]
    assert "By duration" not in page and "By id" not in page
    assert "duration (it repeats the clip durations)" in page and "id (20 values in 20 clips, under 2 a value)" in page


def test_transcripts_are_escaped(run_dir):
    page = read(build_report(run_dir))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img" in page and "onerror=alert(1)&gt;" in page
    names = [name for name, _ in Tags(page).tags]
    assert "script" not in names and "img" not in names  # the page has no script at all
    assert not [attrs for _, attrs in Tags(page).tags if any(a.startswith("on") for a in attrs)]


def test_embed_audio_puts_the_bytes_in_the_page(run_dir):
    page = read(build_report(run_dir, clips=3, embed_audio=True))
    sources = Tags(page).sources()
    assert len(sources) == 3 and all(src.startswith("data:audio/") for src in sources)
    assert sources[0].startswith("data:audio/flac;base64,")
    with open(audio("test", "test-00000.flac"), "rb") as f:
        assert base64.b64decode(sources[0].split(",", 1)[1]) == f.read()
    page = read(build_report(run_dir, clips=4, embed_audio=True))
    assert Tags(page).sources()[3].startswith("data:audio/mpeg;base64,")


def test_both_splits_lm_and_missing_files(run_dir):
    # A predict split too, decoded with an LM; no trainer_state/data_report/all_results (an evaluation-only run).
    write_predictions(os.path.join(run_dir, "predictions.csv"), clips(), with_lm=True)
    for name in ("trainer_state.json", "data_report.json", "all_results.json", "config.json"):
        os.remove(os.path.join(run_dir, name))
    page = read(build_report(run_dir, clips=1))
    assert '<section id="eval">' in page and '<section id="predict">' in page
    assert page.count('<article class="clip">') == 2
    assert "No training logs" in page and "No data_report.json" in page
    assert "<svg" not in page
    expected = jiwer.wer([WORST[0], SCRIPT_REF, "is the door open", "open the office door",
                          "set the alarm to twenty ten hours"],
                         [WORST[1], IMG_HYP, "is door open", "open the office door",
                          "set the alarm to twenty ten hours"])
    assert f"{100 * expected:.2f} %" in page  # the headline scores the CSV itself
    eval_section, predict_section = page.split('<section id="eval">')[1].split('<section id="predict">')
    assert "WER with LM" not in eval_section
    assert "<th class=n>WER with LM</th>" in predict_section and "WER with LM 0.0 %" in predict_section
    assert predict_section.count("<span>LM</span>") == 1  # the LM transcript aligned too, under the greedy one


def test_cli(run_dir, tmp_path, capsys):
    script = os.path.join(ROOT, "report.py")
    done = subprocess.run([sys.executable, script, run_dir, "--report_clips", "2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == os.path.join(run_dir, "report.html")
    assert read(done.stdout.strip()).count('<article class="clip">') == 2

    # the mistakes through main() in this process (a subprocess costs seconds of imports)
    for bad, hint in ((str(tmp_path / "nope"), "is not a directory"), (str(tmp_path), "--do_eval or --do_predict")):
        with pytest.raises(SystemExit) as e:
            report.main([bad])
        out, err = capsys.readouterr()
        assert e.value.code == 2 and out == ""  # faults.USER_ERROR_EXIT, as the other commands
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith("error: ") and hint in err


# ----------------------------------------------------------------------------------------------------------------------
# In a real browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_CHROMIUM = "no chromium on PATH: `bash tools/install_extras.sh report` installs it"


def test_report_renders_in_chromium(run_dir, tmp_path):
    if not CHROMIUM:  # CI installs the extras: there a missing browser is a broken install, not a reason to skip
        (pytest.fail if os.environ.get("CI") else pytest.skip)(NO_CHROMIUM)
    from PIL import Image, ImageStat

    url = "file://" + urllib.parse.quote(build_report(run_dir))
    # --no-sandbox: we may be root (CI); --disable-dev-shm-usage: containers give /dev/shm 64 MB.
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400"]
    shot = str(tmp_path / "report.png")
    done = subprocess.run(browser + [f"--screenshot={shot}", url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and os.path.isfile(shot), done.stderr[-2000:]
    image = Image.open(shot).convert("L")
    assert image.size == (1280, 2400)
    assert ImageStat.Stat(image).var[0] > 100  # not a blank page (an unrendered one is a single colour)

    done = subprocess.run(browser + ["--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    tags = Tags(dom)
    assert sum(name == "svg" for name, _ in tags.tags) == 1 and len(tags.sources()) == 4
    assert "<del>white</del>" in worst_clip(dom)
    assert "script" not in [name for name, _ in tags.tags]  # still text after the browser parsed it
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom


# ----------------------------------------------------------------------------------------------------------------------
# The training script: a tiny real run writes report.html, YAML argument files, TensorBoard out of the box


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-step run on the fixture audio with TensorBoard on; its output_dir."""
    import run_speech_recognition_ctc as ctc
    from conftest import base_args
    from tiny_models import make_checkpoint

    work = tmp_path_factory.mktemp("run")
    encoder = make_checkpoint(str(work / "encoder"), "wav2vec2")
    out = work / "out"
    ctc.main(base_args(encoder, DATA_DIR, str(out), report_to="tensorboard", logging_steps=1, report_clips=3))
    return out


def test_a_run_writes_its_report_with_the_manifest_columns(trained, tmp_path):
    with open(trained / "eval_predictions.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["speaker"] and rows[0]["rate"]  # passed through from the manifest for the breakdowns
    page = read(str(trained / "report.html"))
    assert "By rate" in page and page.count("<audio") == 3 and "<svg" in page
    # Four clips of four speakers: a table would repeat the clips; `duration` is the clip durations again.
    assert "By speaker" not in page and "By duration" not in page
    assert "No breakdown by speaker (4 values in 4 clips, under 2 a value); duration (it repeats the clip" in page
    os.remove(trained / "report.html")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "report.py"), str(trained)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and os.path.isfile(trained / "report.html"), done.stderr[-2000:]
    if CHROMIUM:  # the real run's page renders, with its plots, players and the worst clip's alignment
        url = "file://" + urllib.parse.quote(str(trained / "report.html"))
        dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                              f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", url],
                             capture_output=True, text=True, timeout=120).stdout
        assert "<svg" in dom and dom.count("<audio") == 4 and "REF" in worst_clip(dom)  # rebuilt: default 50


def test_tensorboard_logs_out_of_the_box(trained):
    events = [f for d, _, files in os.walk(trained / "runs") for f in files if f.startswith("events.out.tfevents")]
    assert events and all(os.path.getsize(os.path.join(d, f)) > 0 for d, _, fs in os.walk(trained / "runs") for f in fs)


def test_a_yaml_argument_file_works_as_the_json_one(tmp_path):
    import yaml

    import run_speech_recognition_ctc as ctc
    from ctc_finetune.faults import UserError
    from tiny_models import make_checkpoint

    encoder = make_checkpoint(str(tmp_path / "encoder"), "wav2vec2")
    config = {"model_name_or_path": encoder, "dataset_name": DATA_DIR, "train_split_name": "train",
              "eval_split_name": "test", "text_column_name": "sentence", "output_dir": str(tmp_path / "out"),
              "do_train": True, "do_eval": True, "max_steps": 2, "report_to": "none", "save_strategy": "no",
              "evaluation_strategy": "no"}  # an old name too, renamed as in JSON files
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    results = ctc.main([str(tmp_path / "run.yaml")])
    assert results["eval_samples"] == 4 and os.path.isfile(tmp_path / "out" / "report.html")
    (tmp_path / "bad.yaml").write_text("model_name_or_path: [unclosed\n")
    with pytest.raises(UserError, match="is not valid YAML"):
        ctc.main([str(tmp_path / "bad.yaml")])
