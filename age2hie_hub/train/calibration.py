"""Fit the uncertainty a checkpoint records (``config.json`` ``uncertainty``) from out-of-fold predictions.

- Regression (brain age): ``regression_record(truth, predicted)`` from the cross-validation's out-of-fold
  predictions (``pretrain`` with ``cv:`` records them in the checkpoint's metrics as ``cv_residuals``): a
  split-conformal interval at ``level``. It is adaptive (normalised by a line in the prediction fitted to the
  absolute residuals) only when the data support it: the absolute residuals rise or fall with the prediction
  (Spearman rank correlation, permutation p < 0.05) and, in the nested check below, the adaptive interval
  covers the bins of predicted age more evenly than the constant one. Otherwise one width for every age.
- Binary outcome: ``binary_record(y, p)`` from an experiment's out-of-fold P(class 1) (results.jsonl rows of
  one method and protocol): a reliability table and ECE, a Platt map (two parameters: with ~150 cases the
  honest choice; isotonic regression would overfit), applied at prediction time only when it improves held-out
  probabilities (nested Brier score), and a conformal prediction set at ``level``.

Both records carry a **nested** coverage check: for each fold, the quantile (and the Platt map) is fitted on
the other folds' predictions only and applied to the held-out fold; the pooled share of covered cases is the
coverage a new case from the same population can expect. Applying the records: ``inference/uncertainty.py``.
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from age2hie_hub.inference.uncertainty import (
    BINARY,
    REGRESSION,
    conformal_quantile,
    logit,
    min_cases,
    platt,
    prediction_set,
    scale_at,
)

log = logging.getLogger(__name__)

DEFAULT_LEVEL = 0.9
RELIABILITY_BINS = 10
ADAPTIVE_P = 0.05
NESTED_FOLDS = 5


# ---- shared -----------------------------------------------------------------------------------------------

def _folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(order[i::k]) for i in range(k)]


def _fold_ids(n: int, folds: Sequence[int] | None, seed: int) -> np.ndarray:
    """One fold id per case: the cross-validation's own folds when given, else NESTED_FOLDS random ones."""
    if folds is not None:
        ids = np.asarray(folds, dtype=np.int64)
        if ids.size != n:
            raise ValueError(f"{ids.size} fold ids for {n} cases")
        return ids
    ids = np.empty(n, dtype=np.int64)
    for f, idx in enumerate(_folds(n, min(NESTED_FOLDS, n), seed)):
        ids[idx] = f
    return ids


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = np.argsort(np.argsort(x)).astype(float), np.argsort(np.argsort(y)).astype(float)
    rx -= rx.mean()
    ry -= ry.mean()
    den = math.sqrt(float((rx ** 2).sum() * (ry ** 2).sum()))
    return float((rx * ry).sum() / den) if den > 0 else 0.0


def _permutation_p(x: np.ndarray, y: np.ndarray, n_perm: int, seed: int) -> tuple[float, float]:
    """Spearman rho and its two-sided permutation p (the observed pattern counts: p is never 0)."""
    rho = _spearman(x, y)
    rng = np.random.default_rng(seed)
    hits = sum(abs(_spearman(x, rng.permutation(y))) >= abs(rho) - 1e-12 for _ in range(n_perm))
    return rho, (hits + 1) / (n_perm + 1)


# ---- regression -------------------------------------------------------------------------------------------

def fit_scale(predicted: np.ndarray, abs_residual: np.ndarray) -> dict[str, float]:
    """A line s(pred) = a + b * pred fitted to |residual| by least squares, floored at a fifth of their mean."""
    b, a = np.polyfit(predicted, abs_residual, 1)
    return {"a": float(a), "b": float(b), "min": float(max(abs_residual.mean() / 5, 1e-6))}


def _scores(record: dict[str, Any], predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.abs(predicted - truth) / scale_at(record, predicted)


def _fit_regression(truth: np.ndarray, predicted: np.ndarray, level: float, adaptive: bool) -> dict[str, Any]:
    rec: dict[str, Any] = {"scale": fit_scale(predicted, np.abs(predicted - truth)) if adaptive else None}
    rec["quantile"] = conformal_quantile(_scores(rec, predicted, truth), level)
    return rec


def nested_regression_coverage(truth: np.ndarray, predicted: np.ndarray, level: float, *, adaptive: bool,
                               folds: Sequence[int] | None = None, seed: int = 0,
                               bins: int = 3) -> dict[str, Any]:
    """Coverage of the interval on each fold when fitted on the other folds only; per bin of predicted value."""
    ids = _fold_ids(truth.size, folds, seed)
    covered = np.zeros(truth.size, dtype=bool)
    width = np.zeros(truth.size)
    for f in np.unique(ids):
        test, other = ids == f, ids != f
        rec = _fit_regression(truth[other], predicted[other], level, adaptive)
        half = rec["quantile"] * scale_at(rec, predicted[test])
        covered[test] = np.abs(predicted[test] - truth[test]) <= half
        width[test] = 2 * half
    edges = np.quantile(predicted, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, predicted, side="right") - 1, 0, bins - 1)
    by_bin = [{"predicted_from": float(edges[b]), "predicted_to": float(edges[b + 1]), "n": int((which == b).sum()),
               "coverage": float(covered[which == b].mean()) if (which == b).any() else None}
              for b in range(bins)]
    return {"coverage": float(covered.mean()), "n": int(truth.size), "folds": int(np.unique(ids).size),
            "mean_width": float(np.mean(width)), "by_predicted_bin": by_bin,
            "folds_from": "the cross-validation's own folds" if folds is not None else f"{NESTED_FOLDS} random folds"}


def regression_record(truth: Any, predicted: Any, *, level: float = DEFAULT_LEVEL, unit: str = "",
                      folds: Sequence[int] | None = None, adaptive: str = "auto", seed: int = 0,
                      fitted_on: str = "out-of-fold predictions of a cross-validation") -> dict[str, Any]:
    """The ``{"regression": ...}`` uncertainty record (split-conformal interval) from held-out predictions.

    ``adaptive``: "auto" (see the module docstring), "yes" or "no".
    """
    truth = np.asarray(truth, dtype=np.float64).ravel()
    predicted = np.asarray(predicted, dtype=np.float64).ravel()
    if truth.size != predicted.size:
        raise ValueError(f"{truth.size} true values but {predicted.size} predictions")
    need = min_cases(level)
    if truth.size < need:
        raise ValueError(f"a {level:g} conformal interval needs at least {need} held-out predictions, got {truth.size}")
    if adaptive not in ("auto", "yes", "no"):
        raise ValueError(f"adaptive must be 'auto', 'yes' or 'no', got {adaptive!r}")
    abs_res = np.abs(predicted - truth)
    rho, p = _permutation_p(predicted, abs_res, 999, seed)
    constant = nested_regression_coverage(truth, predicted, level, adaptive=False, folds=folds, seed=seed)
    scaled = nested_regression_coverage(truth, predicted, level, adaptive=True, folds=folds, seed=seed)

    def spread(c: dict[str, Any]) -> float:
        return max(abs(b["coverage"] - level) for b in c["by_predicted_bin"] if b["coverage"] is not None)

    if adaptive == "auto":
        use = p < ADAPTIVE_P and spread(scaled) < spread(constant)
        why = (f"|residual| vs predicted: Spearman rho {rho:.3f}, permutation p {p:.3f}"
               + (f" < {ADAPTIVE_P}" if p < ADAPTIVE_P else f" >= {ADAPTIVE_P}: no evidence the error changes with "
                  "the prediction") + f"; nested coverage by predicted-value tertile: max |coverage - level| "
               f"{spread(constant):.3f} constant vs {spread(scaled):.3f} adaptive")
    else:
        use, why = adaptive == "yes", f"adaptive={adaptive} requested"
    rec = _fit_regression(truth, predicted, level, use)
    return {REGRESSION: {
        "method": "split-conformal, " + ("normalised |residual| / s(prediction)" if use else "|residual| (one width)"),
        "level": level, "quantile": rec["quantile"], "scale": rec["scale"], "n": int(truth.size),
        "rank": f"ceil((n + 1) * level) = {math.ceil((truth.size + 1) * level - 1e-9)} of n = {truth.size}",
        "centre": "the raw prediction", "unit": unit, "fitted_on": fitted_on,
        "adaptive": {"used": bool(use), "why": why, "spearman_rho": rho, "p_permutation": p},
        "nested_coverage": scaled if use else constant,
        "nested_coverage_other": constant if use else scaled,
        "note": "the held-out predictions came from fold models trained on fewer cases than the released one; "
                "coverage assumes new scans resemble the training population (same scanner type and age range)",
    }}


def regression_record_from_metrics(metrics: dict[str, Any], *, level: float = DEFAULT_LEVEL,
                                   unit: str = "years") -> dict[str, Any] | None:
    """The regression record from a brain-age checkpoint's ``cv_residuals`` (pretrain with cv:), or None."""
    res = (metrics or {}).get("cv_residuals")
    if not isinstance(res, dict) or not res.get("pairs"):
        return None
    pairs = np.asarray(res["pairs"], dtype=np.float64)
    ages, residual = pairs[:, 0], pairs[:, 1]  # residual = predicted - age, out of fold
    folds = res.get("folds")
    cv = metrics.get("cv", {})
    what = f"out-of-fold predictions of the {cv.get('protocol', 'cross-validation')} of this recipe ({len(ages)} cases)"
    return regression_record(ages, ages + residual, level=level, unit=unit, folds=folds, fitted_on=what)


# ---- binary -----------------------------------------------------------------------------------------------

def fit_platt(y: Any, p: Any, *, iterations: int = 100) -> dict[str, float]:
    """Platt scaling of raw probabilities: P(y=1) = sigmoid(a * logit(p) + b), by Newton's method.

    Targets are Platt's smoothed labels ((N+ + 1)/(N+ + 2) and 1/(N- + 2)), which keep a and b finite when the
    classes separate (Platt 1999; Lin, Lin & Weng 2007).
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    x = logit(p).ravel()
    if y.size != x.size or y.size < 2:
        raise ValueError(f"Platt scaling needs matching labels and probabilities (>= 2), got {y.size} and {x.size}")
    if not set(np.unique(y)) <= {0.0, 1.0}:
        raise ValueError("Platt scaling needs binary labels 0/1")
    n_pos, n_neg = float(y.sum()), float(y.size - y.sum())
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    a, b = 1.0, 0.0
    for _ in range(iterations):
        q = 1 / (1 + np.exp(-(a * x + b)))
        g = np.array([np.sum((q - t) * x), np.sum(q - t)])
        w = q * (1 - q) + 1e-12
        h = np.array([[np.sum(w * x * x), np.sum(w * x)], [np.sum(w * x), np.sum(w)]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        a, b = a - step[0], b - step[1]
        if np.max(np.abs(step)) < 1e-10:
            break
    return {"a": float(a), "b": float(b)}


def reliability_table(y: Any, p: Any, bins: int = RELIABILITY_BINS) -> list[dict[str, Any]]:
    """Equal-width bins of predicted probability: n, mean predicted, observed share of class 1."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    rows = []
    for b in range(bins):
        sel = which == b
        rows.append({"bin_from": b / bins, "bin_to": (b + 1) / bins, "n": int(sel.sum()),
                     "mean_predicted": float(p[sel].mean()) if sel.any() else None,
                     "observed": float(y[sel].mean()) if sel.any() else None})
    return rows


def ece(y: Any, p: Any, bins: int = RELIABILITY_BINS) -> float:
    """Expected calibration error: the n-weighted mean |observed - mean predicted| over equal-width bins."""
    rows = reliability_table(y, p, bins)
    n = sum(r["n"] for r in rows)
    return float(sum(r["n"] * abs(r["observed"] - r["mean_predicted"]) for r in rows if r["n"]) / n)


def nested_binary_check(y: np.ndarray, p: np.ndarray, level: float, *, folds: Sequence[int] | None = None,
                        seed: int = 0) -> dict[str, Any]:
    """For each fold: Platt map and set quantile fitted on the other folds, applied to it; pooled results."""
    ids = _fold_ids(y.size, folds, seed)
    cal = np.empty(y.size)
    covered = np.zeros(y.size, dtype=bool)
    size = np.zeros(y.size, dtype=int)
    for f in np.unique(ids):
        test, other = ids == f, ids != f
        m = fit_platt(y[other], p[other])
        cal[test] = platt(p[test], m["a"], m["b"])
        q = conformal_quantile(1 - np.where(y[other] == 1, p[other], 1 - p[other]), level)
        for i in np.flatnonzero(test):
            s = prediction_set(p[i], q, ("0", "1"))
            covered[i] = str(int(y[i])) in s
            size[i] = len(s)
    return {"set_coverage": float(covered.mean()), "n": int(y.size), "folds": int(np.unique(ids).size),
            "set_sizes": {str(k): int((size == k).sum()) for k in (0, 1, 2)},
            "ece_raw": ece(y, p), "ece_calibrated": ece(y, cal),
            "brier_raw": float(np.mean((p - y) ** 2)), "brier_calibrated": float(np.mean((cal - y) ** 2)),
            "folds_from": "the cross-validation's own folds" if folds is not None else f"{NESTED_FOLDS} random folds"}


def binary_record(y: Any, p: Any, *, level: float = DEFAULT_LEVEL, folds: Sequence[int] | None = None,
                  seed: int = 0, fitted_on: str = "out-of-fold probabilities of a cross-validation",
                  synthetic: bool | None = None, calibrate: str = "auto") -> dict[str, Any]:
    """The ``{"binary": ...}`` uncertainty record: reliability, ECE, Platt map, conformal set, nested check.

    ``calibrate``: "auto" applies the Platt map at prediction time only when, nested in the folds, it lowers the
    Brier score of held-out probabilities ("yes"/"no" force it); the map is recorded either way.
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.size != p.size:
        raise ValueError(f"{y.size} labels but {p.size} probabilities")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError("probabilities must lie in [0, 1]")
    need = min_cases(level)
    if y.size < need:
        raise ValueError(f"a {level:g} conformal set needs at least {need} held-out cases, got {y.size}")
    if calibrate not in ("auto", "yes", "no"):
        raise ValueError(f"calibrate must be 'auto', 'yes' or 'no', got {calibrate!r}")
    m = fit_platt(y, p)
    q = conformal_quantile(1 - np.where(y == 1, p, 1 - p), level)
    nested = nested_binary_check(y, p, level, folds=folds, seed=seed)
    if calibrate == "auto":
        # Brier score, a proper scoring rule, rather than the binned (noisy at ~150 cases) ECE decides.
        applied = nested["brier_calibrated"] < nested["brier_raw"]
        why = (f"nested (map fitted on the other folds): Brier {nested['brier_raw']:.4f} raw vs "
               f"{nested['brier_calibrated']:.4f} calibrated, ECE {nested['ece_raw']:.3f} vs "
               f"{nested['ece_calibrated']:.3f}: the map " + ("improves" if applied else "does not improve")
               + " held-out probabilities" + ("" if applied else "; predictions report the raw probability only"))
    else:
        applied, why = calibrate == "yes", f"calibrate={calibrate} requested"
    rec = {
        "n": int(y.size), "positives": int(y.sum()), "fitted_on": fitted_on,
        "reliability": {"bins": RELIABILITY_BINS, "rows": reliability_table(y, p)},
        "ece_raw": ece(y, p), "ece_calibrated_in_sample": ece(y, platt(p, m["a"], m["b"])),
        "calibration": {"method": "platt", "a": m["a"], "b": m["b"], "applied": bool(applied), "why": why,
                        "map": "P_calibrated = sigmoid(a * logit(P_raw) + b)"},
        "conformal": {"level": level, "quantile": q, "score": "1 - raw P(true label)",
                      "rank": f"ceil((n + 1) * level) = {math.ceil((y.size + 1) * level - 1e-9)} of n = {y.size}"},
        "nested": nested,
        "note": "fitted on fold models' held-out probabilities; the released model was trained on all cases",
    }
    if synthetic is not None:
        rec["synthetic"] = bool(synthetic)
    return {BINARY: rec}


def read_oof(results: str | Path, method: str, protocol: str | None = None,
             seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Out-of-fold (y, P(class 1), fold id) of one method from an experiment's results.jsonl.

    Learning-curve rows are skipped. ``protocol``/``seed``: default the first found. Each case must be tested
    exactly once (a k-fold protocol), else a ValueError says what was found.
    """
    path = Path(results)
    if path.is_dir():
        path = path / "results.jsonl"
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    rows = [r for r in rows if r.get("method") == method and not r.get("learning_curve")]
    if not rows:
        raise ValueError(f"{path}: no rows of method {method!r}")
    protocol = protocol or rows[0]["protocol"]
    seed = rows[0]["seed"] if seed is None else seed
    rows = [r for r in rows if r["protocol"] == protocol and r["seed"] == seed]
    subjects: list[str] = []
    y: list[float] = []
    p: list[float] = []
    fold: list[int] = []
    for f, r in enumerate(sorted(rows, key=lambda r: r["fold"])):
        pred = np.asarray(r["y_pred"], dtype=np.float64)
        if pred.ndim != 1:
            raise ValueError(f"{path}: {method} rows hold {pred.ndim}-D predictions; a binary model's are P(class 1)")
        subjects += r["test_subjects"]
        y += [float(v) for v in r["y_true"]]
        p += pred.tolist()
        fold += [f] * len(r["y_true"])
    if len(set(subjects)) != len(subjects):
        raise ValueError(f"{path}: {method}/{protocol}/seed {seed}: some cases are tested more than once; "
                         "calibration needs one out-of-fold prediction per case (a k-fold protocol)")
    return np.asarray(y), np.asarray(p), np.asarray(fold), f"{method}, {protocol}, seed {seed}"


def binary_record_from_experiment(results: str | Path, method: str, *, level: float = DEFAULT_LEVEL,
                                  protocol: str | None = None, synthetic: bool | None = None) -> dict[str, Any]:
    """The binary record from an experiment folder's out-of-fold probabilities of ``method``."""
    y, p, fold, what = read_oof(results, method, protocol)
    return binary_record(y, p, level=level, folds=fold, synthetic=synthetic,
                         fitted_on=f"out-of-fold probabilities of the experiment's {what} ({y.size} cases)")


def plot_reliability(record: dict[str, Any], path: str | Path, title: str = "") -> Path | None:
    """Reliability diagram of a binary record (raw probabilities) to ``path``; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: reliability plot skipped (the table is in config.json)")
        return None
    from age2hie_hub._atomic import atomic_path

    rec = record[BINARY] if BINARY in record else record
    rows = [r for r in rec["reliability"]["rows"] if r["n"]]
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
    ax.plot([r["mean_predicted"] for r in rows], [r["observed"] for r in rows], "o-", label="raw (out of fold)")
    for r in rows:
        ax.annotate(str(r["n"]), (r["mean_predicted"], r["observed"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    cal = rec["calibration"]
    grid = np.linspace(0.01, 0.99, 99)
    ax.plot(grid, platt(grid, cal["a"], cal["b"]), color="C1", lw=1, label="Platt map")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted P(class 1)", ylabel="observed share of class 1",
           title=title or f"reliability, ECE {rec['ece_raw']:.3f} (n = {rec['n']})")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def write_reliability(record: dict[str, Any], folder: str | Path, name: str) -> list[Path]:
    """reliability_<name>.csv (the table) and .png (the diagram, when matplotlib is installed) in ``folder``."""
    from age2hie_hub._atomic import write_text_atomic

    rec = record[BINARY] if BINARY in record else record
    folder = Path(folder)
    lines = ["bin_from,bin_to,n,mean_predicted,observed"] + [
        ",".join("" if r[k] is None else f"{r[k]:.6g}" for k in ("bin_from", "bin_to", "n", "mean_predicted", "observed"))
        for r in rec["reliability"]["rows"]]
    lines.append(f"# ECE (raw, out of fold) {rec['ece_raw']:.4f}; n {rec['n']}"
                 + ("; SYNTHETIC data" if rec.get("synthetic") else ""))
    out = [write_text_atomic(folder / f"reliability_{name}.csv", "\n".join(lines) + "\n")]
    title = f"{'SYNTHETIC: ' if rec.get('synthetic') else ''}{name}, ECE {rec['ece_raw']:.3f} (n = {rec['n']})"
    png = plot_reliability(rec, folder / f"reliability_{name}.png", title=title)
    if png is not None:
        out.append(png)
    return out
