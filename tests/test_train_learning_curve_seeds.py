"""learning_curve.seeds: the curve runs on the chosen seeds' splits only (the protocol grid on every seed)."""
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
