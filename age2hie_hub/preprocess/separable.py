"""Linear resampling onto a grid whose axes run along the source's axes, as one matrix product per axis.

When the target-to-source index map has one non-zero per row (a scan that is not oblique, after
reorientation to RAS), each source axis is sampled along one target axis only, and both the anti-aliasing
Gaussian and linear interpolation act on each axis separately. Resampling is then three small matrix products
(target samples x source voxels, per axis) instead of smoothing the whole block and interpolating point by
point: several times less work on the scans it applies to (docs/preprocessing.md).

It computes what :func:`age2hie_hub.preprocess.resample.resample_array` computes with SimpleITK, to float32
rounding (tests/test_preprocess_separable.py): ITK's boundary rule (a target point inside the source's footprint,
index -0.5 <= i < n - 0.5, gets a value, clamped to the edge voxel in the outer half voxel; outside it gets
``fill``) and the same Gaussian (edge voxel repeated at the block's border).
"""
from __future__ import annotations

import functools

import numpy as np

from age2hie_hub._threads import run_all

# Off-axis terms of the index map below this (source voxels per target voxel, times the target's extent) move
# no sample by more than float32 rounding: such a map is axis-aligned.
_ALIGNED_TOL = 1e-7


def aligned_axes(mapping: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """For each source axis, the one target axis it is sampled along, or None when the map is oblique.

    ``mapping``: 4x4 target index -> source index; ``shape``: the target grid's shape.
    """
    m = np.asarray(mapping, dtype=np.float64)[:3, :3]
    extent = np.asarray(shape[:3], dtype=np.float64)
    axes = []
    for k in range(3):
        j = int(np.argmax(np.abs(m[k])))
        off = np.abs(m[k]) * extent
        off[j] = 0.0
        if m[k, j] == 0 or off.max() > _ALIGNED_TOL:
            return None
        axes.append(j)
    return tuple(axes) if sorted(axes) == [0, 1, 2] else None


def interpolation_matrix(positions: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(m x n float64 weights, m bools inside) of linear interpolation at ``positions`` (source indices).

    ITK's rule: a position inside the footprint (-0.5 <= p < n - 0.5) interpolates between floor(p) and
    floor(p) + 1, each clamped to the axis; a row outside it is all zero (the caller puts ``fill`` there).
    """
    p = np.asarray(positions, dtype=np.float64)
    inside = (p >= -0.5) & (p < n - 0.5)
    base = np.floor(p)
    frac = p - base
    lo = np.clip(base, 0, n - 1).astype(np.intp)
    hi = np.clip(base + 1, 0, n - 1).astype(np.intp)
    weights = np.zeros((p.size, n), dtype=np.float64)
    rows = np.arange(p.size)
    np.add.at(weights, (rows, lo), np.where(inside, 1.0 - frac, 0.0))
    np.add.at(weights, (rows, hi), np.where(inside, frac, 0.0))
    return weights, inside


# Largest product (rows x inner x columns) per BLAS call: OpenBLAS runs products below 4 x 65536 on the calling
# thread. Its own threads would spin-wait between products and compete with predict_many's workers on few cores
# (the same reason as resample._smooth_axis' chunks).
_SINGLE_THREAD_WORK = 1 << 18
_CHUNK = 16  # matrix rows per product: their columns span the band, not the axis


def _matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a @ b`` (2D, float32) in pieces of rows or columns small enough for one thread, into ``out`` (may be a
    strided view: BLAS writes it in place) or a new array."""
    m, k = a.shape
    n = b.shape[1]
    out = np.empty((m, n), dtype=np.float32) if out is None else out
    if m * k * n <= _SINGLE_THREAD_WORK:
        return np.matmul(a, b, out=out)
    if m >= n:
        step = max(1, _SINGLE_THREAD_WORK // (k * n))
        for i in range(0, m, step):
            np.matmul(a[i : i + step], b, out=out[i : i + step])
    else:
        step = max(1, _SINGLE_THREAD_WORK // (k * m))
        for j in range(0, n, step):
            np.matmul(a, b[:, j : j + step], out=out[:, j : j + step])
    return out


def _row_chunks(matrix: np.ndarray):
    """(row slice, column slice) pieces of a banded matrix: ``_CHUNK`` rows and the columns they reach."""
    nonzero = matrix != 0
    for i0 in range(0, matrix.shape[0], _CHUNK):
        cols = np.flatnonzero(nonzero[i0 : i0 + _CHUNK].any(axis=0))
        if cols.size:
            yield slice(i0, i0 + _CHUNK), slice(int(cols[0]), int(cols[-1]) + 1)


def _along(x: np.ndarray, matrix: np.ndarray, axis: int) -> np.ndarray:
    """``matrix`` (m x n) applied along ``axis`` (length n) of C-ordered 3D ``x``: a C-ordered float32 result.

    The matrices are banded (a Gaussian's reach, two interpolation weights), so each piece of rows is
    multiplied with the source voxels it reaches only.
    """
    a, b, c = x.shape
    shape = [a, b, c]
    shape[axis] = matrix.shape[0]
    out = np.zeros(shape, dtype=np.float32)
    for rows, cols in _row_chunks(matrix):
        piece = np.ascontiguousarray(matrix[rows, cols])
        if axis == 0:
            _matmul(piece, x[cols].reshape(-1, b * c), out=out.reshape(shape[0], b * c)[rows])
        elif axis == 1:  # one product per plane, looped over in C
            np.matmul(piece, x[:, cols, :], out=out[:, rows, :])
        else:  # the product written straight into the output's columns
            _matmul(x.reshape(a * b, c)[:, cols], piece.T, out=out.reshape(a * b, shape[2])[:, rows])
    return out


def _apply(x: np.ndarray, matrices: list[np.ndarray]) -> np.ndarray:
    """Apply one matrix per axis, the axis that shrinks the array most first (least work)."""
    todo = [k for k in range(3) if matrices[k] is not None]
    while todo:
        k = max(todo, key=lambda a: x.shape[a] / matrices[a].shape[0])
        x = _along(x, matrices[k], k)
        todo.remove(k)
    return x


def _smoothed_mask(mask: np.ndarray, take: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(``take`` applied to the boolean ``mask`` as float32, that float32 mask)."""
    as_float = mask.astype(np.float32)
    return _apply(as_float, take), as_float


def resample_separable(block: np.ndarray, mapping: np.ndarray, shape: tuple[int, int, int],
                       axes: tuple[int, int, int], smoothing: list[np.ndarray | None], *, fill: float = 0.0,
                       zero_background: bool = False) -> np.ndarray:
    """Linear resampling of C-ordered float32 ``block`` onto a target grid of ``shape`` (float32).

    ``mapping``: target index -> block index, axis-aligned with ``axes`` (:func:`aligned_axes`); ``smoothing``:
    per block axis, the (n x n) anti-aliasing matrix applied before interpolating (None: none).
    ``zero_background``: normalised convolution as in ``resample_array`` (the object's values averaged over
    the object's voxels; output voxels less than half inside the object are ``fill``) when some voxels are 0.
    """
    mapping = np.asarray(mapping, dtype=np.float64)
    smooth = [None if g is None else np.asarray(g, dtype=np.float64) for g in smoothing]
    interp, inside = [], []
    for k, j in enumerate(axes):
        positions = mapping[k, j] * np.arange(shape[j], dtype=np.float64) + mapping[k, 3]
        weights, ok = interpolation_matrix(positions, block.shape[k])
        interp.append(weights)
        inside.append(ok)

    nonzero = block != 0 if zero_background else None
    if nonzero is None or nonzero.all():  # no background to leave out: plain smoothing
        # Smoothing then interpolating is one matrix per axis: (target x source) = interp @ gaussian.
        matrices = [(w if g is None else w @ g).astype(np.float32) for w, g in zip(interp, smooth)]
        out = _apply(block, matrices)
    else:
        # Normalised convolution needs the ratio smoothed values / smoothed mask at the source voxels the
        # interpolation reads (the non-zero columns of each axis' matrix), then the interpolation from there.
        used = [np.flatnonzero(w.any(axis=0)) for w in interp]
        if any(u.size == 0 for u in used):  # the target grid lies wholly outside the block
            return np.full(shape, fill, dtype=np.float32)
        take = [(np.eye(block.shape[k])[u] if g is None else g[u]).astype(np.float32)
                for k, (u, g) in enumerate(zip(used, smooth))]
        # Values and mask take the same products, independently: side by side under _threads.scan_threads.
        values, (weight, mask) = run_all([functools.partial(_apply, block, take),
                                          functools.partial(_smoothed_mask, nonzero, take)])
        outside = weight <= 1e-3
        ratio = np.divide(values, weight, out=np.zeros_like(values), where=~outside)
        matrices = [w[:, u].astype(np.float32) for w, u in zip(interp, used)]
        # The unsmoothed mask interpolated the same way (>= half inside the object); it too is read at the used
        # voxels only. Independent of the values' products: side by side.
        out, inside_share = run_all([functools.partial(_apply, ratio, matrices),
                                     lambda: _apply(np.ascontiguousarray(mask[np.ix_(*used)]), matrices)])
        out[inside_share < 0.5] = fill
    # Block axis k now runs along target axis axes[k]: lay the result out in target order.
    out = np.ascontiguousarray(out.transpose(np.argsort(axes)))
    if fill != 0:  # rows outside the footprint summed to 0; they take the fill value
        by_target = [inside[list(axes).index(j)] for j in range(3)]
        covered = by_target[0][:, None, None] & by_target[1][None, :, None] & by_target[2][None, None, :]
        out[~covered] = fill
    return out
