"""clean_data's fast path (a sum instead of a mask of the whole image) decides like the mask."""
from __future__ import annotations

import numpy as np
import pytest

from age2hie_hub.io.checks import clean_data


def cleaned(data: np.ndarray) -> tuple[np.ndarray, list[str]]:
    meta: dict = {}
    out = clean_data("scan.nii.gz", data, meta)
    return out, meta.get("warnings", [])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_single_non_finite_voxel_is_found_and_zeroed(bad):
    data = np.random.default_rng(0).random((30, 20, 10), dtype=np.float32).T  # a reader's transposed array
    data[3, 4, 5] = bad
    out, warnings = cleaned(data)
    assert out[3, 4, 5] == 0 and np.isfinite(out).all()
    others = np.ones(data.shape, dtype=bool)
    others[3, 4, 5] = False
    np.testing.assert_array_equal(out[others], data[others])
    (warning,) = warnings
    assert "1 of 6000 voxels were not finite" in warning


def test_finite_values_whose_sum_overflows_are_left_alone():
    data = np.full((10, 10, 10), 3e38, dtype=np.float32)  # finite, but their float32 sum is inf
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.sum(data))
    out, warnings = cleaned(data)
    assert out is data and warnings == []
    # Negative control: a NaN among them is still found.
    data[1, 2, 3] = np.nan
    out, warnings = cleaned(data)
    assert out[1, 2, 3] == 0 and out[0, 0, 0] == np.float32(3e38) and "1 of 1000" in warnings[0]


def test_empty_image_is_told_from_one_whose_values_cancel():
    data = np.zeros((4, 4, 4), dtype=np.float32)
    data[0, 0, 0], data[1, 1, 1] = 2.5, -2.5  # sums to 0, but not empty
    assert cleaned(data)[1] == []
    assert any("every voxel is 0" in w for w in cleaned(np.zeros((4, 4, 4), np.float32))[1])
    # Non-finite voxels only: after zeroing them the image is empty, and both are said.
    only_nan = np.full((2, 2, 2), np.nan, dtype=np.float32)
    out, warnings = cleaned(only_nan)
    assert not out.any() and len(warnings) == 2 and "every voxel is 0" in warnings[1]


def test_integer_data_passes_unchanged():
    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    out, warnings = cleaned(data)
    assert out is data and warnings == []
