"""Write files so that readers never see a half-written one: write beside the target, then rename.

One place for it, because two details are easy to get wrong: the temporary name must keep the target's
suffix (writers such as matplotlib, numpy and ONNX pick the format from it), and the final file must get
the user's umask permissions (mkstemp and safetensors create 0600 files other users cannot read).
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_sibling(path: str | os.PathLike[str]) -> Path:
    """A fresh hidden name in the target's folder that ends like the target (same suffixes)."""
    path = Path(path)
    return path.with_name(f".{uuid.uuid4().hex[:12]}.tmp.{path.name}")


def publish(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Give `tmp` ordinary permissions and rename it onto `path` (atomic on one file system)."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write to; it replaces `path` only if the block finishes without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        yield tmp
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
