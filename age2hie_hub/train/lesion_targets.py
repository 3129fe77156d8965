"""Lesion burden of BONBID-HIE cases from their expert lesion masks: a derived PROXY target, not an outcome.

BONBID-HIE's public training cases come with lesion masks (``3LABEL/<case>_lesion.mha``) but, in the copy we
have, without 2-year outcomes. The lesion burden (lesion voxels / brain voxels) is a target the images
support, and a burden of 1 % or more is a binary target of about the same balance as the outcome; it is
still a proxy: no claim about a child's outcome follows from it.

Brain definition (``brain_region``), robust to how a volume's background was written:

1. The background value is read from the grid's outer shell (its six faces): when at least 95 % of the
   finite shell voxels hold one value (0 in the published skull-stripped ADC), that value is the
   background, and the brain is every finite voxel that differs from it. This keeps the negative and
   near-zero ADC voxels that fitting noise leaves inside the brain (often inside lesions), which
   ``ADC > 0`` would drop.
2. When the ADC shell is not constant (a map that was not skull-stripped, or a background of noise), the
   Z-ADC map's non-background region is used the same way (it is computed within the brain only).
3. When neither has a constant background, the brain is the ADC's foreground (``dwi.brain_mask``: Otsu,
   largest component, closed, holes filled): it may include scalp and CSF, so the burden is understated;
   ``brain_from`` says "adc_otsu" and a warning is logged.

In every case, components smaller than 1 % of the largest are dropped (isolated specks left by skull
stripping), enclosed holes are filled, and lesion voxels are counted as brain (a lesion lies in the brain
by definition; their number outside the region is recorded).
"""
from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from age2hie_hub._atomic import write_text_atomic
from age2hie_hub.train.manifest import BonbidCase, ManifestError, list_bonbid

log = logging.getLogger(__name__)

__all__ = ["LesionBurden", "brain_region", "lesion_burden", "lesion_targets", "target_column", "write_targets",
           "DEFAULT_THRESHOLD"]

DEFAULT_THRESHOLD = 0.01  # lesion burden >= 1 %
SHELL_CONSTANT_FRACTION = 0.95  # a background is "constant" when this share of the shell holds one value
MIN_COMPONENT_FRACTION = 0.01  # components smaller than this share of the largest are specks, dropped
PLAUSIBLE_BRAIN_ML = (150.0, 1200.0)  # a newborn's brain; outside this range the mask is suspect (warning)


@dataclass(frozen=True)
class LesionBurden:
    case_id: str
    subject_id: str
    site: str
    lesion_voxels: int
    brain_voxels: int
    voxel_ml: float
    brain_from: str  # "adc", "zadc" or "adc_otsu" (see the module docstring)
    lesion_outside_brain: int  # lesion voxels outside the brain region (counted as brain)

    @property
    def burden(self) -> float:
        return self.lesion_voxels / self.brain_voxels


def target_column(threshold: float = DEFAULT_THRESHOLD) -> str:
    """The binary column's name: ``lesion_burden_ge_1pct`` for 0.01, ``lesion_burden_ge_0.5pct`` for 0.005."""
    return f"lesion_burden_ge_{100 * threshold:g}pct"


def _shell(data: np.ndarray) -> np.ndarray:
    faces = [data[0], data[-1], data[:, 0], data[:, -1], data[:, :, 0], data[:, :, -1]]
    return np.concatenate([f.ravel() for f in faces])


def _constant_background(data: np.ndarray) -> float | None:
    shell = _shell(data)
    shell = shell[np.isfinite(shell)]
    if shell.size == 0:
        return None
    values, counts = np.unique(shell, return_counts=True)
    top = int(np.argmax(counts))
    return float(values[top]) if counts[top] >= SHELL_CONSTANT_FRACTION * shell.size else None


def _clean(mask: np.ndarray) -> np.ndarray:
    """Drop specks (components under 1 % of the largest, 26-connected) and fill enclosed holes."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        keep = np.flatnonzero(sizes >= MIN_COMPONENT_FRACTION * sizes.max())
        mask = np.isin(labels, keep)
    return ndimage.binary_fill_holes(mask)


def brain_region(adc: np.ndarray, zadc: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """(brain mask, where it came from: "adc", "zadc" or "adc_otsu"); see the module docstring."""
    for name, data in (("adc", adc), ("zadc", zadc)):
        if data is None:
            continue
        background = _constant_background(data)
        if background is not None:
            mask = np.isfinite(data) & (data != background)
            if mask.any():
                return _clean(mask), name
    from age2hie_hub.dwi import brain_mask
    from age2hie_hub.io import Volume

    return brain_mask(Volume(np.where(np.isfinite(adc), adc, 0).astype(np.float32), np.eye(4))), "adc_otsu"


class _NoEmptyImageWarning(logging.Filter):
    """A lesion mask with no lesion is an ordinary case, not the reader's "empty image" problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().endswith("(empty image)")


def _read(path: Path, *, may_be_empty: bool = False) -> tuple[np.ndarray, np.ndarray]:
    from age2hie_hub.errors import Age2HieError
    from age2hie_hub.io import read_volume

    quiet = _NoEmptyImageWarning()
    loggers = [logging.getLogger("age2hie_hub.io.checks")] if may_be_empty else []
    for lg in loggers:
        lg.addFilter(quiet)
    try:
        vol = read_volume(path)
    except Age2HieError as exc:
        raise ManifestError(f"{path}: cannot be read ({exc})") from exc
    finally:
        for lg in loggers:
            lg.removeFilter(quiet)
    if vol.data.ndim != 3:
        raise ManifestError(f"{path}: expected a 3D volume, got shape {vol.data.shape}")
    return np.asarray(vol.data), vol.affine


def lesion_burden(case: BonbidCase) -> LesionBurden:
    """Read one case's ADC (+ Z-ADC) and lesion mask and measure its lesion burden."""
    if case.label is None:
        raise ManifestError(f"{case.adc}: no lesion mask 3LABEL/{case.case_id}_lesion.mha for case {case.case_id}")
    adc, affine = _read(case.adc)
    label, label_affine = _read(case.label, may_be_empty=True)
    if label.shape != adc.shape or not np.allclose(label_affine, affine, atol=1e-3):
        raise ManifestError(f"{case.label}: the lesion mask's grid (shape {label.shape}) is not the ADC's "
                            f"{case.adc.name} grid (shape {adc.shape}, or a different affine)")
    values = np.unique(label[np.isfinite(label)])
    if not np.isin(values, (0.0, 1.0)).all():
        log.warning("%s: lesion mask holds values %s besides 0/1; every value > 0 counts as lesion", case.label,
                    values[:8].tolist())
    lesion = np.isfinite(label) & (label > 0)
    zadc = None
    if case.zadc is not None:
        zadc, z_affine = _read(case.zadc)
        if zadc.shape != adc.shape or not np.allclose(z_affine, affine, atol=1e-3):
            log.warning("%s: not on the ADC's grid; not used for the brain region", case.zadc)
            zadc = None
    brain, source = brain_region(adc, zadc)
    if source == "adc_otsu":
        log.warning("%s: neither the ADC nor the Z-ADC map has a constant background; the brain is the ADC's "
                    "foreground (Otsu), which can include non-brain tissue: the burden may be understated", case.adc)
    outside = int(np.count_nonzero(lesion & ~brain))
    brain |= lesion
    voxel_ml = float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0
    n_brain = int(np.count_nonzero(brain))
    if n_brain == 0:
        raise ManifestError(f"{case.adc}: no brain voxels found (every voxel is background)")
    brain_ml = n_brain * voxel_ml
    if not PLAUSIBLE_BRAIN_ML[0] <= brain_ml <= PLAUSIBLE_BRAIN_ML[1]:
        log.warning("%s: brain region of %.0f mL is outside the %g-%g mL expected of a newborn; check the mask",
                    case.adc, brain_ml, *PLAUSIBLE_BRAIN_ML)
    return LesionBurden(case.case_id, case.subject_id, case.site, int(np.count_nonzero(lesion)), n_brain, voxel_ml,
                        source, outside)


def lesion_targets(root: str | Path, *, progress: bool = False) -> list[LesionBurden]:
    """The lesion burden of every case of a BONBID-HIE folder (each case needs its 3LABEL mask)."""
    cases = list_bonbid(root)
    missing = [c for c in cases if c.label is None]
    if missing:
        raise ManifestError(f"{Path(root) / '3LABEL'}: no lesion mask for {len(missing)} case(s), e.g. "
                            f"{missing[0].case_id}_lesion.mha; the lesion burden needs one per case")
    from tqdm.auto import tqdm

    return [lesion_burden(c) for c in tqdm(cases, desc="lesion burden", disable=not progress)]


COLUMNS = ("case_id", "subject_id", "site", "lesion_burden", "{target}", "lesion_ml", "brain_ml", "brain_from",
           "lesion_voxels_outside_brain")


def write_targets(rows: Sequence[LesionBurden], path: str | Path, threshold: float = DEFAULT_THRESHOLD) -> Path:
    """Write the target table (CSV, atomically): one row per case, the burden and its 0/1 threshold column."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be a fraction in (0, 1), got {threshold}")
    target = target_column(threshold)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([c.format(target=target) for c in COLUMNS])
    for r in rows:
        writer.writerow([r.case_id, r.subject_id, r.site, f"{r.burden:.6f}", int(r.burden >= threshold),
                         f"{r.lesion_voxels * r.voxel_ml:.3f}", f"{r.brain_voxels * r.voxel_ml:.1f}", r.brain_from,
                         r.lesion_outside_brain])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, buf.getvalue())
    return path
