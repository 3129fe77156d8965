"""How tests compare the floating-point outputs of two separately built modules, two processes or two providers.

Never bit for bit: oneDNN and MKL (torch) and MLAS (ONNX Runtime) pick kernels, blocking and reduction order from
the instruction set (AVX-512 or AVX2), the thread count and the memory alignment of the weights, so two modules
holding identical weights agree to float32 rounding, not exactly. Measured: a tiny resnet3d_34 with a soft-bin
age head, loaded back from model.safetensors, gave log-probabilities (|x| up to ~11) 1.2e-6 away from the module
it was saved from (7e-7 relative, a few float32 ulps) on an AMD EPYC without AVX-512; on the AVX-512 CPU the
suite was written on they happened to be bit-identical. Exact equality stays where it is the property itself:
weights after a round trip, bytes, hashes, and a resumed run against an uninterrupted one in the same process.

Tests that compare numbers this way carry the `numerics` marker; tests/test_portability.py runs them again with
the instruction set capped at AVX2, another thread count and no OpenVINO (docs/ARCHITECTURE.md, "Numbers across
machines").
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

# float32 epsilon is 1.19e-7: RTOL is ~84 ulps, ~14x the largest relative difference measured above; ATOL covers
# outputs near zero. Another seed's model of the same shape moved the tiny models' outputs by 0.17 to 7 (>1e4x
# this tolerance); one conv weight of a resnet3d_10 moved by 1e-3 still fails it (8e-6 > 1e-6). Weights
# themselves are compared exactly (assert_same_weights).
RTOL = 1e-5
ATOL = 1e-6


def assert_same_outputs(got: Any, want: Any, what: str = "outputs") -> None:
    """got == want to float32 rounding (tensors, arrays, or dicts / lists of them)."""
    torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL, check_device=False,
                               msg=lambda m: f"{what} differ beyond float32 rounding: {m}")


def assert_outputs_differ(a: Any, b: Any, margin: float = 1000.0) -> None:
    """a and b differ by more than `margin` times the tolerance: the negative control for assert_same_outputs."""
    a, b = np.asarray(_numpy(a), np.float64), np.asarray(_numpy(b), np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    excess = float((np.abs(a - b) / (ATOL + RTOL * np.abs(b))).max())
    assert excess > margin, f"outputs differ by only {excess:.3g}x the tolerance (a control must differ by >{margin}x)"


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Every parameter and buffer bit-identical, and the same keys: the property of a lossless round trip."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, dict):
        return np.concatenate([np.ravel(_numpy(x[k])) for k in sorted(x)])
    return np.asarray(x)
