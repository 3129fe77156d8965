"""Choosing the output grid: an axis-aligned RAS box of the target shape and spacing around a centre.

Cropping and padding happen here as geometry, not as array copies: the chosen box is handed to the one
resampling pass, which fills voxels outside the scan's field of view with 0 (padding) and never computes
the ones outside the box (cropping). The box is snapped to the lattice that "resample the whole scan to
the target spacing, starting at its first voxel" would give, so a scan already on an RAS grid at the
target spacing is cropped without any interpolation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_AXES = "RAS"
# crop "brain": the part of the head below its top whose R/A centroid anchors the box. 80 mm spans the
# cranium of an adult above the ears (no face, no neck) and most of a newborn's brain.
BRAIN_SLAB_MM = 80.0
# Default S offset of the brain centre below the top, as a share of that slab's A-P extent: 0.42 on the 155
# whole-head IXI T1 (~82 mm below the vertex of an adult head; benchmarks/bench_crop_real.py).
BRAIN_DEPTH_PER_AP = 0.42


@dataclass(frozen=True)
class OutputGrid:
    """The output box and how it relates to the scan it is cut from."""

    affine: np.ndarray  # 4x4, diagonal spacing, RAS
    shape: tuple[int, int, int]
    cropped: tuple[str, ...]  # world axes along which part of the scan lies outside the box
    padded: tuple[str, ...]  # world axes along which the box reaches beyond the scan


def fov_center(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """World position (mm) of the centre of a grid's field of view."""
    centre = (np.asarray(shape[:3], dtype=np.float64) - 1.0) / 2.0
    return (np.asarray(affine, dtype=np.float64) @ np.append(centre, 1.0))[:3]


def world_bounds(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """World bounding box (min, max corners, mm) of a grid's voxel centres."""
    axes = [(0.0, float(n - 1)) for n in shape[:3]]
    corners = np.array(np.meshgrid(*axes, indexing="ij")).reshape(3, -1)
    world = np.asarray(affine, dtype=np.float64)[:3, :3] @ corners + np.asarray(affine, np.float64)[:3, 3:4]
    return world.min(axis=1), world.max(axis=1)


def _memory_layout(array: np.ndarray) -> tuple[np.ndarray, tuple[int, ...], list[int]]:
    """(``array`` with its negative-stride axes flipped, those axes, the first three axes of the flipped view
    from the slowest in memory to the fastest): what :func:`storage_order` and :func:`memory_view` apply."""
    flips = tuple(a for a in range(3) if array.strides[a] < 0)
    view = np.flip(array, axis=flips) if flips else array
    return view, flips, sorted(range(3), key=lambda a: -view.strides[a])


def storage_order(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels as a view in memory order (no copy), with the affine that keeps their world positions.

    Readers hand back transposed views (SimpleITK's arrays) and reorientation adds flips, so a mask made from
    them is laid out F-order or backwards; reductions along its last axis then stride across memory (several
    times slower on a BONBID-sized mask: docs/preprocessing.md). Flipping the negative-stride axes and ordering
    the axes by decreasing stride gives a C-ordered view of a mask that is contiguous in any axis order;
    world-space results are unchanged.
    """
    view, flips, order = _memory_layout(array)
    affine = np.asarray(affine, dtype=np.float64).copy()
    for a in flips:
        affine[:3, 3] += affine[:3, a] * (view.shape[a] - 1)
        affine[:3, a] = -affine[:3, a]
    if order != [0, 1, 2]:
        view = view.transpose(order)
        affine[:3, :3] = affine[:3, order]
    return view, affine


def memory_view(array: np.ndarray):
    """``array``'s first three axes as a view in memory order (:func:`storage_order`'s flips and transposes,
    no copy), and ``undo``: the function that lays an array shaped like the view back out in ``array``'s index
    order (a view). Whole-volume filters run fastest on the C-ordered view."""
    view, flips, order = _memory_layout(array)
    view = view.transpose(order)
    inverse = tuple(int(a) for a in np.argsort(order))

    def undo(x: np.ndarray) -> np.ndarray:
        x = x.transpose(inverse)
        return np.flip(x, axis=flips) if flips else x

    return view, undo


def index_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(first, last) index along each axis of a 3D mask's True voxels (int arrays), None when there are none.

    Two passes over a C-ordered mask, both along memory (its planes of axis 0 or'ed together; each plane of
    axis 0 at once), then only 2D work: ~5x faster than reducing along the last axis on a BONBID-sized mask.
    """
    plane = mask.any(axis=0)
    i_s = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    if i_s.size == 0:
        return None
    j_s, ks = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    return np.array([i_s[0], j_s[0], ks[0]]), np.array([i_s[-1], j_s[-1], ks[-1]])


class MaskGeometry:
    """Where a mask's True voxels lie in the world: their bounding box and crop "brain"'s anchor, measured on
    the mask in memory order (:func:`storage_order`). On an axis-aligned grid both come from per-axis voxel
    counts, and the two planes of counts the anchor sums (over its R and over its A index axis) also give the
    bounding box, so asking for both reads the mask twice instead of five times."""

    def __init__(self, mask: np.ndarray, affine: np.ndarray) -> None:
        self.mask, self.affine = storage_order(mask, affine)
        self.aligned = np.count_nonzero(self.affine[:3, :3]) == 3  # each index axis along one world axis
        self._planes: dict[int, np.ndarray] = {}

    def _plane(self, axis: int) -> np.ndarray:
        """Voxel counts summed over index ``axis`` (the other two axes kept), once per axis."""
        if axis not in self._planes:
            dtype = np.int16 if self.mask.shape[axis] < 1 << 15 else np.int32  # the largest count fits
            self._planes[axis] = np.add.reduce(self.mask.view(np.uint8), axis=axis, dtype=dtype)
        return self._planes[axis]

    def _per_axis(self, axis: int) -> np.ndarray | None:
        """Voxel counts at each index of ``axis``, from a plane already summed (None when there is none)."""
        for summed, plane in self._planes.items():
            if summed != axis:
                return _reduce_plane(plane, summed, axis)
        return None

    def _box_from_planes(self) -> tuple[np.ndarray, np.ndarray] | None:
        """:func:`index_box` from the planes of counts already summed (two of them cover every axis)."""
        hits = [np.flatnonzero(self._per_axis(a)) for a in range(3)]
        if hits[0].size == 0:
            return None
        return np.array([h[0] for h in hits]), np.array([h[-1] for h in hits])

    def bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """World bounding box (min, max, mm) of the centres of the True voxels; None when there are none."""
        mask, affine = self.mask, self.affine
        rot = affine[:3, :3]
        if self.aligned:  # the index box maps onto the world box
            # From the anchor's two planes of counts when it has them (every axis is in one), else from the mask.
            box = self._box_from_planes() if len(self._planes) >= 2 else index_box(mask)
            if box is None:
                return None
            corners = np.array(np.meshgrid(*zip(*box), indexing="ij"), dtype=np.float64).reshape(3, -1)
        else:
            # Oblique: the world box of the index box would be too large. A linear function's extremes along each
            # k-line lie at the line's first or last foreground voxel, so those (<= 2*X*Y points) suffice.
            rows = mask.any(axis=2)
            if not rows.any():
                return None
            first = np.argmax(mask, axis=2)[rows]
            last = mask.shape[2] - 1 - np.argmax(mask[:, :, ::-1], axis=2)[rows]
            i, j = np.nonzero(rows)
            corners = np.array([np.r_[i, i], np.r_[j, j], np.r_[first, last]], dtype=np.float64)
        world = rot @ corners + affine[:3, 3:4]
        return world.min(axis=1), world.max(axis=1)

    def brain_anchor(self, slab_mm: float = BRAIN_SLAB_MM) -> BrainAnchor | None:
        """See :func:`brain_anchor`."""
        mask, affine = self.mask, self.affine
        if self.aligned:
            return self._brain_anchor_aligned(slab_mm)
        idx = np.nonzero(mask)
        if idx[0].size == 0:
            return None
        s = affine[2, :3] @ np.asarray(idx, dtype=np.float64) + affine[2, 3]
        top = float(s.max())
        slab = s >= top - slab_mm
        ijk = np.asarray([i[slab] for i in idx], dtype=np.float64)
        ra = affine[:2, :3] @ ijk + affine[:2, 3:4]
        point = np.array([ra[0].mean(), ra[1].mean(), top])
        return BrainAnchor(point=point, ap_extent=float(np.ptp(ra[1])),
                           r_range=(float(ra[0].min()), float(ra[0].max())))

    def _brain_anchor_aligned(self, slab_mm: float) -> BrainAnchor | None:
        """The anchor from two planes of counts: over the R index axis (S x A counts) and over the A one (S x R)."""
        affine = self.affine
        axis_of = [int(np.flatnonzero(affine[w, :3])[0]) for w in range(3)]  # index axis along R, A, S

        def world(w: int, index: np.ndarray) -> np.ndarray:
            return affine[w, axis_of[w]] * index + affine[w, 3]

        a_s = axis_of[2]
        # counts[w]: (S index, index along world axis w) voxel counts, w = R (0) and A (1)
        counts = [_keep_order(self._plane(axis_of[1 - w]), axis_of[1 - w], a_s) for w in (0, 1)]
        per_s = counts[0].sum(axis=1, dtype=np.int64)
        ks = np.flatnonzero(per_s)
        if ks.size == 0:
            return None
        s_of = world(2, ks.astype(np.float64))
        top = float(s_of.max())
        keep = ks[s_of >= top - slab_mm]  # the slab's slices
        centre, extent = [], []
        for w in (0, 1):
            along = counts[w][keep].sum(axis=0, dtype=np.int64)
            coords = world(w, np.arange(along.size, dtype=np.float64))
            centre.append(float(along @ coords / along.sum()))
            used = coords[along > 0]
            extent.append((float(used.min()), float(used.max())))
        return BrainAnchor(point=np.array([centre[0], centre[1], top]), ap_extent=extent[1][1] - extent[1][0],
                           r_range=extent[0])


def _keep_order(plane: np.ndarray, summed: int, first: int) -> np.ndarray:
    """A plane of counts summed over index axis ``summed``, laid out with index axis ``first`` as its rows."""
    kept = [a for a in range(3) if a != summed]
    return plane if kept[0] == first else plane.T


def _reduce_plane(plane: np.ndarray, summed: int, axis: int) -> np.ndarray:
    """Counts at each index of ``axis`` from a plane summed over ``summed`` (``axis`` one of the two it keeps)."""
    kept = [a for a in range(3) if a != summed]
    return plane.sum(axis=1 - kept.index(axis), dtype=np.int64)


def foreground_bounds(mask: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """World bounding box (min, max, mm) of the centres of the True voxels; None when there are none."""
    return MaskGeometry(mask, affine).bounds()


@dataclass(frozen=True)
class BrainAnchor:
    """Where crop "brain" measures from (world mm): see :func:`brain_anchor`."""

    point: np.ndarray  # (R, A, S): R/A centroid of the top slab, S of the top
    ap_extent: float  # A-P extent of the top slab, mm
    r_range: tuple[float, float]  # L-R extent (min, max R) of the top slab, mm


def brain_anchor(mask: np.ndarray, affine: np.ndarray, slab_mm: float = BRAIN_SLAB_MM) -> BrainAnchor | None:
    """The top (highest world S) of the True voxels and the R/A centroid of those within ``slab_mm`` of it.

    On a whole-head mask the top is the vertex and the slab is the cranium, so the neck and face below do not
    move the anchor; None when the mask is empty.
    """
    return MaskGeometry(mask, affine).brain_anchor(slab_mm)


def brain_center(anchor: BrainAnchor, offset: tuple[float, float, float] | None) -> np.ndarray:
    """Box centre for crop "brain": the anchor plus ``offset`` (mm), by default (0, 0, -0.42 x A-P extent)."""
    if offset is None:
        offset = (0.0, 0.0, -BRAIN_DEPTH_PER_AP * anchor.ap_extent)
    return anchor.point + np.asarray(offset, dtype=np.float64)


def output_grid(
    affine: np.ndarray,
    shape: tuple[int, ...],
    spacing: tuple[float, float, float],
    out_shape: tuple[int, int, int],
    center: np.ndarray,
) -> OutputGrid:
    """The RAS box of ``out_shape`` voxels of ``spacing`` mm centred (to the nearest voxel) on ``center``."""
    step = np.asarray(spacing, dtype=np.float64)
    size = np.asarray(out_shape, dtype=np.int64)
    lo, hi = world_bounds(affine, shape)
    # Lattice of the whole scan resampled at the target spacing, starting at its lowest voxel centre.
    full = np.floor((hi - lo) / step + 1e-6).astype(np.int64) + 1
    start = np.floor((np.asarray(center, np.float64) - lo) / step - (size - 1) / 2.0 + 0.5).astype(np.int64)
    out = np.eye(4)
    out[:3, :3] = np.diag(step)
    out[:3, 3] = lo + start * step
    end = start + size - 1
    cropped = tuple(_AXES[a] for a in range(3) if start[a] > 0 or end[a] < full[a] - 1)
    padded = tuple(_AXES[a] for a in range(3) if start[a] < 0 or end[a] > full[a] - 1)
    return OutputGrid(affine=out, shape=tuple(int(s) for s in size), cropped=cropped, padded=padded)
