"""Non-network baselines for a brain-age cross-validation, in numpy: predict the training mean, and ridge
regression on anatomical region volumes (DLMUSE labels, the classical brain-age recipe).

Everything a baseline learns (the mean, the standardisation, the ridge weights, the ridge penalty) comes from
the training fold only; the ridge penalty is chosen by an inner k-fold on the training fold.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from age2hie_hub.train.manifest import Cohort, ManifestError

log = logging.getLogger(__name__)

BASELINES = ("mean", "ridge_dlmuse")
# The ridge penalty grid (on standardised volumes, in units of the training-fold size): wide enough that the
# inner CV never sits on an edge for ~100-150 subjects x 148 regions; an edge choice is logged.
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-3, 3, 25))

__all__ = ["BASELINES", "DEFAULT_ALPHAS", "RegionVolumes", "dlmuse_volumes", "RidgeModel", "fit_ridge_cv",
           "predict_baseline"]


@dataclass(frozen=True)
class RegionVolumes:
    """Per-case volumes (mm^3) of every label found in any case (label 0, background, excluded)."""

    labels: np.ndarray  # (L,) label values
    volumes: np.ndarray  # (N, L) mm^3, rows in cohort order
    files: tuple[str, ...]


def _label_file(root: Path, subject: str) -> Path:
    found = sorted((root / subject).glob("**/anat/*_dseg.nii*"))
    if not found:
        raise ManifestError(f"{root / subject}: no anat/*_dseg.nii[.gz] label image for subject {subject}")
    return found[0]


def dlmuse_volumes(cohort: Cohort, labels_root: str | Path) -> RegionVolumes:
    """Count the voxels of each label in each case's ``<labels_root>/<subject>/anat/*_dseg.nii[.gz]`` and
    multiply by the voxel volume. The label set is the union over the cohort (it uses no target)."""
    import nibabel as nib

    root = Path(labels_root)
    if not root.is_dir():
        raise ManifestError(f"{root}: label folder not found (expected <bids root>/derivatives/dlmuse)")
    counts, files = [], []
    for subject in cohort.subjects:
        path = _label_file(root, subject)
        try:
            img = nib.load(str(path))
            data = np.asanyarray(img.dataobj)
        except Exception as exc:  # nibabel raises several types for a damaged file
            raise ManifestError(f"{path}: unreadable label image ({exc})") from exc
        if data.ndim != 3 or data.dtype.kind not in "iuf":
            raise ManifestError(f"{path}: expected a 3D label image, got {data.dtype} {data.shape}")
        if data.dtype.kind == "f":  # labels stored as floats: fine when every value is a whole number
            if not np.array_equal(data, np.round(data)):
                raise ManifestError(f"{path}: label values are not whole numbers (is this a label image?)")
        if data.min() < 0:
            raise ManifestError(f"{path}: negative label values")
        voxel_mm3 = float(abs(np.linalg.det(img.affine[:3, :3])))
        counts.append((np.bincount(np.asarray(data, dtype=np.int64).ravel()), voxel_mm3))
        files.append(str(path))
    n_labels = max(c.size for c, _ in counts)
    table = np.zeros((len(counts), n_labels), dtype=np.float64)
    for i, (c, voxel_mm3) in enumerate(counts):
        table[i, : c.size] = c * voxel_mm3
    present = np.flatnonzero(table.any(axis=0))
    present = present[present != 0]
    return RegionVolumes(labels=present, volumes=table[:, present], files=tuple(files))


@dataclass(frozen=True)
class RidgeModel:
    """y = intercept + ((x - mean) / sd) @ coef; standardisation and intercept from the training data."""

    mean: np.ndarray
    sd: np.ndarray
    coef: np.ndarray
    intercept: float
    alpha: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.intercept + ((np.asarray(x, dtype=np.float64) - self.mean) / self.sd) @ self.coef


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    sd = x.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)  # a region absent from every training case: a zero column, no penalty issue
    return (x - mean) / sd, mean, sd


def _ridge_path(z: np.ndarray, yc: np.ndarray, alphas: Sequence[float]) -> np.ndarray:
    """Coefficients (A, P) for every alpha from one SVD: coef = V diag(s / (s^2 + alpha n)) U' y.

    The penalty is ``alpha * n`` so that alpha means the same for training folds of different sizes.
    """
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    uty = u.T @ yc
    n = z.shape[0]
    return np.stack([vt.T @ (s / (s ** 2 + a * n) * uty) for a in alphas])


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> RidgeModel:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    z, mean, sd = _standardise(x)
    coef = _ridge_path(z, y - y.mean(), [alpha])[0]
    return RidgeModel(mean, sd, coef, float(y.mean()), float(alpha))


def fit_ridge_cv(x: np.ndarray, y: np.ndarray, *, alphas: Sequence[float] = DEFAULT_ALPHAS, inner_folds: int = 5,
                 seed: int = 0) -> tuple[RidgeModel, dict[str, float]]:
    """Choose alpha by an inner k-fold of (x, y) (the outer training fold), refit on all of it.

    Inner folds are stratified on quantile bins of y; each inner training part is standardised on itself.
    Returns the model and {alpha: inner-CV MAE}.
    """
    from age2hie_hub.train.splits import quantile_strata, stratified_kfold

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    errors = np.zeros(len(alphas))
    for train, test in stratified_kfold(quantile_strata(y), inner_folds, seed):
        z, mean, sd = _standardise(x[train])
        coefs = _ridge_path(z, y[train] - y[train].mean(), alphas)
        pred = y[train].mean() + ((x[test] - mean) / sd) @ coefs.T  # (n_test, A)
        errors += np.abs(pred - y[test][:, None]).sum(axis=0)
    errors /= y.size
    best = int(np.argmin(errors))
    if best in (0, len(alphas) - 1):
        log.warning("ridge: inner CV chose alpha %.3g at the edge of the grid [%.3g, %.3g]", alphas[best],
                    alphas[0], alphas[-1])
    return fit_ridge(x, y, alphas[best]), {f"{a:.4g}": float(e) for a, e in zip(alphas, errors, strict=True)}


def predict_baseline(name: str, y_train: np.ndarray, test_size: int, *, x_train: np.ndarray | None = None,
                     x_test: np.ndarray | None = None, alphas: Sequence[float] = DEFAULT_ALPHAS,
                     inner_folds: int = 5, seed: int = 0) -> tuple[np.ndarray, dict[str, float]]:
    """(test predictions, what was chosen) of baseline ``name`` fitted on the training fold only."""
    y_train = np.asarray(y_train, dtype=np.float64)
    if name == "mean":
        return np.full(test_size, y_train.mean()), {"mean": float(y_train.mean())}
    if name == "ridge_dlmuse":
        if x_train is None or x_test is None:
            raise ValueError("ridge_dlmuse needs the region volumes of the training and test cases")
        model, _ = fit_ridge_cv(x_train, y_train, alphas=alphas, inner_folds=inner_folds, seed=seed)
        return model.predict(x_test), {"alpha": model.alpha}
    raise ValueError(f"unknown baseline {name!r}; use one of {BASELINES}")
