"""Augmentation for 3D brain MRI tensors (C, X, Y, Z): small affine, intensity, noise, smooth bias field.

Every random draw comes from the ``torch.Generator`` passed in, so a case's augmentation depends only on
(seed, epoch, index): runs are reproducible and a resumed run sees the same augmented batches.
Lateral (X, left-right in RAS) flips are off by default: brain injury can be lateralised.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from age2hie_hub._config import check_keys, to_plain


@dataclass(frozen=True)
class AugmentConfig:
    enabled: bool = True
    p_affine: float = 0.8
    rotate_deg: float = 8.0  # max rotation about each axis
    scale: float = 0.08  # max relative zoom
    translate: float = 0.04  # max shift, fraction of the field of view
    p_intensity: float = 0.8
    intensity_scale: float = 0.1  # x * U(1 - s, 1 + s) + U(-shift, shift)
    intensity_shift: float = 0.1
    p_noise: float = 0.3
    noise_std: float = 0.05  # max Gaussian noise sd (inputs are normalised, so in units of tissue sd)
    p_bias: float = 0.3
    bias_strength: float = 0.2  # max coefficient of the low-order log bias field
    lateral_flip: bool = False  # flip left-right with p=0.5; only if the target is symmetric

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AugmentConfig":
        check_keys(cls, data)
        return cls(**data)


def _u(g: torch.Generator, lo: float, hi: float, n: int = 1) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    ax, ay, az = (float(a) for a in angles)
    rx = torch.tensor([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = torch.tensor([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = torch.tensor([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def augment(x: torch.Tensor, g: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """Return an augmented copy of one case ``x`` (C, X, Y, Z), float32."""
    if not cfg.enabled:
        return x
    x = x.float()
    if cfg.lateral_flip and float(_u(g, 0, 1)) < 0.5:
        x = torch.flip(x, dims=(1,))
    if float(_u(g, 0, 1)) < cfg.p_affine:
        rad = math.radians(cfg.rotate_deg)
        rot = _rotation(_u(g, -rad, rad, 3))
        zoom = float(_u(g, 1 - cfg.scale, 1 + cfg.scale))
        shift = _u(g, -2 * cfg.translate, 2 * cfg.translate, 3)  # grid coordinates span [-1, 1]
        theta = torch.cat([rot / zoom, shift[:, None]], dim=1).float()
        # affine_grid orders output coordinates (x, y, z) = (last, middle, first) spatial dims; the random
        # rotation is symmetric in distribution, so no axis reordering is needed.
        grid = F.affine_grid(theta[None], [1, *x.shape], align_corners=False)
        # Pad with the volume's minimum (background after normalisation), not 0, which may be tissue-like.
        fill = x.amin(dim=(1, 2, 3), keepdim=True)
        x = F.grid_sample((x - fill)[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        x = x + fill
    if cfg.p_bias > 0 and float(_u(g, 0, 1)) < cfg.p_bias:
        x = x * _bias_field(x.shape[1:], g, cfg.bias_strength)
    if float(_u(g, 0, 1)) < cfg.p_intensity:
        a = float(_u(g, 1 - cfg.intensity_scale, 1 + cfg.intensity_scale))
        b = float(_u(g, -cfg.intensity_shift, cfg.intensity_shift))
        x = x * a + b
    if float(_u(g, 0, 1)) < cfg.p_noise:
        sd = float(_u(g, 0, cfg.noise_std))
        x = x + sd * torch.randn(x.shape, generator=g)
    return x.contiguous()


def _bias_field(shape: torch.Size, g: torch.Generator, strength: float) -> torch.Tensor:
    """exp of a random polynomial of degree <= 2 in (x, y, z): a smooth multiplicative field, as MRI shows."""
    axes = [torch.linspace(-1, 1, n) for n in shape]
    X, Y, Z = torch.meshgrid(*axes, indexing="ij")
    terms = [X, Y, Z, X * Y, X * Z, Y * Z, X * X - 1 / 3, Y * Y - 1 / 3, Z * Z - 1 / 3]
    coef = _u(g, -strength, strength, len(terms)).float()
    log_field = sum(c * t for c, t in zip(coef, terms, strict=True))
    return torch.exp(log_field)[None]
