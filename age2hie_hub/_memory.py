"""Keep the large temporaries of reading and preprocessing scans inside the process.

glibc's malloc hands out blocks above a threshold (128 KiB at start) as fresh pages from the kernel and gives
freed memory at the top of its heap back beyond twice that threshold. The whole-volume temporaries of one scan
(a few MiB each) then arrive as fresh pages for every scan, and every 4 KiB page costs a page fault when first
written. glibc raises the threshold by itself, to the size of the largest such block freed so far, up to
32 MiB (mallopt(3), "dynamic mmap threshold"); a process that has run torch is usually there already, one that
only runs ONNX Runtime and numpy is not. :func:`settle_allocator` frees one block just under that cap, once
per process, so every process that prepares scans gets what a torch process gets: on a 2-core VM, preparing an
IXI T1 went from about 3,700 page faults and 33 ms to none and 23 ms (docs/preprocessing.md). The process then
keeps up to 64 MiB of freed memory for reuse. Nothing is set: it is glibc's own rule, and no other C library
is touched.

No package imports: any layer may use it.
"""
from __future__ import annotations

import functools
import os

import numpy as np

# glibc's cap on the dynamic threshold is 32 MiB on 64-bit systems; a block counts only when it is at most that
# size including its header, so one a little below.
_BLOCK = 31 << 20


def glibc() -> bool:
    """True when this process's C library is glibc (whose malloc follows the rule above)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (AttributeError, ValueError, OSError):  # not a POSIX system, or the name is unknown
        return False


@functools.lru_cache(maxsize=1)
def settle_allocator() -> bool:
    """Once per process: allocate and free one untouched block so that glibc keeps blocks of up to 31 MiB (and
    64 MiB of freed memory) for reuse. Returns whether it was done (False off glibc)."""
    if not glibc():
        return False
    block = np.empty(_BLOCK, dtype=np.uint8)  # never written: no page of it is ever faulted in
    del block
    return True
