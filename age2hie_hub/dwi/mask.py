"""A brain/foreground mask for diffusion and ADC volumes: Otsu threshold, largest component, holes filled."""
from __future__ import annotations

import numpy as np

from age2hie_hub.dwi.adc import B0_THRESHOLD
from age2hie_hub.io.volume import Volume


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1D sample (maximises between-class variance of the histogram)."""
    hist, edges = np.histogram(values, bins=bins)
    return _otsu_of_histogram(hist, edges)


def otsu_threshold_fast(values: np.ndarray, bins: int = 256) -> float:
    """:func:`otsu_threshold` of a sample, counted in float32 with one ``bincount`` of uint8 bin numbers.

    ``np.histogram`` works in blocks of 65536 values and corrects every bin index against the edges; on a
    whole-head T1 this is several times faster (docs/preprocessing.md). The bins are the same (``bins`` equal bins
    from the sample's min to its max, the max in the last); a value within float rounding of an inner edge can
    land in the bin next to numpy's, which moves the histogram by single counts. On all 155 IXI T1 the level
    equals ``otsu_threshold``'s (benchmarks/bench_preprocess.py --ixi).
    """
    values = np.asarray(values, dtype=np.float32).ravel()
    lo, hi = float(values.min()), float(values.max())
    if not hi > lo:  # one value: numpy's histogram spans lo - 0.5 .. lo + 0.5
        lo, hi = lo - 0.5, hi + 0.5
    # One float32 buffer, then bin numbers as uint8 (few, small allocations: fresh memory costs page faults).
    index = np.subtract(values, np.float32(lo))
    index *= np.float32(bins / (hi - lo))
    np.clip(index, 0, bins - 1, out=index)
    hist = _count_bytes(index.astype(np.uint8)) if bins <= 256 else np.bincount(index.astype(np.intp), minlength=bins)
    return _otsu_of_histogram(hist[:bins], np.linspace(lo, hi, bins + 1, dtype=np.float32))  # numpy's edges, float32


def _count_bytes(values: np.ndarray) -> np.ndarray:
    """``np.bincount(values, minlength=256)`` of a C-contiguous uint8 array, counted two bytes at a time: one
    bincount of half as many uint16 (256 x 256 pair counts) is cheaper than one of every byte."""
    even = values.size - values.size % 2
    pairs = np.bincount(values[:even].view(np.uint16), minlength=1 << 16).reshape(256, 256)
    hist = pairs.sum(axis=0) + pairs.sum(axis=1)  # either byte of a pair: first (low) and second (high)
    if even < values.size:
        hist[values[-1]] += 1
    return hist


def _otsu_of_histogram(hist: np.ndarray, edges: np.ndarray) -> float:
    """The centre of the bin that maximises the between-class variance of ``hist`` (bin ``edges``)."""
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu0 = m0 / w0
        mu1 = (m0[-1] - m0) / w1
        between = w0 * w1 * (mu0 - mu1) ** 2
    between[~np.isfinite(between)] = -1
    return float(centers[int(np.argmax(between))])


def brain_mask(volume: Volume, *, smooth_sigma: float = 1.0) -> np.ndarray:
    """Boolean foreground mask on the volume's spatial grid.

    For a 4D diffusion series the mean b~0 image is used (the mean over volumes when there are no b-values);
    the image is Gaussian-smoothed (``smooth_sigma`` voxels; a median filter does as well but is over an order
    of magnitude slower on a whole-brain grid), thresholded at Otsu's level, reduced to its largest connected
    component, closed and hole-filled. Meant for skull-on DWI and ADC maps; it is a foreground mask, not a
    skull strip.
    """
    from scipy import ndimage  # imported here: an import inference start-up does not need

    data = volume.data
    if data.ndim == 4:
        bvals = volume.metadata.get("bvals")
        b = np.asarray(bvals, dtype=float) if bvals is not None and len(bvals) == data.shape[3] else None
        sel = b <= B0_THRESHOLD if b is not None and (b <= B0_THRESHOLD).any() else slice(None)
        img = data[..., sel].mean(axis=-1)
    else:
        img = data
    img = np.where(np.isfinite(img), img, 0).astype(np.float32)
    if smooth_sigma > 0:
        img = ndimage.gaussian_filter(img, sigma=smooth_sigma)
    positive = img[img > 0]
    if positive.size == 0:
        return np.zeros(img.shape, dtype=bool)
    mask = img > otsu_threshold(positive)
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(np.argmax(sizes))
    mask = ndimage.binary_closing(mask, structure=np.ones((3, 3, 3)), iterations=1, border_value=0)
    return ndimage.binary_fill_holes(mask)
