"""Resampling in world coordinates: any source grid (oblique, sheared, flipped) onto any target grid.

One interpolation pass maps every target voxel centre through the full affines (target index -> world ->
source index), so oblique scans land where their world coordinates say. SimpleITK's ResampleImageFilter
does the interpolation: it is multi-threaded and several times faster than scipy.ndimage.affine_transform for
linear interpolation (benchmarks/bench_preprocess.py; docs/preprocessing.md). Only the index-space geometry is handed to
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

The smoothing is the sampled Gaussian truncated at 3 sigma with the edge voxel repeated at the scan's border
(what ``scipy.ndimage.gaussian_filter(mode="nearest", truncate=3)`` computes), applied one axis at a time, in
float32, on the block of source voxels the target grid reaches plus the kernel's radius, in the source array's
memory order. Each axis is a product with its banded kernel matrix, cut into chunks of output rows so that each
product only spans the band (BLAS instead of scipy's double-precision line buffers): several times faster than
``gaussian_filter`` on a BONBID-sized block (docs/preprocessing.md), equal to it to float32 rounding
(tests/test_preprocess_antialias.py).
"""
from __future__ import annotations

import functools

import numpy as np
import SimpleITK as sitk

from age2hie_hub._threads import allowed_threads, run_all, split
from age2hie_hub.errors import VolumeReadError
from age2hie_hub.io import Volume
from age2hie_hub.preprocess.crop import index_box, storage_order
from age2hie_hub.preprocess.separable import aligned_axes, resample_separable

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
# Output rows per matrix product of the smoothing (at least the kernel's diameter): each product spans
# chunk + 2 x radius input rows, so the work is about (chunk + 2 radius) / (2 radius + 1) times the taps'.
_CHUNK = 16
_SLAB = 1 << 19  # voxels per slab of the smoothing (2 MiB of float32): fewer products than thin slabs, cached
_LEAST_ROWS = 8  # rows of the slab axis per thread's part, at least


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


@functools.lru_cache(maxsize=64)
def gaussian_matrix(n: int, sigma: float, truncate: float = _TRUNCATE, mode: str = "nearest") -> tuple[np.ndarray, int]:
    """(n x n float32 matrix, radius): row i holds the weights that smooth voxel i of an axis of n voxels.

    The sampled Gaussian of ``sigma`` voxels truncated at ``truncate`` sigma (radius int(truncate sigma + 0.5)),
    normalised to sum 1; beyond the axis' ends the edge voxel is repeated (scipy.ndimage's mode "nearest") or,
    with ``mode="reflect"``, the axis is mirrored about its ends (scipy's "reflect", its gaussian_filter's
    default). Cached (one matrix serves every slab of a block, and scans of one protocol share them); read-only.
    """
    radius = int(truncate * float(sigma) + 0.5)
    taps = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 / float(sigma) ** 2 * taps.astype(np.float64) ** 2)
    weights /= weights.sum()
    rows = np.repeat(np.arange(n), taps.size)
    cols = np.arange(n)[:, None] + taps[None, :]
    if mode == "reflect":  # ... c b a | a b c ... | c b a ...: period 2n
        cols = np.mod(cols, 2 * n)
        cols = np.where(cols >= n, 2 * n - 1 - cols, cols).ravel()
    elif mode == "nearest":
        cols = np.clip(cols, 0, n - 1).ravel()
    else:
        raise ValueError(f"gaussian_matrix: mode must be 'nearest' or 'reflect', not {mode!r}")
    matrix = np.zeros((n, n), dtype=np.float64)
    np.add.at(matrix, (rows, cols), np.tile(weights, n))
    matrix = matrix.astype(np.float32)
    matrix.setflags(write=False)
    return matrix, radius


def _smooth_axis(x: np.ndarray, sigma: float, axis: int, out: np.ndarray | None = None, **kernel) -> np.ndarray:
    """Gaussian smoothing of float32 3D ``x`` (last axis contiguous) along ``axis`` as banded matrix products.

    Each product covers one plane and ``_CHUNK`` (or the kernel's diameter) output rows, so it stays small:
    OpenBLAS runs products that small on the calling thread (its threads would spin-wait between them, costing
    several times the work in CPU and competing with predict_many's other workers on few cores).
    """
    n = x.shape[axis]
    matrix, radius = gaussian_matrix(n, sigma, **kernel)
    out = np.empty(x.shape, dtype=np.float32) if out is None else out
    # Views with the smoothed axis next to last (axis 0: one (rows, C) plane per index of axis 1; axis 1: one
    # per index of axis 0) or last (axis 2, multiplied from the right).
    src, dst = (x.transpose(1, 0, 2), out.transpose(1, 0, 2)) if axis == 0 else (x, out)
    step = max(_CHUNK, 2 * radius + 1)
    for i0 in range(0, n, step):
        i1, j0 = min(n, i0 + step), max(0, i0 - radius)
        j1 = min(n, i1 + radius)
        band = matrix[i0:i1, j0:j1]
        if axis == 2:
            np.matmul(src[:, :, j0:j1], band.T, out=dst[:, :, i0:i1])
        else:
            np.matmul(band, src[:, j0:j1, :], out=dst[:, i0:i1, :])
    return out


def gaussian_smooth(x: np.ndarray, sigmas, truncate: float = _TRUNCATE, mode: str = "nearest") -> np.ndarray:
    """A float32 copy of finite 3D ``x`` smoothed along each axis whose sigma (voxels) is > 0. Equal to
    ``scipy.ndimage.gaussian_filter(x, sigmas, mode=mode, truncate=truncate)`` to float32 rounding (that filter
    accumulates in float64).

    The copy is smoothed in place, slab by slab with slab-sized temporaries: whole-block intermediates cost
    more in fresh memory (page faults) than the arithmetic on a BONBID-sized block. Inside
    ``_threads.scan_threads(n)`` each pass's slabs are shared out between up to n threads: the same values, as
    no slab's products depend on another's.
    """
    x = np.array(x, dtype=np.float32, order="C", copy=True)
    if x.ndim != 3:
        raise ValueError(f"gaussian_smooth needs a 3D array, got shape {x.shape}")
    a, b, c = x.shape
    kernel = {"truncate": float(truncate), "mode": mode}
    parts = allowed_threads()  # one part per thread: finer parts measured slower (task overheads)
    rows_0, rows_12 = max(1, _SLAB // (a * c)), max(1, _SLAB // (b * c))

    def along_0(b0: int, b1: int) -> None:  # along axis 0, slabs across axis 1
        for s0 in range(b0, b1, rows_0):
            slab = x[:, s0 : min(b1, s0 + rows_0), :]
            slab[...] = _smooth_axis(slab, float(sigmas[0]), 0, **kernel)

    def in_planes(a0: int, a1: int) -> None:  # along axes 1 and 2, slabs across axis 0
        for s0 in range(a0, a1, rows_12):
            slab = x[s0 : min(a1, s0 + rows_12)]
            if sigmas[1] > 0 and sigmas[2] > 0:
                _smooth_axis(_smooth_axis(slab, float(sigmas[1]), 1, **kernel), float(sigmas[2]), 2, out=slab,
                             **kernel)
            else:
                axis = 1 if sigmas[1] > 0 else 2
                slab[...] = _smooth_axis(slab, float(sigmas[axis]), axis, **kernel)

    if sigmas[0] > 0:
        run_all([functools.partial(along_0, *r) for r in split(b, parts, least=_LEAST_ROWS)])
    if sigmas[1] > 0 or sigmas[2] > 0:
        run_all([functools.partial(in_planes, *r) for r in split(a, parts, least=_LEAST_ROWS)])
    return x


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
    # Resampling works on the array in its memory order (readers return transposed arrays; reorientation flips
    # and permutes), with the affine that keeps each voxel's world position: the block below is then copied
    # forwards along memory, several times faster than a transposing or backwards copy (docs/preprocessing.md).
    data, source_affine = storage_order(data, source_affine)
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
    block = _contiguous(data[tuple(slice(a, b + 1) for a, b in zip(lo, hi))])  # block index = data index - lo
    mapping = mapping.copy()
    mapping[:3, 3] -= lo
    axes = aligned_axes(mapping, shape) if interpolation == "linear" else None
    if axes is not None:  # not oblique: per-axis matrix products, same values (preprocess/separable.py)
        smoothing = [gaussian_matrix(n, float(sg))[0] if sg > 0 else None for n, sg in zip(block.shape, sigmas)]
        return resample_separable(block, mapping, shape, axes, smoothing, fill=fill,
                                  zero_background=zero_background and bool(sigmas.any()))
    inside = None
    if sigmas.any():
        if np.may_share_memory(block, data):  # a contiguous slice is not copied; the smoothing writes to it
            block = block.copy()
        nonzero = block != 0
        # Smoothing leaves exact zeros farther than the kernel's radius from any non-zero voxel at 0, so only the
        # box of non-zero voxels widened by the radius is smoothed (the rest of the block is 0 before and after;
        # at the box's faces, the repeated edge voxels are zeros as the block's own are): on a skull-stripped
        # map the brain's box, not the output box.
        region = _nonzero_region(nonzero, [int(_TRUNCATE * sg + 0.5) if sg > 0 else 0 for sg in sigmas])
        if zero_background and not nonzero.all():
            # Normalised convolution: the object's values averaged over the object's voxels only.
            inside = nonzero.astype(np.float32)
            if region is not None:  # else the block is all 0, and so is its average
                weight, smoothed = run_all([functools.partial(gaussian_smooth, inside[region], sigmas),
                                            functools.partial(gaussian_smooth, block[region], sigmas)])
                outside = weight <= 1e-3
                np.divide(smoothed, weight, out=smoothed, where=~outside)
                smoothed[outside] = 0.0
                block[region] = smoothed
        elif region is not None:
            block[region] = gaussian_smooth(block[region], sigmas)
    out = _sitk_resample(block, mapping, shape, interpolation, fill)
    if inside is not None:
        keep = _sitk_resample(inside, mapping, shape, "linear", 0.0) >= 0.5
        out[~keep] = fill
    return out


def _contiguous(x: np.ndarray) -> np.ndarray:
    """``np.ascontiguousarray(x, dtype=float32)``, the copy (when one is needed) in slabs of the first axis that
    are shared out under _threads.scan_threads."""
    if x.flags.c_contiguous and x.dtype == np.float32:
        return x
    out = np.empty(x.shape, dtype=np.float32)
    run_all([functools.partial(np.copyto, out[a0:a1], x[a0:a1], casting="unsafe")
             for a0, a1 in split(x.shape[0], allowed_threads(), least=_LEAST_ROWS)])
    return out


def _nonzero_region(nonzero: np.ndarray, radius: list[int]) -> tuple[slice, ...] | None:
    """Slices of the box of ``nonzero``'s True voxels widened by ``radius`` per axis (within the array), or None."""
    box = index_box(nonzero)
    if box is None:
        return None
    return tuple(slice(max(0, int(lo) - r), int(hi) + r + 1) for lo, hi, r in zip(*box, radius))


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
