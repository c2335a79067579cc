# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""The report's training curves: the Trainer's log history (loss, each eval set's error rates, learning rate) drawn
with matplotlib as an inline SVG."""

import io

from matplotlib.figure import Figure  # a Figure without pyplot never opens a window or touches a global backend
from matplotlib.ticker import MaxNLocator

LOG_SCALE_RATIO = 10  # a loss curve spanning more than this factor is drawn on a log axis


def training_curves_svg(log_history: list[dict], metrics) -> str:
    """Loss, eval error rates (`metrics`: (key, label) pairs, e.g. ("wer", "WER")) and learning rate against step,
    one panel each, as an inline SVG ('' without logs)."""
    def series(key):
        return [(e["step"], e[key]) for e in log_history
                if isinstance(e, dict) and isinstance(e.get(key), (int, float)) and isinstance(e.get("step"), int)]

    def eval_lines(suffix, label, scale):  # eval_<suffix>, or eval_<set>_<suffix> for each of several eval sets
        keys = dict.fromkeys(k for e in log_history if isinstance(e, dict) for k in e if k.startswith("eval_"))
        return [(label or "eval" if k == f"eval_{suffix}" else f"{k[5:-len(suffix) - 1]} {label}".strip(), k, scale)
                for k in keys if k == f"eval_{suffix}" or k.endswith(f"_{suffix}")]

    panels = [("Loss", "", [("training", "loss", 1), *eval_lines("loss", "", 1)]),
              ("Eval error rate", "%", [line for key, name in metrics for line in eval_lines(key, name, 100)]),
              ("Learning rate", "", [("learning rate", "learning_rate", 1)])]
    panels = [(title, unit, [(label, series(key), scale) for label, key, scale in lines if series(key)])
              for title, unit, lines in panels]
    panels = [panel for panel in panels if panel[2]]
    if not panels:
        return ""
    fig = Figure(figsize=(3.9 * len(panels), 3.0), layout="constrained")
    for ax, (title, unit, lines) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for label, points, scale in lines:
            steps, values = zip(*points)
            ax.plot(steps, [v * scale for v in values], marker="o" if len(points) <= 30 else None, markersize=3,
                    linewidth=1.5, label=label)
        values = [v for _, points, _ in lines for _, v in points]
        if title == "Loss" and min(values) > 0 and max(values) / min(values) > LOG_SCALE_RATIO:
            ax.set_yscale("log")  # CTC loss falls by orders of magnitude at first; a linear axis hides the rest
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no step 2.5 on short runs
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=9)
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]  # drop the XML prolog and doctype, which HTML does not allow inline
