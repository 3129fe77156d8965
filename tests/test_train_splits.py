"""Evaluation protocols: disjoint, complete, stratified, nested learning-curve subsets."""
from __future__ import annotations

import numpy as np
import pytest

from age2hie_hub.train import splits as S

# Two sites with the BONBID-HIE class balance: BCH 30/42, MGH 53/31.
SITES = np.array(["BCH"] * 72 + ["MGH"] * 84)
LABELS = np.array([0] * 30 + [1] * 42 + [0] * 53 + [1] * 31)


def _check_partition(splits, n_total_tested):
    tested = np.concatenate([s.test for s in splits])
    assert np.unique(tested).size == tested.size == n_total_tested
    for s in splits:
        assert not set(s.train) & set(s.test)


def test_same_site_folds_stay_inside_a_site_and_are_stratified():
    splits = S.make_splits("same_site", LABELS, SITES, k=5, seeds=[0])
    assert len(splits) == 10
    _check_partition(splits, 156)
    for s in splits:
        site = SITES[s.test[0]]
        assert (SITES[s.train] == site).all() and (SITES[s.test] == site).all()
        frac = LABELS[s.test].mean()
        assert abs(frac - LABELS[SITES == site].mean()) < 0.12


def test_multi_site_pools_sites_and_balances_them():
    splits = S.make_splits("multi_site", LABELS, SITES, k=5, seeds=[0, 1])
    assert len(splits) == 10
    _check_partition([s for s in splits if s.seed == 0], 156)
    for s in splits:
        assert abs((SITES[s.test] == "BCH").mean() - 72 / 156) < 0.05
    a, b = (np.sort(splits[0].test), np.sort(splits[5].test))
    assert not np.array_equal(a, b)  # another seed, other folds


def test_cross_site_both_directions_and_leave_one_site_out():
    splits = S.cross_site(SITES, seed=0)
    assert [s.name for s in splits] == ["train=MGH->test=BCH", "train=BCH->test=MGH"]
    _check_partition(splits, 156)
    three = S.cross_site(np.array(["a", "b", "c"] * 4), seed=0)
    assert len(three) == 3 and all(s.train.size == 8 for s in three)
    with pytest.raises(ValueError, match="at least 2 sites"):
        S.cross_site(np.array(["a"] * 5), seed=0)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown protocol"):
        S.make_splits("loso", LABELS, SITES)
    with pytest.raises(ValueError, match="into 5 folds"):
        S.stratified_kfold([0, 1, 0], 5, 0)


def test_holdout_keeps_every_class_on_both_sides():
    keep, out = S.stratified_holdout(LABELS, 0.2, seed=0)
    assert np.union1d(keep, out).size == 156 and not set(keep) & set(out)
    assert abs(out.size - 31) <= 2 and set(LABELS[out]) == {0, 1}


def test_learning_curve_subsets_are_nested_and_stratified():
    train = np.arange(0, 156, 1)
    subsets = S.learning_curve_subsets(train, LABELS, [16, 32, 64, "all"], seed=0)
    assert list(subsets) == [16, 32, 64, 156]
    assert set(subsets[16]) <= set(subsets[32]) <= set(subsets[64]) <= set(subsets[156])
    for n, idx in subsets.items():
        assert abs(LABELS[idx].mean() - LABELS.mean()) <= 1.5 / n + 0.02


def test_quantile_strata_for_regression_targets():
    ages = np.linspace(0, 90, 100)
    strata = S.quantile_strata(ages, 5)
    assert np.bincount(strata).tolist() == [20] * 5
