"""Acquisition sites: what differs between scanners (voxel size, contrast, scaling, noise, bias, orientation).

These are plain data. The defaults are documented in docs/synthetic_data.md; pass your own to the cohort
functions to change them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

ORIENTATIONS = ("RAS", "LAS", "LPS")


@dataclass(frozen=True)
class T1Site:
    """A T1 scanner. Intensities are relative to adult white matter = 1 before ``gain`` scales them.

    gm_wm_contrast scales the (WM - GM) difference; csf_level scales the CSF intensity; noise is the Rician
    noise SD as a fraction of adult WM; bias_sd is the SD of the log bias field; orientation is the voxel
    axis order stored on disk.
    """

    name: str
    spacing: tuple[float, float, float] = (1.5, 1.5, 1.5)
    fov_mm: tuple[float, float, float] = (192.0, 228.0, 192.0)
    gain: float = 1000.0
    gm_wm_contrast: float = 1.0
    csf_level: float = 1.0
    noise: float = 0.03
    bias_sd: float = 0.10
    orientation: str = "RAS"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HIESite:
    """A neonatal DWI site as in BONBID-HIE.

    adc_scale: stored value = ADC in mm^2/s times adc_scale (BCH stores 1e-6 mm^2/s units; MGH's stored
    values run higher). inplane_mm, slice_mm, coverage_mm: ranges drawn per case; the slice count is
    coverage / slice thickness clipped to ``slices``. pattern_mix: probabilities of the injury patterns
    (the case mix). round_values: store integers (as the scanner did) or floats.
    """

    name: str
    adc_scale: float
    inplane_mm: tuple[float, float]
    slice_mm: tuple[float, float]
    coverage_mm: tuple[float, float]
    fov_mm: tuple[float, float]
    pattern_mix: dict[str, float]
    slices: tuple[int, int] = (23, 60)
    noise: float = 0.04
    round_values: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


T1_SITES: dict[str, T1Site] = {
    "A": T1Site("A", spacing=(1.5, 1.5, 1.5), gain=900.0, gm_wm_contrast=1.0, noise=0.03, bias_sd=0.10),
    "B": T1Site("B", spacing=(2.0, 2.0, 2.0), gain=1400.0, gm_wm_contrast=0.85, csf_level=1.3, noise=0.045,
                bias_sd=0.20, orientation="LAS"),
    "C": T1Site("C", spacing=(1.6, 1.6, 2.0), gain=600.0, gm_wm_contrast=1.15, csf_level=0.8, noise=0.025,
                bias_sd=0.15, orientation="LPS"),
}

# Case mixes: BCH's referrals are sicker (72 cases, 58 % adverse), MGH's milder (84 cases, 37 % adverse).
HIE_SITES: dict[str, HIESite] = {
    "BCH": HIESite(
        "BCH", adc_scale=1.0e6, inplane_mm=(0.7, 1.25), slice_mm=(2.2, 3.0), coverage_mm=(80.0, 130.0),
        fov_mm=(130.0, 160.0),
        pattern_mix={"none": 0.16, "punctate_wm": 0.16, "watershed": 0.30, "bgt": 0.24, "near_total": 0.14},
        noise=0.04, round_values=True,
    ),
    "MGH": HIESite(
        "MGH", adc_scale=1.43e6, inplane_mm=(1.2, 2.0), slice_mm=(2.6, 3.0), coverage_mm=(69.0, 110.0),
        fov_mm=(140.0, 180.0),
        pattern_mix={"none": 0.30, "punctate_wm": 0.22, "watershed": 0.28, "bgt": 0.13, "near_total": 0.07},
        noise=0.05, round_values=False,
    ),
}
# BONBID-HIE's site sizes, used to split a cohort between sites by default.
HIE_SITE_WEIGHTS = {"BCH": 72 / 156, "MGH": 84 / 156}


def resolve_t1_sites(sites: "list[str | T1Site] | tuple[str | T1Site, ...] | None") -> list[T1Site]:
    return _resolve(sites, T1_SITES, T1Site)


def resolve_hie_sites(sites: "list[str | HIESite] | tuple[str | HIESite, ...] | None") -> list[HIESite]:
    return _resolve(sites, HIE_SITES, HIESite)


def _resolve(sites, table, kind):
    if sites is None:
        return list(table.values())
    out = []
    for s in sites:
        if isinstance(s, kind):
            out.append(s)
        elif isinstance(s, str) and s in table:
            out.append(table[s])
        else:
            raise ValueError(f"unknown site {s!r}; use one of {', '.join(table)} or a {kind.__name__}")
    if not out:
        raise ValueError("at least one site is needed")
    return out
