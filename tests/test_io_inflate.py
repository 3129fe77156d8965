"""libdeflate's one-call inflate (io/_inflate.py): its C functions through ctypes (the GIL released) and the wheel's
Python functions give the same bytes and refuse the same streams."""
from __future__ import annotations

import gzip
import platform
import sys
import zlib

import numpy as np
import pytest

pytest.importorskip("deflate", reason="deflate (libdeflate) is not installed")

from age2hie_hub.io import _inflate  # noqa: E402


@pytest.fixture(params=["C through ctypes", "Python functions"])
def path_taken(request, monkeypatch):
    if request.param == "Python functions":
        monkeypatch.setattr(_inflate, "_C", None)
    elif _inflate._C is None:
        pytest.skip("this build of the deflate wheel does not export libdeflate's C functions")
    return request.param


def payload() -> bytes:
    rng = np.random.default_rng(2)
    values = np.where(rng.random(200_000) < 0.7, 0.0, rng.normal(1e-3, 3e-4, 200_000)).astype(np.float32)
    return values.tobytes()


@pytest.mark.parametrize("container", ["gzip", "zlib"])
def test_same_bytes_as_zlib(path_taken, container):
    data = payload()
    packed = gzip.compress(data) if container == "gzip" else zlib.compress(data)
    out = _inflate.inflate(packed, len(data), container)
    assert bytes(out) == data and memoryview(out).readonly is False


@pytest.mark.parametrize("container", ["gzip", "zlib"])
def test_refuses_what_does_not_inflate_to_the_size(path_taken, container):
    data = payload()
    packed = bytearray(gzip.compress(data) if container == "gzip" else zlib.compress(data))
    assert _inflate.inflate(bytes(packed), len(data) - 1, container) is None  # the buffer is too small
    assert _inflate.inflate(bytes(packed), len(data) + 1, container) is None  # the stream is shorter
    assert _inflate.inflate(bytes(packed[: len(packed) // 2]), len(data), container) is None  # cut short
    packed[-6] ^= 0xFF  # inside the checksum
    assert _inflate.inflate(bytes(packed), len(data), container) is None
    assert _inflate.inflate(b"", 0, container) is None


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")),
                    reason="checked on the platform the suite pins its wheels for")
def test_the_pinned_wheel_exports_the_c_functions():
    """predict_many's reader threads inflate side by side only on the C path (the Python functions hold the GIL);
    a wheel that stops exporting them would silently cost throughput."""
    assert _inflate._C is not None
