"""Evaluation protocols as index splits: same-site, multi-site, cross-site, repeated over seeds; learning curves.

All functions work on positions (0..N-1) into a cohort, so they are independent of how cases are stored.
Stratification uses class labels; for a continuous target pass ``strata=quantile_strata(y)``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PROTOCOLS = ("same_site", "multi_site", "cross_site")

__all__ = ["Split", "PROTOCOLS", "stratified_kfold", "stratified_holdout", "same_site", "multi_site",
           "cross_site", "make_splits", "learning_curve_subsets", "quantile_strata"]


@dataclass(frozen=True)
class Split:
    protocol: str
    seed: int
    fold: int
    name: str  # e.g. "BCH/fold2", "train=BCH->test=MGH"
    train: np.ndarray
    test: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "seed": self.seed, "fold": self.fold, "name": self.name,
                "train": self.train.tolist(), "test": self.test.tolist()}


def quantile_strata(values: Sequence[float], n_bins: int = 5) -> np.ndarray:
    """Bin a continuous target into quantile groups so regression folds cover its range evenly."""
    v = np.asarray(values, dtype=np.float64)
    edges = np.quantile(v, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.searchsorted(edges, v, side="right")


def stratified_kfold(strata: Sequence[Any], k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train, test) position pairs; each class is dealt round-robin over folds after shuffling."""
    strata = np.asarray(strata)
    n = strata.size
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    if n < k:
        raise ValueError(f"cannot split {n} cases into {k} folds")
    rng = np.random.default_rng(seed)
    fold_of = np.empty(n, dtype=np.int64)
    offset = 0
    for cls in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == cls))
        # Continue the round-robin across classes so fold sizes stay balanced when classes are small.
        fold_of[idx] = (np.arange(idx.size) + offset) % k
        offset = (offset + idx.size) % k
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(k)]


def stratified_holdout(strata: Sequence[Any], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held_out) positions with about ``fraction`` of every class held out (at least one if possible)."""
    strata = np.asarray(strata)
    if not 0 < fraction < 1:
        raise ValueError(f"hold-out fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    held = []
    for cls in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == cls))
        n_out = int(round(fraction * idx.size))
        if idx.size >= 2:
            n_out = min(max(n_out, 1), idx.size - 1)
        held.append(idx[:n_out])
    out = np.sort(np.concatenate(held)) if held else np.array([], dtype=np.int64)
    keep = np.setdiff1d(np.arange(strata.size), out)
    return keep, out


def same_site(strata: Sequence[Any], sites: Sequence[str], k: int, seed: int) -> list[Split]:
    """Stratified k-fold inside each site separately (train and test from the same site)."""
    strata, sites = np.asarray(strata), np.asarray(sites)
    out = []
    for site in sorted(np.unique(sites)):
        pos = np.flatnonzero(sites == site)
        for f, (tr, te) in enumerate(stratified_kfold(strata[pos], k, seed)):
            out.append(Split("same_site", seed, f, f"{site}/fold{f}", pos[tr], pos[te]))
    return out


def multi_site(strata: Sequence[Any], sites: Sequence[str], k: int, seed: int) -> list[Split]:
    """Stratified k-fold over all sites pooled; strata combine class and site so folds mix sites evenly."""
    strata, sites = np.asarray(strata), np.asarray(sites)
    joint = np.array([f"{s}|{c}" for s, c in zip(sites, strata, strict=True)])
    return [Split("multi_site", seed, f, f"pooled/fold{f}", tr, te)
            for f, (tr, te) in enumerate(stratified_kfold(joint, k, seed))]


def cross_site(sites: Sequence[str], seed: int) -> list[Split]:
    """Train on one site, test on the other (both directions); with > 2 sites, leave one site out."""
    sites = np.asarray(sites)
    names = sorted(np.unique(sites))
    if len(names) < 2:
        raise ValueError(f"cross-site evaluation needs at least 2 sites, found {names}")
    out = []
    for f, test_site in enumerate(names):
        tr, te = np.flatnonzero(sites != test_site), np.flatnonzero(sites == test_site)
        train_name = "+".join(n for n in names if n != test_site)
        out.append(Split("cross_site", seed, f, f"train={train_name}->test={test_site}", tr, te))
    return out


def make_splits(protocol: str, strata: Sequence[Any], sites: Sequence[str], *, k: int = 5,
                seeds: Sequence[int] = (0,)) -> list[Split]:
    """All splits of one protocol, repeated over seeds (cross-site is deterministic, seeds re-train only)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {PROTOCOLS}")
    out: list[Split] = []
    for seed in seeds:
        if protocol == "same_site":
            out += same_site(strata, sites, k, seed)
        elif protocol == "multi_site":
            out += multi_site(strata, sites, k, seed)
        else:
            out += cross_site(sites, seed)
    return out


def learning_curve_subsets(train: np.ndarray, strata: Sequence[Any], sizes: Sequence[int | str],
                           seed: int) -> dict[int, np.ndarray]:
    """Nested, stratified subsets of ``train`` (positions) for each size; "all" or sizes >= len -> all.

    Nested: the 16-case subset is inside the 32-case subset, and so on, so curves differ only by added data.
    """
    train = np.asarray(train)
    strata = np.asarray(strata)[train]
    rng = np.random.default_rng(seed)
    # Each case gets a key (rank within its shuffled class + jitter) / class size: sorting by it interleaves
    # classes in proportion, so every prefix of the order is (nearly) stratified.
    keys = np.empty(train.size)
    for cls in np.unique(strata):
        idx = np.flatnonzero(strata == cls)
        order = rng.permutation(idx.size)
        keys[idx[order]] = (np.arange(idx.size) + rng.uniform(0, 1)) / idx.size
    ordered = train[np.argsort(keys, kind="stable")]
    out: dict[int, np.ndarray] = {}
    for size in sizes:
        n = train.size if size == "all" else min(int(size), train.size)
        out[n] = np.sort(ordered[:n])
    return out
