"""One synthetic neonatal HIE case: skull-stripped ADC, Z-ADC map, lesion mask and the outcome model.

Anatomy is the MNI152 template scaled to a term newborn's size; tissue gets neonatal ADC values; an injury
pattern (none, punctate white matter, watershed, basal ganglia/thalamus, near-total) lowers ADC in a lesion
whose size is drawn per case; the 2-year outcome is drawn from a logistic model of the lesion burden and
location. All constants are documented in docs/synthetic_data.md.
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
from age2hie_hub.synth.sites import HIE_SITE_WEIGHTS, HIE_SITES, HIESite
from age2hie_hub.synth.t1 import ADULT_VOLUME_FRACTION, reorient

NEONATE_VOLUME_FRACTION = 0.33  # term brain ~0.33 of the adult's (~400 mL)
NEONATE_VOLUME_SD = 0.10
BRAIN_CENTRE_MNI = np.array([0.0, -18.0, 10.0])
POSE_ROTATION_SD_DEG = 6.0
POSE_TRANSLATION_SD_MM = 4.0

# Healthy term-neonate ADC, 1e-3 mm^2/s: (mean, between-subject SD). Unmyelinated WM is higher than GM.
TISSUE_ADC = {"wm": (1.45, 0.08), "cortex": (1.09, 0.06), "deep_gm": (1.00, 0.05), "csf": (3.0, 0.10)}

# Soft ellipsoids in MNI mm, mirrored left/right: (|x|, y, z) centre, radii.
REGIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "thalamus": ((11.0, -18.0, 7.0), (7.0, 11.0, 8.0)),
    "lentiform": ((22.0, 0.0, 1.0), (7.0, 13.0, 9.0)),
    "caudate": ((13.0, 12.0, 10.0), (5.0, 8.0, 8.0)),
    "plic": ((21.0, -10.0, 5.0), (4.0, 8.0, 7.0)),
    "perirolandic": ((38.0, -22.0, 52.0), (14.0, 12.0, 14.0)),
    "watershed_anterior": ((25.0, 28.0, 38.0), (14.0, 26.0, 22.0)),
    "watershed_posterior": ((32.0, -62.0, 30.0), (16.0, 22.0, 22.0)),
}
PATTERNS = ("none", "punctate_wm", "watershed", "bgt", "near_total")
# Lesion size as a fraction of brain tissue volume: ("log", lo, hi) log-uniform or ("lin", lo, hi) uniform.
LESION_FRACTION = {
    "none": ("lin", 0.0, 0.0),
    "punctate_wm": ("log", 0.0005, 0.005),
    "watershed": ("log", 0.005, 0.12),
    "bgt": ("log", 0.01, 0.10),
    "near_total": ("lin", 0.25, 0.60),
}
ADC_REDUCTION = (0.35, 0.60)  # peak fractional ADC drop in a lesion (acute restricted diffusion)
SCAN_DAY_WEIGHTS = (3, 8, 10, 10, 9, 7, 5, 4, 3, 2, 2, 1, 1, 1)  # postnatal days 1..14
# Outcome: logit P(adverse) = intercept + b_burden*ln(1 + lesion %) + b_deep*[deep GM injured]
#          + b_total*[near-total] + clinical, clinical ~ N(0, CLINICAL_SD) (unseen in the images).
OUTCOME_COEF = {"burden": 1.1, "deep_gm": 0.9, "near_total": 0.8}
CLINICAL_SD = 1.0
TARGET_ADVERSE_RATE = 0.47
ZMAP_FWHM_MM = 2.0
ZMAP_CLIP = 10.0


def pseudonormalisation(day: int) -> float:
    """Fraction of the acute ADC drop still visible on postnatal ``day``: 1 to day 5, then fading ~9 %/day."""
    return float(np.clip(1.0 - 0.09 * (day - 5), 0.3, 1.0))


def draw_lesion_fraction(rng: np.random.Generator, pattern: str) -> float:
    kind, lo, hi = LESION_FRACTION[pattern]
    if hi <= 0:
        return 0.0
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))) if kind == "log" else rng.uniform(lo, hi))


def outcome_logit(lesion_fraction: float | np.ndarray, pattern, intercept: float) -> np.ndarray:
    """The outcome model's linear predictor without the clinical term (vectorised over cases)."""
    pattern = np.asarray(pattern)
    deep = np.isin(pattern, ("bgt", "near_total")).astype(float)
    total = (pattern == "near_total").astype(float)
    return (intercept + OUTCOME_COEF["burden"] * np.log1p(100.0 * np.asarray(lesion_fraction, dtype=float))
            + OUTCOME_COEF["deep_gm"] * deep + OUTCOME_COEF["near_total"] * total)


@lru_cache(maxsize=16)
def calibrate_intercept(mix: tuple[tuple[str, float], ...], target: float = TARGET_ADVERSE_RATE) -> float:
    """Outcome intercept that gives ``target`` adverse rate for a pattern mix ((pattern, probability), ...).

    Monte Carlo over 20,000 latent cases with a fixed seed (deterministic), then bisection.
    """
    if not 0.0 < target < 1.0:
        raise ValueError(f"adverse rate must be within (0, 1), got {target}")
    rng = np.random.default_rng(20240)
    names = [m[0] for m in mix]
    probs = np.array([m[1] for m in mix], dtype=float)
    patterns = rng.choice(names, size=20000, p=probs / probs.sum())
    frac = np.zeros(patterns.size)
    for name in names:
        sel = patterns == name
        frac[sel] = [draw_lesion_fraction(rng, name) for _ in range(int(sel.sum()))]
    clinical = rng.normal(0.0, CLINICAL_SD, patterns.size)
    base = outcome_logit(frac, patterns, 0.0) + clinical
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        rate = float(np.mean(1.0 / (1.0 + np.exp(-(base + mid)))))
        lo, hi = (mid, hi) if rate < target else (lo, mid)
    return (lo + hi) / 2


def cohort_mix(sites: list[HIESite], weights: list[float]) -> tuple[tuple[str, float], ...]:
    """The pattern mix of a whole cohort: site mixes weighted by the share of cases from each site."""
    total = {p: 0.0 for p in PATTERNS}
    for site, w in zip(sites, weights):
        for p, q in site.pattern_mix.items():
            total[p] += w * q / sum(site.pattern_mix.values())
    return tuple((p, round(q, 12)) for p, q in total.items())


@lru_cache(maxsize=1)
def _tissue() -> torch.Tensor:
    t = load_template()
    return torch.from_numpy(np.stack([t.gm, t.wm, t.csf, t.icv, t.vent]))


@lru_cache(maxsize=1)
def _regions() -> torch.Tensor:
    """The REGIONS ellipsoids (soft, in [0, 1]) and a left/right sign channel on the template's 2 mm grid:
    they are smooth, so cases sample them on a coarse lattice and upsample."""
    t = load_template()
    shape = t.vent_field.shape[1:]
    a = t.field_affine  # axis-aligned
    x, y, z = (torch.from_numpy((a[i, i] * np.arange(shape[i]) + a[i, 3]).astype(np.float32)) for i in range(3))
    x, y, z = x[:, None, None], y[None, :, None], z[None, None, :]
    out = []
    for (cx, cy, cz), (rx, ry, rz) in REGIONS.values():
        r = torch.sqrt(((x.abs() - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2)
        out.append(torch.sigmoid((1.0 - r) / 0.15))
    out.append(torch.tanh(x / 4.0).expand(*shape))
    return torch.stack([o.expand(*shape) for o in out]).contiguous()


def pattern_region(pattern: str, region: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """Where a pattern's injury can lie, in [0, 1], before restriction to tissue (None: anywhere in the WM
    for punctate lesions, nowhere for 'none')."""
    if pattern in ("none", "punctate_wm"):
        return None
    deep = torch.maximum(torch.maximum(region["thalamus"], region["lentiform"]), region["caudate"])
    bgt = torch.maximum(torch.maximum(deep, 0.8 * region["plic"]), 0.6 * region["perirolandic"])
    watershed = torch.maximum(region["watershed_anterior"], region["watershed_posterior"])
    if pattern == "watershed":
        return watershed
    if pattern == "bgt":
        return bgt
    return torch.maximum(torch.maximum(bgt, watershed), torch.full_like(bgt, 0.7))  # near_total


def _zmap(adc: np.ndarray, normal: np.ndarray, mask: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Z-ADC as in BONBID-HIE: (smoothed case - normative mean) / normative SD, clipped to +-10, in the mask."""
    from scipy import ndimage

    sigma = [ZMAP_FWHM_MM / 2.3548 / s for s in spacing]
    smooth = ndimage.gaussian_filter(adc, sigma)
    mean = ndimage.gaussian_filter(normal, sigma)
    sd = 0.08 * mean + 0.03e-3  # normative SD: 8 % of the mean plus a floor
    z = np.clip((smooth - mean) / sd, -ZMAP_CLIP, ZMAP_CLIP)
    return np.where(mask, z, 0.0).astype(np.float32)


def synth_hie_case(
    rng: np.random.Generator,
    site: str | HIESite = "BCH",
    *,
    pattern: str | None = None,
    lesion_fraction: float | None = None,
    intercept: float | None = None,
    spacing: tuple[float, float, float] | None = None,
    n_slices: int | None = None,
) -> tuple[Volume, Volume, Volume, dict[str, Any]]:
    """One case: (ADC in the site's stored units, Z-ADC, lesion mask 0/1, truth).

    ``pattern``/``lesion_fraction`` fix the injury (default: drawn from the site's case mix); ``intercept``
    is the outcome model's (default: calibrated to a 47 % adverse rate for BONBID-HIE's two-site mix);
    ``spacing``/``n_slices`` fix the grid (default: drawn from the site's ranges). Volumes are in LPS order
    on disk as MetaImage files are; affines are RAS mm as everywhere in the package.
    """
    site = HIE_SITES[site] if isinstance(site, str) else site
    names = list(site.pattern_mix)
    probs = np.array([site.pattern_mix[k] for k in names], dtype=float)
    pattern = pattern or str(rng.choice(names, p=probs / probs.sum()))
    if pattern not in PATTERNS:
        raise ValueError(f"unknown injury pattern {pattern!r}; use one of {', '.join(PATTERNS)}")
    target = draw_lesion_fraction(rng, pattern) if lesion_fraction is None else float(lesion_fraction)
    if intercept is None:
        intercept = calibrate_intercept(cohort_mix(list(HIE_SITES.values()), list(HIE_SITE_WEIGHTS.values())))
    day = int(rng.choice(np.arange(1, 15), p=np.array(SCAN_DAY_WEIGHTS) / sum(SCAN_DAY_WEIGHTS)))
    sex = str(rng.choice(["F", "M"]))
    scale = (ADULT_VOLUME_FRACTION * NEONATE_VOLUME_FRACTION * math.exp(rng.normal(0, NEONATE_VOLUME_SD))) ** (1 / 3)
    rot = rng.normal(0.0, POSE_ROTATION_SD_DEG, 3).clip(-20, 20)
    shift = rng.normal(0.0, POSE_TRANSLATION_SD_MM, 3).clip(-12, 12)
    tissue_adc = {k: float(rng.normal(m, s)) for k, (m, s) in TISSUE_ADC.items()}
    peak_drop = float(rng.uniform(*ADC_REDUCTION))
    asymmetry = float(rng.normal(0.0, 0.15))

    if spacing is None:
        inplane = float(rng.uniform(*site.inplane_mm))
        thick = float(rng.uniform(*site.slice_mm))
        spacing = (inplane, inplane, thick)
    spacing = tuple(float(s) for s in spacing)
    fov = float(rng.uniform(*site.fov_mm))
    if n_slices is None:
        n_slices = int(np.clip(round(rng.uniform(*site.coverage_mm) / spacing[2]), *site.slices))
    matrix = int(2 * round(fov / spacing[0] / 2))
    shape = (matrix, int(2 * round(fov / spacing[1] / 2)), int(n_slices))

    head_to_world = np.eye(4)
    head_to_world[:3, :3] = _grid.rotation(rot) * scale
    head_to_world[:3, 3] = shift
    world_to_mni = np.linalg.inv(head_to_world)
    affine = _grid.grid_affine(shape, spacing, head_to_world[:3, :3] @ BRAIN_CENTRE_MNI + shift)
    tmpl = load_template()
    grid = _grid.pullback_grid(shape, np.linalg.inv(tmpl.affine) @ world_to_mni @ affine, tmpl.gm.shape)
    gm, wm, csf, icv, vent = _grid.sample(_tissue(), grid)
    counts = _grid.coarse_counts(shape)
    to_fields = np.linalg.inv(tmpl.field_affine) @ world_to_mni @ _grid.lattice_affine(affine, shape, counts)
    coarse = _grid.sample(_regions(), _grid.pullback_grid(counts, to_fields, tmpl.vent_field.shape[1:]))
    region = dict(zip([*REGIONS, "side"], coarse))
    deep = torch.maximum(torch.maximum(region["thalamus"], region["lentiform"]), region["caudate"])
    where = pattern_region(pattern, region)
    channels = [deep, region["side"]] + ([where] if where is not None else [])
    deep, side, *rest = _grid.upsample(torch.stack(channels), shape)

    def tissue_map(values: dict[str, float]) -> torch.Tensor:
        grey = deep * values["deep_gm"] + (1 - deep) * values["cortex"]
        return gm * grey + wm * values["wm"] + csf * values["csf"]

    healthy = tissue_map(tissue_adc)  # 1e-3 mm^2/s
    normal = tissue_map({k: m for k, (m, _) in TISSUE_ADC.items()})  # the normative atlas's mean

    # Injury: the top `target` fraction of brain voxels by a textured pattern score become the lesion.
    brain = (gm + wm) > 0.5
    texture = _grid.smooth_field(rng, shape, nodes=16 if pattern == "punctate_wm" else 6)[0]
    side = (1.0 + asymmetry * side).clamp(min=0.2)  # one hemisphere worse than the other
    if pattern == "none":
        weight = torch.zeros(shape)
    elif pattern == "punctate_wm":
        weight = wm
    else:
        weight = rest[0] * (gm + wm).clamp(0, 1)
    score = weight * torch.exp(0.35 * texture) * side
    eligible = brain & (score > 0.05)
    n_brain = int(brain.sum())
    k = min(int(round(target * n_brain)), int(eligible.sum()))
    drop = torch.zeros(shape)
    lesion = torch.zeros(shape, dtype=torch.bool)
    if k > 0:
        values = score[eligible].numpy()
        thr = float(np.partition(values, values.size - k)[values.size - k])
        lesion = eligible & (score >= thr)
        top = float(values.max())
        core = ((score - thr) / max(top - thr, 1e-6) * 3.0).clamp(0, 1)  # deeper inside: stronger drop
        rim = ((score / thr - 0.85) / 0.15).clamp(0, 1) * 0.4  # a thin penumbra just outside
        drop = torch.where(lesion, 0.8 + 0.2 * core, rim * (score > 0.05)) * peak_drop
    visible = pseudonormalisation(day)
    adc = healthy * (1.0 - drop * visible)
    noise = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
    adc = (adc * (1.0 + site.noise * noise)).clamp(min=0.0)

    # Skull stripping keeps brain tissue and the ventricles, and most of the extra-axial CSF goes.
    mask = ((icv > 0.5) & (((gm + wm) > 0.3) | (vent > 0.3))).numpy()
    adc_mm2s = adc.numpy() * 1e-3
    stored = np.where(mask, adc_mm2s * site.adc_scale, 0.0).astype(np.float32)
    if site.round_values:
        stored = np.round(stored)
    zmap = _zmap(adc_mm2s.astype(np.float32), normal.numpy() * 1e-3, mask, spacing)
    lesion_np = lesion.numpy() & mask

    vox_ml = float(np.prod(spacing)) / 1000.0
    brain_ml = n_brain * vox_ml
    lesion_ml = float(lesion_np.sum()) * vox_ml
    frac = lesion_ml / brain_ml if brain_ml else 0.0
    clinical = float(rng.normal(0.0, CLINICAL_SD))
    logit = float(outcome_logit(frac, pattern, intercept)) + clinical
    prob = 1.0 / (1.0 + math.exp(-logit))
    outcome = int(rng.uniform() < prob)
    truth: dict[str, Any] = {
        "site": site.name,
        "sex": sex,
        "scan_day": day,
        "pattern": pattern,
        "lesion_fraction_target": target,
        "lesion_fraction": frac,
        "lesion_volume_ml": lesion_ml,
        "brain_volume_ml": brain_ml,
        "intracranial_volume_ml": float(mask.sum()) * vox_ml,
        "deep_gm_injured": bool(pattern in ("bgt", "near_total") and lesion_ml > 0),
        "peak_adc_drop": peak_drop,
        "pseudonormalisation": visible,
        "lesion_mean_adc_mm2s": float(adc_mm2s[lesion_np].mean()) if lesion_np.any() else None,
        "tissue_adc_1e-3mm2s": tissue_adc,
        "adc_scale": site.adc_scale,
        "stored_mean_in_mask": float(stored[mask].mean()),
        "head_scale": scale,
        "rotation_deg": rot.tolist(),
        "translation_mm": shift.tolist(),
        "spacing": list(spacing),
        "shape": list(shape),
        "outcome_intercept": intercept,
        "clinical_term": clinical,
        "adverse_probability": prob,
        "outcome": outcome,
    }
    meta = {"synthetic": True}
    out = []
    # No unit tag on the ADC: real BONBID-HIE files carry none, so readers must cope (truth has adc_scale).
    for data, extra in ((stored, {"modality": "ADC"}),
                        (zmap, {"modality": "Z-ADC"}),
                        (lesion_np.astype(np.float32), {"modality": "lesion"})):
        d, a = reorient(data, affine, "LPS")
        out.append(Volume(np.ascontiguousarray(d), a, {**meta, **extra}))
    return out[0], out[1], out[2], truth
