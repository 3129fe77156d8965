"""Geometry helpers: output grids, pull-back coordinates, trilinear sampling (torch grid_sample) and smooth
random fields. Everything works on one subject's output grid; nothing here draws parameters."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def rotation(angles_deg: np.ndarray) -> np.ndarray:
    """3x3 rotation from angles (degrees) about x, y, z, applied in that order."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def grid_affine(shape: tuple[int, int, int], spacing: tuple[float, float, float], centre: np.ndarray) -> np.ndarray:
    """Axis-aligned RAS affine of a grid of ``shape`` voxels of ``spacing`` mm centred on ``centre`` (mm)."""
    affine = np.eye(4)
    affine[:3, :3] = np.diag(spacing)
    affine[:3, 3] = np.asarray(centre, dtype=np.float64) - np.asarray(spacing) * (np.asarray(shape) - 1) / 2
    return affine


def coarse_counts(shape: tuple[int, ...], step: int = 2) -> tuple[int, ...]:
    """Points per axis of a lattice ~``step`` times coarser spanning the same first and last voxel."""
    return tuple(max(2, (n - 1) // step + 1) for n in shape)


def lattice_affine(affine: np.ndarray, shape: tuple[int, ...], counts: tuple[int, ...]) -> np.ndarray:
    """Voxel->mm affine of the coarse lattice with ``counts`` points spanning a grid of ``shape``."""
    scale = np.diag([(n - 1) / (c - 1) for n, c in zip(shape, counts)] + [1.0])
    return affine @ scale


def pullback_grid(
    out_shape: tuple[int, ...],
    out_to_in: np.ndarray,
    in_shape: tuple[int, ...],
    disp_idx: torch.Tensor | None = None,
) -> torch.Tensor:
    """grid_sample grid (1, X, Y, Z, 3) for output voxels mapped by the 4x4 ``out_to_in`` (output voxel ->
    input voxel), plus an optional displacement (3, X, Y, Z) in input voxels."""
    def to_norm(n):  # voxel index -> [-1, 1] (align_corners=True): u = 2 i / (n - 1) - 1
        m = np.diag([2.0 / (k - 1) for k in n] + [1.0])
        m[:3, 3] = -1.0
        return m

    from_norm = np.linalg.inv(to_norm(out_shape))
    t = to_norm(in_shape) @ np.asarray(out_to_in, dtype=np.float64) @ from_norm
    # grid_sample orders coordinates (W, H, D) = our (Z, Y, X): reverse both sides.
    rev = np.eye(3)[::-1]
    theta = np.concatenate([rev @ t[:3, :3] @ rev, (rev @ t[:3, 3])[:, None]], axis=1)
    grid = F.affine_grid(torch.from_numpy(theta.astype(np.float32))[None], [1, 1, *out_shape], align_corners=True)
    if disp_idx is not None:
        scale = torch.tensor([2.0 / (k - 1) for k in in_shape], dtype=torch.float32)[:, None, None, None]
        grid = grid + (disp_idx * scale).flip(0).permute(1, 2, 3, 0)[None]
    return grid


def sample(channels: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Trilinear samples of ``channels`` (C, X, Y, Z) on a pullback grid: (C, X', Y', Z'); 0 outside."""
    out = F.grid_sample(channels[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[0]


def upsample(coarse: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(C, x, y, z) on a linspace lattice -> (C, X, Y, Z) trilinear, corners aligned."""
    return F.interpolate(coarse[None], size=tuple(shape), mode="trilinear", align_corners=True)[0]


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], nodes: int = 4, channels: int = 1) -> torch.Tensor:
    """A smooth random field (channels, X, Y, Z): unit-variance normal values on a ``nodes``^3 lattice,
    upsampled trilinearly (the lattice spans the whole grid, so the field's scale follows the grid's size)."""
    lattice = torch.from_numpy(rng.standard_normal((channels, nodes, nodes, nodes)).astype(np.float32))
    return upsample(lattice, shape)
