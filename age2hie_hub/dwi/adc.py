"""Trace ADC (mm^2/s) from a diffusion-weighted series.

Method, as scanners do it:

- volumes with b <= ``B0_THRESHOLD`` (50 s/mm^2) are b~0; they are averaged arithmetically (repeats of the
  same contrast) and enter the fit at their mean b-value (b = 5 counts as 5, not 0);
- the other volumes are grouped into shells by b rounded to ``SHELL_ROUNDING`` (100 s/mm^2); within a shell
  the directions are combined by a *geometric* mean, i.e. the trace-weighted image, whose log is the
  direction average of log-signals (an arithmetic mean biases ADC in anisotropic tissue);
- scanner-made trace volumes (b > 0, zero gradient) are dropped from a shell that has its directions;
- ADC = -slope of the least-squares line through (b, ln S) over the b~0 point and every shell (with one shell
  this is ln(S0 / Sb) / (b - b0)).

Zero readings in a diffusion-weighted direction are common at high b in quantised (integer) images; they mean
"below one unit", so non-positive direction signals are floored at the series' smallest positive DW signal
(typically 1 for integer data) before the log. With this rule our ADC reproduces the Siemens scanner's own
map (tests/test_dwi.py); treating them as unusable would zero ~150 brain voxels of that scan.
Voxels without usable signal get ADC 0: a non-positive mean b~0 signal, a shell with no positive direction,
or a negative fitted ADC (signal rising with b, which is noise). No masking is done here; use
:func:`age2hie_hub.dwi.brain_mask` for that.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from age2hie_hub.errors import DiffusionError
from age2hie_hub.io.volume import Volume

log = logging.getLogger(__name__)

B0_THRESHOLD = 50.0  # s/mm^2: at or below this a volume is a b~0 reference
_CHUNK = 1 << 16  # voxels per block
SHELL_ROUNDING = 100.0  # s/mm^2: b-values within a shell differ by less (scanners jitter b by a few units)


def group_shells(bvals: Sequence[float], b0_threshold: float = B0_THRESHOLD) -> dict[float, np.ndarray]:
    """{shell b (mean of its members): volume indices}; the b~0 group is the first key."""
    b = np.asarray(bvals, dtype=np.float64)
    groups: dict[float, np.ndarray] = {}
    is_b0 = b <= b0_threshold
    if is_b0.any():
        groups[float(b[is_b0].mean())] = np.flatnonzero(is_b0)
    rounded = np.round(b / SHELL_ROUNDING) * SHELL_ROUNDING
    for key in np.unique(rounded[~is_b0]):
        idx = np.flatnonzero(~is_b0 & (rounded == key))
        groups[float(b[idx].mean())] = idx
    return groups


def compute_adc(volume: Volume, *, bvals: Sequence[float] | None = None,
                b0_threshold: float = B0_THRESHOLD) -> Volume:
    """Trace ADC in mm^2/s on the series' own grid (3D Volume, ``metadata["units"] == "mm2/s"``).

    ``bvals`` overrides ``volume.metadata["bvals"]``. Raises DiffusionError when the input is not a 4D series
    with one b-value per volume, at least one b~0 volume and one diffusion-weighted shell.
    """
    src = volume.source or "<in-memory volume>"
    if volume.data.ndim != 4:
        raise DiffusionError(f"{src}: ADC needs a 4D diffusion series; got a {volume.data.ndim}D image "
                             f"of shape {volume.shape}")
    bvals = volume.metadata.get("bvals") if bvals is None else bvals
    if bvals is None:
        raise DiffusionError(f"{src}: no b-values; put a .bval file beside the image or pass them explicitly")
    b = np.asarray(bvals, dtype=np.float64).ravel()
    if b.size != volume.n_volumes:
        raise DiffusionError(f"{src}: {b.size} b-values for {volume.n_volumes} volumes")
    if not np.all(np.isfinite(b)) or np.any(b < 0):
        raise DiffusionError(f"{src}: b-values must be finite and >= 0, got {b.tolist()}")
    groups = _drop_scanner_trace(group_shells(b, b0_threshold), volume.metadata.get("bvecs"), b, src)
    if not (b <= b0_threshold).any():
        raise DiffusionError(f"{src}: no b~0 volume (b <= {b0_threshold:g} s/mm^2) among b = {sorted(set(b.tolist()))}")
    if len(groups) < 2:
        raise DiffusionError(f"{src}: no diffusion-weighted volume (b > {b0_threshold:g} s/mm^2); ADC is undefined")

    shells = list(groups)
    x = np.asarray(shells, dtype=np.float64)
    xc = x - x.mean()
    flat = volume.data.reshape(-1, volume.n_volumes)  # a view: (voxels, volumes), volumes contiguous
    cols = [_as_slice(idx) for idx in groups.values()]  # slices are views, fancy indices copy
    dw_cols = _as_slice(np.flatnonzero(b > b0_threshold))
    floor = min((float(np.min(flat[i:i + _CHUNK, dw_cols], where=flat[i:i + _CHUNK, dw_cols] > 0,
                              initial=np.inf)) for i in range(0, flat.shape[0], _CHUNK)), default=np.inf)
    floor = floor if np.isfinite(floor) else 1.0
    adc = np.zeros(flat.shape[0], dtype=np.float64)
    usable = np.ones(flat.shape[0], dtype=bool)
    # Voxel chunks keep the float copies cache-sized; the per-voxel work is independent.
    for i in range(0, flat.shape[0], _CHUNK):
        block = flat[i:i + _CHUNK]
        logs = np.empty((block.shape[0], len(shells)), dtype=np.float64)
        ok = usable[i:i + _CHUNK]
        with np.errstate(divide="ignore", invalid="ignore"):
            for g, idx in enumerate(cols):
                sig = block[:, idx]
                if g == 0:
                    # ln of the arithmetic mean of b~0 repeats.
                    mean = sig.mean(axis=1, dtype=np.float64)
                    ok &= mean > 0
                    logs[:, g] = np.log(mean)
                else:
                    # Mean of ln over directions = ln of the geometric mean (the trace-weighted signal).
                    ok &= np.any(sig > 0, axis=1)
                    logs[:, g] = np.log(np.maximum(sig, np.float32(floor))).mean(axis=1, dtype=np.float64)
        logs[~ok] = 0.0
        # Least-squares slope of ln S on b, per voxel: sum(xc * y) / sum(xc^2); ADC is minus the slope.
        adc[i:i + _CHUNK] = -(logs @ xc) / float(xc @ xc)
    adc[~usable | ~np.isfinite(adc) | (adc < 0)] = 0.0
    adc = adc.reshape(volume.spatial_shape)
    n_zero = int((~usable).sum())
    log.info("%s: ADC from b~0 (%d vols, b=%.4g) and shells %s; %d voxels without usable signal set to 0",
             src, len(groups[shells[0]]), shells[0], [round(s) for s in shells[1:]], n_zero)
    meta = {k: v for k, v in volume.metadata.items() if k not in ("bvals", "bvecs", "bvecs_frame")}
    meta.update(units="mm2/s", modality="ADC",
                adc_method={"b0_bval": shells[0], "n_b0": int(len(groups[shells[0]])),
                            "shells": [float(s) for s in shells[1:]],
                            "directions": [int(len(groups[s])) for s in shells[1:]]})
    return Volume(data=adc.astype(np.float32), affine=volume.affine, metadata=meta)


def _drop_scanner_trace(groups: dict[float, np.ndarray], bvecs: Sequence[Sequence[float]] | None, b: np.ndarray,
                        src: str) -> dict[float, np.ndarray]:
    """Drop scanner-made trace volumes (b > 0 with a zero gradient, as Philips appends) from shells that also
    hold the directional volumes they were computed from; a shell made only of such volumes is kept."""
    if bvecs is None or len(bvecs) != b.size:
        return groups
    zero = np.linalg.norm(np.asarray(bvecs, dtype=np.float64).reshape(b.size, 3), axis=1) < 1e-6
    out: dict[float, np.ndarray] = {}
    for key, idx in groups.items():
        keep = idx[~zero[idx]]
        if key > B0_THRESHOLD and 0 < keep.size < idx.size:
            log.info("%s: ignoring %d scanner trace volume(s) in the b=%g shell", src, idx.size - keep.size, key)
            out[float(b[keep].mean())] = keep
        else:
            out[key] = idx
    return out


def _as_slice(idx: np.ndarray) -> slice | np.ndarray:
    """A contiguous run of indices as a slice (a view when indexing), else the indices themselves."""
    if idx.size and np.all(np.diff(idx) == 1):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx
