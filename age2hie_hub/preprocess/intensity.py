"""Intensity schemes, applied on the output grid after resampling.

- ``zscore``: per channel, subtract the foreground mean and divide by the foreground standard deviation;
  voxels outside the foreground become 0.
- ``mean``: per channel, divide by the foreground mean (SFCN's normalisation); needs a positive mean.
- ``adc_fixed``: the first channel (an ADC map in mm^2/s) times ``adc_scale`` (1000 gives 1e-3 mm^2/s, so
  tissue is ~1). Further channels (e.g. a Z-ADC map, already normalised) pass unchanged, so a single scale
  never turns z-scores into thousands.
- ``none``: values as they are.

``clip`` then applies to the channels the scheme scaled (all of them, except under ``adc_fixed``).
The foreground is the first channel's output voxels above ``foreground_threshold`` (raw values), so
statistics describe the tissue the model sees.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from age2hie_hub.errors import VolumeReadError
from age2hie_hub.preprocess.config import PreprocessConfig

# Water at body temperature diffuses at ~3e-3 mm^2/s; a foreground median above this is not in mm^2/s.
_ADC_MM2S_MAX_MEDIAN = 0.05
_ADC_UNITS = {"mm2/s", "mm^2/s", "mm²/s"}


def _name(sources: Sequence[str | None], c: int) -> str:
    src = sources[c] if c < len(sources) else None
    return src or f"channel {c}"


def check_adc_units(values: np.ndarray, units: str | None, source: str) -> None:
    """Refuse ADC maps that are not in mm^2/s: scaling them by ``adc_scale`` would be silently wrong."""
    hint = "convert it with age2hie_hub.dwi.adc_to_mm2s before preprocessing"
    if units is not None and units not in _ADC_UNITS:
        raise VolumeReadError(f"{source}: ADC units are {units!r}, but intensity 'adc_fixed' needs mm2/s; {hint}")
    if units is None and values.size:
        median = float(np.median(values))
        if median > _ADC_MM2S_MAX_MEDIAN:
            raise VolumeReadError(
                f"{source}: foreground median {median:.4g} is far above any ADC in mm2/s (water ~0.003), so the "
                f"map is in other units (1e-3 or 1e-6 mm2/s?); intensity 'adc_fixed' needs mm2/s: {hint}"
            )


def normalize(
    array: np.ndarray,
    mask: np.ndarray,
    config: PreprocessConfig,
    sources: Sequence[str | None] = (),
    units: Sequence[str | None] = (),
) -> tuple[np.ndarray, list[str]]:
    """Apply ``config.intensity`` and ``config.clip`` to ``array`` (C, X, Y, Z) in place; return it and notes."""
    notes: list[str] = []
    scheme = config.intensity
    scaled = [0] if scheme == "adc_fixed" else list(range(array.shape[0]))
    if scheme in ("zscore", "mean") and not mask.any():
        raise VolumeReadError(
            f"{_name(sources, 0)}: no foreground voxels (> {config.foreground_threshold:g}) on the output grid, "
            f"so intensity {scheme!r} is undefined; check that the image is not empty and that "
            "foreground_threshold suits its values"
        )
    for c in scaled:
        channel = array[c]
        if scheme == "zscore":
            values = channel[mask].astype(np.float64)
            mean, std = float(values.mean()), float(values.std())
            if not std > 0:
                raise VolumeReadError(
                    f"{_name(sources, c)}: the foreground has one constant value ({mean:g}), so z-scoring is "
                    "undefined; is this the right image?"
                )
            channel -= mean
            channel /= std
            channel[~mask] = 0.0
            notes.append(f"channel {c}: z-scored within foreground (mean {mean:.4g}, sd {std:.4g})")
        elif scheme == "mean":
            mean = float(channel[mask].astype(np.float64).mean())
            if not mean > 0:
                raise VolumeReadError(
                    f"{_name(sources, c)}: foreground mean is {mean:g}; dividing by the mean needs positive "
                    "intensities (use intensity 'zscore' for maps with negative values)"
                )
            channel /= mean
            notes.append(f"channel {c}: divided by foreground mean {mean:.4g}")
        elif scheme == "adc_fixed":
            check_adc_units(channel[mask], units[c] if c < len(units) else None, _name(sources, c))
            channel *= config.adc_scale
            notes.append(f"channel {c}: ADC x {config.adc_scale:g}")
    if scheme == "adc_fixed" and array.shape[0] > 1:
        notes.append(f"channels 1-{array.shape[0] - 1}: left unscaled (adc_fixed scales the ADC channel only)")
    if config.clip is not None:
        low, high = config.clip
        for c in scaled:
            np.clip(array[c], low, high, out=array[c])
        notes.append(f"clipped to [{low:g}, {high:g}]")
    return array, notes
