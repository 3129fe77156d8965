"""One synthetic lifespan T1 volume: the MNI152 template, deformed and re-contrasted by age.

Every effect is a small documented function of age (docs/synthetic_data.md); ``synth_t1`` draws a subject's
parameters from them, builds the image on the site's grid by one pull-back of the template and returns the
ground truth it used.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from age2hie_hub.io import Volume
from age2hie_hub.synth import _grid
from age2hie_hub.synth._template import load_template
from age2hie_hub.synth.sites import T1_SITES, T1Site

# The MNI152 2009a template's brain (GM + WM) is ~1680 mL; an average adult's is ~1200 mL.
ADULT_VOLUME_FRACTION = 0.715
SEX_VOLUME = {"F": 0.955, "M": 1.045}  # ~9 % larger intracranial volume in males
INDIVIDUAL_VOLUME_SD = 0.08  # log-normal SD of head volume between people of one age and sex
HEAD_CENTRE_MNI = np.array([0.0, -18.0, 18.0])  # middle of the template head, the output FOV's centre
POSE_ROTATION_SD_DEG = 4.0
POSE_TRANSLATION_SD_MM = 6.0


def growth_volume_fraction(age: float) -> float:
    """Brain volume as a fraction of the adult's: ~0.33 at birth, 0.70 at 1 y, 0.84 at 2 y, 0.94 at 6 y."""
    return 1.0 - 0.52 * math.exp(-age / 0.9) - 0.15 * math.exp(-age / 6.0)


def myelination(age: float) -> float:
    """0 at birth -> 1 in adults; ~0.45 at 8 months (the T1 'isointense' phase), ~0.85 at 3 y."""
    return 1.0 - 0.8 * math.exp(-age / 1.0) - 0.2 * math.exp(-age / 4.0)


def ventricle_expansion_mm(age: float) -> float:
    """Peak outward displacement of the lateral ventricles' wall: 0 before 20 y, accelerating to 5 mm at 97."""
    return 5.0 * (max(age - 20.0, 0.0) / 77.0) ** 2


def sulcal_atrophy_mm(age: float) -> float:
    """Peak cortical retreat from the intracranial surface (sulcal CSF widening, GM thinning): from 7 y on,
    0.2 mm per decade, plus an acceleration after 60 (~2.4 mm at 97)."""
    return 0.02 * max(age - 7.0, 0.0) + 0.0004 * max(age - 60.0, 0.0) ** 2


def tissue_intensities(age: float) -> dict[str, float]:
    """T1 intensities relative to adult WM. Unmyelinated neonatal WM is darker than GM (contrast inversion);
    WM brightens with myelination, then dims with age, and the GM/WM contrast shrinks in old age."""
    m = myelination(age)
    wm = 0.45 + 0.55 * m - 0.0025 * max(age - 40.0, 0.0)
    gm = 0.62 + 0.06 * math.exp(-age / 1.0) + 0.0010 * max(age - 30.0, 0.0)
    return {"gm": gm, "wm": wm, "csf": 0.15}


def brain_age_gap_sd(age: float) -> float:
    """SD of the latent 'biological minus chronological age' (brain-age gap): small in infants, 3.5 y in adults."""
    return min(3.5, 0.02 + 0.08 * age)


@lru_cache(maxsize=1)
def _tensors() -> dict[str, torch.Tensor]:
    t = load_template()
    return {
        "tissue": torch.from_numpy(np.stack([t.gm, t.wm, t.csf, t.nonbrain])),
        "truth": torch.from_numpy(np.stack([t.gm, t.wm, t.csf, t.vent, t.icv])),
        "fields": torch.from_numpy(np.concatenate([t.vent_field, t.sulcal_field])),
    }


def draw_t1_parameters(rng: np.random.Generator, age: float, sex: str) -> dict[str, Any]:
    """A subject's generating parameters (the ground truth except measured volumes)."""
    if sex not in SEX_VOLUME:
        raise ValueError(f"sex must be 'F' or 'M', got {sex!r}")
    if not 0 <= age <= 120:
        raise ValueError(f"age must be within 0-120 years, got {age}")
    gap = float(rng.normal(0.0, brain_age_gap_sd(age)))
    bio = max(age + gap, 0.0)
    volume = ADULT_VOLUME_FRACTION * growth_volume_fraction(bio) * SEX_VOLUME[sex]
    volume *= math.exp(rng.normal(0.0, INDIVIDUAL_VOLUME_SD))
    tissue = tissue_intensities(bio)
    tissue = {k: v * math.exp(rng.normal(0.0, 0.02)) for k, v in tissue.items()}
    return {
        "age": float(age),
        "sex": sex,
        "biological_age": bio,
        "brain_age_gap": bio - age,
        "head_scale": volume ** (1.0 / 3.0),
        # individual variation: ventricles +-0.5 mm at any age, effects +-25 % / 20 %
        "ventricle_expansion_mm": ventricle_expansion_mm(bio) * math.exp(rng.normal(0.0, 0.25))
        + float(rng.normal(0.0, 0.5)),
        "sulcal_atrophy_mm": sulcal_atrophy_mm(bio) * math.exp(rng.normal(0.0, 0.2)),
        "intensity": tissue,
        "rotation_deg": rng.normal(0.0, POSE_ROTATION_SD_DEG, 3).clip(-15, 15).tolist(),
        "translation_mm": rng.normal(0.0, POSE_TRANSLATION_SD_MM, 3).clip(-20, 20).tolist(),
        "gain": math.exp(rng.normal(0.0, 0.05)),
    }


def synth_t1(
    rng: np.random.Generator,
    age: float,
    sex: str,
    site: str | T1Site = "A",
    *,
    spacing: tuple[float, float, float] | None = None,
) -> tuple[Volume, dict[str, Any]]:
    """One synthetic T1 (RAS-mm affine, values like a scanner's integers) and its ground truth.

    ``spacing`` overrides the site's voxel size. The truth holds the generating parameters and the tissue
    volumes (mL) of the generated head, measured on the deformed template maps.
    """
    site = T1_SITES[site] if isinstance(site, str) else site
    spacing = tuple(float(s) for s in (spacing or site.spacing))
    p = draw_t1_parameters(rng, age, sex)
    p["site"] = site.name
    tmpl = load_template()
    tens = _tensors()

    rot = _grid.rotation(np.asarray(p["rotation_deg"]))
    s = p["head_scale"]
    head_to_world = np.eye(4)
    head_to_world[:3, :3] = rot * s
    head_to_world[:3, 3] = p["translation_mm"]
    world_to_mni = np.linalg.inv(head_to_world)
    shape = tuple(max(8, int(round(f / d))) for f, d in zip(site.fov_mm, spacing))
    affine = _grid.grid_affine(shape, spacing, head_to_world[:3, :3] @ HEAD_CENTRE_MNI + head_to_world[:3, 3])

    # Pull-back: output voxel -> MNI point -> displaced by the age fields (smooth: computed on a 2x coarser
    # lattice and upsampled) -> template value.
    counts = _grid.coarse_counts(shape)
    coarse_affine = _grid.lattice_affine(affine, shape, counts)
    to_field = np.linalg.inv(tmpl.field_affine) @ world_to_mni
    field = _grid.sample(tens["fields"], _grid.pullback_grid(counts, to_field @ coarse_affine, tmpl.vent_field.shape[1:]))
    disp = p["ventricle_expansion_mm"] * field[:3] + p["sulcal_atrophy_mm"] * field[3:]  # mm == template voxels
    to_tmpl = np.linalg.inv(tmpl.affine) @ world_to_mni
    coarse_grid = _grid.pullback_grid(counts, to_tmpl @ coarse_affine, tmpl.gm.shape, disp)
    grid = _grid.pullback_grid(shape, to_tmpl @ affine, tmpl.gm.shape, _grid.upsample(disp, shape))

    it = p["intensity"]
    gm = it["wm"] - (it["wm"] - it["gm"]) * site.gm_wm_contrast
    weights = torch.tensor([gm, it["wm"], it["csf"] * site.csf_level, 1.0], dtype=torch.float32)
    mixed = torch.einsum("c,cxyz->xyz", weights, tens["tissue"])[None]  # sampling is linear: mix first
    image = _grid.sample(mixed, grid)[0]
    bias = torch.exp(site.bias_sd * _grid.smooth_field(rng, shape, nodes=4)[0])
    sigma = site.noise
    n1 = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
    n2 = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
    image = torch.sqrt((image * bias + sigma * n1) ** 2 + (sigma * n2) ** 2)  # Rician magnitude noise
    data = torch.round(image * (site.gain * p["gain"])).numpy()

    # Ground-truth volumes on the coarse lattice (its voxel volume accounts for the coarser spacing).
    truth_maps = _grid.sample(tens["truth"], coarse_grid).double().sum(dim=(1, 2, 3)).numpy()
    coarse_spacing = [d * (n - 1) / (c - 1) for d, n, c in zip(spacing, shape, counts)]
    ml = float(np.prod(coarse_spacing)) / 1000.0
    for name, value in zip(("gm_ml", "wm_ml", "csf_ml", "ventricle_ml", "icv_ml"), truth_maps):
        p[name] = float(value) * ml
    p["spacing"] = list(spacing)
    p["shape"] = list(shape)
    data, affine = reorient(data, affine, site.orientation)
    p["orientation"] = site.orientation
    meta = {"modality": "T1w", "synthetic": True}
    return Volume(np.ascontiguousarray(data), affine, meta), p


def reorient(data: np.ndarray, affine: np.ndarray, code: str) -> tuple[np.ndarray, np.ndarray]:
    """Flip an RAS-ordered array so its axes run as ``code`` says (e.g. 'LAS': first axis right-to-left)."""
    affine = affine.copy()
    for axis, (want, ras) in enumerate(zip(code, "RAS")):
        if want != ras:
            data = np.flip(data, axis=axis)
            n = data.shape[axis]
            affine[:3, 3] = affine[:3, 3] + affine[:3, axis] * (n - 1)
            affine[:3, axis] = -affine[:3, axis]
    return data, affine
