"""Resampling in world coordinates: any source grid (oblique, sheared, flipped) onto any target grid.

One interpolation pass maps every target voxel centre through the full affines (target index -> world ->
source index), so oblique scans land where their world coordinates say. SimpleITK's ResampleImageFilter
does the interpolation: it is multi-threaded and about 4x faster than scipy.ndimage.affine_transform for
linear interpolation (see benchmarks/bench_preprocess.py). Only the index-space geometry is handed to
SimpleITK (unit spacing, identity direction, an affine transform between the two index spaces), so no
RAS/LPS conversion is involved and sheared affines work too.

Boundary rule (ITK's): a source voxel covers its footprint, index -0.5 .. n-0.5. Target points inside
the footprint get interpolated values (clamped to the edge voxel in the outer half voxel); points outside
get ``fill`` (0 by default).

Anti-aliasing (``antialias=True``): along each source axis that the target samples more coarsely (a step of
r > 1 source voxels), the source is smoothed first with a Gaussian of sigma = sqrt(r^2 - 1) / 2 source voxels:
the sigma of r/2 voxels that an output voxel's footprint calls for, less the 1/2 voxel the source's own voxels
already have (Gaussians add in quadrature). Detail finer than the output grid is then attenuated instead of
folding into it as false low-frequency patterns (aliasing). Axes sampled at the source's step or finer are not
touched, so a crop at the source's own spacing stays exact.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from age2hie_hub.errors import VolumeReadError
from age2hie_hub.io import Volume

INTERPOLATORS = {
    "linear": sitk.sitkLinear,
    "nearest": sitk.sitkNearestNeighbor,
    "bspline": sitk.sitkBSpline,  # cubic B-spline with prefiltering: interpolates, does not smooth
}
# Source voxels kept around the needed block. The B-spline coefficients are a global (IIR) filter; its
# influence decays as 0.268**distance, so 12 voxels keep the result within ~1e-7 of the uncropped one.
_MARGIN = {"linear": 1, "nearest": 1, "bspline": 12}
# Gaussian kernel radius in sigmas: beyond 3 sigma the weights are < 1.1 % of the centre's.
_TRUNCATE = 3.0


def check_interpolation(interpolation: str) -> None:
    if interpolation not in INTERPOLATORS:
        raise ValueError(f"interpolation must be one of {tuple(INTERPOLATORS)}, got {interpolation!r}")


def voxel_map(source_affine: np.ndarray, target_affine: np.ndarray, source: str | None = None) -> np.ndarray:
    """4x4 matrix taking target voxel indices to source voxel indices (through world mm)."""
    try:
        return np.linalg.inv(np.asarray(source_affine, dtype=np.float64)) @ np.asarray(target_affine, np.float64)
    except np.linalg.LinAlgError:
        raise VolumeReadError(
            f"{source or 'volume'}: its affine is singular (a voxel axis has zero length), so its voxels have "
            "no world position; fix the header's spacing/direction"
        ) from None


def antialias_sigmas(mapping: np.ndarray) -> np.ndarray:
    """Gaussian sigma (source voxels) per source axis for anti-aliasing: sqrt(r^2 - 1) / 2 where the target
    steps r > 1 source voxels along that axis (r: norm of the index map's row), else 0."""
    step = np.linalg.norm(np.asarray(mapping, dtype=np.float64)[:3, :3], axis=1)
    return np.where(step > 1.0 + 1e-6, np.sqrt(np.maximum(step**2 - 1.0, 0.0)) / 2.0, 0.0)


def _box_corners(shape: tuple[int, ...]) -> np.ndarray:
    """Homogeneous index coordinates (4, 8) of the first/last voxel centres of a box."""
    axes = [(0.0, float(n - 1)) for n in shape[:3]]
    corners = np.array(np.meshgrid(*axes, indexing="ij")).reshape(3, -1)
    return np.vstack([corners, np.ones((1, corners.shape[1]))])


def resample_array(
    data: np.ndarray,
    source_affine: np.ndarray,
    target_affine: np.ndarray,
    shape: tuple[int, int, int],
    interpolation: str = "linear",
    *,
    fill: float = 0.0,
    source: str | None = None,
    antialias: bool = False,
    zero_background: bool = False,
) -> np.ndarray:
    """Resample a 3D array on ``source_affine``'s grid onto the grid (``target_affine``, ``shape``).

    Returns float32 of ``shape``. ``source`` (a path) is only used to name the volume in errors.
    ``antialias``: smooth the axes the target samples more coarsely first (see the module docstring).
    ``zero_background``: voxels that are exactly 0 are outside the object (a skull-stripped map), not values:
    the anti-aliasing averages the object's voxels only (normalised convolution: smoothed values over the
    smoothed mask), and output voxels that are less than half inside the object (the mask resampled the same
    way) are 0. Without it, smoothing mixes the zeros into the object's edge: on skull-stripped ADC a rim of
    falsely low values (restricted diffusion) around the brain.
    """
    check_interpolation(interpolation)
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"resample_array needs a 3D array, got shape {data.shape}")
    shape = tuple(int(s) for s in shape)
    mapping = voxel_map(source_affine, target_affine, source)

    # Only the block of source voxels that target points can reach is copied to SimpleITK: cheaper copies,
    # and B-spline coefficients are computed on that block only.
    reach = mapping @ _box_corners(shape)
    sigmas = antialias_sigmas(mapping) if antialias else np.zeros(3)
    margin = _MARGIN[interpolation] + np.ceil(_TRUNCATE * sigmas).astype(int)
    lo = np.floor(reach[:3].min(axis=1)).astype(int) - margin
    hi = np.ceil(reach[:3].max(axis=1)).astype(int) + margin
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, np.array(data.shape) - 1)
    if np.any(lo > hi):  # the target grid lies wholly outside the source's field of view
        return np.full(shape, fill, dtype=np.float32)
    block = np.ascontiguousarray(data[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1], dtype=np.float32)
    inside = None
    if sigmas.any():
        from scipy import ndimage

        # mode "nearest": at the scan's edge the outer voxels are repeated, not averaged with zeros.
        if zero_background and not block.all():
            inside = (block != 0).astype(np.float32)
            weight = ndimage.gaussian_filter(inside, sigmas, mode="nearest", truncate=_TRUNCATE)
            block = ndimage.gaussian_filter(block, sigmas, mode="nearest", truncate=_TRUNCATE)
            np.divide(block, weight, out=block, where=weight > 1e-3)
            block[weight <= 1e-3] = 0.0
        else:
            block = ndimage.gaussian_filter(block, sigmas, mode="nearest", truncate=_TRUNCATE)
    mapping = mapping.copy()
    mapping[:3, 3] -= lo
    out = _sitk_resample(block, mapping, shape, interpolation, fill)
    if inside is not None:
        keep = _sitk_resample(inside, mapping, shape, "linear", 0.0) >= 0.5
        out[~keep] = fill
    return out


def _sitk_resample(block: np.ndarray, mapping: np.ndarray, shape: tuple[int, ...], interpolation: str,
                   fill: float) -> np.ndarray:
    """One SimpleITK pass over ``block`` (C-order float32), ``mapping`` taking target to block indices."""
    # SimpleITK orders index axes fastest-first, i.e. reversed numpy order: conjugate the map by that flip.
    flip = np.eye(3)[::-1]
    matrix = flip @ mapping[:3, :3] @ flip
    offset = flip @ mapping[:3, 3]
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(matrix.ravel().tolist())
    transform.SetTranslation(offset.tolist())

    image = sitk.GetImageFromArray(block)  # unit spacing, zero origin, identity direction: index space
    out = sitk.Resample(
        image,
        [int(s) for s in shape[::-1]],
        transform,
        INTERPOLATORS[interpolation],
        (0.0, 0.0, 0.0),
        (1.0, 1.0, 1.0),
        (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        float(fill),
        sitk.sitkFloat32,
    )
    return sitk.GetArrayFromImage(out)


def resample_to(
    volume: Volume, affine: np.ndarray, shape: tuple[int, int, int], interpolation: str = "linear"
) -> Volume:
    """Resample ``volume`` onto the grid (``affine``, ``shape``); 4D volumes are resampled volume by volume.

    Use it to put a map computed on a preprocessed grid (``Preprocessed.affine``) back on the input scan:
    ``resample_to(Volume(map, pre.affine), scan.affine, scan.spatial_shape)``. Voxels outside the source's
    field of view become 0. Use ``"nearest"`` for label maps.
    """
    check_interpolation(interpolation)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be three positive integers, got {shape}")
    src = volume.source
    if volume.data.ndim == 3:
        data = resample_array(volume.data, volume.affine, affine, shape, interpolation, source=src)
    else:
        data = np.stack(
            [
                resample_array(volume.data[..., t], volume.affine, affine, shape, interpolation, source=src)
                for t in range(volume.data.shape[3])
            ],
            axis=-1,
        )
    return Volume(data=data, affine=affine, metadata=volume.metadata)
