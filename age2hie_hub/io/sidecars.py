"""FSL .bval/.bvec and BIDS .json files next to an image."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from age2hie_hub.io.checks import fail

log = logging.getLogger(__name__)


def strip_image_suffix(path: Path) -> Path:
    """``sub-01_dwi.nii.gz`` -> ``sub-01_dwi`` (same folder)."""
    name = path.name
    for suffix in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr"):
        if name.lower().endswith(suffix):
            return path.with_name(name[: -len(suffix)])
    return path.with_suffix("")


def _first_existing(base: Path, suffixes: tuple[str, ...]) -> Path | None:
    for suffix in suffixes:
        candidate = base.with_name(base.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def _of(image: Path | None) -> str:
    return f" of {image.name}" if image is not None else ""


def read_bvals(path: Path, n_volumes: int | None = None, image: Path | None = None) -> list[float]:
    """b-values (s/mm^2) from an FSL .bval file; checked against the series length when given."""
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=1).ravel()
    except (OSError, ValueError) as exc:
        raise fail(path, f"cannot parse b-values{_of(image)} ({exc}); expected one line of numbers") from exc
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise fail(path, f"b-values{_of(image)} must be finite and >= 0")
    if n_volumes is not None and values.size != n_volumes:
        raise fail(path, f"has {values.size} b-values but {image.name if image is not None else 'the image'} has {n_volumes} volumes")
    return [float(v) for v in values]


def read_bvecs(path: Path, n_volumes: int | None = None, image: Path | None = None) -> list[list[float]]:
    """Gradient directions from an FSL .bvec file (3 rows of N, or N rows of 3)."""
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise fail(path, f"cannot parse b-vectors{_of(image)} ({exc}); expected 3 lines of numbers") from exc
    if values.shape[0] != 3 and values.shape[1] == 3:
        values = values.T
    if values.shape[0] != 3:
        raise fail(path, f"b-vectors{_of(image)} have shape {values.shape}; expected 3 rows (x, y, z)")
    if n_volumes is not None and values.shape[1] != n_volumes:
        raise fail(path, f"has {values.shape[1]} b-vectors but {image.name if image is not None else 'the image'} has {n_volumes} volumes")
    if not np.all(np.isfinite(values)):
        # Some tools (dipy's own test data among them) write "nan nan nan" for b=0 volumes: no direction.
        log.info("%s: non-finite b-vectors read as (0, 0, 0)", path)
        values = np.where(np.isfinite(values), values, 0.0)
    return values.T.tolist()


def read_json(path: Path, image: Path | None = None) -> dict[str, Any]:
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise fail(path, f"JSON sidecar{_of(image)} cannot be read ({exc})") from exc
    if not isinstance(sidecar, dict):
        raise fail(path, f"JSON sidecar{_of(image)} must hold an object")
    return sidecar


def find_sidecars(image: Path, n_volumes: int) -> dict[str, Any]:
    """Metadata from files named like the image: ``.bval``/``.bvec`` (FSL) and ``.json`` (BIDS)."""
    base = strip_image_suffix(image)
    meta: dict[str, Any] = {}
    bval = _first_existing(base, (".bval", ".bvals"))
    bvec = _first_existing(base, (".bvec", ".bvecs"))
    sidecar = _first_existing(base, (".json",))
    # Only a 4D series has one b-value per volume; a 3D image with a .bval beside it is an odd case, keep it.
    n = n_volumes if n_volumes > 1 else None
    if bval is not None:
        meta["bvals"] = read_bvals(bval, n, image)
    if bvec is not None:
        meta["bvecs"] = read_bvecs(bvec, n, image)
    if sidecar is not None:
        meta["sidecar"] = read_json(sidecar, image)
    return meta
