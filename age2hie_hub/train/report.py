"""Paper-style outputs of an experiment: CSV + Markdown tables and PNG plots (matplotlib, the [train] extra)."""
from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from age2hie_hub._atomic import atomic_path

log = logging.getLogger(__name__)

PROTOCOL_NAMES = {"same_site": "same-site", "multi_site": "multi-site", "cross_site": "cross-site"}


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    if not rows:
        return
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def markdown_table(summary: Sequence[dict[str, Any]], comparisons: Sequence[dict[str, Any]],
                   metrics: Sequence[str] = ("accuracy", "auc", "f1", "balanced_accuracy"),
                   title: str = "", note: str = "") -> str:
    """method x protocol tables (one per metric), mean ± sd [95 % CI] over splits and seeds; then comparisons."""
    protocols = list(dict.fromkeys(r["protocol"] for r in summary))
    methods = list(dict.fromkeys(r["method"] for r in summary))
    cell = {(r["method"], r["protocol"]): r for r in summary}
    lines = [f"## {title}", ""] if title else []
    if note:
        lines += [note, ""]
    for metric in metrics:
        if not any(f"{metric}_text" in r for r in summary):
            continue
        lines += [f"**{metric}** (mean ± sd over splits x seeds [95 % bootstrap CI of the mean])", "",
                  "| method | " + " | ".join(PROTOCOL_NAMES.get(p, p) for p in protocols) + " |",
                  "|---|" + "---|" * len(protocols)]
        for m in methods:
            cells = [cell[(m, p)][f"{metric}_text"] if (m, p) in cell else "" for p in protocols]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    n = {(r["method"], r["protocol"]): r["n_splits"] for r in summary}
    lines.append("Splits per cell: " + ", ".join(f"{m}/{PROTOCOL_NAMES.get(p, p)} {v}" for (m, p), v in n.items()))
    lines.append("")
    if comparisons:
        lines += ["**Paired comparison** (same splits; difference = method - reference)", "",
                  "| method - reference | protocol | metric | pairs | mean diff [95 % CI] | p (sign-flip) |",
                  "|---|---|---|---|---|---|"]
        for c in comparisons:
            lines.append(f"| {c['method']} - {c['reference']} | {PROTOCOL_NAMES.get(c['protocol'], c['protocol'])} | "
                         f"{c['metric']} | {c['n_pairs']} | {c['mean_diff']:+.3f} [{c['ci_low']:+.3f}, "
                         f"{c['ci_high']:+.3f}] | {c['p_sign_flip']:.3g} |")
        lines.append("")
    return "\n".join(lines)


def learning_curve_markdown(table: Sequence[dict[str, Any]]) -> str:
    if not table:
        return ""
    metric = table[0]["metric"]
    sizes = sorted({r["train_size"] for r in table})
    methods = list(dict.fromkeys(r["method"] for r in table))
    cell = {(r["method"], r["train_size"]): r for r in table}
    lines = [f"**Learning curve** ({metric}, mean ± sd over splits)", "",
             "| method | " + " | ".join(f"n={s}" for s in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for m in methods:
        cells = [f"{cell[(m, s)]['mean']:.3f} ± {cell[(m, s)]['sd']:.3f}" if (m, s) in cell else "" for s in sizes]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_protocols(summary: Sequence[dict[str, Any]], path: Path, metric: str = "accuracy", title: str = "") -> None:
    """Grouped bars: protocol groups, one bar per method, error bars = 95 % CI."""
    plt = _pyplot()
    protocols = list(dict.fromkeys(r["protocol"] for r in summary))
    methods = list(dict.fromkeys(r["method"] for r in summary))
    cell = {(r["method"], r["protocol"]): r for r in summary}
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(protocols), 3.2))
    for i, m in enumerate(methods):
        xs, ys, lo, hi = [], [], [], []
        for j, p in enumerate(protocols):
            r = cell.get((m, p))
            if r is None or not np.isfinite(r[f"{metric}_mean"]):
                continue
            xs.append(j + (i - (len(methods) - 1) / 2) * width)
            ys.append(r[f"{metric}_mean"])
            lo.append(r[f"{metric}_mean"] - r[f"{metric}_ci_low"])
            hi.append(r[f"{metric}_ci_high"] - r[f"{metric}_mean"])
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=m)
    ax.set_xticks(range(len(protocols)), [PROTOCOL_NAMES.get(p, p) for p in protocols])
    ax.set_ylabel(metric)
    ax.set_ylim(0, 1.0 if metric not in ("brier", "ece") else None)
    ax.legend(frameon=False, fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    _save_figure(plt, fig, path)


def _save_figure(plt: Any, fig: Any, path: Path) -> None:
    try:
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)


def plot_learning_curve(table: Sequence[dict[str, Any]], path: Path, title: str = "") -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    for m in dict.fromkeys(r["method"] for r in table):
        rows = sorted((r for r in table if r["method"] == m), key=lambda r: r["train_size"])
        x = [r["train_size"] for r in rows]
        y = np.array([r["mean"] for r in rows])
        ax.plot(x, y, marker="o", label=m)
        ax.fill_between(x, [r["ci_low"] for r in rows], [r["ci_high"] for r in rows], alpha=0.2)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training cases")
    ax.set_ylabel(table[0]["metric"] if table else "")
    ax.legend(frameon=False, fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    _save_figure(plt, fig, path)
