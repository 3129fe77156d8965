"""The preprocessing steps as they were before their speed rewrites, kept as oracles: the tests check the
package against them on synthetic and real scans, and benchmarks/bench_preprocess.py times and compares both.

- ``reference_resample``: the anti-aliased resampling before the banded-matrix Gaussian (a C-order copy of the
  reachable block, scipy.ndimage.gaussian_filter on all of it with float64 accumulation, then SimpleITK).
- ``reference_foreground``: ``pipeline._foreground`` before the memory-order rewrite (scipy's gaussian_filter,
  sigma 1 truncated at 4 sigma with mirrored edges; np.histogram for Otsu's level; ndimage.label at full size).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from age2hie_hub.dwi.mask import otsu_threshold
from age2hie_hub.preprocess import resample as R
from age2hie_hub.preprocess.pipeline import HEAD_LEVEL_SHARE


def reference_resample(data, source_affine, target_affine, shape, interpolation="linear", *, fill=0.0,
                       source=None, antialias=False, zero_background=False):
    mapping = R.voxel_map(source_affine, target_affine, source)
    reach = mapping @ R._box_corners(shape)
    sigmas = R.antialias_sigmas(mapping) if antialias else np.zeros(3)
    margin = R._MARGIN[interpolation] + np.ceil(R._TRUNCATE * sigmas).astype(int)
    lo = np.maximum(np.floor(reach[:3].min(axis=1)).astype(int) - margin, 0)
    hi = np.minimum(np.ceil(reach[:3].max(axis=1)).astype(int) + margin, np.array(data.shape) - 1)
    if np.any(lo > hi):
        return np.full(shape, fill, dtype=np.float32)
    block = np.ascontiguousarray(data[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1], dtype=np.float32)
    inside = None
    if sigmas.any():
        if zero_background and not block.all():
            inside = (block != 0).astype(np.float32)
            weight = ndimage.gaussian_filter(inside, sigmas, mode="nearest", truncate=R._TRUNCATE)
            block = ndimage.gaussian_filter(block, sigmas, mode="nearest", truncate=R._TRUNCATE)
            np.divide(block, weight, out=block, where=weight > 1e-3)
            block[weight <= 1e-3] = 0.0
        else:
            block = ndimage.gaussian_filter(block, sigmas, mode="nearest", truncate=R._TRUNCATE)
    mapping = mapping.copy()
    mapping[:3, 3] -= lo
    out = R._sitk_resample(block, mapping, shape, interpolation, fill)
    if inside is not None:
        keep = R._sitk_resample(inside, mapping, shape, "linear", 0.0) >= 0.5
        out[~keep] = fill
    return out


def reference_foreground(data, config, notes):
    level = config.foreground_threshold
    if config.foreground == "threshold":
        return data > level, level
    smooth = ndimage.gaussian_filter(data, sigma=1.0)
    above = smooth[smooth > level]
    if above.size == 0:
        return smooth > level, level
    level = max(level, otsu_threshold(above))
    outline = max(config.foreground_threshold, HEAD_LEVEL_SHARE * level) if config.crop == "brain" else level
    labels, n = ndimage.label(smooth > outline)
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        mask = labels == 1 + int(np.argmax(sizes))
    else:
        mask = labels > 0
    notes.append(f"foreground: Otsu level {level:.4g}, largest connected region")
    return mask, level
