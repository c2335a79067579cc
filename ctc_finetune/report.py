# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""report.html, one self-contained page of error analysis for a run (step 9 of the recipe, and `python report.py
OUTPUT_DIR`): the scores, the training curves and the data, then for each split WER and CER by group, the most
frequent errors, and the worst clips with an audio player and the reference and hypothesis aligned word by word.
Inline CSS and plots, no scripts: it opens offline in any browser. What it says comes from analysis.py; every string
from the data goes through esc()."""

import base64
import html
import logging
import mimetypes
import os
import pathlib
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import jiwer

from .analysis import (DURATION_EDGES, TOP_ERRORS, ReportError, breakdown, chunk_tokens, column_groups, corpus_scores,
                       duration_bucket, frequent_errors, load_json, load_trainer_state, prediction_files,
                       read_predictions)

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"
METRICS = (("wer", "WER"), ("cer", "CER"), ("per", "PER"), ("wer_lm", "WER with LM"), ("cer_lm", "CER with LM"))
AUDIO_MIME = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".ogg": "audio/ogg",
              ".opus": "audio/ogg"}  # Opus files are Ogg streams; browsers play them as audio/ogg
ERROR_MARKS = {  # alignment chunk type -> CSS class, the letter under the word, its meaning
    "substitute": ("sub", "S", "substituted"),
    "delete": ("del", "D", "deleted"),
    "insert": ("ins", "I", "inserted"),
}


@dataclass
class ReportArguments:
    """report.html, the error analysis written into output_dir after evaluation or prediction."""

    _argument_group_name = "The error-analysis report (ctc_finetune/report.py)"

    report_clips: int = field(default=50, metadata={"help": "Worst clips report.html lists per split, with audio."})
    report_embed_audio: bool = field(
        default=False, metadata={"help": "Put those clips' audio inside report.html (portable) instead of linking it."}
    )

    def __post_init__(self):
        if self.report_clips < 0:
            raise ReportError(f"--report_clips must be 0 or more, got {self.report_clips}")


def write_report(output_dir: str, args: ReportArguments) -> None:
    """report.html for a run that has just finished (step 9); a failure here never costs the run, whose model and
    metrics are saved: it is logged with the command that retries."""
    try:
        path = build_report(output_dir, clips=args.report_clips, embed_audio=args.report_embed_audio)
    except Exception as e:  # noqa: BLE001 - the report is a view of the saved files
        logger.warning(f"No report.html ({type(e).__name__}: {e}); `python report.py {output_dir}` retries")
        return
    logger.info(f"Report: {path} (`python report.py {output_dir}` rebuilds it)")


def esc(value) -> str:
    """Any value from the data, as HTML text or attribute value (quotes escaped too)."""
    return html.escape(str(value), quote=True)


# Rendering: small HTML pieces, every data string through esc()
def pct(rate: Optional[float], digits: int = 1) -> str:
    return "–" if rate is None else f"{100 * rate:.{digits}f} %"


def duration_text(seconds: float) -> str:
    """e.g. '42 s', '5 min 36 s', '2 h 05 min'."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def number_text(value) -> str:
    """A JSON number with thousands separators; anything else as escaped text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return esc(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:,.4g}"


def hours_text(hours) -> str:
    if not isinstance(hours, (int, float)):
        return "–" if hours is None else esc(hours)
    return f"{hours:,.2f}" if hours >= 0.01 else "< 0.01"


def table_html(headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    """A table from cells that are already HTML; columns whose index is in `numeric` are right-aligned."""
    head = "".join(f"<th{' class=n' if i in numeric else ''}>{h}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td{' class=n' if i in numeric else ''}>{cell}</td>"
                                    for i, cell in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def rate_cell(rate: Optional[float]) -> str:
    """A rate with a bar as long as it (capped at 100 %), so a table of groups reads at a glance."""
    if rate is None:
        return "–"
    return f'{pct(rate)}<span class="bar" style="width:{min(rate, 1) * 60:.0f}px"></span>'


def audio_html(clip_id: str, output_dir: str, embed: bool) -> str:
    """An <audio> player for a clip: a link relative to output_dir, or its bytes as a data: URI; none if no file."""
    path = os.path.abspath(clip_id)
    if not os.path.isfile(path):  # e.g. a clip inside a tar shard, or a hub dataset's name for it
        return '<p class="muted">No player: the clip id is not an audio file on this machine.</p>'
    if embed:
        ext = os.path.splitext(path)[1].lower()
        mime = AUDIO_MIME.get(ext) or mimetypes.guess_type(path)[0] or "application/octet-stream"
        with open(path, "rb") as f:
            src = f"data:{mime};base64,{base64.b64encode(f.read()).decode('ascii')}"
    else:
        try:
            src = urllib.parse.quote(os.path.relpath(path, output_dir).replace(os.sep, "/"))
        except ValueError:  # Windows: the audio is on another drive than output_dir, no relative path exists
            src = pathlib.Path(path).as_uri()
    return f'<audio controls preload="metadata" src="{esc(src)}"></audio>'


def alignment_html(ref: str, hyp: str, hyp_label: str = "HYP") -> str:
    """Reference over hypothesis, word by word, from jiwer's alignment. Errors are coloured and also marked in text
    (S, D or I under the word; deleted words struck through, inserted ones underlined, substitutes in bold), so the
    page reads without colour too."""
    out = jiwer.process_words(ref, hyp)
    ref_words, hyp_words = out.references[0], out.hypotheses[0]
    cells = []
    for chunk in out.alignments[0]:
        r, h = chunk_tokens(chunk, ref_words, hyp_words)
        if chunk.type == "equal":
            cells += [alignment_cell(word, word, None) for word in r]
        elif chunk.type == "substitute":
            cells += [alignment_cell(a, b, chunk.type) for a, b in zip(r, h)]
        elif chunk.type == "delete":
            cells += [alignment_cell(word, "", chunk.type) for word in r]
        else:
            cells += [alignment_cell("", word, chunk.type) for word in h]
    if not cells:
        return '<p class="muted">Empty reference and empty hypothesis.</p>'
    label = f'<span class="col label"><span>REF</span><span>{hyp_label}</span><span class="op"></span></span>'
    return f'<div class="align">{label}{"".join(cells)}</div>'


def alignment_cell(ref_word: str, hyp_word: str, kind: Optional[str]) -> str:
    if kind is None:
        return (f'<span class="col"><span>{esc(ref_word)}</span><span>{esc(hyp_word)}</span>'
                '<span class="op"></span></span>')
    css, letter, meaning = ERROR_MARKS[kind]
    ref_html = f"<del>{esc(ref_word)}</del>" if kind == "delete" else esc(ref_word)
    hyp_html = {"insert": f"<ins>{esc(hyp_word)}</ins>", "substitute": f"<b>{esc(hyp_word)}</b>"}.get(kind, "")
    return (f'<span class="col {css}" title="{meaning}"><span>{ref_html}</span><span>{hyp_html}</span>'
            f'<span class="op">{letter}</span></span>')


# ---------------------------------------------------------------------------------------------------------------------
# The page's sections, in page order
def headline_html(output_dir: str, config: Optional[dict], results: Optional[dict], splits: dict,
                  state: Optional[dict]) -> str:
    """Title, the scores of each split, and how long training took on how much audio."""
    model_type = (config or {}).get("model_type") or "CTC model"
    results = results or {}
    parts = [f"<h1>Error analysis: {esc(model_type)}</h1>",
             f'<p class="path">{esc(os.path.abspath(output_dir))} · written {time.strftime("%Y-%m-%d %H:%M")}</p>']
    for split, (rows, _, overall) in splits.items():
        tiles = []
        for key, name in METRICS:
            value = results.get(f"{split}_{key}")
            if not isinstance(value, (int, float)) and key in ("wer", "cer"):
                value = overall[key]  # no all_results.json: the predictions file's own corpus-level score
            if isinstance(value, (int, float)):
                tiles.append(f'<div class="tile"><div class="v">{pct(value, 2)}</div>'
                             f'<div class="k">{name}</div></div>')
        parts.append(f'<h3>{esc(split)} split · {len(rows):,} clips</h3><div class="tiles">{"".join(tiles)}</div>')
    facts = []
    if isinstance(results.get("train_runtime"), (int, float)):
        facts.append(f"trained for {duration_text(results['train_runtime'])}")
    steps = (state or {}).get("global_step")
    if isinstance(steps, int) and steps:
        facts.append(f"{steps:,} steps")
    if isinstance(results.get("epoch"), (int, float)):
        facts.append(f"{results['epoch']:.2f} epochs")
    if isinstance(results.get("train_audio_hours"), (int, float)):
        facts.append(f"{results['train_audio_hours']:,.2f} h of audio seen in training")
    if facts:
        parts.append(f"<p>Training: {', '.join(facts)}.</p>")
    if os.path.isfile(os.path.join(output_dir, "README.md")):
        parts.append('<p>Model card: <a href="README.md">README.md</a>.</p>')
    return "\n".join(parts)


def curves_html(state: Optional[dict]) -> str:
    # matplotlib is imported here, when a page is drawn: every rank of a training run imports this module
    from .curves import training_curves_svg

    history = (state or {}).get("log_history")
    svg = training_curves_svg(history, METRICS) if isinstance(history, list) else ""
    if not svg:
        return ('<h2 id="curves">Training curves</h2><p class="muted">No training logs: output_dir has no '
                'trainer_state.json (an evaluation-only run).</p>')
    return (f'<h2 id="curves">Training curves</h2><figure class="curves" role="img" '
            f'aria-label="training loss, eval loss, eval error rates and learning rate against step">{svg}</figure>')


def data_html(report: Optional[dict]) -> str:
    """The data report: clips, hours, durations, sampling rates and drops per split."""
    if not report:
        return '<h2 id="data">Data</h2><p class="muted">No data_report.json in output_dir.</p>'
    rows = []
    for split, r in report.items():
        if not isinstance(r, dict):
            continue
        dropped = r.get("dropped") if isinstance(r.get("dropped"), dict) else {}
        drops = ", ".join(f"{esc(reason)}: {number_text(n)}" for reason, n in dropped.items()) or "none"
        if "streamed_shards" in r:
            clips, hours = f"streamed from {number_text(r['streamed_shards'])} tar shards", "–"
            drops = "counted while training (see the log)"
        else:
            clips, hours = number_text(r.get("clips", "–")), hours_text(r.get("hours"))
        durations = r.get("seconds_min_median_max")
        rows.append([esc(split), clips, hours,
                     " / ".join(number_text(v) for v in durations) if isinstance(durations, list) else "–",
                     ", ".join(number_text(v) for v in r.get("sampling_rates") or []) or "–",
                     ", ".join(number_text(v) for v in r.get("channels") or []) or "–", drops])
    table = table_html(["split", "clips", "hours", "seconds min / median / max", "sampling rates (Hz)", "channels",
                        "dropped"], rows, numeric={1, 2})
    return f'<h2 id="data">Data</h2>{table}'


def breakdown_html(title: str, dimension: str, table: list[dict], has_lm: bool) -> str:
    headers = [dimension, "clips", "words", "WER", "CER"] + (["WER with LM"] if has_lm else [])
    rows = [[esc(t["group"]), f"{t['clips']:,}", f"{t['words']:,}", rate_cell(t["wer"]), rate_cell(t["cer"])]
            + ([rate_cell(t["wer_lm"])] if has_lm else []) for t in table]
    return f'<div><h4>{title}</h4>{table_html(headers, rows, numeric={1, 2, 3, 4, 5})}</div>'


def errors_html(counts: dict[str, Counter]) -> str:
    """The most frequent errors of a split, four small tables side by side."""
    def visible(char):
        return "␣" if char == " " else esc(char)

    def top(kind):
        return counts[kind].most_common(TOP_ERRORS)

    tables = [
        ("Substituted words", "reference → hypothesis",
         [[f"{esc(r)} → <b>{esc(h)}</b>", f"{n:,}"] for (r, h), n in top("substitutions")]),
        ("Deleted words", "reference word", [[f"<del>{esc(w)}</del>", f"{n:,}"] for w, n in top("deletions")]),
        ("Inserted words", "hypothesis word", [[f"<ins>{esc(w)}</ins>", f"{n:,}"] for w, n in top("insertions")]),
        ("Character confusions", "reference → hypothesis (␣ space)",
         [[f"{visible(r)} → <b>{visible(h)}</b>", f"{n:,}"] for (r, h), n in top("characters")]),
    ]
    blocks = [f"<div><h4>{title}</h4>{table_html([header, 'count'], rows, numeric={1})}</div>" if rows
              else f'<div><h4>{title}</h4><p class="muted">none</p></div>' for title, header, rows in tables]
    return f'<div class="errors">{"".join(blocks)}</div>'


def clip_html(rank: int, row: dict, columns: list[str], output_dir: str, embed: bool, has_lm: bool) -> str:
    """One of the worst clips: its scores, player and word alignment (a second one for the LM transcript)."""
    facts = [f'<span class="score">WER {pct(row["wer"])}</span>', f"CER {pct(row['cer'])}"]
    if row["seconds"] is not None:
        facts.append(f"{row['seconds']:.2f} s")
    if has_lm:
        facts.append(f"WER with LM {pct(row['wer_lm'])}")
    facts += [f"{esc(c)} <b>{esc(row[c])}</b>" for c in columns]  # the columns with a breakdown
    alignments = alignment_html(row["reference"], row["hypothesis"])
    if has_lm:
        alignments += alignment_html(row["reference"], row["hypothesis_lm"], hyp_label="LM")
    return (f'<article class="clip"><header><span class="rank">#{rank}</span> {" · ".join(facts)}</header>'
            f'<div class="path">{esc(row["clip_id"])}</div>{audio_html(row["clip_id"], output_dir, embed)}'
            f"{alignments}</article>")


def split_html(split: str, rows: list[dict], extras: list[str], overall: dict, output_dir: str, clips: int,
               embed: bool) -> str:
    """A split's section: breakdowns, most frequent errors, worst clips."""
    has_lm = bool(rows) and "hypothesis_lm" in rows[0]
    order = {duration_bucket(s): i for i, s in enumerate([0, *DURATION_EDGES])}
    by_duration = sorted(breakdown(rows, lambda r: duration_bucket(r["seconds"]), has_lm),
                         key=lambda t: order.get(t["group"], len(order)))
    total = {"group": "all clips", **overall}
    if has_lm:
        refs, hyps = [r["reference"] for r in rows], [r["hypothesis_lm"] for r in rows]
        total["wer_lm"] = corpus_scores(refs, hyps, cer=False)["wer"]
    tables = [breakdown_html("By clip duration", "duration", by_duration + [total], has_lm)]
    grouped, skipped = [], []
    for column in extras:
        groups, in_order, why_not = column_groups(rows, column)
        if groups is None:
            skipped.append(f"{esc(column)} ({esc(why_not)})")
            continue
        grouped.append(column)
        table = breakdown(rows, lambda r: groups[r[column]], has_lm)
        if in_order:  # numbers in value order, to show a trend
            order = {group: i for i, group in enumerate(dict.fromkeys(groups.values()))}
            table.sort(key=lambda t: order[t["group"]])
        else:  # worst group first: that is where to listen
            table.sort(key=lambda t: (t["wer"] is None, -(t["wer"] or 0)))
        tables.append(breakdown_html(f"By {esc(column)}", esc(column), table, has_lm))
    note = f'<p class="muted">No breakdown by {"; ".join(skipped)}.</p>' if skipped else ""
    counts = frequent_errors([r["reference"] for r in rows], [r["hypothesis"] for r in rows])
    worst = rows[:clips]
    cards = "".join(clip_html(i + 1, row, grouped, output_dir, embed, has_lm) for i, row in enumerate(worst))
    legend = ('<p class="legend">Reference over hypothesis, word by word. Under each error: '
              '<span class="sub">S</span> substituted (the substitute in bold), '
              '<span class="del">D</span> deleted (<del>struck through</del>), '
              '<span class="ins">I</span> inserted (<ins>underlined</ins>).</p>')
    return (f'<section id="{esc(split)}"><h2>{esc(split)} split · {len(rows):,} clips</h2>'
            f'<h3>WER and CER by group</h3><p class="muted">Corpus-level: all errors over all reference words '
            f'(characters) of the group.</p><div class="tables">{"".join(tables)}</div>{note}'
            f"<h3>Most frequent errors (greedy decoding)</h3>{errors_html(counts)}"
            f"<h3>The {len(worst):,} worst clips</h3>{legend}{cards}</section>")


PAGE_CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa;
        --sub: #8a5a00; --sub-bg: #fff4c2; --del: #b3261e; --del-bg: #ffe4e1; --ins: #0550ae; --ins-bg: #dcedff; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); background: #fff; max-width: 1120px; margin: 0 auto; padding: 28px 32px 80px; }
h1 { font-size: 28px; margin: 0 0 2px; }
h2 { font-size: 22px; margin: 44px 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 17px; margin: 28px 0 8px; }
h4 { font-size: 14px; margin: 12px 0 4px; color: var(--muted); font-weight: 600; }
nav { margin: 12px 0 0; font-size: 14px; } nav a { margin-right: 14px; }
a { color: var(--ins); }
.muted { color: var(--muted); }
.path { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; color: var(--muted);
        word-break: break-all; }
table { border-collapse: collapse; font-size: 14px; margin: 4px 0 12px; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:last-child td { border-bottom-color: var(--line); }
.bar { display: inline-block; height: 8px; margin-left: 8px; background: #8c959f; border-radius: 2px;
       vertical-align: middle; }
.tiles { display: flex; flex-wrap: wrap; gap: 12px; }
.tile { border: 1px solid var(--line); border-radius: 8px; padding: 8px 18px; min-width: 110px; }
.tile .v { font-size: 26px; font-weight: 600; font-variant-numeric: tabular-nums; }
.tile .k { font-size: 13px; color: var(--muted); }
.curves { margin: 0; } .curves svg { max-width: 100%; height: auto; }
.tables { display: flex; flex-wrap: wrap; gap: 8px 32px; align-items: flex-start; }
.errors { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 4px 24px; }
.errors table { width: 100%; }
.clip { border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; margin: 12px 0; }
.clip header { font-size: 14px; }
.rank { font-weight: 700; margin-right: 4px; } .score { font-weight: 600; }
audio { display: block; width: 100%; max-width: 420px; height: 34px; margin: 6px 0; }
.align { display: flex; flex-wrap: wrap; gap: 4px 4px; margin: 8px 0 4px; }
.align .col { display: inline-flex; flex-direction: column; align-items: center; padding: 0 4px; border-radius: 4px; }
.align .col > span { height: 22px; line-height: 22px; white-space: pre; }
.align .col > span.op { height: 15px; line-height: 15px; font-size: 11px; font-weight: 700; }
.align .label { align-items: flex-start; color: var(--muted); font-size: 12px; padding-right: 8px; }
.sub { background: var(--sub-bg); color: var(--sub); }
.del { background: var(--del-bg); color: var(--del); }
.ins { background: var(--ins-bg); color: var(--ins); }
del { text-decoration-thickness: 2px; } ins { text-decoration-thickness: 2px; text-underline-offset: 3px; }
.legend span { padding: 0 5px; border-radius: 4px; font-weight: 700; font-size: 12px; }
"""


# ---------------------------------------------------------------------------------------------------------------------
def build_report(output_dir: str, clips: int = 50, embed_audio: bool = False) -> str:
    """Write output_dir/report.html from the run's files and return its path.

    Args:
        clips: how many of each split's worst clips to list with a player and an alignment.
        embed_audio: put those clips' audio inside the page as data: URIs instead of relative links.
    """
    splits = {}
    for split, path in prediction_files(output_dir).items():
        rows, extras = read_predictions(path)
        overall = corpus_scores([r["reference"] for r in rows], [r["hypothesis"] for r in rows])
        splits[split] = (rows, extras, overall)
    state = load_trainer_state(output_dir)
    config = load_json(os.path.join(output_dir, "config.json"))
    results = load_json(os.path.join(output_dir, "all_results.json"))
    nav = "".join(f'<a href="#{anchor}">{name}</a>' for anchor, name in
                  [("curves", "Training curves"), ("data", "Data")] + [(s, f"{s} split") for s in splits])
    body = [headline_html(output_dir, config, results, splits, state), f"<nav>{nav}</nav>",
            curves_html(state), data_html(load_json(os.path.join(output_dir, "data_report.json")))]
    body += [split_html(split, rows, extras, overall, output_dir, clips, embed_audio)
             for split, (rows, extras, overall) in splits.items()]
    title = f"{(config or {}).get('model_type') or 'CTC model'} · {os.path.basename(os.path.abspath(output_dir))}"
    page = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Error analysis: {esc(title)}</title><style>{PAGE_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    path = os.path.join(output_dir, REPORT_FILE)
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    logger.info(f"Report: {path} ({len(page) / 1e6:.1f} MB; "
                + ", ".join(f"{s} {len(v[0]):,} clips" for s, v in splits.items()) + ")")
    return path
