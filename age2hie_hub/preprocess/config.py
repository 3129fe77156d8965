"""The preprocessing config: plain data that travels inside every checkpoint's config.json."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from age2hie_hub._config import check_keys, to_plain

CROPS = ("center", "foreground")
# zscore: z-score within the foreground; mean: divide by the foreground mean (as SFCN does);
# adc_fixed: ADC in mm^2/s times `adc_scale`, clipped to `clip`; none: values as they are.
INTENSITIES = ("zscore", "mean", "adc_fixed", "none")
INTERPOLATIONS = ("linear", "nearest", "bspline")


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

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if self.clip is not None:
            object.__setattr__(self, "clip", tuple(float(c) for c in self.clip))
        if self.orientation != "RAS":
            raise ValueError(f"orientation must be 'RAS', got {self.orientation!r}")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"spacing must be three positive numbers (mm), got {self.spacing}")
        if len(self.shape) != 3 or min(self.shape) <= 0:
            raise ValueError(f"shape must be three positive integers, got {self.shape}")
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {self.crop!r}")
        if self.intensity not in INTENSITIES:
            raise ValueError(f"intensity must be one of {INTENSITIES}, got {self.intensity!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")
        if self.clip is not None and (len(self.clip) != 2 or self.clip[0] >= self.clip[1]):
            raise ValueError(f"clip must be (low, high) with low < high, got {self.clip}")

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessConfig":
        check_keys(cls, data)
        return cls(**data)
