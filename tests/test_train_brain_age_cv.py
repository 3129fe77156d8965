"""Brain-age cross-validation: ridge on region volumes (numpy), the age-bias line, the k-fold CV of a pretrain
recipe with baselines on the same folds, and the final checkpoint's record of it."""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from age2hie_hub.io import Volume
from age2hie_hub.io.writer import write_volume
from age2hie_hub.train import metrics as M
from age2hie_hub.train.baselines import dlmuse_volumes, fit_ridge, fit_ridge_cv, predict_baseline
from age2hie_hub.train.config import CVConfig, PretrainConfig, load_config
from age2hie_hub.train.loop import LoopConfig
from age2hie_hub.train.manifest import ManifestError, read_bids

pytestmark = pytest.mark.usefixtures("one_torch_thread")

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


# ---- ridge ----------------------------------------------------------------------------------------------------

def test_ridge_with_a_tiny_penalty_is_least_squares_and_a_huge_one_the_mean() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)) * [1, 10, 100, 0.1, 3] + 50
    y = x @ [0.5, -0.02, 0.003, 4.0, 0.1] + rng.normal(0, 0.1, 60)
    design = np.c_[np.ones(60), x]
    lstsq = design @ np.linalg.lstsq(design, y, rcond=None)[0]
    np.testing.assert_allclose(fit_ridge(x, y, 1e-10).predict(x), lstsq, atol=1e-6)
    flat = fit_ridge(x, y, 1e8).predict(x)
    np.testing.assert_allclose(flat, y.mean(), atol=1e-3)
    assert not np.allclose(lstsq, y.mean(), atol=1e-3)  # negative control: the fit itself is not flat


def test_inner_cv_picks_a_small_penalty_for_signal_and_a_large_one_for_noise() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 30))
    signal = x[:, :3] @ [3.0, -2.0, 1.0]
    model, errors = fit_ridge_cv(x, signal + rng.normal(0, 0.2, 80))
    noise_model, _ = fit_ridge_cv(x, rng.normal(size=80))
    assert model.alpha < 0.1 < noise_model.alpha
    assert len(errors) == 25 and min(errors.values()) == errors[f"{model.alpha:.4g}"]


def test_baselines_use_the_training_fold_only() -> None:
    y_train = np.array([20.0, 30.0, 70.0])
    pred, info = predict_baseline("mean", y_train, 4)
    assert pred.tolist() == [40.0] * 4 and info == {"mean": 40.0}
    with pytest.raises(ValueError, match="region volumes"):
        predict_baseline("ridge_dlmuse", y_train, 4)
    with pytest.raises(ValueError, match="unknown baseline"):
        predict_baseline("median", y_train, 4)


# ---- region volumes --------------------------------------------------------------------------------------------

def _labels_image(path: Path, counts: dict[int, int]) -> None:
    data = np.zeros(6 * 6 * 6, dtype=np.uint8)
    start = 0
    for label, n in counts.items():
        data[start:start + n] = label
        start += n
    path.parent.mkdir(parents=True, exist_ok=True)
    write_volume(Volume(data.reshape(6, 6, 6), AFFINE), path)


def _bids_with_labels(root: Path, ages: list[float], counts: list[dict[int, int]]) -> Path:
    rows = []
    for i, (age, c) in enumerate(zip(ages, counts, strict=True)):
        pid = f"sub-{i:02d}"
        (root / pid / "anat").mkdir(parents=True)
        write_volume(Volume(np.ones((4, 4, 4), np.float32), AFFINE), root / pid / "anat" / f"{pid}_T1w.nii.gz")
        _labels_image(root / "derivatives" / "dlmuse" / pid / "anat" / f"{pid}_dseg.nii.gz", c)
        rows.append(f"{pid}\t{age}")
    (root / "participants.tsv").write_text("participant_id\tage\n" + "\n".join(rows) + "\n")
    return root


def test_region_volumes_count_voxels_times_voxel_volume(tmp_path: Path) -> None:
    root = _bids_with_labels(tmp_path / "bids", [30.0, 60.0], [{4: 10, 11: 3}, {4: 7, 200: 5}])
    cohort = read_bids(root, task="regression")
    vols = dlmuse_volumes(cohort, root / "derivatives" / "dlmuse")
    assert vols.labels.tolist() == [4, 11, 200]  # union over subjects, background excluded
    np.testing.assert_allclose(vols.volumes, [[80.0, 24.0, 0.0], [56.0, 0.0, 40.0]], rtol=1e-9)  # 8 mm^3 voxels
    (root / "derivatives" / "dlmuse" / "sub-01" / "anat" / "sub-01_dseg.nii.gz").unlink()
    with pytest.raises(ManifestError, match=r"sub-01: no anat/\*_dseg"):
        dlmuse_volumes(cohort, root / "derivatives" / "dlmuse")


def test_real_dlmuse_volumes_are_148_regions_of_an_adult_brain(shared_data: Path) -> None:
    root = shared_data / "ixi_t1"
    if not (root / "derivatives" / "dlmuse").is_dir():
        pytest.skip(f"{root}/derivatives/dlmuse not found")
    cohort = read_bids(root, task="regression")
    vols = dlmuse_volumes(cohort.subset([0, 1, 2]), root / "derivatives" / "dlmuse")
    assert vols.volumes.shape == (3, 148)
    brain_cm3 = vols.volumes.sum(axis=1) / 1000
    assert ((brain_cm3 > 900) & (brain_cm3 < 2000)).all(), brain_cm3


# ---- the age-bias line ------------------------------------------------------------------------------------------

def test_age_bias_line_and_correction() -> None:
    age = np.linspace(20, 80, 50)
    pred = 15 + 0.7 * age + np.sin(age)  # regression to the mean plus some error
    line = M.fit_age_bias(age, pred)
    assert line["a"] == pytest.approx(15, abs=0.5) and line["b"] == pytest.approx(0.7, abs=0.02)
    corrected = M.correct_age_bias(pred, age, line["a"], line["b"])
    assert abs(np.corrcoef(age, corrected - age)[0, 1]) < 1e-6  # the corrected gap no longer follows age
    assert abs(np.corrcoef(age, pred - age)[0, 1]) > 0.9  # negative control: the raw gap does
    # The mean predictor is "corrected" into the true age: corrected errors are not an accuracy.
    mean_line = M.fit_age_bias(age, np.full(50, 50.0))
    np.testing.assert_allclose(M.correct_age_bias(np.full(50, 50.0), age, mean_line["a"], mean_line["b"]), age)
    with pytest.raises(ValueError, match="two different ages"):
        M.fit_age_bias([40.0, 40.0], [39.0, 41.0])


def test_regression_summary_has_bootstrap_intervals_around_the_point() -> None:
    rng = np.random.default_rng(0)
    y = rng.uniform(20, 80, 100)
    s = M.regression_summary(y, y + rng.normal(2, 5, 100), n_boot=500)
    for key in ("mae", "pearson_r", "bias"):
        assert s[key]["ci_low"] < s[key]["value"] < s[key]["ci_high"], (key, s[key])
    assert s["bias"]["ci_low"] > 0  # a +2 shift on 100 cases is detected


# ---- the cross-validation of a recipe --------------------------------------------------------------------------

def _ball(age: float, rng: np.random.Generator, shape=(16, 16, 16)) -> np.ndarray:
    g = np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij"))
    r = np.sqrt((g ** 2).sum(0))
    v = np.where(r < 7, 1.0, 0.0)
    v[r < 1.0 + age / 20.0] *= 0.3  # "ventricles" grow with age
    return (v + rng.normal(0, 0.03, shape) * (v > 0)).astype(np.float32)


def make_cohort(root: Path, n: int = 15, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    ages = [float(a) for a in np.round(rng.uniform(20, 80, n), 2)]
    counts = [{4: int(50 + a), 11: int(120 - a), 30: int(rng.integers(20, 40))} for a in ages]
    _bids_with_labels(root, ages, counts)
    for i, age in enumerate(ages):
        pid = f"sub-{i:02d}"
        write_volume(Volume(_ball(age, rng), AFFINE), root / pid / "anat" / f"{pid}_T1w.nii.gz")
    return root


def _config(root: Path, run: Path, **cv: object) -> PretrainConfig:
    return PretrainConfig(
        data={"format": "bids", "path": str(root), "target": "age"},
        model={"arch": "resnet3d_10", "arch_args": {"width": 0.125}, "head": "age_regression"},
        preprocess={"shape": [12, 12, 12], "spacing": [3.0, 3.0, 3.0], "crop": "center"},
        loop=LoopConfig(epochs=2, batch_size=4, lr=3e-3, threads=1, progress=False),
        test_fraction=0.0, val_fraction=0.0, run_dir=str(run), cache_dir=str(run.parent / "cache"),
        preprocess_workers=0, cv=CVConfig(folds=3, n_boot=200, inner_folds=3, **cv), synthetic=True)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_cv_tests_every_subject_once_next_to_baselines_and_the_final_model_records_it(tmp_path: Path) -> None:
    from age2hie_hub.hub import read_config
    from age2hie_hub.train.stages import pretrain

    root = make_cohort(tmp_path / "bids")
    cfg = _config(root, tmp_path / "run")
    out = pretrain(cfg)
    cv_dir = tmp_path / "run" / "cv"
    for name in ("table.csv", "table.md", "comparisons.csv", "predictions.csv", "per_fold.csv", "metrics.json",
                 "pred_vs_true.png", "residual_vs_age.png", "results.jsonl"):
        assert (cv_dir / name).is_file(), name
    pred = _rows(cv_dir / "predictions.csv")
    assert sorted(r["subject"] for r in pred) == [f"sub-{i:02d}" for i in range(15)]  # each tested once
    assert {r["fold"] for r in pred} == {"0", "1", "2"}
    ages = np.array([float(r["age"]) for r in pred])
    folds = np.array([int(r["fold"]) for r in pred])
    for f in range(3):  # the mean baseline is the mean of the OTHER folds' ages
        test = folds == f
        np.testing.assert_allclose([float(r["mean"]) for r, t in zip(pred, test) if t], ages[~test].mean())
    methods = [r["method"] for r in _rows(cv_dir / "table.csv")]
    assert methods == ["cnn", "mean", "ridge_dlmuse", "cnn (age-bias corrected)", "mean (age-bias corrected)",
                       "ridge_dlmuse (age-bias corrected)"]
    summary = {r["method"]: r for r in out["summary"]}
    # Region 4 and 11 volumes are linear in age: ridge must nearly nail it; the mean cannot.
    assert summary["ridge_dlmuse"]["mae_mean"] < 3 < summary["mean"]["mae_mean"]
    assert summary["cnn"]["mae_ci_low"] <= summary["cnn"]["mae_mean"] <= summary["cnn"]["mae_ci_high"]
    assert {(c["method"], c["reference"]) for c in out["comparisons"]} >= {("cnn", "ridge_dlmuse"), ("cnn", "mean")}
    assert "population-level" in (cv_dir / "table.md").read_text()

    config = read_config(tmp_path / "run" / "checkpoint")
    m = config.metrics
    assert m["split"] == "none" and m["n_train"] == 15 and "test_mae" not in m
    assert m["cv"]["methods"]["cnn"]["mae"]["value"] == pytest.approx(summary["cnn"]["mae_mean"])
    line = m["age_bias_correction"]
    assert line["needs_chronological_age"] is True
    oof = np.array([float(r["cnn"]) for r in pred])
    ref = M.fit_age_bias(ages, oof)
    assert (line["a"], line["b"]) == pytest.approx((ref["a"], ref["b"]), abs=1e-4)  # CSV: 6 digits
    pairs = np.array(m["cv_residuals"]["pairs"])
    assert pairs.shape == (15, 2)
    np.testing.assert_allclose(sorted(pairs[:, 1]), sorted(oof - ages), atol=1e-3)
    run_metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert run_metrics["summary"][0]["method"] == "cnn"  # the release recipe reads the card's table from here


def test_cv_resumes_finished_folds_and_parallel_folds_give_the_same_predictions(tmp_path: Path) -> None:
    from age2hie_hub.train.evaluate import cross_validate_brain_age
    from age2hie_hub.train.stages import cached_arrays
    from age2hie_hub.preprocess.config import PreprocessConfig

    root = make_cohort(tmp_path / "bids", n=12, seed=3)
    cfg = dataclasses.replace(_config(root, tmp_path / "run"), cv=CVConfig(folds=3, baselines=("mean",), n_boot=100))
    cohort = read_bids(root, task="regression")
    files = cached_arrays(cohort, PreprocessConfig.from_dict(cfg.preprocess), cfg.cache_dir, progress=False)
    one = cross_validate_brain_age(cfg, cohort, files, tmp_path / "one")
    a = {r["subject"]: float(r["cnn"]) for r in _rows(tmp_path / "one" / "predictions.csv")}
    lines = (tmp_path / "one" / "results.jsonl").read_text().splitlines()
    again = cross_validate_brain_age(cfg, cohort, files, tmp_path / "one")  # every fold found: nothing retrained
    assert (tmp_path / "one" / "results.jsonl").read_text().splitlines() == lines
    assert again["summary"][0]["mae_mean"] == one["summary"][0]["mae_mean"]
    changed = dataclasses.replace(cfg, loop=dataclasses.replace(cfg.loop, lr=1e-3))  # another recipe: retrained
    cross_validate_brain_age(changed, cohort, files, tmp_path / "one")
    assert len((tmp_path / "one" / "results.jsonl").read_text().splitlines()) == len(lines) + 3
    par = cross_validate_brain_age(dataclasses.replace(cfg, cv=dataclasses.replace(cfg.cv, workers=2)), cohort, files,
                                   tmp_path / "two")
    b = {r["subject"]: float(r["cnn"]) for r in _rows(tmp_path / "two" / "predictions.csv")}
    assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-4 for k in a)
    assert par["summary"][0]["mae_mean"] == pytest.approx(one["summary"][0]["mae_mean"], abs=1e-4)


def test_cv_config_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown"):
        CVConfig(baselines=("mean", "median"))
    with pytest.raises(ValueError, match="folds"):
        CVConfig(folds=1)
    with pytest.raises(ValueError, match="test_fraction"):
        PretrainConfig(test_fraction=1.0)
    path = tmp_path / "c.yaml"
    path.write_text("cv: {folds: 4, baselines: [mean]}\ntest_fraction: 0\n")
    cfg = load_config(path, PretrainConfig)
    assert cfg.cv == CVConfig(folds=4, baselines=("mean",)) and cfg.test_fraction == 0


def test_final_model_trained_beside_the_folds_equals_the_one_trained_after_them(tmp_path: Path) -> None:
    """cv.workers > 1 trains the final model in the folds' worker pool: same recipe and seed, same weights."""
    from safetensors.numpy import load_file

    from age2hie_hub.train.stages import pretrain

    root = make_cohort(tmp_path / "bids", n=12, seed=5)
    serial = _config(root, tmp_path / "serial", baselines=("mean",))
    pretrain(serial)
    beside = dataclasses.replace(_config(root, tmp_path / "beside", baselines=("mean",)),
                                 cv=dataclasses.replace(serial.cv, workers=2))
    out = pretrain(beside)
    a = load_file(str(tmp_path / "serial" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "beside" / "checkpoint" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-6, err_msg=k)
    assert out["metrics"]["epochs_run"] == 2 and out["metrics"]["n_train"] == 12
    untrained = _config(root, tmp_path / "other", baselines=("mean",))  # negative control: another seed differs
    pretrain(dataclasses.replace(untrained, seed=1))
    c = load_file(str(tmp_path / "other" / "checkpoint" / "model.safetensors"))
    assert any(not np.allclose(a[k], c[k], atol=1e-6) for k in a if a[k].dtype.kind == "f")


def test_cli_cv_prints_the_table_and_writes_the_run(tmp_path: Path, capsys) -> None:
    import yaml

    from age2hie_hub.train.cli import main

    root = make_cohort(tmp_path / "bids", n=9, seed=7)
    cfg = dataclasses.replace(_config(root, tmp_path / "run"), cv=CVConfig(folds=3, baselines=("mean",), n_boot=100))
    from age2hie_hub.train.config import to_dict

    path = tmp_path / "cv.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    assert main(["cv", str(path), "-q"]) == 0
    out = capsys.readouterr().out
    assert "| cnn |" in out and "| mean |" in out and (tmp_path / "run" / "cv" / "predictions.csv").is_file()
    assert not (tmp_path / "run" / "checkpoint").exists()  # cv alone trains no final model
    path.write_text(yaml.safe_dump({**to_dict(cfg), "cv": {"folds": 3, "baselines": ["median"]}}))
    assert main(["cv", str(path), "-q"]) == 1  # a bad config: one line, exit 1
    assert "median" in capsys.readouterr().err
