"""Validation shared by every reader: header checks before any voxel is read, data checks after.

Policy (documented here, enforced by the readers):

- dimensions: 3D or 4D after dropping trailing singleton axes; 2D and 5D+ are refused.
- memory: a header whose decoded float32 data (or the on-disk type when wider) would exceed ``max_bytes``
  is refused before any data is read.
- geometry: every spatial voxel size must be finite and > 0 (for NIfTI also the raw header's pixdim[1..3],
  which nibabel would otherwise silently replace) and the affine finite and invertible. Checked by
  ``read_volume`` for every format, DICOM included (its converted NIfTI passes through the same checks).
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


def check_spacing(path: str | Path, spacing: Sequence[float], what: str = "voxel spacing") -> None:
    """Every spatial voxel size finite and > 0 (a flip belongs in the affine's direction, not in a size)."""
    sp = [float(s) for s in spacing[:3]]
    if not all(math.isfinite(s) for s in sp):
        raise fail(path, f"{what} {sp} is not finite; the header is corrupt")
    if any(s <= 0 for s in sp):
        raise fail(path, f"{what} {sp} has zero or negative values; fix the header's voxel size")


# |det| of the affine's 3x3 part with each column scaled to unit length: 1 for orthogonal axes, 0 for collinear
# ones. Relative, so tiny but valid voxels (a det of 1e-9 for 1 um voxels) are not mistaken for a singular
# matrix; float32 header rounding of a truly singular matrix stays far below it.
MIN_AXIS_INDEPENDENCE = 1e-6


def check_affine(path: str | Path, affine: np.ndarray) -> None:
    """A usable voxel-to-world transform: 4x4, finite, voxel sizes > 0, axes not (nearly) collinear.

    ``read_volume`` applies this to what every reader returns; readers also call it on the header's geometry
    before reading voxels, so a bad header costs no data read.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise fail(path, f"the voxel-to-world transform has shape {affine.shape}, not 4x4")
    if not np.all(np.isfinite(affine)):
        raise fail(path, "the voxel-to-world transform has non-finite values; the header is corrupt")
    m = affine[:3, :3]
    sizes = np.linalg.norm(m, axis=0)
    check_spacing(path, sizes, what="voxel spacing of the voxel-to-world transform")
    independence = abs(float(np.linalg.det(m / sizes)))
    if independence < MIN_AXIS_INDEPENDENCE:
        raise fail(path, f"the voxel-to-world transform is singular (voxel axes are collinear, |det| of its unit "
                         f"directions {independence:.1e}); the header is corrupt")


def clean_data(path: str | Path, data: np.ndarray, metadata: dict[str, Any]) -> np.ndarray:
    """Replace non-finite voxels with 0 and note all-zero images; record warnings in ``metadata``."""
    warnings: list[str] = list(metadata.get("warnings", []))
    # Fast path, without a mask of the whole image: a NaN or infinite voxel makes the sum NaN or infinite, so a
    # finite sum means every voxel is finite. A non-finite sum may also be an overflow of finite values; the
    # mask then decides. Summed in the data's own type (a float64 sum of float32 data costs 2x: the cast).
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.sum(data)
    if np.isfinite(total):
        n_bad = 0
    else:
        bad = ~np.isfinite(data)
        n_bad = int(np.count_nonzero(bad))
    if n_bad:
        data = np.where(bad, np.float32(0), data)
        msg = f"{path}: {n_bad} of {data.size} voxels were not finite (NaN/inf); replaced with 0"
        log.warning(msg)
        warnings.append(msg)
    if (total == 0 or n_bad) and not np.any(data):  # a non-zero sum has a non-zero voxel
        msg = f"{path}: every voxel is 0 (empty image)"
        log.warning(msg)
        warnings.append(msg)
    if warnings:
        metadata["warnings"] = warnings
    return data
