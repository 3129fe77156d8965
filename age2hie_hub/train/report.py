"""Paper-style outputs of an experiment: CSV + Markdown tables and PNG plots (matplotlib, the [train] extra)."""
from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from age2hie_hub._atomic import atomic_path
from age2hie_hub.hub.evaluation import PROTOCOL_NAMES  # one table of display names, shared with the card

log = logging.getLogger(__name__)


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


def learning_curve_comparisons_markdown(table: Sequence[dict[str, Any]]) -> str:
    if not table:
        return ""
    lines = ["**Learning curve, paired** (same split and training subset; difference = method - reference)", "",
             "| method - reference | n train | metric | pairs | mean diff [95 % CI] | p (sign-flip) |",
             "|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['method']} - {r['reference']} | {r['train_size']} | {r['metric']} | {r['n_pairs']} | "
                     f"{r['mean_diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | {r['p_sign_flip']:.3g} |")
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


def brain_age_markdown(out: dict[str, Any], synthetic: bool = False) -> str:
    """The brain-age cross-validation as Markdown: network vs baselines, raw and age-bias corrected."""
    label = "SYNTHETIC data: " if synthetic else ""
    summary = out["summary"]
    protocol = summary[0]["protocol"] if summary else ""
    lines = [f"## {label}brain age, {protocol} ({out['n_cases']} subjects, every one tested once)", "",
             "Pooled out-of-fold predictions: value [95 % bootstrap CI over subjects]; sd of the per-fold value "
             "in the last columns. Bias = mean(predicted - age).", "",
             "| method | MAE | Pearson r | bias | MAE sd over folds | r sd over folds |", "|---|---|---|---|---|---|"]
    for r in summary:
        lines.append(f"| {r['method']} | {r['mae_text']} | {r['pearson_r_text']} | {r['bias_text']} | "
                     f"{r['mae_sd']:.3f} | {r['pearson_r_sd']:.3f} |")
    lines.append("")
    if out["comparisons"]:
        lines += ["**Paired comparison** (same subjects, same folds; difference of absolute errors = method - reference)",
                  "", "| method - reference | pairs | mean difference in MAE [95 % CI] | p (sign-flip) |",
                  "|---|---|---|---|"]
        for c in out["comparisons"]:
            lines.append(f"| {c['method']} - {c['reference']} | {c['n_pairs']} | {c['mean_diff']:+.3f} "
                         f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] | {c['p_sign_flip']:.3g} |")
        lines.append("")
    if out.get("bias_lines"):
        final = out["age_bias_correction"]
        lines += ["**Age-bias correction.** For the test subjects of fold f, the line predicted = a + b * age is fitted "
                  "on the out-of-fold predictions of the other folds only, and corrected = predicted + age - "
                  "(a + b * age). It uses each subject's chronological age, so the corrected rows are a "
                  "population-level correction for group analyses, not an accuracy: the mean predictor becomes "
                  "(almost) exact once corrected. "
                  f"Line on all out-of-fold network predictions (recorded in the final checkpoint): "
                  f"a = {final['a']:.3f}, b = {final['b']:.3f}.", ""]
    choices = out.get("baseline_choices", {}).get("ridge_dlmuse")
    if choices:
        lines += ["Ridge penalty chosen by inner CV per fold: " + ", ".join(f"{c['alpha']:.3g}" for c in choices), ""]
    lines.append("Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in out["timings"].items()))
    return "\n".join(lines) + "\n"


def plot_brain_age(ages: np.ndarray, preds: dict[str, np.ndarray], path: Path, kind: str = "pred",
                   title: str = "") -> None:
    """One panel per method: predicted vs true age (identity and fitted line), or residual (predicted - age) vs age."""
    plt = _pyplot()
    names = list(preds)
    fig, axes = plt.subplots(1, len(names), figsize=(3.3 * len(names), 3.3), sharex=True, sharey=True, squeeze=False)
    lo, hi = float(np.min(ages)), float(np.max(ages))
    grid = np.array([lo, hi])
    for ax, name in zip(axes[0], names, strict=True):
        p = np.asarray(preds[name], dtype=np.float64)
        y = p if kind == "pred" else p - ages
        ax.scatter(ages, y, s=9, alpha=0.7)
        b, a = np.polyfit(ages, y, 1) if np.std(y) > 0 else (0.0, float(np.mean(y)))
        ax.plot(grid, a + b * grid, color="C3", lw=1.2, label=f"fit: {a:.1f} {b:+.2f} x age")
        ax.plot(grid, grid if kind == "pred" else 0 * grid, color="k", lw=0.8, ls="--",
                label="identity" if kind == "pred" else "zero")
        mae = float(np.mean(np.abs(p - ages)))
        ax.set_title(f"{name} (MAE {mae:.1f})", fontsize=9)
        ax.set_xlabel("chronological age")
        ax.legend(frameon=False, fontsize=7, loc="upper left")
    axes[0][0].set_ylabel("predicted age" if kind == "pred" else "predicted - age")
    if title:
        fig.suptitle(title, fontsize=9)
    _save_figure(plt, fig, path)
