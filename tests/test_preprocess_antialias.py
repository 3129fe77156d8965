"""Anti-aliased resampling: the banded-matrix Gaussian and the cropped, memory-order block give the results of
the straightforward implementation (scipy's gaussian_filter on a C-order copy of the whole reachable block).

Tolerance: both sides smooth float32 data; scipy accumulates in float64 and rounds once, the matrix products
accumulate in float32 (13-28 terms per axis, three axes), so values differ by a few float32 ulps: 1e-6 of the
data's range is ~10x that and ~1e4x below anything a model could see. The zero pattern (which output voxels
are outside the object) must be identical.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from age2hie_hub.io import Volume
from age2hie_hub.preprocess import PreprocessConfig, preprocess
from age2hie_hub.preprocess import resample as R

from reference_preprocessing import reference_resample

RTOL = 1e-6  # of the data's range, see the module docstring


def oblique(spacing, degrees, origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Voxel-to-world affine: LAS-stored voxels of ``spacing`` rotated by ``degrees`` about two axes."""
    a, b = np.radians(degrees), np.radians(degrees / 2)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    rz = np.array([[math.cos(b), -math.sin(b), 0], [math.sin(b), math.cos(b), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([-spacing[0], spacing[1], spacing[2]])
    affine[:3, 3] = origin
    return affine


def brain_map(shape, affine, seed=0) -> np.ndarray:
    """A skull-stripped ADC-like map: a noisy ellipsoid (~1e-3) with a darker lesion, exact zeros outside."""
    rng = np.random.default_rng(seed)
    idx = np.indices(shape).reshape(3, -1)
    world = (affine[:3, :3] @ idx + affine[:3, 3:4]).reshape(3, *shape)
    centre = affine[:3, :3] @ ((np.array(shape) - 1) / 2) + affine[:3, 3]
    r = sum(((world[a] - centre[a]) / (40.0, 48.0, 36.0)[a]) ** 2 for a in range(3))
    lesion = sum(((world[a] - centre[a] - 12.0) / 8.0) ** 2 for a in range(3)) < 1
    values = 1.1e-3 + 2e-4 * rng.standard_normal(shape) - 6e-4 * lesion
    return np.where(r < 1, values, 0.0).astype(np.float32)


def assert_same(ours: np.ndarray, ref: np.ndarray, scale: float) -> None:
    np.testing.assert_array_equal(ours == 0, ref == 0)  # the same voxels are outside the object / the scan
    assert np.max(np.abs(ours.astype(np.float64) - ref)) <= RTOL * scale


@pytest.mark.parametrize("shape,sigmas", [
    ((40, 61, 45), (0.53, 1.97, 1.97)),  # a BONBID block: 2.4 mm slices, 0.86 mm in plane -> 3.5 mm
    ((7, 5, 30), (2.5, 0.0, 0.8)),  # kernels wider than the axis (the edge voxel repeated many times)
    ((3, 50, 1), (0.0, 9.0, 0.4)),  # one-voxel axis, radius 27 on 50 voxels
    ((30, 20, 40), (1.2, 0.0, 0.0)),
    ((30, 20, 40), (0.0, 0.0, 1.5)),
])
def test_gaussian_smooth_is_scipys_gaussian_filter_to_float32_rounding(shape, sigmas):
    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    ref = ndimage.gaussian_filter(x, sigmas, mode="nearest", truncate=3.0)
    out = R.gaussian_smooth(x, sigmas)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert np.max(np.abs(out - ref)) < 1e-6
    assert not np.shares_memory(out, x)  # a new array: the input is left as it was
    # Negative control: a kernel truncated at 2 sigma instead of 3 is told apart.
    if max(sigmas) > 1:
        other = ndimage.gaussian_filter(x, sigmas, mode="nearest", truncate=2.0)
        assert np.max(np.abs(out - other)) > 1e-4


def test_gaussian_matrix_rows_are_the_normalised_kernel_with_the_edge_repeated():
    matrix, radius = R.gaussian_matrix(10, 1.0)
    assert radius == 3 and matrix.shape == (10, 10)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=1e-6)
    taps = np.exp(-0.5 * np.arange(-3, 4) ** 2)
    taps /= taps.sum()
    np.testing.assert_allclose(matrix[5, 2:9], taps, rtol=1e-6)
    np.testing.assert_allclose(matrix[0, 0], taps[:4].sum(), rtol=1e-6)  # voxels -3..0 are all voxel 0


@pytest.mark.parametrize("degrees", [0.0, 9.0])
@pytest.mark.parametrize("layout", ["C", "transposed"])
def test_skull_stripped_map_resamples_as_before(degrees, layout):
    """Normalised (masked) anti-aliasing on an oblique or straight BONBID-like grid, from a C-order array and
    from the transposed view readers return: the same values and the same object edge as the reference."""
    shape = (150, 150, 40)
    affine = oblique((0.86, 0.86, 2.4), degrees, origin=(60.0, -70.0, -45.0))
    data = brain_map(shape, affine)
    if layout == "transposed":
        data = np.ascontiguousarray(data.T).T  # same values, Fortran order (a reader's transposed array)
        assert data.flags.f_contiguous and not data.flags.c_contiguous
    config = PreprocessConfig(spacing=(3.5, 3.5, 3.5), shape=(32, 36, 28))
    grid = preprocess(Volume(data, affine), config).affine
    before = data.copy()
    for zero_background in (True, False):
        ours = R.resample_array(data, affine, grid, config.shape, antialias=True, zero_background=zero_background)
        np.testing.assert_array_equal(data, before)  # the input is left as it was
        ref = reference_resample(data, affine, grid, config.shape, antialias=True, zero_background=zero_background)
        assert_same(ours, ref, float(data.max()))
    # The anti-aliasing is on here: without it the output is clearly different (the comparison can fail).
    plain = R.resample_array(data, affine, grid, config.shape)
    assert np.max(np.abs(plain - ours)) > 1e-4


def test_a_small_object_in_a_large_block_and_a_fill_value_resample_as_before():
    """The smoothing runs on the object's box (plus the kernel's radius) only; outside it the block is 0 before
    and after. An object near the block's edge, a fill value for the outside and an all-zero block."""
    shape = (120, 120, 30)
    affine = oblique((1.0, 1.0, 3.0), 4.0)
    data = np.zeros(shape, dtype=np.float32)
    data[55:70, 3:20, 5:12] = 1.0 + np.random.default_rng(2).random((15, 17, 7), dtype=np.float32)
    target = np.diag([4.0, 4.0, 4.0, 1.0])
    target[:3, 3] = affine[:3, :3] @ np.array([20.0, -10.0, 0.0]) + affine[:3, 3]
    for zero_background in (True, False):
        for fill in (0.0, -1.0):
            kwargs = dict(fill=fill, antialias=True, zero_background=zero_background)
            ours = R.resample_array(data, affine, target, (30, 32, 24), **kwargs)
            ref = reference_resample(data, affine, target, (30, 32, 24), **kwargs)
            assert_same(ours, ref, 2.0)
            empty = R.resample_array(np.zeros(shape, np.float32), affine, target, (30, 32, 24), **kwargs)
            empty_ref = reference_resample(np.zeros(shape, np.float32), affine, target, (30, 32, 24), **kwargs)
            np.testing.assert_array_equal(empty, empty_ref)


@pytest.mark.parametrize("interpolation", ["nearest", "bspline"])
def test_other_interpolations_with_antialias_resample_as_before(interpolation):
    shape = (90, 90, 30)
    affine = oblique((1.0, 1.0, 2.5), 6.0)
    data = brain_map(shape, affine, seed=4)
    target = np.diag([3.0, 3.0, 3.0, 1.0])
    target[:3, 3] = affine[:3, 3] + affine[:3, :3] @ np.array([5.0, 5.0, 2.0])
    ours = R.resample_array(data, affine, target, (24, 24, 20), interpolation, antialias=True, zero_background=True)
    ref = reference_resample(data, affine, target, (24, 24, 20), interpolation, antialias=True, zero_background=True)
    assert_same(ours, ref, float(data.max()))


def test_a_real_bonbid_map_preprocesses_as_before(shared_data, monkeypatch):
    """Real BONBID-HIE ADC maps (one straight, one oblique; the age2hie model's 3.5 mm grid): the model's input
    (z-scored) matches the reference to 1e-4 and the brain's edge is the same voxel for voxel."""
    from age2hie_hub.dwi import adc_to_mm2s
    from age2hie_hub.io import read_volume
    from age2hie_hub.preprocess import pipeline
    from age2hie_hub.preprocess.orient import obliquity_degrees, reorient_to_ras

    folder = shared_data / "bonbid2023" / "1ADC_ss"
    paths = sorted(folder.glob("*.mha"))
    if not paths:
        pytest.skip(f"no BONBID-HIE ADC maps in {folder}")
    picked = {}
    for path in paths:
        volume = read_volume(path)
        kind = obliquity_degrees(reorient_to_ras(volume).affine) > 1e-3
        if kind not in picked and volume.spatial_shape[0] >= 256:  # in-plane 0.86 mm: the large blocks
            picked[kind] = volume
        if len(picked) == 2:
            break
    assert picked, "no 256x256 map found"
    config = PreprocessConfig(spacing=(3.5, 3.5, 3.5), shape=(32, 36, 28))
    for volume in picked.values():
        adc = adc_to_mm2s(volume)[0]
        ours = preprocess(adc, config)
        with monkeypatch.context() as m:
            m.setattr(pipeline, "resample_array", reference_resample)
            ref = preprocess(adc, config)
        assert "anti-aliased" in " ".join(ours.notes)
        np.testing.assert_array_equal(ours.array == 0, ref.array == 0)
        assert np.max(np.abs(ours.array - ref.array)) < 1e-4  # z-scores: ~1e-6 relative to the brain's range
