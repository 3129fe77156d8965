"""Reorientation to RAS: a pure permutation/flip of voxel axes; every voxel keeps its world position."""
from __future__ import annotations

import functools

import numpy as np
from nibabel import orientations as nio

from age2hie_hub.io import Volume


def _orientation(affine: np.ndarray) -> np.ndarray:
    """nibabel's ``io_orientation`` of ``affine`` (read-only), remembered: a scan's orientation is asked for
    several times on its way to the model, and each answer costs an SVD (docs/preprocessing.md)."""
    return _orientation_of(np.ascontiguousarray(affine, dtype=np.float64).tobytes())


@functools.lru_cache(maxsize=64)
def _orientation_of(affine: bytes) -> np.ndarray:
    ornt = nio.io_orientation(np.frombuffer(affine, dtype=np.float64).reshape(4, 4))
    ornt.setflags(write=False)
    return ornt


def orientation_codes(affine: np.ndarray) -> str:
    """Axis codes of a voxel-to-world affine, e.g. ``"LAS"`` (closest axes for oblique affines)."""
    return "".join(nio.ornt2axcodes(_orientation(affine)))


def obliquity_degrees(affine: np.ndarray) -> float:
    """Largest angle (degrees) between a voxel axis and the world axis it is closest to; 0 for aligned grids."""
    rot = np.asarray(affine, dtype=np.float64)[:3, :3]
    cols = rot / np.linalg.norm(rot, axis=0)
    cosines = np.clip(np.abs(cols).max(axis=0), -1.0, 1.0)
    return float(np.degrees(np.arccos(cosines)).max())


def reorient_to_ras(volume: Volume) -> Volume:
    """Permute/flip the voxel axes so they run (as near as possible) along R, A, S.

    Only the storage order changes: the affine is updated so that every voxel keeps its exact world
    position. Oblique grids stay oblique (their axes become the ones closest to R, A, S); resampling
    onto an axis-aligned grid is :func:`age2hie_hub.preprocess.resample_to`'s job. A 4D volume keeps its
    last axis. Returns the same object when it is already RAS.
    """
    ornt = _orientation(volume.affine)
    target = nio.axcodes2ornt("RAS")
    if np.array_equal(ornt, target):
        return volume
    transform = nio.ornt_transform(ornt, target)
    data = nio.apply_orientation(volume.data, transform)
    # inv_ornt_aff maps reoriented voxel indices to the original ones, so world = A_old @ that.
    affine = volume.affine @ nio.inv_ornt_aff(transform, volume.spatial_shape)
    return Volume(data=data, affine=affine, metadata=volume.metadata)
