"""libdeflate's one-call inflate of a gzip member or zlib stream of known size, with Python's lock released.

The `deflate` wheel bundles libdeflate, the fastest inflater we measured (docs/preprocessing.md), but its Python
functions hold the GIL while they inflate (2-3 ms a scan): predict_many's other reader thread and the thread
feeding the model stall meanwhile. The same library's C functions, exported by the wheel's extension module, are
called here through ctypes, which releases the GIL for the call. Where they cannot be found (another build of the
wheel), the wheel's Python functions are used; without the wheel, callers inflate with zlib.
"""
from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

try:
    import deflate
except ImportError:  # pragma: no cover - deflate is a dependency
    deflate = None

_SUCCESS = 0  # enum libdeflate_result


def _c_library() -> Any | None:
    """The wheel's extension module as a C library with libdeflate's decompression functions typed, or None."""
    try:
        lib = ctypes.CDLL(deflate._deflate.__file__)
        functions = {name: getattr(lib, f"libdeflate_{name}_decompress") for name in ("gzip", "zlib")}
        alloc, free = lib.libdeflate_alloc_decompressor, lib.libdeflate_free_decompressor
    except (AttributeError, OSError, TypeError):
        return None
    alloc.restype, alloc.argtypes = ctypes.c_void_p, []
    free.restype, free.argtypes = None, [ctypes.c_void_p]
    for function in functions.values():
        function.restype = ctypes.c_int
        function.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                             ctypes.POINTER(ctypes.c_size_t)]
    return lib


_C = _c_library() if deflate is not None else None


def available() -> bool:
    return deflate is not None


def inflate(data: bytes, size: int, container: str) -> np.ndarray | bytearray | None:
    """``data`` (a "gzip" member or a "zlib" stream, checksum included) inflated to exactly ``size`` bytes (a
    writable buffer: a uint8 array, or a bytearray from the Python functions), or
    None when it does not inflate to that size (damaged, truncated, another size, several gzip members) or
    libdeflate is not installed: the caller then streams it with zlib, which names the problem."""
    if deflate is None or size <= 0:
        return None
    if _C is not None:
        return _inflate_c(bytes(data), size, container)
    try:
        out = (deflate.gzip_decompress if container == "gzip" else deflate.zlib_decompress)(data, size)
    except (deflate.DeflateError, ValueError, MemoryError):
        return None
    return out if len(out) == size else None


def _inflate_c(data: bytes, size: int, container: str) -> np.ndarray | None:
    out = np.empty(size, dtype=np.uint8)  # not zero-filled first (a bytearray is): libdeflate writes every byte
    produced = ctypes.c_size_t(0)
    # A decompressor per call: they are not safe to share between threads, and one costs a small allocation.
    decompressor = _C.libdeflate_alloc_decompressor()
    if not decompressor:
        raise MemoryError("libdeflate could not allocate a decompressor")
    try:
        function = _C.libdeflate_gzip_decompress if container == "gzip" else _C.libdeflate_zlib_decompress
        result = function(decompressor, data, len(data), out.ctypes.data, size, ctypes.byref(produced))
    finally:
        _C.libdeflate_free_decompressor(decompressor)
    return out if result == _SUCCESS and produced.value == size else None
