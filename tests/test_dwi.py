"""age2hie_hub.dwi: trace ADC against the scanner's own map, on real public DWI, and on exact synthetic signals."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from age2hie_hub.dwi import adc_to_mm2s, brain_mask, compute_adc
from age2hie_hub.errors import DiffusionError
from age2hie_hub.io import Volume, read_volume
from conftest import package_data

# --- real data ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def xa30(shared_data):
    root = shared_data / "siemens_xa30_dwi"
    return read_volume(root / "dwi"), read_volume(root / "scanner_adc")


def test_xa30_adc_matches_scanner_within_readme_bounds(xa30):
    """Bounds from ../shared/data/siemens_xa30_dwi/README.md, in its eroded brain region."""
    dwi, scanner = xa30
    adc = compute_adc(dwi)
    ref, units, _ = adc_to_mm2s(scanner)
    assert units == "1e-6mm2/s"  # Siemens integers, detected from the value range
    assert adc.shape == ref.shape == (72, 72, 39)
    np.testing.assert_allclose(adc.affine, scanner.affine, atol=1e-4)  # the scan's own grid
    assert adc.metadata["units"] == "mm2/s"
    region = ndimage.binary_erosion(scanner.data > 0, iterations=2) & (ref.data >= 0.1e-3) & (ref.data <= 1.2e-3)
    assert region.sum() > 20000
    ours, theirs = adc.data[region].astype(np.float64), ref.data[region].astype(np.float64)
    diff = np.abs(ours - theirs)
    assert np.median(diff) <= 2e-6
    assert np.percentile(diff, 95) <= 1e-5
    assert abs(np.median(ours / theirs) - 1) <= 0.01
    assert np.corrcoef(ours, theirs)[0, 1] >= 0.99


def test_xa30_arithmetic_mean_would_miss_the_bounds(xa30):
    """The README's warning, checked: averaging directions arithmetically biases ADC (so our test can fail)."""
    dwi, scanner = xa30
    s0 = dwi.data[..., 0].astype(np.float64)
    sb = np.maximum(dwi.data[..., 1:].mean(axis=-1), 1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        arith = np.log(s0 / sb) / 2500.0
    ref = scanner.data * 1e-6
    region = ndimage.binary_erosion(scanner.data > 0, iterations=2) & (ref >= 0.1e-3) & (ref <= 1.2e-3)
    assert np.median(np.abs(arith[region] - ref[region])) > 2e-6


def test_xa30_brain_mask_lies_in_the_head(xa30):
    dwi, scanner = xa30
    mask = brain_mask(dwi)
    head = scanner.data > 0
    assert mask.shape == head.shape and mask.dtype == bool
    assert (mask & head).sum() / mask.sum() > 0.99
    assert 0.3 < mask.sum() / head.sum() < 0.9  # the brain, not the whole head with scalp


def test_heudiconv_b0_b1500_series():
    vol = read_volume(package_data("heudiconv", "tests", "data", "b0dwiForFmap"))
    adc = compute_adc(vol)
    assert adc.shape == (150, 152, 81)
    assert adc.metadata["adc_method"] == {"b0_bval": 5.0, "n_b0": 2, "shells": [1500.0], "directions": [1]}
    mask = brain_mask(vol)
    assert 0.9e6 < mask.sum() * 1.5**3 < 2.0e6  # an adult brain + CSF, in mm^3
    assert 0.6e-3 <= np.median(adc.data[mask]) <= 1.0e-3


def test_dipy_small_64d_plausible_adc():
    vol = read_volume(package_data("dipy", "data", "files", "small_64D.nii"))
    assert len(vol.metadata["bvals"]) == 65  # .bval/.bvec picked up beside the NIfTI
    adc = compute_adc(vol)
    assert adc.metadata["adc_method"]["directions"] == [64]
    tissue = vol.data[..., 0] > 0  # a 10x10x10 crop from inside the brain: every voxel with signal
    assert 0.6e-3 <= np.median(adc.data[tissue]) <= 1.0e-3
    # CSF (bright on b0) diffuses faster than tissue.
    b0 = vol.data[..., 0]
    assert np.median(adc.data[b0 > np.percentile(b0, 90)]) > np.median(adc.data[b0 < np.percentile(b0, 50)])


# --- exact synthetic signals -----------------------------------------------------------------------------------


def series(signal: np.ndarray, bvals, **meta) -> Volume:
    return Volume(data=signal, affine=np.diag([2.0, 2.0, 3.0, 1.0]), metadata={"bvals": list(bvals), **meta})


def tensor_signal(s0: np.ndarray, diffusivities, bvals, bvecs) -> np.ndarray:
    """S = S0 exp(-b g^T D g) for a diagonal tensor D per voxel."""
    d = np.asarray(diffusivities)
    out = [s0 * np.exp(-b * np.einsum("...i,i->...", d, np.asarray(g, float) ** 2)) for b, g in zip(bvals, bvecs)]
    return np.stack(out, axis=-1).astype(np.float32)


def test_anisotropic_single_shell_gives_trace_exactly():
    rng = np.random.default_rng(0)
    s0 = rng.uniform(500, 1500, size=(4, 4, 3))
    d = np.stack([np.full((4, 4, 3), 1.7e-3), np.full((4, 4, 3), 0.3e-3), np.full((4, 4, 3), 0.4e-3)], axis=-1)
    bvals, bvecs = [0, 1000, 1000, 1000], [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    adc = compute_adc(series(tensor_signal(s0, d, bvals, bvecs), bvals))
    np.testing.assert_allclose(adc.data, d.mean(axis=-1), rtol=1e-4)
    assert adc.data.ndim == 3 and adc.metadata["units"] == "mm2/s" and "bvals" not in adc.metadata
    np.testing.assert_array_equal(adc.affine, np.diag([2.0, 2.0, 3.0, 1.0]))


def test_multi_shell_log_linear_fit_and_nonzero_b0():
    s0 = np.full((3, 3, 2), 1000.0)
    true = np.linspace(0.2e-3, 3.0e-3, 18).reshape(3, 3, 2)
    bvals = [5, 5, 495, 505, 1000, 1010, 2000]  # b~0 at b=5 counts as b=5; shells rounded to 500/1000/2000
    sig = np.stack([s0 * np.exp(-b * true) for b in bvals], axis=-1).astype(np.float32)
    adc = compute_adc(series(sig, bvals))
    np.testing.assert_allclose(adc.data, true, rtol=1e-4)
    assert adc.metadata["adc_method"]["shells"] == [500.0, 1005.0, 2000.0]
    assert adc.metadata["adc_method"]["b0_bval"] == 5.0


def test_voxels_without_usable_signal_are_zero():
    s0 = np.full((2, 2, 2), 1000.0)
    sig = np.stack([s0, s0 * np.exp(-1000 * 1e-3)], axis=-1).astype(np.float32)
    sig[0, 0, 0, 0] = 0  # no b0 signal
    sig[0, 0, 1, 1] = 0  # no diffusion-weighted signal in the only direction
    sig[0, 1, 0, 1] = 2000  # signal rises with b: negative ADC
    sig[1, 1, 1, :] = 0  # background
    adc = compute_adc(series(sig, [0, 1000]))
    for idx in [(0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 1, 1)]:
        assert adc.data[idx] == 0
    np.testing.assert_allclose(adc.data[1, 0, 0], 1e-3, rtol=1e-5)


def test_zero_direction_readings_are_floored_not_dropped():
    # Integer DWI at high b: one direction reads 0; it means "below 1", as Siemens treats it.
    sig = np.array([[[[100, 10, 0, 10]]]], dtype=np.float32)
    sig = np.concatenate([sig, np.array([[[[100, 1, 1, 1]]]], np.float32)], axis=0)
    adc = compute_adc(series(sig, [0, 1000, 1000, 1000]))
    expected = np.log(100 / np.exp(np.mean(np.log([10, 1, 10])))) / 1000
    np.testing.assert_allclose(adc.data[0, 0, 0], expected, rtol=1e-5)


def test_explicit_bvals_override_metadata():
    sig = np.stack([np.full((2, 2, 2), 100.0), np.full((2, 2, 2), 100 * np.exp(-1.0))], axis=-1)
    adc = compute_adc(series(sig, [0, 500]), bvals=[0, 1000])
    np.testing.assert_allclose(adc.data, 1e-3, rtol=1e-5)


@pytest.mark.parametrize(
    "data, bvals, pattern",
    [
        (np.ones((3, 3, 3)), [0], "4D diffusion series"),
        (np.ones((3, 3, 3, 2)), None, "no b-values"),
        (np.ones((3, 3, 3, 2)), [0, 1000, 1000], "3 b-values for 2 volumes"),
        (np.ones((3, 3, 3, 2)), [1000, 1000], "no b~0 volume"),
        (np.ones((3, 3, 3, 2)), [0, 10], "no diffusion-weighted volume"),
        (np.ones((3, 3, 3, 2)), [0, -5], "finite and >= 0"),
    ],
)
def test_bad_diffusion_input(data, bvals, pattern):
    meta = {"source": "scan.nii.gz"} if bvals is None else {"source": "scan.nii.gz", "bvals": bvals}
    with pytest.raises(DiffusionError, match=pattern) as info:
        compute_adc(Volume(data, np.eye(4), meta))
    assert "scan.nii.gz" in str(info.value)


# --- units ----------------------------------------------------------------------------------------------------


def adc_map(scale: float, seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    mm2s = rng.uniform(0.5e-3, 2.5e-3, size=(6, 6, 6))
    mm2s[:2] = 0  # background
    return Volume((mm2s / scale).astype(np.float32), np.eye(4), {"source": "adc.mha"})


@pytest.mark.parametrize("unit, scale", [("mm2/s", 1.0), ("1e-3mm2/s", 1e-3), ("1e-6mm2/s", 1e-6)])
def test_units_detected_and_converted(unit, scale):
    vol = adc_map(scale)
    out, detected, warnings = adc_to_mm2s(vol)
    assert detected == unit and warnings == []
    np.testing.assert_allclose(out.data, adc_map(1.0).data, rtol=1e-5)
    assert out.metadata["units"] == "mm2/s"


def test_ambiguous_unit_warns_and_override_wins():
    vol = Volume(np.full((3, 3, 3), 25.0, np.float32), np.eye(4), {"source": "odd.nii"})
    out, unit, warnings = adc_to_mm2s(vol)
    assert unit == "1e-6mm2/s" and len(warnings) == 1 and "ambiguous" in warnings[0] and "odd.nii" in warnings[0]
    assert out.metadata["warnings"] == warnings
    out, unit, warnings = adc_to_mm2s(vol, unit="1e-3mm2/s")
    assert unit == "1e-3mm2/s" and warnings == []
    np.testing.assert_allclose(out.data, 0.025)


def test_override_disagreeing_with_values_warns():
    out, unit, warnings = adc_to_mm2s(adc_map(1e-6), unit="1e-3mm2/s")
    assert unit == "1e-3mm2/s" and "look like 1e-6mm2/s" in warnings[0]


def test_metadata_units_are_used_and_aliases_accepted():
    vol = adc_map(1e-3).with_data(adc_map(1e-3).data, units="um2/ms")
    assert adc_to_mm2s(vol)[1] == "1e-3mm2/s"
    with pytest.raises(DiffusionError, match="unknown ADC unit"):
        adc_to_mm2s(adc_map(1.0), unit="furlongs")
    with pytest.raises(DiffusionError, match="no positive voxels"):
        adc_to_mm2s(Volume(np.zeros((2, 2, 2)), np.eye(4)))


# --- mask -----------------------------------------------------------------------------------------------------


def test_brain_mask_finds_a_noisy_sphere():
    rng = np.random.default_rng(3)
    grid = np.indices((40, 40, 30)).transpose(1, 2, 3, 0) - [20, 20, 15]
    sphere = (np.linalg.norm(grid, axis=-1) < 11)
    b0 = np.where(sphere, 800, 0) + np.abs(rng.normal(0, 40, size=sphere.shape))
    dwi = np.stack([b0, b0 * 0.4, b0 * 0.4], axis=-1)
    mask = brain_mask(Volume(dwi, np.eye(4), {"bvals": [0, 1000, 1000]}))
    dice = 2 * (mask & sphere).sum() / (mask.sum() + sphere.sum())
    assert dice > 0.97
    assert not brain_mask(Volume(np.zeros((5, 5, 5)), np.eye(4))).any()


def test_scanner_trace_volume_in_a_shell_is_ignored():
    # Philips-style: three directions at b=1000 plus the scanner's own (arithmetic) trace with a zero gradient.
    s0 = np.full((2, 2, 2), 1000.0)
    d = np.stack([np.full((2, 2, 2), v) for v in (1.7e-3, 0.3e-3, 0.4e-3)], axis=-1)
    bvecs = [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    sig = tensor_signal(s0, d, [0, 1000, 1000, 1000], bvecs)
    sig = np.concatenate([sig, sig[..., 1:].mean(axis=-1, keepdims=True)], axis=-1)
    vol = series(sig, [0, 1000, 1000, 1000, 1000], bvecs=bvecs + [[0, 0, 0]])
    adc = compute_adc(vol)
    np.testing.assert_allclose(adc.data, d.mean(axis=-1), rtol=1e-4)
    assert adc.metadata["adc_method"]["directions"] == [3]
    # Without gradient information the trace volume counts as a direction (and biases the result).
    biased = compute_adc(series(sig, [0, 1000, 1000, 1000, 1000]))
    assert not np.allclose(biased.data, d.mean(axis=-1), rtol=1e-3)


def test_sampled_median_is_within_half_a_percent_of_the_full_median():
    # The unit check and range warnings take the median from every k-th voxel (a third of preprocessing
    # otherwise); on full-size synthetic scans it must stay within 0.5 % of the exact median.
    from age2hie_hub.dwi.units import SAMPLE_VOXELS, sampled_median
    from age2hie_hub.synth import synth_hie_case, synth_t1

    rng = np.random.default_rng(3)
    adc = synth_hie_case(rng, "BCH", spacing=(0.6, 0.6, 2.0), n_slices=40)[0].data
    t1 = synth_t1(rng, 40.0, "F", spacing=(1.0, 1.0, 1.0))[0].data
    for data, keep in ((adc, "positive"), (t1, "nonzero")):
        assert data.size > 4 * SAMPLE_VOXELS  # the sampled path, not the exact one
        values = data[np.isfinite(data) & ((data > 0) if keep == "positive" else (data != 0))]
        exact = float(np.median(values))
        assert abs(sampled_median(data, keep) / exact - 1) < 5e-3, (keep, sampled_median(data, keep), exact)


def test_sampled_median_of_a_sparse_image_uses_every_voxel():
    from age2hie_hub.dwi.units import sampled_median

    data = np.zeros((200, 200, 60), np.float32)
    data.reshape(-1)[1::997][:50] = np.arange(1, 51)  # 50 voxels a stride could miss or misjudge
    assert sampled_median(data) == 25.5
    assert sampled_median(np.zeros((10, 10, 10))) is None
    assert sampled_median(np.full((4, 4, 4), -1.0), "nonzero") == -1.0


@pytest.mark.parametrize("scale", [1e-6, 1e-3, 1.0])
def test_unit_check_median_is_the_converted_maps_median(scale):
    """adc_to_mm2s_with_median hands on the median the unit check measured, in mm^2/s: the converted map's own
    (sampled) median, which prediction's range check would otherwise measure a second time."""
    from age2hie_hub.dwi.units import adc_to_mm2s_with_median, sampled_median

    rng = np.random.default_rng(8)
    data = (rng.gamma(3.0, 4e-4, size=(70, 64, 40)) / scale).astype(np.float32)
    data[:10] = 0.0
    volume = Volume(np.asfortranarray(data), np.eye(4))
    out, unit, _, median = adc_to_mm2s_with_median(volume)
    assert unit == {1e-6: "1e-6mm2/s", 1e-3: "1e-3mm2/s", 1.0: "mm2/s"}[scale]
    assert median == pytest.approx(sampled_median(out.data), rel=1e-6)
    assert 5e-4 < median < 3e-3
