"""Prediction uncertainty recorded with a checkpoint (``config.json`` ``uncertainty``), applied to one prediction.

Two kinds of record, both fitted at training time on predictions the model did not train on (out-of-fold
predictions of a cross-validation; ``age2hie_hub.train.calibration`` makes them):

- ``"regression"`` (brain age, any regression): a split-conformal prediction interval. The conformity score of a
  held-out case is ``|prediction - truth| / s(prediction)``; its finite-sample quantile ``q`` (the
  ``ceil((n + 1) * level)``-th smallest of ``n`` scores) makes ``prediction ± q * s(prediction)`` cover a new case's
  truth with probability >= ``level`` when new cases are exchangeable with the held-out ones. ``s`` is 1 (the
  same width everywhere) or, when the record's scale line says so, a line in the prediction fitted to the
  absolute residuals (wider where the model errs more).
- ``"binary"`` (HIE outcome): a Platt calibration map ``P_cal = sigmoid(a * logit(P) + b)`` of the raw
  P(class 1) (applied unless the record says ``"applied": false``: it did not improve held-out probabilities),
  and a conformal prediction set: every label ``y`` with ``1 - P(y) <= q`` (``P`` raw, ``q`` the
  finite-sample quantile of ``1 - P(true label)`` over the held-out cases); it holds the true label with
  probability >= ``level``. A set of both labels means the model cannot tell at that level; an empty set
  means the scan scores as atypical for both labels.

numpy only (the ONNX backend never imports torch). A checkpoint without a record gives no interval.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

REGRESSION, BINARY = "regression", "binary"
EPS = 1e-6  # probabilities are clipped to [EPS, 1 - EPS] before a logit


@dataclass(frozen=True)
class Applied:
    """What a record gives one prediction; None where the record has nothing to say."""

    interval: tuple[float, float] | None = None
    interval_level: float | None = None
    calibrated_probability: float | None = None
    prediction_set: tuple[str, ...] | None = None
    set_level: float | None = None


def conformal_rank(n: int, level: float) -> int:
    """The rank k = ceil((n + 1) * level) of the split-conformal quantile among n scores (k > n: none exists)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n < 1:
        raise ValueError("the conformal quantile needs at least one held-out score")
    # The small tolerance keeps exact products (e.g. 19 * 0.95 = 18.05 -> 19, 9 * 0.9 = 8.1 -> 9) exact in
    # binary floating point: (n + 1) * level = 18.000000000000004 must give rank 18, not 19.
    return int(math.ceil((n + 1) * level - 1e-9))


def conformal_quantile(scores: Sequence[float] | np.ndarray, level: float) -> float:
    """The finite-sample split-conformal quantile: the ceil((n + 1) * level)-th smallest score, inf if k > n.

    With n exchangeable held-out scores, a new score is <= this value with probability >= level.
    """
    values = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if not np.all(np.isfinite(values)):
        raise ValueError("conformal scores must be finite")
    k = conformal_rank(values.size, level)
    return float(values[k - 1]) if k <= values.size else math.inf


def min_cases(level: float) -> int:
    """The fewest held-out cases for which a finite quantile at ``level`` exists: n with ceil((n+1)level) <= n."""
    n = 1
    while conformal_rank(n, level) > n:
        n += 1
    return n


def logit(p: Any) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(q) - np.log1p(-q)


def sigmoid(x: Any) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


def platt(p: Any, a: float, b: float) -> np.ndarray:
    """The Platt map sigmoid(a * logit(p) + b) of raw probabilities."""
    return sigmoid(a * logit(p) + b)


def scale_at(record: dict[str, Any], prediction: Any) -> np.ndarray:
    """s(prediction) of a regression record: 1, or its scale line floored at its ``min``."""
    pred = np.asarray(prediction, dtype=np.float64)
    line = record.get("scale")
    if not line:
        return np.ones_like(pred)
    return np.maximum(float(line["a"]) + float(line["b"]) * pred, float(line["min"]))


def regression_interval(record: dict[str, Any], prediction: float) -> tuple[float, float] | None:
    """``prediction ± q * s(prediction)``; None when the record's quantile is not finite."""
    q = float(record["quantile"])
    if not math.isfinite(q):
        return None
    half = q * float(scale_at(record, prediction))
    return float(prediction - half), float(prediction + half)


def prediction_set(p_positive: float, quantile: float, labels: Sequence[str]) -> tuple[str, ...]:
    """The labels y with 1 - P(y) <= quantile, for a binary model whose raw P(labels[1]) is ``p_positive``."""
    probs = (1.0 - float(p_positive), float(p_positive))
    return tuple(label for label, p in zip(labels, probs) if 1.0 - p <= quantile + 1e-12)


def check_record(uncertainty: dict[str, Any], task: str) -> None:
    """Refuse a malformed record when the checkpoint loads, naming what is missing."""
    if not uncertainty:
        return
    kinds = set(uncertainty) & {REGRESSION, BINARY}
    if not kinds:
        raise ValueError(f"uncertainty record has none of the kinds {REGRESSION!r}, {BINARY!r}: {sorted(uncertainty)}")
    need = {REGRESSION: ("level", "quantile", "n"), BINARY: ("calibration", "conformal", "n")}
    for kind in kinds:
        missing = [k for k in need[kind] if k not in uncertainty[kind]]
        if missing:
            raise ValueError(f"uncertainty[{kind!r}] lacks {missing}")
    if BINARY in kinds and task != "hie_outcome":
        raise ValueError(f"a binary uncertainty record needs task 'hie_outcome', not {task!r}")
    if REGRESSION in kinds and task not in ("brain_age", "regression"):
        raise ValueError(f"a regression uncertainty record needs a brain_age or regression task, not {task!r}")


def apply(uncertainty: dict[str, Any], *, value: float | None = None, p_positive: float | None = None,
          labels: Sequence[str] = ()) -> Applied:
    """The record's interval (regression ``value``) or calibrated probability and set (binary ``p_positive``)."""
    if value is not None and REGRESSION in uncertainty:
        rec = uncertainty[REGRESSION]
        return Applied(interval=regression_interval(rec, value), interval_level=float(rec["level"]))
    if p_positive is not None and BINARY in uncertainty:
        rec = uncertainty[BINARY]
        cal = rec["calibration"]
        conf = rec["conformal"]
        q = float(conf["quantile"])
        applied = cal.get("applied", True)  # records without the key were always applied
        return Applied(
            calibrated_probability=float(platt(p_positive, float(cal["a"]), float(cal["b"]))) if applied else None,
            prediction_set=prediction_set(p_positive, q, labels) if math.isfinite(q) else None,
            set_level=float(conf["level"]),
        )
    return Applied()
