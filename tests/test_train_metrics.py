"""Metrics against hand-computed values and scikit-learn (when installed); CIs and paired tests."""
from __future__ import annotations

import numpy as np
import pytest

from age2hie_hub.train import metrics as M


def test_binary_metrics_by_hand():
    y = [1, 1, 1, 0, 0, 0, 0, 1]
    p = [0.9, 0.6, 0.4, 0.2, 0.7, 0.1, 0.3, 0.8]
    # predictions at 0.5: 1 1 0 0 1 0 0 1 -> tp=3 fn=1 tn=3 fp=1
    assert M.accuracy(y, p) == pytest.approx(6 / 8)
    assert M.sensitivity(y, p) == pytest.approx(3 / 4)
    assert M.specificity(y, p) == pytest.approx(3 / 4)
    assert M.balanced_accuracy(y, p) == pytest.approx(3 / 4)
    assert M.f1(y, p) == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    # pairs (pos, neg) ordered correctly: positives 0.9,0.6,0.4,0.8 vs negatives 0.2,0.7,0.1,0.3
    assert M.auc(y, p) == pytest.approx((4 + 3 + 3 + 4) / 16)
    assert M.brier(y, p) == pytest.approx(np.mean((np.array(p) - np.array(y)) ** 2))


def test_against_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.3 + rng.uniform(0, 0.7, 200), 0, 1).round(2)  # rounding creates ties
    assert M.auc(y, p) == pytest.approx(sk.roc_auc_score(y, p))
    assert M.balanced_accuracy(y, p) == pytest.approx(sk.balanced_accuracy_score(y, p >= 0.5))
    assert M.f1(y, p) == pytest.approx(sk.f1_score(y, p >= 0.5))
    assert M.brier(y, p) == pytest.approx(sk.brier_score_loss(y, p))
    t, yhat = rng.normal(50, 10, 100), rng.normal(50, 10, 100)
    assert M.mae(t, yhat) == pytest.approx(sk.mean_absolute_error(t, yhat))


def test_degenerate_inputs_give_nan_not_errors():
    assert np.isnan(M.auc([1, 1, 1], [0.2, 0.5, 0.9]))
    assert np.isnan(M.specificity([1, 1], [0.9, 0.9]))
    assert M.balanced_accuracy([1, 1], [0.9, 0.1]) == pytest.approx(0.5)
    assert np.isnan(M.pearson_r([1, 2, 3], [5, 5, 5]))
    with pytest.raises(ValueError, match="differ in length"):
        M.accuracy([0, 1], [0.5])
    with pytest.raises(ValueError, match="labels in"):
        M.accuracy([0, 2], [0.5, 0.5])


def test_ece_perfectly_calibrated_and_overconfident():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, 20000)
    y = (rng.uniform(0, 1, p.size) < p).astype(int)
    assert M.ece(y, p) < 0.02
    assert M.ece(y, np.where(p > 0.5, 1.0, 0.0)) > 0.2


def test_regression_metrics():
    y = np.array([10.0, 20.0, 30.0, 40.0])
    yhat = y + 2
    assert M.regression_metrics(y, yhat) == pytest.approx({"mae": 2.0, "pearson_r": 1.0, "bias": 2.0})


def test_bootstrap_ci_covers_point_and_is_reproducible():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 80)
    p = np.clip(y * 0.4 + rng.uniform(0, 0.6, 80), 0, 1)
    point, lo, hi = M.bootstrap_ci(M.auc, y, p, n_boot=300, seed=3)
    assert lo <= point <= hi and hi - lo < 0.3
    assert M.bootstrap_ci(M.auc, y, p, n_boot=300, seed=3) == (point, lo, hi)


def test_paired_tests_detect_a_real_difference_and_not_a_null_one():
    a = np.array([0.80, 0.78, 0.83, 0.79, 0.81, 0.82, 0.80, 0.84, 0.79, 0.81])
    better = M.sign_flip_test(a, a - 0.05)
    assert better["p_value"] < 0.01 and better["mean_diff"] == pytest.approx(0.05)
    assert M.paired_bootstrap(a, a - 0.05)["ci_low"] > 0
    rng = np.random.default_rng(4)
    noise = a + rng.normal(0, 0.02, a.size) * np.where(np.arange(a.size) % 2, 1, -1)
    assert M.sign_flip_test(a, noise)["p_value"] > 0.05
    with pytest.raises(ValueError, match="equal-length"):
        M.sign_flip_test([1, 2], [1])


def test_summarize():
    s = M.summarize([0.7, 0.8, 0.9, float("nan")], n_boot=200)
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.8) and s["sd"] == pytest.approx(0.1)
    assert s["ci_low"] <= 0.8 <= s["ci_high"]


def test_a_metric_added_to_metrics_py_reaches_the_evaluation_record(monkeypatch):
    """Adding a metric is one edit (metrics.BINARY_METRICS): the per-split rows, the summary, the evaluation
    record that the card reads and its display name all follow, with no list elsewhere to update."""
    from age2hie_hub.hub.evaluation import metric_label
    from age2hie_hub.train.evaluate import summarize_rows, summary_eval_rows

    def npv(y, p, threshold):  # negative predictive value
        neg = np.asarray(p) < threshold
        return float(np.mean(np.asarray(y)[neg] == 0)) if neg.any() else float("nan")

    monkeypatch.setitem(M.BINARY_METRICS, "npv", npv)
    rng = np.random.default_rng(3)
    rows = []
    for seed in range(3):
        y = rng.integers(0, 2, 40)
        p = np.clip(0.3 * y + rng.random(40) * 0.7, 0, 1)
        rows.append({"method": "transfer", "protocol": "multi_site", "seed": seed, "learning_curve": False,
                     **M.binary_metrics(y, p)})
    assert "npv" in rows[0]
    summary = summarize_rows(rows, n_boot=50)
    record = summary_eval_rows(summary, task="outcome")
    assert {r.metric for r in record} == set(M.BINARY_METRICS)
    npv_row = next(r for r in record if r.metric == "npv")
    assert npv_row.value == pytest.approx(np.mean([r["npv"] for r in rows]))
    assert metric_label("npv") == "npv"  # no display name given: the card shows the key
