"""The experiment grid: learning curves on chosen seeds only; tables that name the target they were run on."""
from __future__ import annotations

import numpy as np
import pytest

from age2hie_hub.train.config import LearningCurveConfig, MethodConfig, TransferConfig
from age2hie_hub.train.manifest import Case, Cohort


def _cohort(n: int = 40) -> Cohort:
    cases = tuple(Case(f"s{i}", (f"/x/{i}.nii",), str(i % 2), "A") for i in range(n))
    return Cohort(cases, "y", "classification", ("0", "1"))


def test_learning_curve_runs_on_the_chosen_seeds(tmp_path, monkeypatch):
    import age2hie_hub.train.stages as stages
    from age2hie_hub.train.evaluate import run_grid

    def fake_fit(method, cohort, files, train, test, cfg, *, seed, parent=None, **kw):
        y = cohort.labels[test]
        return stages.SplitResult(None, y, np.full(test.size, 0.5), {"accuracy": 0.5})

    monkeypatch.setattr(stages, "fit_split", fake_fit)
    cohort = _cohort()
    methods = [MethodConfig("scratch", "scratch", stages=("scratch",))]
    lc = LearningCurveConfig(sizes=(8, "all"), protocol="same_site", max_splits=2, seeds=(1,))
    rows = run_grid(cohort, [None] * len(cohort), methods, TransferConfig(), protocols=("same_site",), k=2,
                    seeds=(0, 1), run_dir=tmp_path, learning_curve=lc, progress=False)
    full = [r for r in rows if not r["learning_curve"]]
    curve = [r for r in rows if r["learning_curve"]]
    assert sorted({r["seed"] for r in full}) == [0, 1] and len(full) == 4
    assert {r["seed"] for r in curve} == {1} and len(curve) == 2  # size 8 on seed 1's two folds
    with pytest.raises(ValueError, match=r"learning_curve.seeds \[5\] are not among"):
        run_grid(cohort, [None] * len(cohort), methods, TransferConfig(), protocols=("same_site",), k=2,
                 seeds=(0, 1), run_dir=tmp_path / "b", learning_curve=LearningCurveConfig(seeds=(5,)), progress=False)


def test_tables_name_the_target_not_outcome(tmp_path):
    """A proxy target (lesion burden) is never called an outcome in the experiment's table."""
    from age2hie_hub.train.experiment import _write_outputs

    cell = {"n": 1, "mean": 0.8, "sd": 0.0, "ci_low": 0.8, "ci_high": 0.8}
    summary = [{"method": "scratch", "protocol": "same_site", "n_splits": 1, "n_seeds": 1,
                **{f"{k}_{s}": cell[s] if s != "text" else "0.8" for k in ("accuracy", "auc") for s in
                   ("mean", "sd", "ci_low", "ci_high", "text")}}]
    out = {"summary": summary, "comparisons": [], "learning_curve": [], "timings": {}, "pretrain": None,
           "n_cases": 5, "sites": {"MGH": 5}, "synthetic": False, "target": "lesion_burden_ge_1pct"}
    _write_outputs(out, tmp_path, synthetic=False)
    md = (tmp_path / "table.md").read_text()
    assert "lesion_burden_ge_1pct prediction" in md and "outcome" not in md.lower()
    _write_outputs({**out, "target": "outcome"}, tmp_path, synthetic=False)
    assert "outcome prediction" in (tmp_path / "table.md").read_text()


def test_learning_curve_pairs_match_split_and_size():
    from age2hie_hub.train.evaluate import learning_curve_comparisons

    rows = []
    for fold in range(5):
        for method, bonus in (("transfer", 0.1), ("scratch", 0.0)):
            base = dict(method=method, protocol="same_site", seed=0, split=f"A/fold{fold}")
            rows.append({**base, "learning_curve": True, "train_size": 16, "accuracy": 0.5 + bonus + fold / 100})
            rows.append({**base, "learning_curve": False, "train_size": 54 + fold % 2, "accuracy": 0.7 - bonus})
    out = {(r["train_size"], r["metric"]): r for r in learning_curve_comparisons(rows, "same_site", "scratch")}
    small, full = out[(16, "accuracy")], out[(54, "accuracy")]  # full folds of 54-55 cases: one point (mean)
    assert small["n_pairs"] == 5 and small["mean_diff"] == pytest.approx(0.1)
    assert small["p_sign_flip"] == pytest.approx(1 / 16)  # every pair the same sign: the exact test's floor
    assert full["mean_diff"] == pytest.approx(-0.1) and (54, "auc") not in out  # no AUC in these rows
