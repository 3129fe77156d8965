"""Preprocessing: orientation, world-space resampling (oblique too), crop modes, intensity, channels, config."""
from __future__ import annotations

import dataclasses
import json
import warnings

import nibabel as nib
import numpy as np
import pytest
from conftest import package_data
from scipy import ndimage

from age2hie_hub.errors import VolumeReadError
from age2hie_hub.io import Volume
from age2hie_hub.preprocess import PreprocessConfig, Preprocessed, preprocess, reorient_to_ras, resample_to


def load(path) -> Volume:
    img = nib.load(str(path))
    return Volume(np.asanyarray(img.dataobj).astype(np.float32), img.affine, {"source": str(path)})


def world(affine: np.ndarray, ijk) -> np.ndarray:
    ijk = np.asarray(ijk, dtype=np.float64)
    return affine[:3, :3] @ ijk + affine[:3, 3]


def grid_world(affine: np.ndarray, shape) -> np.ndarray:
    """World coordinates (3, X, Y, Z) of every voxel centre of a grid."""
    idx = np.indices(shape, dtype=np.float64).reshape(3, -1)
    return (affine[:3, :3] @ idx + affine[:3, 3:4]).reshape(3, *shape)


def rotation(ax: float, az: float) -> np.ndarray:
    a, z = np.radians(ax), np.radians(az)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ rx


def oblique_affine(spacing=(1.5, 1.5, 3.0), ax=20.0, az=30.0, origin=(-30.0, -40.0, -20.0)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = rotation(ax, az) @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


RAMP = np.array([0.7, -0.3, 1.1])  # a linear function of world mm: trilinear interpolation reproduces it exactly


def ramp(affine: np.ndarray, shape) -> np.ndarray:
    return (np.tensordot(RAMP, grid_world(affine, shape), axes=1) + 100.0).astype(np.float32)


def inside_footprint(src_affine, src_shape, dst_affine, dst_shape, margin: float) -> np.ndarray:
    """Output voxels whose centre maps at least `margin` voxels inside the source's voxel-centre box."""
    idx = np.tensordot(np.linalg.inv(src_affine)[:3, :3], grid_world(dst_affine, dst_shape), axes=1)
    idx += np.linalg.inv(src_affine)[:3, 3].reshape(3, 1, 1, 1)
    hi = np.asarray(src_shape, dtype=np.float64).reshape(3, 1, 1, 1) - 1
    return np.all((idx >= margin) & (idx <= hi - margin), axis=0)


# --- orientation -------------------------------------------------------------------------------------------


def test_anatomical_las_reorients_to_ras_with_world_positions_preserved():
    vol = load(package_data("nibabel", "tests", "data", "anatomical.nii"))
    assert "".join(nib.aff2axcodes(vol.affine)) == "LAS"
    ras = reorient_to_ras(vol)
    assert "".join(nib.aff2axcodes(ras.affine)) == "RAS"
    assert ras.spatial_shape == vol.spatial_shape == (33, 41, 25)
    nx = vol.spatial_shape[0]
    for ijk in [(0, 0, 0), (32, 40, 24), (10, 20, 5), (5, 33, 17)]:
        i, j, k = ijk
        # L->R flips the first axis: old voxel i is new voxel nx-1-i, at the same world position.
        new = (nx - 1 - i, j, k)
        assert ras.data[new] == vol.data[ijk]
        np.testing.assert_allclose(world(ras.affine, new), world(vol.affine, ijk), atol=1e-9)
    np.testing.assert_allclose(world(ras.affine, (0, 0, 0)), [-32.0, -40.0, -16.0])  # leftmost voxel, x = 32 - 2*32
    assert reorient_to_ras(ras) is ras


def test_anatomical_preprocess_at_native_spacing_is_exactly_the_ras_data():
    # Spacing and shape equal to the scan's: the output grid snaps onto the voxels, so no interpolation at all.
    vol = load(package_data("nibabel", "tests", "data", "anatomical.nii"))
    cfg = PreprocessConfig(spacing=(2, 2, 2), shape=(33, 41, 25), crop="center", intensity="none")
    out = preprocess(vol, cfg)
    ras = reorient_to_ras(vol)
    assert out.array.shape == (1, 33, 41, 25) and out.array.dtype == np.float32
    np.testing.assert_array_equal(out.array[0], ras.data)
    np.testing.assert_allclose(out.affine, ras.affine, atol=1e-9)
    assert out.notes[0] == "reoriented LAS -> RAS"
    assert not any("resampled" in n or "cropped" in n or "padded" in n for n in out.notes)


def test_reorient_keeps_4d_last_axis():
    data = np.random.default_rng(0).random((4, 5, 6, 3)).astype(np.float32)
    affine = np.diag([-1.0, -1.0, 2.0, 1.0])  # LPS
    ras = reorient_to_ras(Volume(data, affine))
    assert ras.shape == (4, 5, 6, 3)
    np.testing.assert_array_equal(ras.data[3, 4, 0, :], data[0, 0, 0, :])
    np.testing.assert_allclose(world(ras.affine, (3, 4, 0)), world(affine, (0, 0, 0)))


# --- resampling ---------------------------------------------------------------------------------------------


def test_aniso_vox_resamples_to_1mm_with_right_extent_and_values():
    vol = load(package_data("dipy", "data", "files", "aniso_vox.nii.gz"))
    np.testing.assert_allclose(vol.spacing, (4, 4, 5), atol=1e-3)
    # An axis-aligned 1 mm grid covering the scan's world footprint (voxel corners) with a 3 mm border.
    corners = np.array(np.meshgrid(*[(-0.5, n - 0.5) for n in vol.spatial_shape], indexing="ij")).reshape(3, -1)
    w = vol.affine[:3, :3] @ corners + vol.affine[:3, 3:4]
    lo, hi = w.min(axis=1), w.max(axis=1)
    affine = np.eye(4)
    affine[:3, 3] = np.floor(lo) - 3
    shape = tuple(int(s) for s in np.ceil(hi - lo) + 7)

    inside = resample_to(vol.with_data(np.ones_like(vol.data)), affine, shape, "nearest").data > 0
    # Extent: the covered 1 mm voxels reach the footprint's world bounds (to within a voxel) ...
    covered = [np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    got_lo = np.array([c[0] for c in covered]) + affine[:3, 3]
    got_hi = np.array([c[-1] for c in covered]) + affine[:3, 3]
    np.testing.assert_allclose(got_lo, lo, atol=1.0)
    np.testing.assert_allclose(got_hi, hi, atol=1.0)
    # ... and their volume is the scan's (58*58*24 voxels of 80 mm^3), within 1 %.
    assert inside.sum() == pytest.approx(np.prod(vol.spatial_shape) * 80.0, rel=0.01)

    # Values: the same trilinear interpolation done independently (scipy, through the inverse affine), at
    # >10,000 random output voxels inside the footprint (checking all 15 million would dominate the suite).
    out = resample_to(vol, affine, shape, "linear")
    assert out.spatial_shape == shape and np.allclose(out.spacing, 1.0)
    picked = np.random.default_rng(0).choice(inside.size, 60000, replace=False)
    picked = picked[inside.ravel()[picked]]
    assert picked.size > 10000
    ijk = np.array(np.unravel_index(picked, shape), dtype=np.float64)
    src = np.linalg.inv(vol.affine) @ np.vstack([affine[:3, :3] @ ijk + affine[:3, 3:4], np.ones(ijk.shape[1])])
    expected = ndimage.map_coordinates(vol.data, np.clip(src[:3], 0, np.array(vol.spatial_shape)[:, None] - 1), order=1)
    np.testing.assert_allclose(out.data.ravel()[picked], expected, atol=1e-3 * vol.data.max())
    assert not out.data[~inside].any()
    # Brightness is preserved: mean over the footprint equals the scan's mean.
    assert out.data[inside].mean() == pytest.approx(vol.data.mean(), rel=0.02)


def sagittal_affine() -> np.ndarray:
    # Voxel axes run P, I, R (a sagittal acquisition stored "PIR"), 1.2 x 1.0 x 3.0 mm.
    affine = np.zeros((4, 4))
    affine[1, 0], affine[2, 1], affine[0, 2], affine[3, 3] = -1.2, -1.0, 3.0, 1.0
    affine[:3, 3] = (-30.0, 25.0, 20.0)
    return affine


def sheared_affine() -> np.ndarray:
    affine = oblique_affine(ax=8.0, az=-12.0)
    affine[:3, :3] = affine[:3, :3] @ np.array([[1, 0.15, 0], [0, 1, 0.1], [0, 0, 1]])  # gantry-tilt-like shear
    return affine


@pytest.mark.parametrize("make_affine", [oblique_affine, sagittal_affine, sheared_affine])
def test_ramp_lands_at_world_positions(make_affine):
    # A linear function of world position sampled on an oblique, permuted or sheared grid must come out, after
    # resampling onto an axis-aligned grid, as the same function of the output voxels' world positions
    # (trilinear interpolation reproduces linear functions exactly).
    affine = make_affine()
    shape = (40, 44, 20)
    vol = Volume(ramp(affine, shape), affine)
    # The interpolation's geometry alone: anti-aliasing (tested below) bends a ramp within 3 sigma of the edge.
    cfg = PreprocessConfig(spacing=(1.0, 1.25, 1.5), shape=(56, 48, 40), crop="center", intensity="none",
                           antialias=False)
    out = preprocess(vol, cfg)
    assert np.allclose(out.affine[:3, :3], np.diag(cfg.spacing))
    interior = inside_footprint(affine, shape, out.affine, cfg.shape, margin=0.0)
    assert interior.sum() > 0.3 * interior.size
    np.testing.assert_allclose(out.array[0][interior], ramp(out.affine, cfg.shape)[interior], atol=2e-3)
    if make_affine is sagittal_affine:
        assert out.notes[0] == "reoriented PIR -> RAS" and not any("oblique" in n for n in out.notes)
    else:
        assert any(n.startswith("oblique scan (") for n in out.notes)


def test_oblique_bright_voxel_lands_inside_its_world_footprint():
    affine = oblique_affine(ax=25.0, az=-40.0)
    shape = (30, 30, 16)
    data = np.zeros(shape, np.float32)
    data[12, 17, 9] = 1000.0
    vol = Volume(data, affine)
    grid = np.eye(4) * 0.5
    grid[3, 3] = 1.0
    centre = world(affine, (12, 17, 9))
    grid[:3, 3] = np.round(centre) - 8.0
    out = resample_to(vol, grid, (32, 32, 32), "nearest")
    hits = np.argwhere(out.data == 1000.0)
    assert len(hits) > 0
    back = (np.linalg.inv(affine) @ np.c_[np.array([world(grid, h) for h in hits]), np.ones(len(hits))].T)[:3]
    assert np.all(np.abs(back.T - [12, 17, 9]) <= 0.5 + 1e-6)
    # Linear interpolation peaks within one output voxel of the bright voxel's world position.
    lin = resample_to(vol, grid, (32, 32, 32), "linear").data
    peak = world(grid, np.unravel_index(np.argmax(lin), lin.shape))
    assert np.linalg.norm(peak - centre) <= np.sqrt(3) * 0.5


@pytest.mark.parametrize("interpolation", ["linear", "nearest", "bspline"])
def test_resample_to_identity_grid_is_exact(interpolation):
    data = np.random.default_rng(1).random((9, 8, 7)).astype(np.float32)
    affine = oblique_affine(spacing=(1.0, 2.0, 3.0))
    out = resample_to(Volume(data, affine), affine, data.shape, interpolation)
    np.testing.assert_allclose(out.data, data, atol=1e-5)


def test_resample_to_puts_a_map_back_on_the_input_scan():
    affine = oblique_affine(spacing=(1.2, 1.2, 2.5), ax=10.0, az=15.0)
    shape = (48, 48, 20)
    vol = Volume(ramp(affine, shape), affine)
    pre = preprocess(vol, PreprocessConfig(spacing=(2, 2, 2), shape=(20, 20, 16), crop="center", intensity="none"))
    assert inside_footprint(affine, shape, pre.affine, pre.array.shape[1:], margin=0.0).all()  # no padding
    back = resample_to(Volume(pre.array[0], pre.affine), vol.affine, vol.spatial_shape)
    ok = inside_footprint(pre.affine, pre.array.shape[1:], affine, shape, margin=0.0)
    assert ok.sum() > 0.2 * ok.size
    np.testing.assert_allclose(back.data[ok], vol.data[ok], atol=5e-3)


def test_resample_to_4d_and_outside_field_of_view():
    data = np.random.default_rng(2).random((6, 6, 6, 2)).astype(np.float32)
    vol = Volume(data, np.eye(4))
    out = resample_to(vol, np.eye(4), (6, 6, 6))
    np.testing.assert_allclose(out.data, data, atol=1e-6)
    far = np.eye(4)
    far[:3, 3] = 100.0
    assert not resample_to(vol, far, (4, 4, 4)).data.any()
    with pytest.raises(ValueError, match="interpolation must be one of"):
        resample_to(vol, np.eye(4), (4, 4, 4), "cubic")


# --- crop ---------------------------------------------------------------------------------------------------


def block_volume(shape=(60, 50, 40), lo=(5, 8, 20), hi=(25, 30, 36), value=1.0) -> Volume:
    data = np.zeros(shape, np.float32)
    data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = value
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = (-30, -25, -20)
    return Volume(data, affine, {"source": "block.nii.gz"})


def test_crop_foreground_centres_the_foreground_bounding_box():
    vol = block_volume()
    out = preprocess(vol, PreprocessConfig(spacing=(1, 1, 1), shape=(30, 30, 30), crop="foreground", intensity="none"))
    fg = np.argwhere(out.array[0] > 0)
    before, after = fg.min(axis=0), np.array(out.array.shape[1:]) - 1 - fg.max(axis=0)
    assert np.all(np.abs(before - after) <= 1), (before, after)
    assert out.array[0].sum() == vol.data.sum()  # whole block inside, no interpolation at matching spacing
    assert any("centred on the foreground" in n for n in out.notes)


def test_crop_foreground_on_an_oblique_scan_centres_the_world_bounding_box():
    affine = oblique_affine(spacing=(1.0, 1.0, 2.0), ax=25.0, az=35.0)
    data = np.zeros((60, 60, 30), np.float32)
    data[5:25, 30:55, 3:12] = 1.0
    out = preprocess(Volume(data, affine), PreprocessConfig(spacing=(1, 1, 1), shape=(32, 32, 32), intensity="none"))
    w = grid_world(affine, data.shape)[:, data > 0]
    centre = (w.min(axis=1) + w.max(axis=1)) / 2  # brute force over every foreground voxel
    out_centre = world(out.affine, (np.array(out.array.shape[1:]) - 1) / 2)
    assert np.all(np.abs(out_centre - centre) <= 0.5 + 1e-6), (out_centre, centre)


def test_crop_center_uses_the_field_of_view_and_pads_with_zero():
    vol = block_volume()
    out = preprocess(vol, PreprocessConfig(spacing=(1, 1, 1), shape=(80, 30, 40), crop="center", intensity="none"))
    fov_centre = world(vol.affine, (np.array(vol.spatial_shape) - 1) / 2)
    out_centre = world(out.affine, (np.array(out.array.shape[1:]) - 1) / 2)
    assert np.all(np.abs(out_centre - fov_centre) <= 0.5)
    # x: 80 > 60 voxels, padded with zeros at both ends; y: 30 < 50, cropped.
    assert not out.array[0, :10].any() and not out.array[0, -10:].any()
    assert any("cropped along A" in n and "padded with 0 along R" in n and "field of view" in n for n in out.notes)


def test_foreground_cut_off_is_reported(caplog):
    vol = block_volume(lo=(2, 2, 2), hi=(58, 48, 38))
    with caplog.at_level("WARNING"):
        out = preprocess(vol, PreprocessConfig(spacing=(2, 2, 2), shape=(16, 16, 16), intensity="none"))
    assert any("cut off by the output box" in n for n in out.notes)
    assert "block.nii.gz" in caplog.text


def test_empty_foreground_falls_back_to_centre_for_crop_but_zscore_errors():
    vol = block_volume(value=0.0)
    out = preprocess(vol, PreprocessConfig(shape=(8, 8, 8), intensity="none"))
    assert any("no foreground voxels" in n for n in out.notes)
    with pytest.raises(VolumeReadError, match=r"block\.nii\.gz.*no foreground voxels"):
        preprocess(vol, PreprocessConfig(shape=(8, 8, 8), intensity="zscore"))


# --- intensity ----------------------------------------------------------------------------------------------


def adc_volume(units: str | None = "mm2/s", scale: float = 1.0) -> Volume:
    rng = np.random.default_rng(3)
    data = np.zeros((40, 40, 20), np.float32)
    data[8:32, 8:32, 4:16] = (rng.random((24, 24, 12)) * 1.5e-3 + 0.5e-3) * scale
    meta = {"source": "case1-ADC_ss.mha"}
    if units:
        meta["units"] = units
    return Volume(data, np.diag([1.0, 1.0, 2.0, 1.0]), meta)


def cfg(**kw) -> PreprocessConfig:
    return PreprocessConfig(spacing=(1, 1, 2), shape=(32, 32, 16), **kw)


def test_intensity_zscore_within_foreground():
    out = preprocess(adc_volume(), cfg(intensity="zscore")).array[0]
    fg = preprocess(adc_volume(), cfg(intensity="none")).array[0] > 0
    assert out[fg].mean() == pytest.approx(0.0, abs=1e-5)
    assert out[fg].std() == pytest.approx(1.0, abs=1e-4)
    assert np.all(out[~fg] == 0)


def test_intensity_mean_divides_by_foreground_mean():
    raw = preprocess(adc_volume(), cfg(intensity="none")).array[0]
    out = preprocess(adc_volume(), cfg(intensity="mean")).array[0]
    fg = raw > 0
    assert out[fg].mean() == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(out, raw / raw[fg].mean(), rtol=1e-5)


def test_intensity_adc_fixed_scales_and_clips():
    raw = preprocess(adc_volume(), cfg(intensity="none")).array[0]
    out = preprocess(adc_volume(), cfg(intensity="adc_fixed", adc_scale=1000.0, clip=(0.0, 1.5)))
    np.testing.assert_allclose(out.array[0], np.clip(raw * 1000.0, 0.0, 1.5), rtol=1e-5)
    assert out.array.max() == pytest.approx(1.5) and (out.array == 1.5).any()
    assert "channel 0: ADC x 1000" in out.notes and "clipped to [0, 1.5]" in out.notes


def test_intensity_none_keeps_values():
    vol = adc_volume()
    out = preprocess(vol, cfg(intensity="none", crop="center"))
    np.testing.assert_array_equal(out.array[0], vol.data[4:36, 4:36, 2:18])  # same spacing: a pure crop


@pytest.mark.parametrize("units,scale", [("1e-6mm2/s", 1e6), (None, 1e6), (None, 1e3)])
def test_adc_fixed_refuses_other_units(units, scale):
    with pytest.raises(VolumeReadError, match=r"case1-ADC_ss\.mha.*adc_to_mm2s"):
        preprocess(adc_volume(units, scale), cfg(intensity="adc_fixed"))


def test_constant_foreground_cannot_be_zscored():
    vol = block_volume(value=5.0)
    with pytest.raises(VolumeReadError, match="one constant value"):
        preprocess(vol, PreprocessConfig(spacing=(1, 1, 1), shape=(30, 30, 30)))


def test_negative_mean_cannot_be_mean_normalised():
    vol = block_volume(value=1.0)
    with pytest.raises(VolumeReadError, match="foreground mean is -"):
        preprocess(vol.with_data(vol.data * -1), PreprocessConfig(shape=(8, 8, 8), intensity="mean",
                                                                   foreground_threshold=-2))


# --- channels -----------------------------------------------------------------------------------------------


def test_two_channels_on_different_grids_land_on_the_first_ones_grid():
    a_aff = oblique_affine(spacing=(1.0, 1.0, 2.5), ax=5.0, az=-8.0)
    b_aff = oblique_affine(spacing=(1.5, 1.5, 3.0), ax=-10.0, az=20.0, origin=(-33.0, -41.0, -22.0))
    a = Volume(ramp(a_aff, (60, 60, 24)), a_aff, {"source": "adc.mha"})
    b = Volume(ramp(b_aff, (44, 44, 22)), b_aff, {"source": "zadc.mha"})
    config = PreprocessConfig(spacing=(2, 2, 2), shape=(24, 24, 20), crop="center", intensity="none", channels=2,
                              antialias=False)  # geometry alone, as in test_ramp_lands_at_world_positions
    out = preprocess([a, b], config)
    assert out.array.shape == (2, 24, 24, 20)
    ok = inside_footprint(a_aff, (60, 60, 24), out.affine, config.shape, 0.0)
    ok &= inside_footprint(b_aff, (44, 44, 22), out.affine, config.shape, 0.0)
    assert ok.sum() > 0.3 * ok.size
    truth = ramp(out.affine, config.shape)
    np.testing.assert_allclose(out.array[0][ok], truth[ok], atol=2e-3)
    np.testing.assert_allclose(out.array[1][ok], truth[ok], atol=2e-3)
    assert any("channel 1 (zadc.mha) is on a different grid" in n for n in out.notes)


def test_adc_fixed_leaves_second_channel_unscaled():
    adc = adc_volume()
    z = adc.with_data(np.where(adc.data > 0, np.float32(-1.5), np.float32(0.0)), source="zadc.mha", units=None)
    out = preprocess([adc, z], cfg(intensity="adc_fixed", channels=2))
    assert out.array[1].min() == pytest.approx(-1.5)
    assert out.array[0].max() > 1.0


def test_channel_count_and_4d_inputs():
    adc = adc_volume()
    with pytest.raises(ValueError, match="expects 2 input channel"):
        preprocess(adc, cfg(channels=2))
    four = Volume(np.stack([adc.data, adc.data * 2], axis=-1), adc.affine, {"source": "dwi.nii.gz"})
    with pytest.raises(VolumeReadError, match=r"dwi\.nii\.gz.*4D with 2 volumes"):
        preprocess(four, cfg(channels=1))
    split = preprocess(four, cfg(channels=2, intensity="none"))
    np.testing.assert_allclose(split.array[1], split.array[0] * 2, rtol=1e-6)
    single = Volume(adc.data[..., None], adc.affine)  # a 4D file with one volume is 3D
    assert preprocess(single, cfg()).array.shape == (1, 32, 32, 16)


def test_channel_outside_the_first_ones_field_of_view_errors():
    adc = adc_volume()
    far = np.array(adc.affine)
    far[:3, 3] += 500.0
    with pytest.raises(VolumeReadError, match=r"zadc\.mha: does not overlap case1-ADC_ss\.mha"):
        preprocess([adc, Volume(adc.data, far, {"source": "zadc.mha"})], cfg(channels=2))


def test_non_finite_check_on_views_large_values_and_float64():
    """The finiteness check sums in memory order: a transposed, flipped view (as readers and reorientation hand
    over) is caught; finite values whose float32 sum overflows are left alone; float64 data is checked too."""
    adc = adc_volume()
    view = np.flip(np.ascontiguousarray(adc.data.transpose(2, 1, 0)).copy(), axis=0).transpose(2, 1, 0)
    assert not view.flags.c_contiguous and view.strides[2] < 0
    view[5, 6, 7] = np.nan
    out = preprocess(adc.with_data(view), cfg())
    assert "channel 0: set 1 non-finite voxel(s) to 0" in out.notes
    from age2hie_hub.preprocess.pipeline import _finite

    huge = adc.with_data(np.full(adc.data.shape, 1e36, dtype=np.float32))  # finite; their float32 sum is not
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the float32 overflow of the fast path is not the user's business
        assert _finite(huge, 0, notes) is huge and notes == []
    double = adc.data.astype(np.float64)
    double[1, 2, 3] = np.inf
    out = preprocess(adc.with_data(double), cfg())
    assert "channel 0: set 1 non-finite voxel(s) to 0" in out.notes


def test_non_finite_voxels_and_singular_affine():
    adc = adc_volume()
    data = adc.data.copy()
    data[20, 20, 10] = np.nan
    data[0, 0, 0] = np.inf
    out = preprocess(adc.with_data(data), cfg())
    assert np.isfinite(out.array).all()
    assert "channel 0: set 2 non-finite voxel(s) to 0" in out.notes
    flat = np.diag([1.0, 1.0, 0.0, 1.0])
    with pytest.raises(VolumeReadError, match=r"case1-ADC_ss\.mha: its affine is singular"):
        preprocess(Volume(adc.data, flat, adc.metadata), cfg())


def test_preprocess_is_pure_and_returns_frozen_result():
    vol = adc_volume()
    before = vol.data.copy()
    out = preprocess(vol, cfg())
    np.testing.assert_array_equal(vol.data, before)
    assert isinstance(out, Preprocessed) and isinstance(out.notes, tuple)
    with pytest.raises(AttributeError):
        out.array = None  # type: ignore[misc]


# --- config -------------------------------------------------------------------------------------------------


def test_config_json_round_trip():
    config = PreprocessConfig(spacing=(1.5, 1.5, 2), shape=(96, 96, 48), crop="center", intensity="adc_fixed",
                              clip=(0, 3.5), interpolation="bspline", channels=2, foreground_threshold=1e-5)
    text = json.dumps(config.to_dict())
    again = PreprocessConfig.from_dict(json.loads(text))
    assert again == config
    assert again.spacing == (1.5, 1.5, 2.0) and again.clip == (0.0, 3.5) and isinstance(again.shape[0], int)


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"spacing": 2.0}, "spacing must be three positive numbers"),
        ({"spacing": (1, 1, 0)}, "spacing must be three positive numbers"),
        ({"spacing": (1, 1)}, "spacing must be three"),
        ({"shape": (64.5, 64, 48)}, "shape must be three positive integers"),
        ({"shape": (64, -1, 48)}, "shape must be three positive integers"),
        ({"crop": "middle"}, r"crop must be one of \('center', 'foreground', 'brain'\)"),
        ({"intensity": "minmax"}, "intensity must be one of"),
        ({"interpolation": "cubic"}, "interpolation must be one of"),
        ({"orientation": "LPS"}, "orientation must be 'RAS'"),
        ({"channels": 0}, "channels must be an integer >= 1"),
        ({"channels": 1.5}, "channels must be an integer >= 1"),
        ({"clip": (3, 0)}, "low < high"),
        ({"clip": (0, float("nan"))}, "clip must be 2 finite numbers"),
        ({"adc_scale": 0}, "adc_scale must be a positive number"),
        ({"foreground_threshold": "x"}, "foreground_threshold must be a finite number"),
    ],
)
def test_bad_config_errors_clearly(bad, match):
    with pytest.raises(ValueError, match=match):
        PreprocessConfig(**bad)


def test_unknown_config_key_is_refused():
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['spacin'\]"):
        PreprocessConfig.from_dict({"spacin": [1, 1, 1]})


# --- real scanner ADC ---------------------------------------------------------------------------------------


def test_scanner_adc_in_1e6_units_is_refused_then_scaled_after_conversion(shared_data):
    from age2hie_hub.io import read_volume

    folder = shared_data / "siemens_xa30_dwi" / "scanner_adc"
    adc = read_volume(folder)  # int16 in 1e-6 mm^2/s, 72x72x39 at 3 mm, stored LAS
    config = PreprocessConfig(spacing=(3, 3, 3), shape=(72, 72, 40), intensity="adc_fixed", clip=(0.0, 3.5))
    with pytest.raises(VolumeReadError, match=r"scanner_adc.*adc_to_mm2s"):
        preprocess(adc, config)
    out = preprocess(adc.with_data(adc.data * 1e-6, units="mm2/s"), config)
    tissue = out.array[0][out.array[0] > 0.1]
    assert 0.6 < float(np.median(tissue)) < 1.2  # adult brain ADC, ~0.7-0.9e-3 mm^2/s, in 1e-3 units
    assert out.array.max() <= 3.5
    assert out.notes[0] == "reoriented LAS -> RAS"
    # Same spacing, RAS shape covering the scan: the voxels are the scan's own, reordered and scaled.
    ras = reorient_to_ras(adc)
    np.testing.assert_allclose(np.sort(out.array[0][out.array[0] > 0]),
                               np.sort(np.clip(ras.data[ras.data > 0] * 1e-3, 0, 3.5)), rtol=1e-5)


def _noisy_head_off_centre() -> Volume:
    """A bright 'head' off-centre in a field of view whose background is positive noise (like a T1)."""
    rng = np.random.default_rng(0)
    data = rng.uniform(1.0, 20.0, size=(80, 80, 60)).astype(np.float32)
    ii, jj, kk = np.ogrid[:80, :80, :60]
    head = (ii - 55) ** 2 + (jj - 25) ** 2 + (kk - 30) ** 2 <= 12**2
    data[head] = 300.0 + rng.normal(0, 10, size=int(head.sum()))
    return Volume(data, np.diag([1.0, 1.0, 1.0, 1.0]), {"source": "noisy_head.nii.gz"})


def _grid_centre(result: Preprocessed) -> np.ndarray:
    shape = np.asarray(result.array.shape[1:], dtype=float)
    return (result.affine @ np.append((shape - 1) / 2, 1.0))[:3]


def test_otsu_foreground_centres_the_crop_on_the_head_despite_a_noisy_background() -> None:
    vol = _noisy_head_off_centre()
    base = dict(spacing=(1.0, 1.0, 1.0), shape=(32, 32, 32), crop="foreground", intensity="zscore")
    plain = preprocess(vol, PreprocessConfig(**base))
    otsu = preprocess(vol, PreprocessConfig(**base, foreground="otsu"))
    # Every voxel is > 0, so the plain threshold sees the whole field of view as foreground ...
    np.testing.assert_allclose(_grid_centre(plain), [39.5, 39.5, 29.5], atol=1.0)
    # ... while Otsu's level separates the head, and the crop is centred on it.
    np.testing.assert_allclose(_grid_centre(otsu), [55.0, 25.0, 30.0], atol=1.0)
    assert any(n.startswith("foreground: Otsu level") for n in otsu.notes)
    # z-score statistics come from the head only (not from the noise): inside the head, mean ~0 and sd ~1.
    ii, jj, kk = np.ogrid[:32, :32, :32]
    inner = (ii - 15.5) ** 2 + (jj - 15.5) ** 2 + (kk - 15.5) ** 2 <= 8**2
    head = otsu.array[0][inner]
    assert abs(head.mean()) < 0.5 and 0.05 < head.std() < 1.5


def test_foreground_option_round_trips_and_is_validated() -> None:
    cfg = PreprocessConfig(foreground="otsu")
    assert PreprocessConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    # Configs written before the option existed load with the old behaviour.
    old = cfg.to_dict()
    del old["foreground"]
    assert PreprocessConfig.from_dict(old).foreground == "threshold"
    with pytest.raises(ValueError, match="foreground must be one of"):
        PreprocessConfig(foreground="mean")


# --- crop "brain": whole-head scans with neck -----------------------------------------------------------------


def _whole_head(seed: int = 0) -> tuple[Volume, Volume]:
    """A synthetic whole-head T1 with neck at 2 mm, stored L-A-S with noisy background, and its brain mask.

    World mm: head ellipsoid centred (0, 0, 30), semi-axes (75, 95, 80) (vertex at S 110); brain ellipsoid
    centred (0, -2, 34), semi-axes (65, 83, 65); neck cylinder (radius 50) from the bottom of the field of
    view (S -120) up into the head. The bounding box of head and neck is centred 39 mm below the brain's centre.
    """
    rng = np.random.default_rng(seed)
    shape = (90, 120, 120)
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (89.0, -119.0, -119.0)
    x, y, z = grid_world(affine, shape)
    head = (x / 75) ** 2 + (y / 95) ** 2 + ((z - 30) / 80) ** 2 <= 1
    neck = (x / 50) ** 2 + ((y + 10) / 50) ** 2 <= 1
    neck &= z < 0
    brain = (x / 65) ** 2 + ((y + 2) / 83) ** 2 + ((z - 34) / 65) ** 2 <= 1
    data = rng.uniform(0.0, 30.0, shape).astype(np.float32)
    data[head | neck] = 700.0 + rng.normal(0, 40, int((head | neck).sum()))  # scalp fat and muscle: bright too
    data[brain] = 800.0 + rng.normal(0, 40, int(brain.sum()))
    return (Volume(data, affine, {"source": "head_t1.nii.gz"}),
            Volume(brain.astype(np.float32), affine, {"source": "head_brain.nii.gz"}))


def _inside_box(result: Preprocessed, mask: Volume) -> float:
    """Share of the mask's voxel centres that lie inside the output box."""
    pts = grid_world(mask.affine, mask.spatial_shape)[:, mask.data > 0]
    step = np.diag(result.affine)[:3]
    lo = result.affine[:3, 3] - step / 2
    hi = lo + step * np.asarray(result.array.shape[1:])
    return float(np.all((pts >= lo[:, None]) & (pts <= hi[:, None]), axis=0).mean())


ADULT_BOX = dict(spacing=(4.0, 4.0, 4.0), shape=(40, 48, 40), intensity="zscore", foreground="otsu")


def test_crop_brain_centres_on_the_brain_of_a_whole_head_with_neck():
    head, brain = _whole_head()
    centre = np.array([0.0, -2.0, 34.0])
    old = preprocess(head, PreprocessConfig(**ADULT_BOX, crop="foreground"))
    new = preprocess(head, PreprocessConfig(**ADULT_BOX, crop="brain"))
    # Negative control: the head-and-neck box puts the centre far below the brain and cuts its top off.
    assert _grid_centre(old)[2] < centre[2] - 30
    assert _inside_box(old, brain) < 0.95
    # crop "brain" (default offset, no labels): within a few mm of the brain's centre, the whole brain inside.
    assert np.all(np.abs(_grid_centre(new) - centre) <= [2.5, 4.5, 6.0]), _grid_centre(new)
    assert _inside_box(new, brain) == 1.0
    assert any("centred on the brain" in n for n in new.notes)
    # The neck sticks out of the box by design: that is not a warning under crop "brain"; under "foreground"
    # the cut-off head is.
    assert new.warnings == () and any("cut off" in w for w in old.warnings)


def test_fit_brain_offset_learns_the_offset_from_labels_and_the_crop_then_needs_none():
    from age2hie_hub.preprocess import brain_offset_from_labels, fit_brain_offset

    pairs = [_whole_head(seed) for seed in (1, 2)]
    config = PreprocessConfig(**ADULT_BOX, crop="brain")
    one = brain_offset_from_labels(*pairs[0], config)
    # Anchor: R/A centroid of the head's top 80 mm, S ~110 (the vertex, to a voxel); brain centre (0, -2, 34).
    assert np.all(np.abs(one - [0.0, -2.0, -76.0]) <= [1.0, 1.0, 4.0]), one
    offset = fit_brain_offset(pairs, config)
    assert isinstance(offset, tuple) and len(offset) == 3
    fitted = dataclasses.replace(config, brain_offset=offset)
    head, brain = _whole_head(seed=3)  # not one the offset was fitted on
    out = preprocess(head, fitted)
    np.testing.assert_allclose(_grid_centre(out), [0.0, -2.0, 34.0], atol=2.5)
    assert _inside_box(out, brain) == 1.0
    assert PreprocessConfig.from_dict(json.loads(json.dumps(fitted.to_dict()))) == fitted


def test_crop_brain_on_skull_stripped_neonatal_adc_keeps_the_whole_brain():
    """No head around the brain: the top is the brain's top, the default offset scales with its size."""
    shape = (80, 90, 30)
    affine = np.diag([1.2, 1.2, 3.0, 1.0])
    x, y, z = grid_world(affine, shape)
    brain = ((x - 48) / 40) ** 2 + ((y - 54) / 50) ** 2 + ((z - 45) / 36) ** 2 <= 1
    rng = np.random.default_rng(0)
    data = np.where(brain, 1.2e-3 + 1e-4 * rng.standard_normal(shape), 0.0).astype(np.float32)
    vol = Volume(data, affine, {"source": "case-ADC_ss.mha", "units": "mm2/s"})
    out = preprocess(vol, PreprocessConfig(spacing=(3.5, 3.5, 3.5), shape=(32, 36, 28), crop="brain",
                                           intensity="adc_fixed", clip=(0, 3.5)))
    assert _inside_box(out, Volume(brain.astype(np.float32), affine)) == 1.0
    np.testing.assert_allclose(_grid_centre(out), [48.0, 54.0, 45.0], atol=6.0)
    assert out.warnings == ()


def test_crop_brain_with_an_empty_image_falls_back_to_the_field_of_view_with_a_warning():
    vol = block_volume(value=0.0)
    out = preprocess(vol, PreprocessConfig(shape=(8, 8, 8), intensity="none", crop="brain"))
    assert any("no foreground voxels" in w for w in out.warnings)


def test_crop_brain_warns_when_the_top_of_the_head_is_outside_the_box():
    head, _ = _whole_head()
    # A box far too short for a head and pushed down by the offset: the vertex lies above it.
    out = preprocess(head, PreprocessConfig(**{**ADULT_BOX, "shape": (40, 48, 20)}, crop="brain",
                                            brain_offset=(0.0, 0.0, -60.0)))
    (warning,) = out.warnings
    assert warning.startswith("estimated brain (head outline less scalp) cut off by the output box: S: ")
    assert "beyond its superior edge" in warning and warning.endswith("the brain may be cut off")


def test_crop_brain_config_is_validated():
    with pytest.raises(ValueError, match="brain_offset must be 3 finite numbers"):
        PreprocessConfig(crop="brain", brain_offset=(0, 0))
    with pytest.raises(ValueError, match="brain_offset must be 3 finite numbers"):
        PreprocessConfig(crop="brain", brain_offset=(0, 0, float("nan")))
    assert PreprocessConfig(brain_offset=[1, 2, 3]).brain_offset == (1.0, 2.0, 3.0)


@pytest.fixture(scope="module")
def ixi_cases(request):
    shared = request.getfixturevalue("shared_data")
    root = shared / "ixi_t1"
    if not root.is_dir():
        pytest.skip(f"real IXI T1 not found at {root}")
    from age2hie_hub.io import read_volume

    out = []
    for sub in ("sub-IXI012", "sub-IXI436"):
        out.append((read_volume(root / sub / "anat" / f"{sub}_T1w.nii.gz"),
                    read_volume(root / "derivatives" / "dlmuse" / sub / "anat" / f"{sub}_dseg.nii.gz")))
    return out


def test_crop_brain_on_real_whole_head_t1_keeps_the_dlmuse_brain(ixi_cases):
    for t1, labels in ixi_cases:
        old = preprocess(t1, PreprocessConfig(**ADULT_BOX, crop="foreground"))
        default = preprocess(t1, PreprocessConfig(**ADULT_BOX, crop="brain"))
        # The offset fitted on the DLMUSE labels of all 155 IXI subjects (benchmarks/bench_crop_real.py).
        fitted = preprocess(t1, PreprocessConfig(**ADULT_BOX, crop="brain", brain_offset=(0.0, -0.1, -82.4)))
        brain = labels.with_data((labels.data > 0).astype(np.float32))
        assert _inside_box(default, brain) >= 0.995, t1.source
        assert _inside_box(fitted, brain) >= 0.995, t1.source
        assert _inside_box(old, brain) < _inside_box(fitted, brain) - 0.02, t1.source  # the old crop cuts the brain
        assert fitted.warnings == () and any("cut off" in w for w in old.warnings)


# --- anti-aliased downsampling --------------------------------------------------------------------------------


def _stripes(freq: float, shape=(96, 24, 24)) -> Volume:
    """cos stripes along R at ``freq`` cycles per 1 mm voxel (0.5 is the Nyquist of the input)."""
    x = np.arange(shape[0], dtype=np.float64)
    data = np.broadcast_to((1.5 + np.cos(2 * np.pi * freq * x))[:, None, None], shape).astype(np.float32)
    return Volume(data.copy(), np.eye(4), {"source": "stripes.nii.gz"})


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_antialias_keeps_a_pattern_finer_than_the_output_grid_from_aliasing(factor):
    vol = _stripes(0.45)  # just below the input's Nyquist; at 2-4 mm it would alias to 0.1-0.2 cycles/voxel
    shape = (96 // factor - 6, 4, 4)
    base = dict(spacing=(float(factor), 1.0, 1.0), shape=shape, crop="center", intensity="none")
    smooth = preprocess(vol, PreprocessConfig(**base, antialias=True)).array[0, :, 1, 1]
    raw = preprocess(vol, PreprocessConfig(**base, antialias=False)).array[0, :, 1, 1]
    # Without anti-aliasing the stripes fold into a slow false pattern of nearly full amplitude ...
    assert raw.std() > 0.4, raw
    # ... with it the output is nearly constant at the pattern's mean.
    assert smooth.std() < 0.05 and abs(smooth.mean() - 1.5) < 0.05, smooth


def test_antialias_checkerboard_at_the_input_nyquist_averages_instead_of_picking_one_phase():
    idx = np.indices((48, 48, 48)).sum(axis=0)
    vol = Volume((1 + idx % 2).astype(np.float32), np.eye(4), {"source": "checker.nii.gz"})
    base = dict(spacing=(2.0, 2.0, 2.0), shape=(20, 20, 20), crop="center", intensity="none")
    smooth = preprocess(vol, PreprocessConfig(**base, antialias=True)).array[0]
    raw = preprocess(vol, PreprocessConfig(**base, antialias=False)).array[0]
    assert abs(raw.mean() - 1.5) > 0.45  # every sample lands on the same colour: all 1 or all 2
    np.testing.assert_allclose(smooth, 1.5, atol=0.02)


def test_antialias_keeps_smooth_images_and_leaves_axes_that_are_not_downsampled_alone():
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    shape = (64, 64, 24)
    vol = Volume(ramp(affine, shape), affine, {"source": "ramp.nii.gz"})
    config = PreprocessConfig(spacing=(3.0, 1.0, 2.0), shape=(16, 40, 16), crop="center", intensity="none")
    assert config.antialias
    out = preprocess(vol, config)
    expected = ramp(out.affine, out.array.shape[1:])
    inner = (slice(2, -2), slice(2, -2), slice(2, -2))  # a linear ramp is unchanged by a Gaussian away from edges
    np.testing.assert_allclose(out.array[0][inner], expected[inner], atol=1e-3)
    assert any("anti-aliased" in n for n in out.notes)
    # Only R is downsampled: a pattern along A passes unsmoothed (exact voxels, the grid is the input's).
    stripes = np.broadcast_to((np.arange(64) % 2).astype(np.float32)[None, :, None], shape).copy()
    out = preprocess(Volume(stripes, affine), config)
    assert set(np.unique(out.array[0][2:-2, 2:-2, 2:-2])) == {0.0, 1.0}


def test_antialias_on_a_skull_stripped_map_averages_the_brain_only_so_its_edge_keeps_its_values():
    """Zero background (foreground "threshold"): smoothing must not pull the zeros into the brain's edge, which
    on ADC would read as a rim of restricted diffusion."""
    from age2hie_hub.preprocess.resample import resample_array

    shape = (120, 120, 30)
    affine = np.diag([0.9, 0.9, 3.0, 1.0])
    x, y, z = grid_world(affine, shape)
    brain = ((x - 54) / 45) ** 2 + ((y - 54) / 50) ** 2 + ((z - 45) / 36) ** 2 <= 1
    data = np.where(brain, 1.2e-3, 0.0).astype(np.float32)
    vol = Volume(data, affine, {"source": "case-ADC_ss.mha", "units": "mm2/s"})
    config = PreprocessConfig(spacing=(3.5, 3.5, 3.5), shape=(32, 36, 28), intensity="none")
    out = preprocess(vol, config).array[0]
    tissue = out[out > 0]
    np.testing.assert_allclose(tissue, 1.2e-3, rtol=1e-4)  # every brain voxel keeps the brain's value
    assert 0.9 < tissue.size / (brain.sum() * 0.9 * 0.9 * 3.0 / 3.5**3) < 1.1  # and the brain keeps its volume
    # Negative control: the same smoothing with the zeros taken as values darkens the edge.
    grid = preprocess(vol, config).affine
    plain = resample_array(data, affine, grid, config.shape, antialias=True)
    assert np.mean(plain[plain > 0] < 0.6e-3) > 0.2


def test_antialias_is_on_for_new_configs_and_off_for_saved_configs_that_predate_it():
    from age2hie_hub.hub.config import CheckpointConfig
    from age2hie_hub.models.config import ModelConfig

    assert PreprocessConfig().antialias is True
    assert PreprocessConfig.from_dict({}).antialias is True  # a training config: a new model
    saved = PreprocessConfig(foreground="otsu").to_dict()
    assert saved["antialias"] is True  # written explicitly, so it is read back as written
    assert PreprocessConfig.from_saved(saved).antialias is True
    del saved["antialias"]  # a config.json written before the field existed
    assert PreprocessConfig.from_saved(saved).antialias is False
    assert PreprocessConfig.from_saved({**saved, "antialias": True}).antialias is True
    ckpt = CheckpointConfig(model=ModelConfig(arch="sfcn"), preprocess=PreprocessConfig()).to_dict()
    del ckpt["preprocess"]["antialias"]
    assert CheckpointConfig.from_dict(ckpt).preprocess.antialias is False
    with pytest.raises(ValueError, match="antialias must be true or false"):
        PreprocessConfig(antialias="yes")


# --- memory layout, cut-off message -------------------------------------------------------------------------


@pytest.mark.parametrize("make_affine", [lambda: np.diag([0.9, 0.9, 2.5, 1.0]), oblique_affine])
def test_foreground_bounds_and_anchor_do_not_depend_on_memory_layout(make_affine):
    """Readers return transposed views and reorientation adds flips; the world box must not change."""
    from age2hie_hub.preprocess.crop import brain_anchor, foreground_bounds

    rng = np.random.default_rng(0)
    mask = np.zeros((30, 26, 12), bool)
    mask[4:25, 3:20, 2:10] = rng.random((21, 17, 8)) > 0.5
    affine = make_affine()
    f_order = np.asfortranarray(mask)
    # The same voxels stored backwards along two axes (a flipped view), with the affine that keeps them in place.
    flipped_aff = affine.copy()
    flipped_aff[:3, 3] += affine[:3, 0] * 29 + affine[:3, 2] * 11
    flipped_aff[:3, 0] *= -1
    flipped_aff[:3, 2] *= -1
    layouts = [(mask, affine), (f_order, affine), (f_order.T.T, affine), (mask[::-1, :, ::-1], flipped_aff),
               (np.asfortranarray(mask[::-1, :, ::-1]), flipped_aff)]
    assert not f_order.flags.c_contiguous and mask[::-1, :, ::-1].strides[0] < 0
    want = foreground_bounds(mask, affine)
    anchor = brain_anchor(mask, affine)
    w = grid_world(affine, mask.shape)[:, mask]  # brute force over every True voxel
    np.testing.assert_allclose(want[0], w.min(axis=1), atol=1e-9)
    np.testing.assert_allclose(want[1], w.max(axis=1), atol=1e-9)
    for arr, aff in layouts:
        got = foreground_bounds(arr, aff)
        np.testing.assert_allclose(got[0], want[0], atol=1e-9)
        np.testing.assert_allclose(got[1], want[1], atol=1e-9)
        np.testing.assert_allclose(brain_anchor(arr, aff).point, anchor.point, atol=1e-9)
    # The axis-aligned fast path (projections) agrees with the general one (every voxel), forced by a 1e-9 tilt.
    tilted = affine.copy()
    tilted[0, 1] += 1e-9
    general = brain_anchor(mask, tilted)
    np.testing.assert_allclose(general.point, anchor.point, atol=1e-6)
    np.testing.assert_allclose(general.r_range, anchor.r_range, atol=1e-6)
    assert general.ap_extent == pytest.approx(anchor.ap_extent, abs=1e-6)


@pytest.mark.parametrize("empty", [False, True])
def test_mask_geometry_gives_both_from_the_anchors_counts(empty):
    """After the anchor, the box comes from the anchor's two planes of counts: the same box as the direct
    passes, in every layout, and an empty mask has neither."""
    from age2hie_hub.preprocess.crop import MaskGeometry, brain_anchor, foreground_bounds

    rng = np.random.default_rng(5)
    mask = np.zeros((30, 26, 12), bool)
    if not empty:
        mask[4:25, 3:20, 2:10] = rng.random((21, 17, 8)) > 0.6
        mask[0, 25, 11] = True  # a corner voxel: every axis' extreme
    # P-S-R storage of an RAS grid (IXI's layout), with flips
    affine = np.array([[0, 0, -2.0, 60], [-2.0, 0, 0, 50], [0, 2.0, 0, -40], [0, 0, 0, 1]])
    for arr in (mask, np.asfortranarray(mask), mask[::-1, ::-1]):
        aff = affine.copy()
        if arr.strides[0] < 0:  # the flipped view, placed where the voxels are
            aff[:3, 3] += affine[:3, 0] * 29 + affine[:3, 1] * 25
            aff[:3, :2] *= -1
        geometry = MaskGeometry(arr, aff)
        anchor = geometry.brain_anchor()
        box = geometry.bounds()
        assert len(geometry._planes) == 2 or empty
        if empty:
            assert anchor is None and box is None and foreground_bounds(arr, aff) is None
            continue
        direct = foreground_bounds(arr, aff)
        np.testing.assert_array_equal(box[0], direct[0])
        np.testing.assert_array_equal(box[1], direct[1])
        np.testing.assert_array_equal(anchor.point, brain_anchor(arr, aff).point)


def test_cut_off_message_says_which_side_and_how_far_when_the_box_is_snapped_to_the_grid():
    """A 97 mm foreground in a 98 mm box (14 voxels of 7 mm) can stick out: the box is centred to a voxel."""
    data = np.zeros((120, 40, 40), np.float32)
    data[10:107, 10:30, 10:30] = 1.0  # 97 voxels of 1 mm along R: centres span 96 mm, footprint 97 mm
    vol = Volume(data, np.eye(4), {"source": "snap.nii.gz"})
    out = preprocess(vol, PreprocessConfig(spacing=(7.0, 7.0, 7.0), shape=(14, 8, 8), intensity="none",
                                           antialias=False))
    (warning,) = out.warnings
    assert warning.startswith("foreground cut off by the output box: R: ")
    assert "(foreground 96.0 mm, box 98.0 mm: it would fit, but the box is centred to the nearest output voxel)" \
        in warning
    assert "beyond its left edge" in warning or "beyond its right edge" in warning
    assert " > " not in warning and warning in out.notes
    # Negative control: a box that is truly too small says so with both sizes, and no "would fit".
    small = preprocess(vol, PreprocessConfig(spacing=(7.0, 7.0, 7.0), shape=(10, 8, 8), intensity="none"))
    (warning,) = small.warnings
    assert "(foreground 96.0 mm, box 70.0 mm)" in warning and "would fit" not in warning
    assert "beyond its left edge and " in warning and "beyond its right edge" in warning


def test_real_bonbid_adc_with_a_non_zero_background_still_crops_on_the_brain(shared_data):
    """The shared BONBID-HIE maps have a zero background (benchmarks/bench_crop_real.py); scanners' maps often
    do not. The same real map with a noisy positive background added: Otsu still finds the brain."""
    from scipy import ndimage

    from age2hie_hub.io import read_volume

    path = shared_data / "bonbid2023" / "1ADC_ss" / "MGHNICU_028-VISIT_01-ADC_ss.mha"  # brain 7 mm off centre
    if not path.is_file():
        pytest.skip(f"real BONBID-HIE case not found at {path}")
    clean = read_volume(path)
    data = np.asarray(clean.data, dtype=np.float32) * np.float32(1e-6)  # stored in 1e-6 mm2/s
    brain = ndimage.binary_dilation(data > 0, iterations=2)
    rng = np.random.default_rng(0)
    noisy = np.where(brain, data, rng.uniform(5e-5, 3e-4, data.shape).astype(np.float32))
    # antialias off: with it the clean map's edge is smoothed over the brain only (zero background) and the noisy
    # map's over brain and noise, so edge values differ for a reason that is not what this test is about.
    config = dict(spacing=(3.5, 3.5, 3.5), shape=(32, 36, 28), intensity="zscore", antialias=False)
    reference = preprocess(clean.with_data(data), PreprocessConfig(**config))
    otsu = preprocess(clean.with_data(noisy), PreprocessConfig(**config, foreground="otsu"))
    plain = preprocess(clean.with_data(noisy), PreprocessConfig(**config))
    fov = world(clean.affine, (np.array(data.shape) - 1) / 2)
    mask = clean.with_data((data > 0).astype(np.float32))
    tissue = reference.array[0] != 0
    # Negative control: with threshold 0 the whole field of view is foreground: the box sits on its centre,
    # 2 voxels off the brain's, and the background is z-scored as if it were tissue.
    np.testing.assert_allclose(_grid_centre(plain), fov, atol=3.5)
    assert np.abs(_grid_centre(plain) - _grid_centre(reference)).max() > 3.5
    assert np.mean(plain.array[0] != 0) > 0.8 and np.mean(tissue) < 0.5
    # Otsu: the same box as on the clean map, the whole brain inside, the same intensities up to the z-score.
    np.testing.assert_allclose(otsu.affine, reference.affine)
    assert _inside_box(otsu, mask) >= 0.99
    both = tissue & (otsu.array[0] != 0)
    # Otsu's tissue is the brain less its partial-volume rim on the 3.5 mm grid (66 % of the clean map's
    # non-zero voxels here); on it the values are the clean map's, z-scored with that mask's mean and sd.
    assert both.sum() > 0.6 * tissue.sum()
    assert np.corrcoef(otsu.array[0][both], reference.array[0][both])[0, 1] > 0.99


def test_orientation_codes_match_nibabel_and_repeat():
    """The orientation is remembered per affine (asked several times per scan): same codes as nibabel, for
    oblique and flipped affines, on first and later calls, and an affine changed in place is a new question."""
    from nibabel.orientations import aff2axcodes

    from age2hie_hub.preprocess.orient import orientation_codes

    rng = np.random.default_rng(21)
    for _ in range(50):
        affine = np.eye(4)
        affine[:3, :3] = rng.normal(size=(3, 3))
        for _ in range(2):
            assert orientation_codes(affine) == "".join(aff2axcodes(affine))
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    assert orientation_codes(affine) == "LAS"
    affine[0, 0] = 2.0
    assert orientation_codes(affine) == "RAS"


def test_assume_finite_skips_only_the_check():
    """``assume_finite`` (what prediction passes for volumes read from files, which read_volume made finite) gives
    the same array and notes on finite data; the default check still catches what a caller hands over."""
    adc = adc_volume()
    np.testing.assert_array_equal(preprocess(adc, cfg(), assume_finite=True).array, preprocess(adc, cfg()).array)
    assert preprocess(adc, cfg(), assume_finite=True).notes == preprocess(adc, cfg()).notes
    data = adc.data.copy()
    data[20, 20, 10] = np.nan
    assert "channel 0: set 1 non-finite voxel(s) to 0" in preprocess(adc.with_data(data), cfg()).notes


def test_prediction_checks_finiteness_once_for_files(tmp_path, monkeypatch):
    """A file's non-finite voxels are set to 0 by the reader (with a warning) and preprocessing is told so; a
    Volume handed over in memory is checked by preprocessing."""
    from age2hie_hub.hub import read_config
    from age2hie_hub.hub.resolve import resolve_checkpoint
    from age2hie_hub.inference.inputs import prepare
    import age2hie_hub.preprocess as preprocess_module

    config = read_config(resolve_checkpoint("age2hie").folder)
    adc = adc_volume()
    data = adc.data.copy()
    data[20, 20, 10] = np.nan
    path = tmp_path / "nan_adc.nii.gz"
    nib.save(nib.Nifti1Image(data, adc.affine), path)
    seen: list = []
    original = preprocess_module.preprocess
    monkeypatch.setattr(preprocess_module, "preprocess",
                        lambda *a, **k: seen.append(k.get("assume_finite")) or original(*a, **k))
    from_file = prepare(str(path), None, config)
    img = nib.load(str(path))
    in_memory = prepare(Volume(img.get_fdata(dtype=np.float32), img.affine, {"source": "nan_adc.nii.gz"}), None, config)
    assert seen == [True, False]
    assert any("were not finite" in w for w in from_file.warnings)
    assert any("set 1 non-finite voxel(s) to 0" in n for n in in_memory.notes)
    np.testing.assert_array_equal(from_file.array, in_memory.array)
