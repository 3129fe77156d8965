"""The preprocessing config: plain data that travels inside every checkpoint's config.json."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from age2hie_hub._config import check_keys, to_plain

# center: the field of view's centre; foreground: the centre of the foreground's bounding box; brain: the brain
# of a whole-head scan, placed from the head's outline (see PreprocessConfig.brain_offset and crop.brain_anchor).
CROPS = ("center", "foreground", "brain")
# zscore: z-score within the foreground; mean: divide by the foreground mean (as SFCN does);
# adc_fixed: ADC in mm^2/s times `adc_scale`, clipped to `clip`; none: values as they are.
INTENSITIES = ("zscore", "mean", "adc_fixed", "none")
INTERPOLATIONS = ("linear", "nearest", "bspline")
FOREGROUNDS = ("threshold", "otsu")
DEFAULTS = {"spacing": [2.0, 2.0, 2.0], "shape": [64, 64, 48]}  # examples for error messages
# What a saved config (a checkpoint's config.json) means when it lacks a field that was added later: the
# behaviour from before the field existed, which may differ from the default a new config gets.
# Read saved configs with PreprocessConfig.from_saved; training configs (new models) use from_dict.
SAVED_BEFORE_FIELD = {"antialias": False}


@dataclass(frozen=True)
class PreprocessConfig:
    orientation: str = "RAS"
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0)  # output voxel size, mm
    shape: tuple[int, int, int] = (64, 64, 48)  # output grid, voxels (X, Y, Z) after orientation
    crop: str = "foreground"
    intensity: str = "zscore"
    adc_scale: float = 1000.0  # adc_fixed: mm^2/s -> 1e-3 mm^2/s units, so tissue is ~1
    clip: tuple[float, float] | None = None  # applied after intensity scaling
    interpolation: str = "linear"
    channels: int = 1  # number of input volumes stacked channels-first (ADC [+ Z-ADC])
    foreground_threshold: float = 0.0  # voxels > threshold (before scaling) are foreground
    # "threshold": foreground is value > foreground_threshold (skull-stripped scans, zero background);
    # "otsu": value > max(foreground_threshold, Otsu level of the positive voxels), for scans whose
    # background is noise (T1 with the head, scanner ADC maps) so the crop centres on the head.
    foreground: str = "threshold"
    # crop "brain": box centre = anchor + brain_offset (mm, R/A/S). The anchor is the R/A centroid of the
    # foreground's top 80 mm and the foreground's top: on a whole-head scan (use foreground "otsu" there; the
    # head outline then goes down to half the Otsu level) the vertex and the cranium, so the neck and face do
    # not move it. None: (0, 0, -0.42 x the A-P extent of that top part), ~82 mm below an adult's vertex and
    # proportionally less for a smaller head or a skull-stripped brain. A model stores the offset measured on
    # its training labels (preprocess.fit_brain_offset) instead. Prediction needs no labels either way.
    brain_offset: tuple[float, float, float] | None = None
    # Smooth each axis the output samples more coarsely than the input (Gaussian, sigma = sqrt(r^2 - 1) / 2
    # input voxels for a step ratio r > 1) before sampling, so detail finer than the output grid cannot alias
    # into it. New configs: on. A saved config without the key: off (see SAVED_BEFORE_FIELD).
    antialias: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing", _triple("spacing", self.spacing, float))
        object.__setattr__(self, "shape", _triple("shape", self.shape, int))
        if self.clip is not None:
            object.__setattr__(self, "clip", _numbers("clip", self.clip, 2))
        if self.orientation != "RAS":
            raise ValueError(f"orientation must be 'RAS', got {self.orientation!r}")
        if min(self.spacing) <= 0:
            raise ValueError(f"spacing must be three positive numbers (mm), got {self.spacing}")
        if min(self.shape) <= 0:
            raise ValueError(f"shape must be three positive integers, got {self.shape}")
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {self.crop!r}")
        if self.intensity not in INTENSITIES:
            raise ValueError(f"intensity must be one of {INTENSITIES}, got {self.intensity!r}")
        if self.foreground not in FOREGROUNDS:
            raise ValueError(f"foreground must be one of {FOREGROUNDS}, got {self.foreground!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if isinstance(self.channels, bool) or not isinstance(self.channels, (int, np.integer)) or self.channels < 1:
            raise ValueError(f"channels must be an integer >= 1, got {self.channels!r}")
        object.__setattr__(self, "channels", int(self.channels))
        if self.clip is not None and self.clip[0] >= self.clip[1]:
            raise ValueError(f"clip must be (low, high) with low < high, got {self.clip}")
        adc_scale = _scalar("adc_scale", self.adc_scale)
        if adc_scale <= 0:
            raise ValueError(f"adc_scale must be a positive number, got {self.adc_scale!r}")
        object.__setattr__(self, "adc_scale", adc_scale)
        object.__setattr__(self, "foreground_threshold", _scalar("foreground_threshold", self.foreground_threshold))
        if self.brain_offset is not None:
            object.__setattr__(self, "brain_offset", _numbers("brain_offset", self.brain_offset, 3))
        if not isinstance(self.antialias, (bool, np.bool_)):
            raise ValueError(f"antialias must be true or false, got {self.antialias!r}")
        object.__setattr__(self, "antialias", bool(self.antialias))

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessConfig":
        """A config for a new model: missing fields take today's defaults."""
        check_keys(cls, data)
        return cls(**data)

    @classmethod
    def from_saved(cls, data: dict[str, Any]) -> "PreprocessConfig":
        """A config saved with a model (config.json): a field it lacks was added after it was written, so it
        takes the behaviour from before that field existed (SAVED_BEFORE_FIELD), not today's default. The
        model then sees inputs preprocessed exactly as in its training."""
        check_keys(cls, data)
        return cls(**{**SAVED_BEFORE_FIELD, **data})


def _numbers(name: str, value: Any, count: int) -> tuple[float, ...]:
    """``count`` finite floats, or a ValueError naming the field (not a bare TypeError from float())."""
    try:
        items = tuple(value)
        numbers = tuple(float(v) for v in items if not isinstance(v, (str, bool)))
    except (TypeError, ValueError):
        numbers, items = (), ()
    if len(items) != count or len(numbers) != count or not all(np.isfinite(numbers)):
        raise ValueError(f"{name} must be {count} finite numbers, got {value!r}")
    return numbers


def _scalar(name: str, value: Any) -> float:
    try:
        return _numbers(name, (value,), 1)[0]
    except ValueError:
        raise ValueError(f"{name} must be a finite number, got {value!r}") from None


def _triple(name: str, value: Any, kind: type) -> tuple:
    """Three numbers for spacing/shape; shape entries must be whole numbers (64, not 64.5)."""
    unit = "positive integers" if kind is int else "positive numbers (mm)"
    try:
        numbers = _numbers(name, value, 3)
    except ValueError:
        raise ValueError(f"{name} must be three {unit}, e.g. {DEFAULTS[name]}, got {value!r}") from None
    if kind is int:
        if not all(float(n).is_integer() for n in numbers):
            raise ValueError(f"{name} must be three {unit}, got {value!r}")
        return tuple(int(n) for n in numbers)
    return numbers
