"""Prediction uncertainty: conformal quantile math, coverage, Platt scaling, prediction sets, records in checkpoints,
and how predictions, the CLI line, JSON and CSV carry them (or say there are none)."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from inference_helpers import adc_affine, adc_array, make_checkpoint, write_nifti

from age2hie_hub.inference import Predictor
from age2hie_hub.inference.uncertainty import (
    apply,
    conformal_quantile,
    conformal_rank,
    min_cases,
    platt,
    prediction_set,
)
from age2hie_hub.train import calibration as C


# ---- the math ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("n", "level", "rank"), [(9, 0.9, 9), (8, 0.9, 9), (19, 0.95, 19), (99, 0.9, 90),
                                                  (100, 0.9, 91), (150, 0.9, 136), (4, 0.5, 3)])
def test_finite_sample_rank_is_ceil_n_plus_1_times_level(n, level, rank):
    assert conformal_rank(n, level) == rank
    scores = np.arange(1, n + 1, dtype=float)[::-1]  # order does not matter
    q = conformal_quantile(scores, level)
    assert q == (rank if rank <= n else math.inf)


def test_too_few_scores_give_no_finite_quantile_and_records_refuse_them():
    assert min_cases(0.9) == 9 and min_cases(0.95) == 19
    assert conformal_quantile(np.ones(8), 0.9) == math.inf
    with pytest.raises(ValueError, match="at least 9"):
        C.regression_record(np.arange(8.0), np.arange(8.0) + 1)
    with pytest.raises(ValueError, match="level"):
        conformal_rank(10, 1.0)


def test_split_conformal_covers_at_the_level_on_a_regression_with_known_noise():
    """Gaussian errors, sd 5: over many calibration/test draws coverage is >= 0.90 and close to it; the naive
    quantile (the level-th empirical quantile without the (n+1) correction) under-covers at small n."""
    rng = np.random.default_rng(0)
    n, trials, level, sd = 20, 4000, 0.9, 5.0
    cal = rng.normal(0, sd, (trials, n))
    test = rng.normal(0, sd, trials)
    q = np.array([conformal_quantile(np.abs(c), level) for c in cal])
    naive = np.array([np.sort(np.abs(c))[int(np.floor(n * level)) - 1] for c in cal])
    covered, naive_covered = np.mean(np.abs(test) <= q), np.mean(np.abs(test) <= naive)
    # Theory: coverage = ceil((n+1) level)/(n+1) = 19/21 = 0.905; naive 18/21 = 0.857 (both +- ~0.005 here).
    assert 0.89 <= covered <= 0.93, covered
    assert naive_covered < covered - 0.02, (naive_covered, covered)
    # Large n: the quantile approaches the true 90 % point of |N(0, 5)|, 1.645 * 5.
    big = C.regression_record(np.zeros(4000), rng.normal(0, sd, 4000), adaptive="no")["regression"]
    assert big["quantile"] == pytest.approx(1.645 * sd, rel=0.05)
    assert big["nested_coverage"]["coverage"] == pytest.approx(level, abs=0.02)


def test_adaptive_interval_is_used_only_when_the_error_grows_with_the_prediction():
    rng = np.random.default_rng(1)
    age = rng.uniform(20, 80, 300)
    flat = C.regression_record(age, age + rng.normal(0, 5, 300))["regression"]
    grows = C.regression_record(age, age + rng.normal(0, 1, 300) * age / 8)["regression"]
    assert not flat["adaptive"]["used"] and flat["scale"] is None
    assert grows["adaptive"]["used"] and grows["scale"]["b"] > 0
    lo_young, hi_young = apply({"regression": grows}, value=25.0).interval
    lo_old, hi_old = apply({"regression": grows}, value=75.0).interval
    assert hi_old - lo_old > 1.5 * (hi_young - lo_young)  # wider where the model errs more
    for rec in (flat, grows):
        assert rec["nested_coverage"]["coverage"] == pytest.approx(0.9, abs=0.05)


def test_platt_recovers_a_known_miscalibration_and_leaves_a_calibrated_model_alone():
    rng = np.random.default_rng(2)
    p = rng.uniform(0.02, 0.98, 20000)
    y = (rng.uniform(size=p.size) < platt(p, 2.0, -0.5)).astype(float)
    fit = C.fit_platt(y, p)
    assert fit["a"] == pytest.approx(2.0, abs=0.1) and fit["b"] == pytest.approx(-0.5, abs=0.1)
    y_cal = (rng.uniform(size=p.size) < p).astype(float)
    ok = C.fit_platt(y_cal, p)
    assert ok["a"] == pytest.approx(1.0, abs=0.06) and ok["b"] == pytest.approx(0.0, abs=0.06)
    # ECE: small for the calibrated labels, large for the miscalibrated ones until mapped
    assert C.ece(y_cal, p) < 0.02 < 0.05 < C.ece(y, p)
    assert C.ece(y, platt(p, fit["a"], fit["b"])) < 0.02


def test_the_map_is_applied_only_when_it_improves_held_out_probabilities():
    rng = np.random.default_rng(6)
    p = rng.uniform(0.02, 0.98, 400)
    calibrated = (rng.uniform(size=p.size) < p).astype(float)
    overconfident = (rng.uniform(size=p.size) < platt(p, 0.4, 0.0)).astype(float)
    kept = C.binary_record(calibrated, p)["binary"]
    mapped = C.binary_record(overconfident, p)["binary"]
    assert not kept["calibration"]["applied"] and "does not improve" in kept["calibration"]["why"]
    assert mapped["calibration"]["applied"] and mapped["nested"]["brier_calibrated"] < mapped["nested"]["brier_raw"]
    assert apply({"binary": kept}, p_positive=0.9, labels=("f", "a")).calibrated_probability is None
    assert apply({"binary": mapped}, p_positive=0.9, labels=("f", "a")).calibrated_probability < 0.9


def test_platt_stays_finite_when_the_classes_separate():
    fit = C.fit_platt([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert all(math.isfinite(v) for v in fit.values())


def test_prediction_set_holds_each_label_whose_score_is_within_the_quantile():
    labels = ("favourable", "adverse")
    assert prediction_set(0.9, 0.3, labels) == ("adverse",)
    assert prediction_set(0.1, 0.3, labels) == ("favourable",)
    assert prediction_set(0.5, 0.3, labels) == ()  # neither label scores as typical at this level
    assert prediction_set(0.5, 0.6, labels) == labels
    assert prediction_set(0.7, 0.7, labels) == labels  # 1 - 0.3 <= 0.7 and 1 - 0.7 <= 0.7: boundary included


def test_binary_record_sets_cover_at_the_level_on_synthetic_probabilities():
    rng = np.random.default_rng(3)
    n = 2000
    y = (rng.uniform(size=n) < 0.45).astype(float)
    p = np.clip(sigmoid_noise(y, rng), 0.001, 0.999)
    rec = C.binary_record(y, p, calibrate="yes")["binary"]
    assert rec["nested"]["set_coverage"] == pytest.approx(0.9, abs=0.03)
    assert rec["n"] == n and rec["positives"] == int(y.sum())
    assert sum(r["n"] for r in rec["reliability"]["rows"]) == n
    a = apply({"binary": rec}, p_positive=0.95, labels=("favourable", "adverse"))
    assert a.set_level == 0.9 and "adverse" in a.prediction_set
    assert a.calibrated_probability == pytest.approx(float(platt(0.95, rec["calibration"]["a"], rec["calibration"]["b"])))


def sigmoid_noise(y, rng):
    return 1 / (1 + np.exp(-(2.0 * (2 * y - 1) + rng.normal(0, 1.5, y.size))))


def test_oof_probabilities_are_read_once_per_case_from_results_jsonl(tmp_path):
    rows = []
    for fold in range(3):
        subjects = [f"s{fold}{i}" for i in range(5)]
        rows.append({"id": f"transfer|multi_site|seed0|fold{fold}", "method": "transfer", "protocol": "multi_site",
                     "seed": 0, "fold": fold, "learning_curve": False, "test_subjects": subjects,
                     "y_true": [0, 1, 0, 1, 1], "y_pred": [0.2, 0.7, 0.4, 0.9, 0.6]})
        rows.append({**rows[-1], "method": "scratch", "y_pred": [0.5] * 5})
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    y, p, fold, what = C.read_oof(tmp_path, "transfer")
    assert y.size == 15 and p[1] == 0.7 and list(np.unique(fold)) == [0, 1, 2] and "transfer" in what
    rows.append({**rows[0], "fold": 9})  # a case tested twice: not a k-fold protocol
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="more than once"):
        C.read_oof(tmp_path, "transfer")


# ---- checkpoints, predictions, CLI -------------------------------------------------------------------------

def _add_to_config(folder, **fields):
    path = folder / "config.json"
    raw = json.loads(path.read_text())
    raw.update(fields)
    path.write_text(json.dumps(raw, indent=2))
    return folder


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return write_nifti(tmp_path_factory.mktemp("scans") / "case01.nii.gz", adc_array(), adc_affine())


@pytest.fixture(scope="module")
def age_ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("age")
    plain = make_checkpoint(root / "plain", head="age_regression")
    rng = np.random.default_rng(0)
    truth = rng.uniform(20, 80, 100)
    record = C.regression_record(truth, truth + rng.normal(0, 4, 100), unit="weeks", adaptive="no")
    with_interval = _add_to_config(make_checkpoint(root / "interval", head="age_regression"), uncertainty=record)
    return plain, with_interval, record["regression"]["quantile"]


@pytest.mark.numerics
def test_checkpoint_without_records_predicts_as_before_and_says_it_has_no_interval(age_ckpts, scan, capsys):
    from age2hie_hub.cli.predict import main

    plain, with_interval, _ = age_ckpts
    p = Predictor.from_pretrained(plain, device="cpu").predict(scan)
    q = Predictor.from_pretrained(with_interval, device="cpu").predict(scan)
    assert p.interval is None and p.interval_level is None and p.calibrated_probability is None
    assert p.age == pytest.approx(q.age, abs=1e-5)  # same seed, same weights: the record changes no number
    assert json.loads(p.to_json())["interval"] is None
    assert main([str(scan), "--model", str(plain), "--backend", "torch"]) == 0
    assert "[no interval recorded for this model]" in capsys.readouterr().out


def test_interval_in_the_prediction_cli_line_json_and_csv(age_ckpts, scan, tmp_path, capsys):
    from age2hie_hub.cli.predict import main

    _, ckpt, q = age_ckpts
    p = Predictor.from_pretrained(ckpt, device="cpu").predict(scan)
    assert p.interval == pytest.approx((p.age - q, p.age + q)) and p.interval_level == 0.9
    assert main([str(scan), "--model", str(ckpt), "--backend", "torch"]) == 0
    line = capsys.readouterr().out.strip()
    assert line == f"case01.nii.gz: brain age {p.age:.1f} weeks [90 % interval {p.age - q:.1f} - {p.age + q:.1f}]"
    assert main([str(scan), "--model", str(ckpt), "--backend", "torch", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["interval"] == pytest.approx([p.age - q, p.age + q]) and row["interval_level"] == 0.9
    out = tmp_path / "r.csv"
    assert main([str(scan), "--model", str(ckpt), "--backend", "torch", "-o", str(out), "-q"]) == 0
    (csv_row,) = list(csv.DictReader(out.open()))
    assert float(csv_row["interval_low"]) == pytest.approx(p.age - q, abs=1e-4)
    assert float(csv_row["interval_high"]) == pytest.approx(p.age + q, abs=1e-4)
    assert csv_row["interval_level"] == "0.9" and csv_row["prediction_set"] == ""


def test_outcome_model_reports_raw_and_calibrated_probability_and_a_set(tmp_path, scan, capsys):
    from age2hie_hub.cli.predict import main

    rng = np.random.default_rng(4)
    y = (rng.uniform(size=200) < 0.5).astype(float)
    record = C.binary_record(y, np.clip(sigmoid_noise(y, rng), 0.001, 0.999), calibrate="yes")
    ckpt = _add_to_config(make_checkpoint(tmp_path / "outcome"), uncertainty=record)
    p = Predictor.from_pretrained(ckpt, device="cpu").predict(scan)
    cal = record["binary"]["calibration"]
    assert p.calibrated_probability == pytest.approx(float(platt(p.probability, cal["a"], cal["b"])), abs=1e-6)
    assert p.prediction_set == prediction_set(p.probability, record["binary"]["conformal"]["quantile"],
                                              ("favourable", "adverse"))
    assert p.interval is None
    assert main([str(scan), "--model", str(ckpt), "--backend", "torch"]) == 0
    line = capsys.readouterr().out
    assert f"P(adverse outcome) = {p.probability:.3f} (calibrated {p.calibrated_probability:.3f})" in line
    assert "[90 % prediction set {" in line
    out = tmp_path / "r.csv"
    assert main([str(scan), "--model", str(ckpt), "--backend", "torch", "-o", str(out), "-q"]) == 0
    (row,) = list(csv.DictReader(out.open()))
    assert row["prediction_set"] == "{" + "|".join(p.prediction_set) + "}"
    assert float(row["calibrated_probability"]) == pytest.approx(p.calibrated_probability, abs=1e-6)


def test_a_malformed_record_is_refused_when_the_model_loads(tmp_path):
    from age2hie_hub.errors import CheckpointError

    ckpt = _add_to_config(make_checkpoint(tmp_path / "bad", head="age_regression"),
                          uncertainty={"regression": {"level": 0.9}})
    with pytest.raises(CheckpointError, match="quantile"):
        Predictor.from_pretrained(ckpt, device="cpu")
    wrong_task = _add_to_config(make_checkpoint(tmp_path / "bad2"),
                                uncertainty={"regression": {"level": 0.9, "quantile": 1.0, "n": 10}})
    with pytest.raises(CheckpointError, match="task"):
        Predictor.from_pretrained(wrong_task, device="cpu")


def test_old_config_json_without_the_new_fields_still_loads(tmp_path):
    from age2hie_hub.hub import read_config

    ckpt = make_checkpoint(tmp_path / "old")
    raw = json.loads((ckpt / "config.json").read_text())
    raw.pop("uncertainty", None)
    raw.pop("input_qc", None)
    (ckpt / "config.json").write_text(json.dumps(raw))
    cfg = read_config(ckpt)
    assert cfg.uncertainty == {} and cfg.input_qc == {}


def test_regression_record_from_recorded_cv_residuals_and_the_card_line():
    from age2hie_hub.hub import CheckpointConfig
    from age2hie_hub.hub.card import _uncertainty_text
    from age2hie_hub.models import ModelConfig
    from age2hie_hub.preprocess import PreprocessConfig

    rng = np.random.default_rng(5)
    ages = rng.uniform(20, 80, 60)
    metrics = {"cv": {"protocol": "5-fold CV"},
               "cv_residuals": {"columns": ["age", "residual"], "pairs": [[a, r] for a, r in zip(ages, rng.normal(0, 6, 60))]}}
    rec = C.regression_record_from_metrics(metrics)
    assert rec["regression"]["n"] == 60 and "5-fold CV" in rec["regression"]["fitted_on"]
    assert C.regression_record_from_metrics({"cv": {}}) is None
    cfg = CheckpointConfig(model=ModelConfig("resnet3d_10", {}, "age_regression", {}), preprocess=PreprocessConfig(),
                           task="brain_age", labels=(), input_modalities=("T1w",), uncertainty=rec)
    text = _uncertainty_text(cfg)
    assert "90 % split-conformal interval" in text and "covered" in text
    assert "No prediction interval" in _uncertainty_text(CheckpointConfig(
        model=cfg.model, preprocess=cfg.preprocess, task="brain_age", labels=(), input_modalities=("T1w",)))
