"""``preprocess``: the one pure function that turns input volumes into a model's input array."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from age2hie_hub._threads import cue
from age2hie_hub.errors import VolumeReadError
from age2hie_hub.io import Volume
from age2hie_hub.preprocess.config import PreprocessConfig
from age2hie_hub.preprocess.crop import (
    MaskGeometry,
    brain_anchor,
    brain_center,
    foreground_bounds,
    fov_center,
    memory_view,
    output_grid,
    world_bounds,
)
from age2hie_hub.preprocess.intensity import normalize
from age2hie_hub.preprocess.orient import obliquity_degrees, orientation_codes, reorient_to_ras
from age2hie_hub.preprocess.resample import resample_array

logger = logging.getLogger(__name__)
# crop "brain" with foreground "otsu": the head outline is the smoothed image above this share of Otsu's level.
HEAD_LEVEL_SHARE = 0.5
# Least distance (mm) from that head outline to the brain at the top and on the left and right: 10, 8 and 8 mm
# on the 155 IXI T1 (DLMUSE brain; 14, 13, 13 on average). A box that cuts the brain also cuts this inset region.
SCALP_MM = 8.0


@dataclass(frozen=True, eq=False)
class Preprocessed:
    """A model's input and where it lies in the world.

    array:  float32 (C, X, Y, Z), channels first, X/Y/Z running along R/A/S.
    affine: 4x4 voxel-to-world (RAS mm) matrix of the output grid; with
            :func:`~age2hie_hub.preprocess.resample_to` it puts maps computed on this grid back on the scan.
    notes:  what was changed or guessed, in order, for logs and prediction reports.
    warnings: the notes that change what the model sees beyond the configured steps (foreground cut off by
            the box, no foreground found); also in ``notes``. Predictions report them as warnings.
    """

    array: np.ndarray
    affine: np.ndarray
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)


def _fmt(values: Sequence[float]) -> str:
    return "x".join(f"{v:.3g}" for v in values)


def _name(volume: Volume, index: int) -> str:
    return str(volume.source) if volume.source else f"input volume {index}"


def _as_channels(volumes: Volume | Sequence[Volume], channels: int) -> tuple[list[Volume], list[str]]:
    """One 3D volume per channel. A single 4D volume with T == channels is split along T (e.g. ADC + Z-ADC
    stored as one file); any other 4D input is refused, because which volume to use is a guess."""
    notes: list[str] = []
    items = [volumes] if isinstance(volumes, Volume) else list(volumes)
    if not items or not all(isinstance(v, Volume) for v in items):
        raise TypeError("preprocess needs a Volume or a sequence of Volumes (one per channel)")
    if len(items) == 1 and items[0].data.ndim == 4 and items[0].data.shape[3] == channels:
        vol = items[0]
        if channels > 1:
            notes.append(f"split the 4D input's {channels} volumes into {channels} channels")
        items = [Volume(vol.data[..., t], vol.affine, vol.metadata) for t in range(channels)]
    # A 4D file holding a single volume is a 3D image in disguise.
    items = [Volume(v.data[..., 0], v.affine, v.metadata) if v.data.ndim == 4 and v.data.shape[3] == 1 else v
             for v in items]
    for i, vol in enumerate(items):
        if vol.data.ndim != 3:
            raise VolumeReadError(
                f"{_name(vol, i)}: is 4D with {vol.data.shape[3]} volumes but the model expects {channels} "
                "3D channel(s); pick the volume to use (e.g. compute the ADC of a DWI series with "
                "age2hie_hub.dwi.compute_adc)"
            )
        if min(vol.data.shape) < 1:
            raise VolumeReadError(f"{_name(vol, i)}: is empty (shape {vol.data.shape})")
    if len(items) != channels:
        raise ValueError(
            f"the model expects {channels} input channel(s) but {len(items)} volume(s) were given "
            f"({', '.join(_name(v, i) for i, v in enumerate(items))})"
        )
    return items, notes


def _check_geometry(volume: Volume, index: int) -> None:
    affine = volume.affine
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise VolumeReadError(
            f"{_name(volume, index)}: its affine is singular or not finite (a voxel axis has zero length), so its "
            "voxels have no world position; fix the header's spacing/direction"
        )


def _finite(volume: Volume, index: int, notes: list[str]) -> Volume:
    # Fast path: the sum is finite when every voxel is (in memory order: readers hand back transposed views). A
    # float32 sum can also overflow on finite data; that case falls through to the exact count below.
    data = volume.data
    if data.dtype == np.float32:
        with np.errstate(over="ignore"):  # an overflow is not an error here: the exact count below decides
            total = np.sum(memory_view(data)[0] if data.ndim == 3 else data)
    else:
        total = np.sum(data, dtype=np.float64)
    if np.isfinite(total):
        return volume
    bad = ~np.isfinite(volume.data)
    n_bad = int(np.count_nonzero(bad))
    if n_bad == 0:
        return volume
    if n_bad == volume.data.size:
        raise VolumeReadError(f"{_name(volume, index)}: every voxel is NaN or infinite")
    notes.append(f"channel {index}: set {n_bad} non-finite voxel(s) to 0")
    return volume.with_data(np.where(bad, np.float32(0.0), volume.data))


_SIDES = (("left", "right"), ("posterior", "anterior"), ("inferior", "superior"))


def cut_off_message(fg: tuple[np.ndarray, np.ndarray], affine: np.ndarray, config: PreprocessConfig,
                    axes: Sequence[int] = (0, 1, 2), what: str = "foreground") -> str | None:
    """What part of the box ``fg`` (world min/max of voxel centres, mm) lies outside the output box, or None.

    Names each side that is cut and by how many mm. The box is centred to the nearest output voxel, so a
    foreground that fits by size can still stick out by up to half an output voxel; the message says so
    rather than comparing sizes that contradict it.
    """
    step = np.asarray(config.spacing, dtype=np.float64)
    lo = np.asarray(affine, np.float64)[:3, 3] - step / 2
    hi = lo + step * np.asarray(config.shape)
    parts = []
    for a in axes:
        below, above = lo[a] - fg[0][a], fg[1][a] - hi[a]
        sides = [f"{d:.1f} mm beyond its {side} edge" for d, side in zip((below, above), _SIDES[a])
                 if np.isfinite(d) and d > 1e-6]
        if not sides:
            continue
        size, box = fg[1][a] - fg[0][a], hi[a] - lo[a]
        if not np.isfinite(size):
            why = ""
        elif size <= box:
            why = (f" ({what} {size:.1f} mm, box {box:.1f} mm: it would fit, but the box is centred to the "
                   "nearest output voxel" + (" on the estimated brain" if config.crop == "brain" else "") + ")")
        else:
            why = f" ({what} {size:.1f} mm, box {box:.1f} mm)"
        parts.append(f"{'RAS'[a]}: {' and '.join(sides)}{why}")
    if not parts:
        return None
    return f"{what} cut off by the output box: {'; '.join(parts)}"


def _check_cut_off(fg: tuple[np.ndarray, np.ndarray], anchor, affine: np.ndarray, config: PreprocessConfig,
                   name: str, notes: list[str], warnings: list[str]) -> None:
    """Warn (note, warning, log) when the foreground does not fit in the output box: the model sees part of it.

    Under crop "brain" the foreground is the whole head, which is meant to stick out (neck, face, scalp);
    what is checked there is the top and the L-R width of its top 80 mm, less the scalp, both of which hold
    brain. The inferior, anterior and posterior ends of the brain are not known without labels.
    """
    if config.crop == "brain" and anchor is not None:
        # Under foreground "otsu" the outline is the head's: the brain lies at least SCALP_MM inside it (top and
        # sides), so only a box that cuts into that inner region can cut the brain. Under "threshold" (a
        # skull-stripped scan) the outline is the brain's own.
        inset = SCALP_MM if config.foreground == "otsu" else 0.0
        lo_r, hi_r = anchor.r_range[0] + inset, anchor.r_range[1] - inset
        top = (np.array([lo_r, -np.inf, -np.inf]), np.array([hi_r, np.inf, anchor.point[2] - inset]))
        what = "estimated brain (head outline less scalp)" if inset else "brain outline"
        message = cut_off_message(top, affine, config, axes=(0, 2), what=what)
        if message:
            message += ": the brain may be cut off"
    else:
        message = cut_off_message(fg, affine, config)
        if message:
            message += ": part of it is outside what the model sees"
    if message:
        notes.append(message)
        warnings.append(message)
        logger.warning("%s: %s", name, message)


def _foreground(data: np.ndarray, config: PreprocessConfig, notes: list[str]) -> tuple[np.ndarray, float]:
    """The first channel's foreground mask (for the crop) and the raw level above which a voxel counts as
    foreground (for the intensity statistics on the output grid); see PreprocessConfig.foreground.

    The mask only places the box (its bounding box, or crop "brain"'s anchor and cut-off check); the z-score
    region is ``level`` applied on the output grid. Under ``otsu`` all whole-volume work runs on the data in
    memory order (readers hand back transposed, flipped views).
    """
    level = config.foreground_threshold
    if config.foreground == "threshold":
        view, undo = memory_view(data)
        cue()  # what is left of the preprocessing runs on one thread: work waiting beside it may start
        return undo(view > level), level
    from age2hie_hub.dwi.mask import otsu_threshold_fast
    from age2hie_hub.preprocess.resample import gaussian_smooth

    view, undo = memory_view(data)
    # Smoothing first: on the raw image, background noise near the level scatters voxels all over the field of
    # view, and the crop's bounding box would be the whole scan. The largest component drops what is left.
    # sigma 1 voxel, truncated at 4 sigma, edges mirrored: scipy's gaussian_filter defaults, which the models were
    # built with, as banded float32 matrix products (faster: docs/preprocessing.md). The kernel's reach matters
    # beyond its weights: T1 backgrounds are often exactly 0, and which voxels it lifts above 0 enters Otsu's
    # histogram.
    smooth = gaussian_smooth(view, (1.0, 1.0, 1.0), truncate=4.0, mode="reflect")
    cue()  # the Gaussian was the part spread over threads: work waiting beside the preprocessing may start
    above = smooth[smooth > level]
    if above.size == 0:
        return undo(smooth > level), level
    level = max(level, otsu_threshold_fast(above))
    # crop "brain" places the box from the head's outline, so its mask goes down to half the Otsu level: a
    # bias field darkens the vertex of many whole-head T1 (IXI) below the full level, but never to the noise.
    outline = max(config.foreground_threshold, HEAD_LEVEL_SHARE * level) if config.crop == "brain" else level
    mask = _largest_region(smooth > outline)
    notes.append(f"foreground: Otsu level {level:.4g}, largest connected region"
                 + (f" (head outline for the crop at {outline:.4g})" if outline != level else ""))
    return undo(mask), level


def _largest_region(mask: np.ndarray) -> np.ndarray:
    """The voxels of ``mask`` (3D, C-ordered) in its largest face-connected region, found on a 2x coarser grid.

    A coarse voxel is set when any of its 2x2x2 voxels is, so voxels that touch (share a face) lie in the same or
    touching coarse voxels: each region of ``mask`` lies within one coarse region, and the result holds all the
    voxels of the largest (by voxel count of ``mask``) coarse region. It differs from labelling at full
    resolution only where a separate piece's coarse voxels touch the largest region's (at most 3 voxels from it
    in any axis): that piece is kept too. On the smoothed head outlines of the 155 IXI T1 this never moved the
    box (benchmarks/bench_preprocess.py --ixi). The labelling works on 1/8 of the voxels (timing in
    docs/preprocessing.md).
    """
    from scipy import ndimage

    pad = [(0, n % 2) for n in mask.shape]
    full = np.pad(mask, pad) if any(p for _, p in pad) else mask
    count = full.view(np.uint8)
    count = count[0::2] + count[1::2]  # voxels set per 2x2x2 block, one axis at a time
    count = count[:, 0::2] + count[:, 1::2]
    count = count[:, :, 0::2] + count[:, :, 1::2]
    labels, n = ndimage.label(count > 0)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel(), weights=count.ravel())
    sizes[0] = 0
    keep = labels == int(np.argmax(sizes))
    for axis in (2, 1, 0):
        keep = np.repeat(keep, 2, axis=axis)
    keep &= full
    return keep[: mask.shape[0], : mask.shape[1], : mask.shape[2]]


def preprocess(volumes: Volume | Sequence[Volume], config: PreprocessConfig, *,
               assume_finite: bool = False) -> Preprocessed:
    """Apply ``config``: reorient to RAS, resample in world coordinates onto an axis-aligned RAS grid of
    ``config.spacing`` and ``config.shape`` (centred on the field of view or on the first channel's
    foreground), then apply the intensity scheme. All channels go onto the first channel's output grid.

    ``volumes``: one 3D Volume, or one per channel. A single 4D Volume whose T equals ``config.channels``
    is split along T into the channels (a 4D volume with T == 1 counts as 3D); any other 4D input is an
    error naming the file. Voxels outside the scan's field of view are 0 before the intensity scheme.

    Non-finite voxels become 0 (with a note); ``assume_finite=True`` skips that check (a pass over every
    voxel) for volumes the caller knows to be finite, e.g. as ``read_volume`` returns them.

    Pure: the inputs are not modified. Raises ``VolumeReadError`` (naming the file) for volumes that
    cannot be used, ``ValueError`` when the number of volumes does not match ``config.channels``.
    """
    items, notes = _as_channels(volumes, config.channels)
    warnings: list[str] = []
    for i, vol in enumerate(items):
        _check_geometry(vol, i)
    first = items[0]
    name0 = _name(first, 0)

    codes = orientation_codes(first.affine)
    ras = reorient_to_ras(first)
    if codes != "RAS":
        notes.append(f"reoriented {codes} -> RAS")
    items = [ras, *items[1:]] if assume_finite else [_finite(v, i, notes) for i, v in enumerate([ras, *items[1:]])]
    ras = items[0]

    # Output grid from the first channel.
    mask, level = _foreground(ras.data, config, notes)
    where_mask = MaskGeometry(mask, ras.affine)
    anchor = where_mask.brain_anchor() if config.crop == "brain" else None  # None when the mask is empty
    fg = where_mask.bounds()
    if config.crop == "foreground" and fg is not None:
        center = (fg[0] + fg[1]) / 2.0
        where = "foreground"
    elif anchor is not None:
        center = brain_center(anchor, config.brain_offset)
        where = "brain (placed from the foreground's top and upper R/A centre)"
    else:
        if config.crop in ("foreground", "brain"):
            message = f"no foreground voxels (> {level:g}): the crop is centred on the field of view"
            notes.append(message)
            warnings.append(message)
            logger.warning("%s: %s", name0, message)
        center = fov_center(ras.affine, ras.spatial_shape)
        where = "field of view"
    grid = output_grid(ras.affine, ras.spatial_shape, config.spacing, config.shape, center)

    spacing_in = ras.spacing
    oblique = obliquity_degrees(ras.affine)
    if oblique > 1e-3:
        notes.append(f"oblique scan ({oblique:.1f} deg off RAS) resampled onto an axis-aligned RAS grid")
    if not np.allclose(spacing_in, config.spacing, rtol=0, atol=1e-4) or oblique > 1e-3:
        smoothed = config.antialias and np.any(np.asarray(config.spacing) > np.asarray(spacing_in) * (1 + 1e-6))
        notes.append(f"resampled {_fmt(spacing_in)} -> {_fmt(config.spacing)} mm ({config.interpolation}"
                     + (", anti-aliased" if smoothed else "") + ")")
    change = " and ".join(
        [f"cropped along {', '.join(grid.cropped)}"] * bool(grid.cropped)
        + [f"padded with 0 along {', '.join(grid.padded)}"] * bool(grid.padded)
    )
    if change:
        notes.append(f"{change} to {_fmt(config.shape)} voxels, centred on the {where}")
    if fg is not None:
        _check_cut_off(fg, anchor, grid.affine, config, name0, notes, warnings)

    out = np.empty((len(items), *grid.shape), dtype=np.float32)
    for c, vol in enumerate(items):
        if c > 0:
            same = vol.spatial_shape == first.spatial_shape and np.allclose(vol.affine, first.affine, atol=1e-4)
            if not same:
                notes.append(f"channel {c} ({_name(vol, c)}) is on a different grid than channel 0: resampled "
                             "onto channel 0's output grid")
            lo_c, hi_c = world_bounds(vol.affine, vol.spatial_shape)
            lo_0, hi_0 = world_bounds(first.affine, first.spatial_shape)
            if np.any(hi_c < lo_0) or np.any(lo_c > hi_0):
                raise VolumeReadError(
                    f"{_name(vol, c)}: does not overlap {name0} in world space, so it cannot be a channel of the "
                    "same scan; check that the files belong together and that their headers are right"
                )
        out[c] = resample_array(
            vol.data, vol.affine, grid.affine, grid.shape, config.interpolation, source=_name(vol, c),
            antialias=config.antialias, zero_background=config.foreground == "threshold",
        )

    out_mask = out[0] > level
    out, intensity_notes = normalize(
        out,
        out_mask,
        config,
        sources=[_name(v, i) for i, v in enumerate(items)],
        units=[v.metadata.get("units") for v in items],
    )
    notes.extend(intensity_notes)
    for note in notes:
        logger.debug("%s: %s", name0, note)
    return Preprocessed(array=out, affine=grid.affine, notes=tuple(notes), warnings=tuple(warnings))


def brain_offset_from_labels(volume: Volume, brain: Volume, config: PreprocessConfig) -> np.ndarray:
    """(R, A, S) mm from crop "brain"'s anchor on ``volume`` to the centre of ``brain``'s bounding box.

    ``brain``: a label or mask volume of the same scan (any grid; > 0 is brain), e.g. an anatomical
    segmentation of a training subject. Averaged over training subjects (:func:`fit_brain_offset`) it gives
    ``PreprocessConfig.brain_offset``; prediction then needs no labels.
    """
    ras = reorient_to_ras(volume)
    mask, _ = _foreground(np.nan_to_num(ras.data), config, [])
    anchor = brain_anchor(mask, ras.affine)
    labels = reorient_to_ras(brain)
    box = foreground_bounds(labels.data > 0, labels.affine)
    if anchor is None or box is None:
        raise VolumeReadError(f"{_name(volume if anchor is None else brain, 0)}: no foreground to measure from")
    return (box[0] + box[1]) / 2.0 - anchor.point


def fit_brain_offset(pairs: Sequence[tuple[Volume, Volume]], config: PreprocessConfig) -> tuple[float, float, float]:
    """Mean :func:`brain_offset_from_labels` over (scan, brain labels) pairs of the training subjects, rounded
    to 0.1 mm: the ``brain_offset`` to store in a model's config (``config.foreground`` as the model uses it)."""
    offsets = np.array([brain_offset_from_labels(v, b, config) for v, b in pairs])
    if offsets.size == 0:
        raise ValueError("fit_brain_offset needs at least one (scan, brain labels) pair")
    return tuple(float(round(x, 1)) for x in offsets.mean(axis=0))
