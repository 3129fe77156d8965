"""The ``otsu`` foreground step (crop "brain" and "foreground"): the memory-order, banded-matrix smoothing, the
bincount Otsu level and the largest region found on a 2x coarser grid give what the straightforward
implementation gave (scipy's gaussian_filter on the array as the reader laid it out, np.histogram,
ndimage.label at full resolution), so models built with it see the same input.

Tolerance: the smoothing accumulates in float32 instead of float64 (a few ulps); the set of voxels it lifts
above 0 must be identical, Otsu's level (a bin centre between the sample's min and max) equal to their
rounding (1e-6 relative), and the output box the same. The model input then
differs only where an output voxel lies within float rounding of the level: 1e-4 in z-score units is ~100x
float32 rounding of a z-score and far below anything a model could see.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from age2hie_hub.dwi.mask import _count_bytes, otsu_threshold, otsu_threshold_fast
from age2hie_hub.io import Volume
from age2hie_hub.preprocess import PreprocessConfig, pipeline, preprocess
from age2hie_hub.preprocess.crop import memory_view
from age2hie_hub.preprocess.resample import gaussian_smooth

from reference_preprocessing import reference_foreground

BRAIN_AGE = dict(spacing=(5.0, 5.0, 5.0), shape=(32, 38, 32), crop="brain", foreground="otsu",
                 brain_offset=(0.0, -0.1, -82.4))  # the bundled brain-age model's grid


def largest_region_reference(mask):
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def head(shape=(120, 120, 90), seed=0, layout="PSR"):
    """A whole-head-like T1 with an exactly-0 background, a few noise specks and a bias field, stored P-S-R
    like the IXI scans (the reader's array is then a transposed, flipped view)."""
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) - (n - 1) / 2 for n in shape], indexing="ij"))
    r_head = np.sqrt((g[0] / 48) ** 2 + ((g[1] - 8) / 40) ** 2 + (g[2] / 36) ** 2)
    r_brain = np.sqrt((g[0] / 42) ** 2 + ((g[1] - 14) / 33) ** 2 + (g[2] / 31) ** 2)
    data = np.where(r_head < 1, 300.0, 0.0) + np.where(r_brain < 1, 400.0, 0.0)
    data *= 1.0 + 0.3 * g[0] / shape[0]  # bias field
    data += np.where(r_head < 1, 40.0 * rng.standard_normal(shape), 0.0)
    specks = rng.integers(0, np.array(shape)[:, None], size=(3, 40))
    data[tuple(specks)] = 900.0  # isolated bright voxels in the background: other regions
    data = np.clip(data, 0, None).astype(np.float32)
    affine = np.array([[0.0, 0.0, 2.0, -88.0], [-2.0, 0.0, 0.0, 118.0], [0.0, 2.0, 0.0, -135.0], [0, 0, 0, 1.0]])
    if layout == "C":
        return Volume(np.ascontiguousarray(data), affine)
    return Volume(np.asfortranarray(data), affine)  # as SimpleITK/nibabel readers hand arrays back


def test_otsu_threshold_fast_is_otsu_threshold():
    rng = np.random.default_rng(1)
    samples = [
        np.concatenate([rng.normal(100, 10, 50_000), rng.normal(400, 40, 80_000)]).astype(np.float32),
        rng.gamma(2.0, 50.0, 100_000).astype(np.float32),
        np.linspace(0, 1, 257, dtype=np.float32),  # values on the bin edges
        np.full(10, 3.0, dtype=np.float32),  # one value
    ]
    for values in samples:
        assert otsu_threshold_fast(values) == otsu_threshold(values)
    bimodal = samples[0]
    level = otsu_threshold_fast(bimodal)
    assert 150 < level < 300  # between the two modes
    assert otsu_threshold_fast(bimodal[bimodal > level]) > 300  # negative control: another sample, another level


@pytest.mark.parametrize("n", [0, 1, 2, 255, 256, 70_001])
def test_byte_pair_counts_are_bincount(n):
    rng = np.random.default_rng(n)
    values = rng.integers(0, 256, n, dtype=np.uint8)
    if n > 2:
        values[-1] = 255  # the odd element's own bin, at the top
    assert np.array_equal(_count_bytes(values), np.bincount(values, minlength=256))
    if n > 2:  # negative control: a changed byte changes the counts
        changed = values.copy()
        changed[0] ^= 1
        assert not np.array_equal(_count_bytes(changed), np.bincount(values, minlength=256))


def test_reflect_smoothing_is_scipys_default_gaussian_filter():
    """The same values to float32 rounding and, what Otsu's histogram depends on, the same voxels above 0."""
    g = np.indices((40, 44, 36), dtype=np.float32) - np.array([20, 22, 18], dtype=np.float32)[:, None, None, None]
    ball = np.sqrt((g ** 2).sum(axis=0)) < 12
    rng = np.random.default_rng(3)
    data = np.asfortranarray(np.where(ball, 500 + 50 * rng.standard_normal(ball.shape), 0).astype(np.float32))
    data[1, 1, 1] = 700.0  # near a corner: the mirrored edge
    view, _ = memory_view(data)
    ours = gaussian_smooth(view, (1.0, 1.0, 1.0), truncate=4.0, mode="reflect")
    ref = ndimage.gaussian_filter(np.ascontiguousarray(view), 1.0)
    assert np.max(np.abs(ours - ref)) < 1e-6 * float(data.max())
    np.testing.assert_array_equal(ours > 0, ref > 0)
    # Negative control: the resampler's kernel (3 sigma, edges repeated) reaches fewer background voxels.
    short = gaussian_smooth(view, (1.0, 1.0, 1.0))
    assert np.count_nonzero(short > 0) < np.count_nonzero(ref > 0)


@pytest.mark.parametrize("shape", [(40, 36, 30), (41, 37, 29)])  # even and odd (padded) sizes
def test_largest_region_on_the_coarse_grid(shape):
    rng = np.random.default_rng(2)
    mask = np.zeros(shape, dtype=bool)
    mask[5:30, 6:28, 4:24] = True  # the largest region
    mask[33:36, 30:33, 26:28] = True  # a separate one, 3 voxels away: dropped
    mask[tuple(rng.integers(0, np.array(shape)[:, None], size=(3, 30)))] = True  # specks, some touching
    ours = pipeline._largest_region(mask)
    ref = largest_region_reference(mask)
    assert ours.shape == mask.shape
    assert not ours[33:36, 30:33, 26:28].any()
    assert np.all(ours >= ref)  # never loses a voxel of the largest region
    assert np.all(ours <= mask)
    # What it may add: pieces whose 2x2x2 blocks touch the region's, at most 3 voxels from it in any axis.
    near = ndimage.binary_dilation(ref, structure=np.ones((3, 3, 3)), iterations=3)
    assert not (ours & ~ref & ~near).any()


def test_a_piece_is_kept_only_when_its_coarse_voxels_touch_the_largest_region():
    mask = np.zeros((8, 8, 8), dtype=bool)
    mask[0:2] = True  # the region: coarse layer 0
    mask[4, 0, 0] = True  # coarse layer 2, two empty voxels (one empty coarse layer) away: dropped
    out = pipeline._largest_region(mask)
    assert not out[4, 0, 0] and out[0:2].all()
    mask[2, 5, 5] = True  # face-connected to the region: kept, as at full resolution
    assert pipeline._largest_region(mask)[2, 5, 5]
    mask[2, 5, 5] = False
    mask[3, 0, 0] = True  # a separate voxel in the coarse layer next to the region's: kept (the approximation)
    out = pipeline._largest_region(mask)
    assert out[3, 0, 0] and not largest_region_reference(mask)[3, 0, 0]


def test_memory_view_round_trips_every_layout():
    base = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    for array in (base, base.T, np.flip(base, 1), np.flip(base.transpose(2, 0, 1), 0), np.asfortranarray(base)):
        view, undo = memory_view(array)
        assert view.strides[0] >= view.strides[1] >= view.strides[2] > 0
        back = undo(view + 0)  # a C-ordered array laid out like the view
        np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("layout", ["PSR", "C"])
@pytest.mark.parametrize("crop", ["brain", "foreground"])
def test_preprocess_matches_the_previous_foreground_on_a_synthetic_head(layout, crop, monkeypatch):
    volume = head(layout=layout)
    config = PreprocessConfig(**{**BRAIN_AGE, "crop": crop})
    ras = pipeline.reorient_to_ras(volume).data
    mask, level = pipeline._foreground(ras, config, [])
    mask_r, level_r = reference_foreground(ras, config, [])
    assert abs(level - level_r) <= 1e-6 * level_r  # the bin centre moves with the float32 rounding of min, max
    assert np.count_nonzero(mask != mask_r) <= 1e-5 * mask.size  # voxels within rounding of the outline level
    assert_preprocesses_as_reference(volume, config, monkeypatch)


def assert_preprocesses_as_reference(volume, config, monkeypatch) -> None:
    """The model input with today's foreground equals the one with the reference foreground: same box."""
    ours = preprocess(volume, config)
    with monkeypatch.context() as m:
        m.setattr(pipeline, "_foreground", reference_foreground)
        ref = preprocess(volume, config)
    np.testing.assert_array_equal(ours.affine, ref.affine)
    assert np.max(np.abs(ours.array - ref.array)) < 1e-4


def test_synthetic_t1_from_the_generator_preprocesses_as_before(monkeypatch):
    from age2hie_hub.synth.t1 import synth_t1

    volume, _ = synth_t1(np.random.default_rng(5), 60.0, "F", "A")
    assert_preprocesses_as_reference(volume, PreprocessConfig(**BRAIN_AGE), monkeypatch)


def test_real_ixi_t1_and_bonbid_adc_preprocess_as_before(shared_data, monkeypatch):
    """Two real IXI T1 with the bundled brain-age preprocessing and two BONBID-HIE ADC maps with crop
    "foreground", foreground "otsu": the same box, the same Otsu level, the same input to 1e-4."""
    from age2hie_hub.dwi import adc_to_mm2s
    from age2hie_hub.io import read_volume

    ixi = sorted((shared_data / "ixi_t1").glob("sub-*/anat/*_T1w.nii.gz"))[:2]
    bonbid = sorted((shared_data / "bonbid2023" / "1ADC_ss").glob("*.mha"))[:2]
    if not ixi and not bonbid:
        pytest.skip(f"no IXI T1 or BONBID-HIE ADC maps under {shared_data}")
    cases = [(read_volume(p), PreprocessConfig(**BRAIN_AGE)) for p in ixi]
    cases += [(adc_to_mm2s(read_volume(p))[0], PreprocessConfig(spacing=(3.5, 3.5, 3.5), shape=(32, 36, 28),
                                                                 foreground="otsu")) for p in bonbid]
    for volume, config in cases:
        ours = preprocess(volume, config)
        with monkeypatch.context() as m:
            m.setattr(pipeline, "_foreground", reference_foreground)
            ref = preprocess(volume, config)
        np.testing.assert_array_equal(ours.affine, ref.affine, err_msg=str(volume.source))
        assert np.max(np.abs(ours.array - ref.array)) < 1e-4, volume.source


@pytest.mark.parametrize("shape", [(1, 2, 3), (5, 9, 4), (12, 7, 30)])  # axes shorter than the kernel too
def test_reflect_kernel_matches_scipy_on_short_axes(shape):
    x = np.random.default_rng(4).random(shape).astype(np.float32)
    ours = gaussian_smooth(x, (1.0, 1.0, 1.0), truncate=4.0, mode="reflect")
    np.testing.assert_allclose(ours, ndimage.gaussian_filter(x, 1.0), rtol=0, atol=1e-6)
    assert not np.allclose(gaussian_smooth(x, (1.0, 1.0, 1.0)), ndimage.gaussian_filter(x, 1.0), atol=1e-6)
