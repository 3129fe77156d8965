"""Validation shared by every reader: header checks before any voxel is read, data checks after.

Policy (documented here, enforced by the readers):

- dimensions: 3D or 4D after dropping trailing singleton axes; 2D and 5D+ are refused.
- memory: a header whose decoded float32 data (or the on-disk type when wider) would exceed ``max_bytes``
  is refused before any data is read.
- spacing: every spatial voxel size must be finite and > 0 and the affine invertible.
- empty: 0 voxels is an error. An all-zero image is *accepted* with a warning, because legitimate
  images are all zero (e.g. a lesion mask of a case without lesions).
- non-finite voxels (NaN, +-inf) are counted, replaced with 0, logged and recorded in
  ``metadata["warnings"]``.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from age2hie_hub.errors import VolumeReadError

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 4 * 2**30  # 4 GiB of decoded float32 voxels: a large whole-brain multi-shell DWI fits


def fail(path: str | Path, problem: str) -> VolumeReadError:
    """The one error shape: file first, then the problem (and what to do)."""
    return VolumeReadError(f"{path}: {problem}")


def check_exists(path: Path) -> None:
    if not path.exists():
        raise fail(path, "no such file or folder")


def squeeze_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """Drop trailing singleton axes beyond the third (NIfTI/ITK often store 3D as (X, Y, Z, 1))."""
    shape = tuple(int(s) for s in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def check_shape(path: str | Path, shape: Sequence[int], itemsize: int, max_bytes: int) -> tuple[int, ...]:
    """Check a header's dimensions before reading data; return the squeezed shape."""
    shape = squeeze_shape(shape)
    if len(shape) < 3:
        raise fail(path, f"image is {len(shape)}D (shape {shape}); a 3D volume or 4D series is needed")
    if len(shape) > 4:
        raise fail(path, f"image is {len(shape)}D (shape {shape}); only 3D volumes and 4D series are supported")
    if any(s < 0 for s in shape):
        raise fail(path, f"header has negative dimensions {shape}; the file is corrupt")
    n = math.prod(shape)
    if n == 0:
        raise fail(path, f"image is empty (shape {shape}, 0 voxels)")
    need = n * max(4, int(itemsize))
    if need > max_bytes:
        raise fail(
            path,
            f"header dimensions {shape} need {need / 2**30:.2f} GiB, over the limit of "
            f"{max_bytes / 2**30:.2f} GiB; pass a larger max_bytes if this is intended",
        )
    return shape


def check_spacing(path: str | Path, spacing: Sequence[float]) -> None:
    sp = [float(s) for s in spacing[:3]]
    if not all(math.isfinite(s) for s in sp):
        raise fail(path, f"voxel spacing {sp} is not finite; the header is corrupt")
    if any(s <= 0 for s in sp):
        raise fail(path, f"voxel spacing {sp} has zero or negative values; fix the header's voxel size")


def check_affine(path: str | Path, affine: np.ndarray) -> None:
    if not np.all(np.isfinite(affine)):
        raise fail(path, "the voxel-to-world transform has non-finite values; the header is corrupt")
    check_spacing(path, np.linalg.norm(affine[:3, :3], axis=0))
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise fail(path, "the voxel-to-world transform is singular (collinear axes); the header is corrupt")


def clean_data(path: str | Path, data: np.ndarray, metadata: dict[str, Any]) -> np.ndarray:
    """Replace non-finite voxels with 0 and note all-zero images; record warnings in ``metadata``."""
    warnings: list[str] = list(metadata.get("warnings", []))
    bad = ~np.isfinite(data)
    n_bad = int(bad.sum())
    if n_bad:
        data = np.where(bad, np.float32(0), data)
        msg = f"{path}: {n_bad} of {data.size} voxels were not finite (NaN/inf); replaced with 0"
        log.warning(msg)
        warnings.append(msg)
    if not np.any(data):
        msg = f"{path}: every voxel is 0 (empty image)"
        log.warning(msg)
        warnings.append(msg)
    if warnings:
        metadata["warnings"] = warnings
    return data
