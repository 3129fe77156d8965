"""Training-side records: pretrain with cv: writes the interval and the input QC record into the checkpoint, and
the release recipe adds a missing brain-age interval (from recorded CV residuals) or an outcome model's
calibration (from an experiment's out-of-fold probabilities)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from test_train_brain_age_cv import _config, make_cohort

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def brain_age_run(tmp_path_factory) -> Path:
    from age2hie_hub.train.stages import pretrain

    tmp = tmp_path_factory.mktemp("ba")
    root = make_cohort(tmp / "bids")
    pretrain(_config(root, tmp / "run"))
    return tmp / "run"


def test_pretrain_with_cv_records_an_interval_and_the_input_qc(brain_age_run):
    from age2hie_hub.hub import read_config
    from age2hie_hub.inference import Predictor
    from age2hie_hub.io import read_volume

    config = read_config(brain_age_run / "checkpoint")
    reg = config.uncertainty["regression"]
    pairs = np.array(config.metrics["cv_residuals"]["pairs"])
    # 15 out-of-fold residuals: the 90 % quantile is the ceil(16 * 0.9) = 15th smallest |residual|, the largest
    assert reg["n"] == 15 and reg["level"] == 0.9 and reg["scale"] is None
    assert reg["quantile"] == pytest.approx(np.abs(pairs[:, 1]).max())
    (channel,) = config.input_qc["channels"]
    assert config.input_qc["n_cases"] == 15 and channel["features"]["foreground_ml"]["n"] == 15
    scan = sorted((brain_age_run.parent / "bids").glob("sub-*/anat/*_T1w.nii.gz"))[0]
    p = Predictor.from_pretrained(brain_age_run / "checkpoint", device="cpu").predict(read_volume(scan))
    assert p.interval == pytest.approx((p.age - reg["quantile"], p.age + reg["quantile"]))
    assert not [w for w in p.warnings if w.startswith("input QC")]  # a training scan passes its own QC


def test_release_adds_a_missing_interval_from_the_recorded_residuals(brain_age_run):
    from age2hie_hub.hub import read_config
    from export.release import with_uncertainty

    config = dataclasses.replace(read_config(brain_age_run / "checkpoint"), uncertainty={})
    assert with_uncertainty(config, None).uncertainty["regression"]["n"] == 15
    no_cv = dataclasses.replace(config, metrics={"split": "none"})
    assert with_uncertainty(no_cv, None).uncertainty == {}  # nothing to fit it on: none, and it says so


def test_release_calibrates_an_outcome_model_from_its_methods_oof_probabilities(tmp_path):
    from inference_helpers import make_checkpoint

    from age2hie_hub.hub import read_config
    from export.release import ReleaseError, with_uncertainty

    rng = np.random.default_rng(0)
    rows = []
    for fold in range(5):
        y = (rng.uniform(size=20) < 0.5).astype(int)
        p = 1 / (1 + np.exp(-(1.5 * (2 * y - 1) + rng.normal(0, 1.5, 20))))
        rows.append({"id": f"transfer|multi_site|seed0|fold{fold}", "method": "transfer", "protocol": "multi_site",
                     "seed": 0, "fold": fold, "learning_curve": False,
                     "test_subjects": [f"c{fold}_{i}" for i in range(20)], "y_true": y.tolist(), "y_pred": p.tolist()})
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "metrics.json").write_text(json.dumps({"summary": []}))
    config = read_config(make_checkpoint(tmp_path / "ckpt"))
    config = dataclasses.replace(config, provenance={**config.provenance, "method": "transfer"})
    rec = with_uncertainty(config, tmp_path / "metrics.json").uncertainty["binary"]
    assert rec["n"] == 100 and rec["synthetic"] is True and rec["nested"]["folds"] == 5
    assert (tmp_path / "reliability_transfer.csv").read_text().startswith("bin_from,bin_to,n,mean_predicted,observed")
    assert (tmp_path / "reliability_transfer.png").stat().st_size > 1000
    other = dataclasses.replace(config, provenance={**config.provenance, "method": "scratch"})
    with pytest.raises(ReleaseError, match="no rows of method 'scratch'"):
        with_uncertainty(other, tmp_path)
