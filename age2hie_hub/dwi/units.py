"""ADC units: detect the scale of a stored ADC map and convert it to mm^2/s.

Stored ADC maps come as mm^2/s (e.g. 0.0008), 1e-3 mm^2/s (0.8; also written um^2/ms) or, as Siemens stores
integers, 1e-6 mm^2/s (800). Detection uses the median of the positive voxels (tissue and CSF dominate):
in mm^2/s brain ADC lies within [5e-5, 1e-2] (neonatal white matter ~1.6e-3, CSF ~3e-3), so the three
scales give disjoint ranges. A median between ranges is ambiguous: the nearest range (in log scale) is used
and a warning says so. A caller-given unit always wins (with a warning if the values disagree).
"""
from __future__ import annotations

import logging
import math

import numpy as np

from age2hie_hub.errors import DiffusionError
from age2hie_hub.io.volume import Volume

log = logging.getLogger(__name__)

# unit -> factor to mm^2/s
ADC_UNITS: dict[str, float] = {"mm2/s": 1.0, "1e-3mm2/s": 1e-3, "1e-6mm2/s": 1e-6}
_ALIASES = {"mm^2/s": "mm2/s", "1e-3 mm2/s": "1e-3mm2/s", "um2/ms": "1e-3mm2/s", "µm2/ms": "1e-3mm2/s",
            "1e-6 mm2/s": "1e-6mm2/s", "um2/s": "1e-6mm2/s", "µm2/s": "1e-6mm2/s"}
PLAUSIBLE_MM2S = (5e-5, 1e-2)  # typical median of positive ADC voxels, in mm^2/s


def normalise_unit(unit: str) -> str:
    key = unit.strip().replace("²", "2")
    key = _ALIASES.get(key, key)
    if key not in ADC_UNITS:
        raise DiffusionError(f"unknown ADC unit {unit!r}; use one of {', '.join(ADC_UNITS)}")
    return key


SAMPLE_VOXELS = 1 << 18  # enough voxels on a regular stride to pin a median to well under 1 %


def sampled_median(data: np.ndarray, keep: str = "positive") -> float | None:
    """Median of the positive (keep="positive") or non-zero (keep="nonzero") finite voxels; None when none are.

    Unit detection and range warnings need the median to ~1 %, not exactly: it is taken from every k-th voxel
    (at most SAMPLE_VOXELS of them), because a full median, twice per scan, was a third of the preprocessing
    (benchmarks/bench_inference.py; docs/preprocessing.md). Sparse images fall back to every voxel.
    """
    def kept(values: np.ndarray) -> np.ndarray:
        return values[np.isfinite(values) & ((values > 0) if keep == "positive" else (values != 0))]

    flat = data.ravel(order="K")  # no copy for the transposed arrays readers return
    step = max(1, flat.size // SAMPLE_VOXELS)
    values = kept(flat[::step])
    if step > 1 and values.size < 4096:  # a small foreground that the stride may misjudge: every voxel then
        values = kept(flat)
    return float(np.median(values)) if values.size else None


def detect_adc_unit(data: np.ndarray) -> tuple[str, bool]:
    """(unit, confident) from the median of positive finite voxels."""
    return _median_and_unit(data)[1:]


def _median_and_unit(data: np.ndarray) -> tuple[float, str, bool]:
    """(median of the positive finite voxels, unit, confident)."""
    median = sampled_median(data)
    if median is None:
        raise DiffusionError("the ADC map has no positive voxels; its unit cannot be detected")
    lo, hi = PLAUSIBLE_MM2S
    centre = math.sqrt(lo * hi)
    distances = {}
    for unit, factor in ADC_UNITS.items():
        v = median * factor
        if lo <= v <= hi:
            return median, unit, True
        distances[unit] = abs(math.log10(v / centre))
    return median, min(distances, key=distances.get), False


def adc_to_mm2s(volume: Volume, unit: str | None = None) -> tuple[Volume, str, list[str]]:
    """(ADC in mm^2/s, the unit it was read as, warnings).

    ``unit``: the stored unit, one of ``"mm2/s"``, ``"1e-3mm2/s"``, ``"1e-6mm2/s"``; ``None`` uses
    ``metadata["units"]`` when it names one of those, else detects it from the value range.
    """
    return adc_to_mm2s_with_median(volume, unit)[:3]


def adc_to_mm2s_with_median(volume: Volume, unit: str | None = None) -> tuple[Volume, str, list[str], float]:
    """:func:`adc_to_mm2s` and the (sampled) median of the positive voxels in mm^2/s, which the unit check
    measured anyway (prediction's range check needs it too)."""
    src = volume.source or "<in-memory volume>"
    warnings: list[str] = []
    median, detected, confident = _median_and_unit(volume.data)
    given = unit if unit is not None else volume.metadata.get("units")
    if given is not None and (unit is not None or _known(given)):
        chosen = normalise_unit(given)
        if confident and chosen != detected:
            warnings.append(f"{src}: ADC unit given as {chosen} but the values look like {detected}; using {chosen}")
    else:
        chosen = detected
        if not confident:
            warnings.append(f"{src}: ADC unit is ambiguous (median of positive voxels {median:.4g}); assumed "
                            f"{chosen}; pass the unit explicitly if that is wrong")
    for w in warnings:
        log.warning(w)
    factor = ADC_UNITS[chosen]
    out = volume.with_data(volume.data * np.float32(factor), units="mm2/s",
                           warnings=[*volume.metadata.get("warnings", []), *warnings])
    # Scaling by a positive factor keeps the median's rank: the converted map's median, without a second pass.
    return out, chosen, warnings, median * factor


def _known(unit: object) -> bool:
    try:
        normalise_unit(str(unit))
    except DiffusionError:
        return False
    return True
