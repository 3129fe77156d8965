"""Evaluation metrics in plain numpy: classification, calibration, regression, bootstrap CIs, paired tests.

Binary metrics take ``y`` in {0, 1} (1 = adverse / positive) and ``p`` = P(positive). Every function is
defined on degenerate input too (one class only, constant predictions) and returns ``nan`` where the metric is
undefined instead of raising, because cross-validation folds of small cohorts hit these cases.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity", "f1", "brier", "ece",
    "mae", "pearson_r", "bias", "binary_metrics", "regression_metrics", "multiclass_metrics",
    "bootstrap_ci", "paired_bootstrap", "sign_flip_test", "summarize", "regression_summary",
    "fit_age_bias", "correct_age_bias",
]


def _binary(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.int64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and predictions differ in length: {y.shape[0]} vs {p.shape[0]}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("binary metrics need labels in {0, 1}")
    return y, p


def _div(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def _confusion(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    pred = p >= threshold
    tp = int(np.sum(pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    return tp, tn, fp, fn


def accuracy(y: Any, p: Any, threshold: float = 0.5) -> float:
    y, p = _binary(y, p)
    tp, tn, fp, fn = _confusion(y, p, threshold)
    return _div(tp + tn, y.size)


def sensitivity(y: Any, p: Any, threshold: float = 0.5) -> float:
    """True-positive rate (recall of the adverse class)."""
    tp, _, _, fn = _confusion(*_binary(y, p), threshold)
    return _div(tp, tp + fn)


def specificity(y: Any, p: Any, threshold: float = 0.5) -> float:
    _, tn, fp, _ = _confusion(*_binary(y, p), threshold)
    return _div(tn, tn + fp)


def balanced_accuracy(y: Any, p: Any, threshold: float = 0.5) -> float:
    """Mean of sensitivity and specificity; with one class present, that class's recall (as sklearn)."""
    rates = [r for r in (sensitivity(y, p, threshold), specificity(y, p, threshold)) if np.isfinite(r)]
    return float(np.mean(rates)) if rates else float("nan")


def f1(y: Any, p: Any, threshold: float = 0.5) -> float:
    tp, _, fp, fn = _confusion(*_binary(y, p), threshold)
    return _div(2 * tp, 2 * tp + fp + fn)


def auc(y: Any, p: Any) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic (average ranks handle ties)."""
    from scipy.stats import rankdata

    y, p = _binary(y, p)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(p)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def brier(y: Any, p: Any) -> float:
    y, p = _binary(y, p)
    return float(np.mean((p - y) ** 2)) if y.size else float("nan")


def ece(y: Any, p: Any, n_bins: int = 10) -> float:
    """Expected calibration error: |mean(p) - mean(y)| per fixed-width bin of p, weighted by bin size."""
    y, p = _binary(y, p)
    if not y.size:
        return float("nan")
    bins = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        sel = bins == b
        total += sel.sum() * abs(p[sel].mean() - y[sel].mean())
    return float(total / y.size)


def _regression(y: Any, yhat: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    yhat = np.asarray(yhat, dtype=np.float64).ravel()
    if y.shape != yhat.shape:
        raise ValueError(f"targets and predictions differ in length: {y.shape[0]} vs {yhat.shape[0]}")
    return y, yhat


def mae(y: Any, yhat: Any) -> float:
    y, yhat = _regression(y, yhat)
    return float(np.mean(np.abs(yhat - y))) if y.size else float("nan")


def bias(y: Any, yhat: Any) -> float:
    """Mean signed error, prediction minus truth (positive = over-estimates)."""
    y, yhat = _regression(y, yhat)
    return float(np.mean(yhat - y)) if y.size else float("nan")


def pearson_r(y: Any, yhat: Any) -> float:
    y, yhat = _regression(y, yhat)
    if y.size < 2 or np.std(y) == 0 or np.std(yhat) == 0:
        return float("nan")
    return float(np.corrcoef(y, yhat)[0, 1])


# The metrics a run computes and reports, in the order reports and cards show them: adding one here is the
# whole change on the training side (evaluation, the evaluation record and the card take it from here; a display
# name in hub.evaluation.METRIC_INFO is optional). Binary metrics are called as fn(y, p, threshold).
BINARY_METRICS: dict[str, Callable[..., float]] = {
    "accuracy": accuracy, "balanced_accuracy": balanced_accuracy,
    "auc": lambda y, p, threshold: auc(y, p),
    "f1": f1, "sensitivity": sensitivity, "specificity": specificity,
    "brier": lambda y, p, threshold: brier(y, p), "ece": lambda y, p, threshold: ece(y, p),
}
REGRESSION_METRICS: dict[str, Callable[..., float]] = {"mae": mae, "pearson_r": pearson_r, "bias": bias}


def binary_metrics(y: Any, p: Any, threshold: float = 0.5) -> dict[str, float]:
    return {name: fn(y, p, threshold) for name, fn in BINARY_METRICS.items()}


def regression_metrics(y: Any, yhat: Any) -> dict[str, float]:
    return {name: fn(y, yhat) for name, fn in REGRESSION_METRICS.items()}


def multiclass_metrics(y: Any, probs: Any) -> dict[str, float]:
    """Accuracy, balanced accuracy (mean per-class recall) and multi-class Brier for (N, K) probabilities."""
    y = np.asarray(y, dtype=np.int64).ravel()
    probs = np.asarray(probs, dtype=np.float64)
    pred = probs.argmax(axis=1)
    recalls = [np.mean(pred[y == k] == k) for k in np.unique(y)]
    onehot = np.eye(probs.shape[1])[y]
    return {
        "accuracy": float(np.mean(pred == y)) if y.size else float("nan"),
        "balanced_accuracy": float(np.mean(recalls)) if recalls else float("nan"),
        "brier": float(np.mean(np.sum((probs - onehot) ** 2, axis=1))) if y.size else float("nan"),
    }


def bootstrap_ci(
    metric: Callable[..., float], *arrays: Any, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0,
) -> tuple[float, float, float]:
    """(point estimate, low, high): percentile bootstrap over cases, resampling all arrays together.

    Resamples where the metric is undefined (e.g. one class only for AUC) are dropped.
    """
    arrays_np = [np.asarray(a) for a in arrays]
    n = len(arrays_np[0])
    point = metric(*arrays_np)
    if n < 2:
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    stats = np.array([metric(*(a[idx] for a in arrays_np)) for idx in rng.integers(0, n, size=(n_boot, n))])
    stats = stats[np.isfinite(stats)]
    if not stats.size:
        return point, float("nan"), float("nan")
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return point, float(lo), float(hi)


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], n_boot: int = 10000, alpha: float = 0.05, seed: int = 0,
) -> dict[str, float]:
    """Mean of per-fold differences a - b with a percentile bootstrap CI and a two-sided bootstrap p-value.

    ``a`` and ``b`` are one score per fold (same folds, same order) for two methods.
    """
    d = _paired(a, b)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    # Two-sided p: how often the bootstrap distribution, centred at 0 (the null), is as extreme as observed.
    p = float(np.mean(np.abs(means - d.mean()) >= abs(d.mean())))
    return {"mean_diff": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi), "p_value": p, "n": int(d.size)}


def sign_flip_test(a: Sequence[float], b: Sequence[float], n_perm: int = 10000, seed: int = 0) -> dict[str, float]:
    """Paired permutation test: randomly flip the sign of per-fold differences; exact when 2^n <= n_perm."""
    d = _paired(a, b)
    observed = abs(d.mean())
    exact = 2 ** d.size <= n_perm
    if exact:
        signs = ((np.arange(2 ** d.size)[:, None] >> np.arange(d.size)) & 1) * 2 - 1
    else:
        signs = np.random.default_rng(seed).choice((-1, 1), size=(n_perm, d.size))
    null = np.abs((signs * d).mean(axis=1))
    # Compare with a tolerance so that ties with the observed value (floating point) count as extreme.
    extreme = int(np.sum(null >= observed - 1e-12))
    # Exact: the share of all sign patterns (the observed one among them). Random: (1 + count) / (1 + n), the
    # Monte Carlo p-value that counts the observed pattern, so it is never 0 (at least 1 / (n_perm + 1)).
    p = extreme / signs.shape[0] if exact else (1 + extreme) / (1 + n_perm)
    return {"mean_diff": float(d.mean()), "p_value": p, "n": int(d.size)}


def _paired(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    a_np, b_np = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_np.shape != b_np.shape or a_np.ndim != 1 or a_np.size == 0:
        raise ValueError(f"paired comparison needs two equal-length score lists, got {a_np.shape} and {b_np.shape}")
    d = a_np - b_np
    return d[np.isfinite(d)]


def summarize(values: Sequence[float], n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """mean, sd and a 95 % bootstrap CI of the mean over folds/seeds (nan-aware)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return {"mean": float("nan"), "sd": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    _, lo, hi = bootstrap_ci(np.mean, v, n_boot=n_boot, seed=seed)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "ci_low": lo, "ci_high": hi, "n": int(v.size)}


def regression_summary(y: Any, yhat: Any, n_boot: int = 2000, seed: int = 0) -> dict[str, dict[str, float]]:
    """MAE, Pearson r and bias of pooled predictions, each with a 95 % percentile bootstrap CI over cases
    (cases resampled together, one set of resamples for all three)."""
    y, yhat = _regression(y, yhat)
    out = {}
    for name, fn in REGRESSION_METRICS.items():
        point, lo, hi = bootstrap_ci(fn, y, yhat, n_boot=n_boot, seed=seed)
        out[name] = {"value": point, "ci_low": lo, "ci_high": hi, "n": int(y.size)}
    return out


def fit_age_bias(age: Any, predicted: Any) -> dict[str, float]:
    """Least-squares line ``predicted = a + b * age`` (the regression-to-the-mean of a brain-age model).

    b < 1 means old brains are under-estimated and young ones over-estimated. Fit it on predictions the model
    did not train on (out-of-fold predictions), never on the cases it will correct.
    """
    age, predicted = _regression(age, predicted)
    if age.size < 2 or np.std(age) == 0:
        raise ValueError("the age-bias line needs at least two different ages")
    b, a = np.polyfit(age, predicted, 1)
    return {"a": float(a), "b": float(b), "n": int(age.size)}


def correct_age_bias(predicted: Any, age: Any, a: float, b: float) -> np.ndarray:
    """Corrected brain age ``predicted + age - (a + b * age)`` (de Lange & Cole 2020; Cole 2019).

    It needs each person's chronological age: it removes the part of the brain-age gap that the line
    ``a + b * age`` expects at that age, so the corrected gap is uncorrelated with age in the fitting
    population. It is a population-level correction for group analyses: errors of corrected predictions are
    not a measure of accuracy (a model that always predicts the mean is "corrected" to the true age).
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    age = np.asarray(age, dtype=np.float64)
    return predicted + age - (a + b * age)
