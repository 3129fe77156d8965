"""Axis-aligned resampling as per-axis matrix products (preprocess/separable.py) against SimpleITK's pass.

The reference is ``resample_array`` with the matrix path switched off: the Gaussian on the block and ITK's
linear interpolation. Both must give the same values to float32 rounding on every geometry the pipeline meets:
flips and permutations (readers' transposed views, reorientation), partial fields of view (padding), target
points exactly on the footprint's edge, anti-aliasing on and off, skull-stripped maps (normalised convolution).
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from age2hie_hub.preprocess import resample as resample_module
from age2hie_hub.preprocess.resample import resample_array
from age2hie_hub.preprocess.separable import aligned_axes, interpolation_matrix


def reference(monkeypatch, *args, **kwargs) -> np.ndarray:
    with monkeypatch.context() as m:
        m.setattr(resample_module, "aligned_axes", lambda mapping, shape: None)
        return resample_array(*args, **kwargs)


def used_matrices(monkeypatch) -> list:
    """Record whether resample_array took the matrix path."""
    calls: list = []
    original = resample_module.resample_separable

    def spy(*args, **kwargs):
        calls.append(args[3])
        return original(*args, **kwargs)

    monkeypatch.setattr(resample_module, "resample_separable", spy)
    return calls


def volume(rng, shape=(40, 44, 30), skull_stripped=False) -> np.ndarray:
    data = rng.gamma(2.0, 400.0, size=shape).astype(np.float32)
    if skull_stripped:
        ijk = np.indices(shape).astype(float)
        centre = (np.asarray(shape, float) - 1) / 2
        r = np.sqrt((((ijk - centre[:, None, None, None]) / (0.4 * np.asarray(shape, float))[:, None, None, None]) ** 2)
                    .sum(axis=0))
        data[r > 1] = 0.0
    return data


def grid(spacing_in, spacing_out, shape_out, offset, flips=(1, 1, 1), order=(0, 1, 2), shape_in=(40, 44, 30)):
    """(source affine, target affine): the source permuted/flipped with its first voxel at the world origin, the
    target RAS-aligned with its first voxel at ``offset`` mm."""
    source = np.zeros((4, 4))
    source[3, 3] = 1
    for data_axis, world_axis in enumerate(order):
        source[world_axis, data_axis] = flips[data_axis] * spacing_in[data_axis]
    # world origin at the source's first voxel, whatever its flips: the far corner then lies at + extent
    far = source[:3, :3] @ (np.asarray(shape_in, float) - 1)
    source[:3, 3] = -np.minimum(far, 0)
    target = np.diag([*spacing_out, 1.0])
    target[:3, 3] = offset
    return source, target


CASES = {
    # name: (spacing in, spacing out, target shape, offset mm, flips, axis order)
    "downsample_2.5": ((2.0, 2.0, 2.0), (5.0, 5.0, 5.0), (14, 16, 10), (3.0, 1.0, 2.0), (1, 1, 1), (0, 1, 2)),
    "bonbid_like": ((1.5625, 1.5625, 4.0), (3.5, 3.5, 3.5), (16, 18, 30), (5.3, 2.1, -10.0), (-1, 1, 1), (0, 1, 2)),
    "permuted_flipped": ((1.2, 0.9, 2.2), (3.5, 3.5, 3.5), (12, 14, 18), (-2.0, 1.5, -3.0), (1, -1, -1), (2, 0, 1)),
    "upsample": ((4.0, 4.0, 4.0), (1.5, 1.5, 1.5), (20, 20, 20), (10.0, 12.0, 8.0), (1, 1, 1), (0, 1, 2)),
    "padding_beyond_fov": ((2.0, 2.0, 2.0), (3.0, 3.0, 3.0), (40, 40, 30), (-30.0, -25.0, -20.0), (1, 1, 1), (0, 1, 2)),
    "edge_on_half_voxel": ((2.0, 2.0, 2.0), (4.0, 4.0, 4.0), (22, 24, 17), (-1.0, -1.0, -1.0), (1, 1, 1), (0, 1, 2)),
}


@pytest.mark.numerics
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("skull_stripped", [False, True])
def test_matrix_path_equals_simpleitk(monkeypatch, name, antialias, skull_stripped):
    spacing_in, spacing_out, shape_out, offset, flips, order = CASES[name]
    rng = np.random.default_rng([zlib.crc32(name.encode()), antialias, skull_stripped])
    data = volume(rng, skull_stripped=skull_stripped)
    source, target = grid(spacing_in, spacing_out, shape_out, offset, flips, order)
    kwargs = dict(antialias=antialias, zero_background=skull_stripped)
    expected = reference(monkeypatch, data, source, target, shape_out, "linear", **kwargs)
    calls = used_matrices(monkeypatch)
    got = resample_array(data, source, target, shape_out, "linear", **kwargs)
    assert calls, "an axis-aligned grid should take the matrix path"
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * float(np.abs(expected).max() or 1.0))
    # the zero background (padding, outside the object) is exactly zero on both paths
    np.testing.assert_array_equal(got == 0, expected == 0)


@pytest.mark.numerics
def test_fill_value_outside_the_field_of_view(monkeypatch):
    rng = np.random.default_rng(3)
    data = volume(rng, shape=(20, 20, 20))
    source, target = grid((2.0, 2.0, 2.0), (3.0, 3.0, 3.0), (20, 20, 20), (-12.0, -6.0, 0.0), shape_in=(20, 20, 20))
    expected = reference(monkeypatch, data, source, target, (20, 20, 20), "linear", fill=-7.0)
    got = resample_array(data, source, target, (20, 20, 20), "linear", fill=-7.0)
    assert (expected == -7.0).any()
    np.testing.assert_array_equal(got == -7.0, expected == -7.0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)


def test_oblique_maps_are_not_aligned():
    mapping = np.eye(4)
    assert aligned_axes(mapping, (10, 10, 10)) == (0, 1, 2)
    permuted = np.eye(4)[[2, 0, 1, 3]]
    assert aligned_axes(permuted, (10, 10, 10)) == (2, 0, 1)
    angle = np.deg2rad(0.5)
    oblique = np.eye(4)
    oblique[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    assert aligned_axes(oblique, (10, 10, 10)) is None
    # a rounding-level off-axis term over a 10-voxel grid moves no sample: still aligned
    tiny = np.eye(4)
    tiny[0, 1] = 1e-9
    assert aligned_axes(tiny, (10, 10, 10)) == (0, 1, 2)


def test_interpolation_matrix_follows_itk_boundary_rule():
    weights, inside = interpolation_matrix(np.array([-0.6, -0.5, -0.2, 0.0, 1.25, 3.9, 4.49, 4.5]), 5)
    np.testing.assert_array_equal(inside, [False, True, True, True, True, True, True, False])
    np.testing.assert_allclose(weights.sum(axis=1), inside.astype(float))
    assert weights[1, 0] == 1.0 and weights[2, 0] == 1.0  # outer half voxel: the edge voxel's value
    np.testing.assert_allclose(weights[4, 1:3], [0.75, 0.25])
    assert weights[6, 4] == 1.0  # beyond the last centre, inside the footprint: clamped to it


def test_nearest_and_bspline_keep_the_simpleitk_path(monkeypatch):
    calls = used_matrices(monkeypatch)
    rng = np.random.default_rng(5)
    data = volume(rng, shape=(16, 16, 16))
    source, target = grid((2.0, 2.0, 2.0), (3.0, 3.0, 3.0), (8, 8, 8), (2.0, 2.0, 2.0), shape_in=(16, 16, 16))
    for interpolation in ("nearest", "bspline"):
        resample_array(data, source, target, (8, 8, 8), interpolation)
    assert calls == []



def _stored_backwards(data: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """The same index -> value array, its memory running backwards along ``axes`` (a negative-stride view)."""
    return np.flip(np.ascontiguousarray(np.flip(data, axes)), axes)


@pytest.mark.numerics
@pytest.mark.parametrize("oblique", [False, True])
@pytest.mark.parametrize("skull_stripped", [False, True])
def test_any_memory_layout_gives_the_same_values(oblique, skull_stripped):
    """Readers hand back transposed views and reorientation flips axes: resampling works in the array's memory
    order (its affine adjusted to keep world positions), so every layout of the same voxels gives the same
    output, on the matrix path and on SimpleITK's (oblique)."""
    rng = np.random.default_rng([11, oblique, skull_stripped])
    data = volume(rng, skull_stripped=skull_stripped)
    source, target = grid((1.2, 0.9, 2.2), (3.5, 3.5, 3.5), (12, 14, 18), (-2.0, 1.5, -3.0), (1, -1, -1), (2, 0, 1))
    if oblique:
        angle = np.deg2rad(7.0)
        turn = np.eye(4)
        turn[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
        source = turn @ source
    kwargs = dict(antialias=True, zero_background=skull_stripped)
    expected = resample_array(data, source, target, (12, 14, 18), "linear", **kwargs)
    layouts = {
        "F-ordered": np.asfortranarray(data),
        "transposed view": np.ascontiguousarray(data.transpose(2, 0, 1)).transpose(1, 2, 0),
        "stored backwards": _stored_backwards(data, (0, 2)),
        "transposed and backwards": _stored_backwards(np.asfortranarray(data), (1,)),
    }
    for name, layout in layouts.items():
        np.testing.assert_array_equal(layout, data)
        got = resample_array(layout, source, target, (12, 14, 18), "linear", **kwargs)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()),
                                   err_msg=name)
        np.testing.assert_array_equal(got == 0, expected == 0, err_msg=name)
    assert min(layouts["stored backwards"].strides) < 0
