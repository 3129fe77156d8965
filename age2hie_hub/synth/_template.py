"""The anatomical prior: nilearn's packaged MNI152 2009a template (T1 + GM/WM probability maps), read from
nilearn's installed data folder (nothing is downloaded), plus maps derived from it once per process."""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from age2hie_hub.errors import Age2HieError

log = logging.getLogger(__name__)

_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
# Lateral ventricles lie inside this MNI box (mm); CSF deeper than VENTRICLE_DEPTH_MM from the
# intracranial surface inside it is labelled ventricular.
VENTRICLE_BOX_MM = ((-32.0, 32.0), (-48.0, 36.0), (-6.0, 36.0))
VENTRICLE_DEPTH_MM = 12.0
VENTRICLE_SIGMA_MM = 6.0  # smoothness of the ventricular expansion field
SULCAL_SIGMA_MM = 2.5  # smoothness of the cortical atrophy field
RIBBON_PEAK_MM = 6.0  # the atrophy field is strongest this deep below the intracranial surface
RIBBON_MM = 12.0  # and zero from this depth on
FIELD_STEP = 2  # displacement fields are stored on a 2 mm grid (they are smooth)


def nilearn_data_dir() -> Path:
    """nilearn's packaged data folder, found without importing nilearn (that import is slow)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise Age2HieError(
            "synthetic data needs nilearn's packaged MNI152 template: pip install 'nilearn>=0.10' "
            "(or age2hie-hub[train])"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    missing = [name for name in _FILES.values() if not (folder / name).is_file()]
    if missing:
        raise Age2HieError(f"{folder}: nilearn does not ship {', '.join(missing)}; install nilearn>=0.10")
    return folder


@dataclass(frozen=True)
class Template:
    """Template-space maps on the 1 mm MNI grid (arrays (X, Y, Z) float32 in [0, 1] unless noted).

    t1: T1 normalised so that white matter is 1. gm, wm: tissue probabilities. icv: soft intracranial mask.
    csf: icv - gm - wm (clipped). vent: soft lateral-ventricle mask. nonbrain: t1 outside the intracranial
    space (skull, scalp, fat). affine: voxel -> MNI mm. vent_field, sulcal_field: (3, X', Y', Z') unit
    displacement fields in mm on the FIELD_STEP grid with affine field_affine.
    """

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    icv: np.ndarray
    vent: np.ndarray
    nonbrain: np.ndarray
    affine: np.ndarray
    vent_field: np.ndarray
    sulcal_field: np.ndarray
    field_affine: np.ndarray


def _ball(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2) <= radius**2


def _unit_gradient(mask: np.ndarray, sigma_mm: float) -> np.ndarray:
    """Gradient of the Gaussian-smoothed mask, scaled so a straight edge gives magnitude 1 at the edge."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(mask.astype(np.float32), sigma_mm / FIELD_STEP)
    grad = np.stack(np.gradient(smooth, FIELD_STEP)).astype(np.float32)
    # The derivative of a smoothed unit step peaks at 1 / (sigma sqrt(2 pi)).
    return grad * np.float32(sigma_mm * np.sqrt(2 * np.pi))


def _upsample(coarse: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour upsampling of a FIELD_STEP-strided array back to ``shape``."""
    out = coarse
    for axis in range(3):
        out = np.repeat(out, FIELD_STEP, axis=axis)
    return out[: shape[0], : shape[1], : shape[2]]


@lru_cache(maxsize=1)
def load_template() -> Template:
    """Load and derive the template maps (seconds, once per process: docs/synthetic_data.md)."""
    import nibabel as nib
    from scipy import ndimage

    folder = nilearn_data_dir()
    imgs = {k: nib.load(str(folder / f)) for k, f in _FILES.items()}
    affine = imgs["t1"].affine.astype(np.float64)
    t1, gm, wm = (np.asarray(imgs[k].dataobj, dtype=np.float32) / np.float32(255.0) for k in ("t1", "gm", "wm"))
    brain = np.clip(gm + wm, 0.0, 1.0)
    # Intracranial space: close the brain over sulci and fill the ventricles. Morphology and distances are
    # computed on the 2 mm grid (8x cheaper) and brought back to 1 mm by repetition.
    sl = (slice(None, None, FIELD_STEP),) * 3
    coarse = ndimage.binary_closing(brain[sl] > 0.25, structure=_ball(2), iterations=1)
    coarse = ndimage.binary_fill_holes(ndimage.binary_dilation(coarse, structure=_ball(1)))
    depth_coarse = ndimage.distance_transform_edt(coarse) * FIELD_STEP
    core = _upsample(coarse, t1.shape) | (brain > 0.25)
    depth = _upsample(depth_coarse.astype(np.float32), t1.shape)
    icv = np.clip(ndimage.gaussian_filter(core.astype(np.float32), 0.7), 0.0, 1.0)
    icv = np.maximum(icv, brain)
    csf = np.clip(icv - brain, 0.0, 1.0)
    box = np.ones(t1.shape, bool)
    for a, (lo, hi) in enumerate(VENTRICLE_BOX_MM):
        mm = affine[a, a] * np.arange(t1.shape[a]) + affine[a, 3]  # the template grid is axis-aligned
        inside = ((mm >= lo) & (mm <= hi)).reshape([-1 if b == a else 1 for b in range(3)])
        box &= inside
    vent_core = (csf > 0.5) & box & (depth > VENTRICLE_DEPTH_MM)
    vent = np.where(box & (depth > VENTRICLE_DEPTH_MM - 3), csf, 0.0).astype(np.float32)
    vent *= ndimage.binary_dilation(vent_core, structure=_ball(2))
    wm_level = float(np.median(t1[wm > 0.9]))
    t1n = t1 / np.float32(wm_level)
    nonbrain = (t1n * (1.0 - icv)).astype(np.float32)

    # Displacement fields on a 2 mm grid. Pull-back sampling at x + a*vent_field moves towards the
    # ventricles (they grow); x + b*sulcal_field moves away from tissue near the surface (sulci widen).
    vent_field = _unit_gradient(vent_core[sl], VENTRICLE_SIGMA_MM)
    # Zero at the intracranial surface and rising slowly (a pull of b mm from depth d reaches at most
    # b*d/RIBBON_PEAK_MM outwards, so the skull does not move for b < RIBBON_PEAK_MM); zero from RIBBON_MM.
    ribbon = np.minimum(depth_coarse / RIBBON_PEAK_MM,
                        np.clip((RIBBON_MM - depth_coarse) / (RIBBON_MM - RIBBON_PEAK_MM), 0.0, 1.0))
    ribbon = np.clip(ribbon, 0.0, 1.0).astype(np.float32) * coarse
    sulcal_field = -_unit_gradient(brain[sl] > 0.5, SULCAL_SIGMA_MM) * ribbon
    # Scale each field so its strongest 0.1 % has unit length: an amplitude in mm is then a peak displacement.
    for f in (vent_field, sulcal_field):
        f /= np.float32(np.percentile(np.sqrt((f**2).sum(0)), 99.9))
    field_affine = affine.copy()
    field_affine[:3, :3] *= FIELD_STEP
    log.debug("template loaded from %s (ventricles %.1f mL)", folder, float(vent.sum()) / 1000)
    return Template(
        t1=t1n, gm=gm, wm=wm, csf=csf, icv=icv, vent=vent, nonbrain=nonbrain, affine=affine,
        vent_field=vent_field, sulcal_field=sulcal_field, field_affine=field_affine,
    )
