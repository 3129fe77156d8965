"""Preprocess each volume once and keep the result on disk, keyed by file contents + preprocessing config
+ the code that computes it.

Epochs then read small ``.npy`` arrays instead of re-decoding ``.nii.gz``/``.mha`` and re-resampling. The key
changes whenever a file's bytes, any preprocessing field, the package's reading/preprocessing source or the
imaging libraries' versions change, so a stale entry is never served (an array made by older preprocessing code
silently reused once changed a real-data result; the code fingerprint is the guard).
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from age2hie_hub._atomic import atomic_path
from age2hie_hub.preprocess.config import PreprocessConfig
from age2hie_hub.train.manifest import files_sha256

log = logging.getLogger(__name__)

# Bump when the cached array's meaning changes (e.g. a fix in how channels are stacked).
CACHE_VERSION = 1
DTYPES = ("float16", "float32")


class PreprocessCache:
    """``get(paths)`` -> float32 (C, X, Y, Z) array for one case (one path per channel)."""

    def __init__(self, root: str | Path, config: PreprocessConfig, dtype: str = "float16") -> None:
        if dtype not in DTYPES:
            raise ValueError(f"cache dtype must be one of {DTYPES}, got {dtype!r}")
        self.root = Path(root)
        self.config = config
        self.dtype = dtype
        blob = json.dumps({"v": CACHE_VERSION, "dtype": dtype, "config": config.to_dict(),
                           "code": code_fingerprint()}, sort_keys=True)
        self._config_key = hashlib.sha256(blob.encode()).hexdigest()

    def key(self, paths: Sequence[str | Path]) -> str:
        h = hashlib.sha256(self._config_key.encode())
        for p in paths:
            h.update(files_sha256(p).encode())
        return h.hexdigest()

    def path_for(self, paths: Sequence[str | Path]) -> Path:
        key = self.key(paths)
        return self.root / key[:2] / f"{key}.npy"

    def ensure(self, paths: Sequence[str | Path]) -> Path:
        """The cache file for this case, computing it first if absent."""
        target = self.path_for(paths)
        if target.is_file():
            return target
        array = compute(paths, self.config).astype(self.dtype)
        # Atomic: a crash (or a concurrent writer) never leaves a truncated .npy under the final name.
        with atomic_path(target) as tmp, open(tmp, "wb") as fh:
            np.save(fh, array)
        return target

    def get(self, paths: Sequence[str | Path]) -> np.ndarray:
        return np.load(self.ensure(paths)).astype(np.float32)

    def warm(self, cases: Sequence[Sequence[str | Path]], workers: int = 0, progress: bool = False) -> list[Path]:
        """Cache files for every case (in order), computing missing ones in ``workers`` processes."""
        from tqdm.auto import tqdm

        cases = [tuple(str(p) for p in c) for c in cases]
        if workers > 1 and len(cases) > 1:
            with ProcessPoolExecutor(workers) as pool:
                it = pool.map(_ensure_one, [(self.root, self.config, self.dtype, c) for c in cases], chunksize=4)
                out = list(tqdm(it, total=len(cases), desc="preprocess", disable=not progress))
        else:
            out = [self.ensure(c) for c in tqdm(cases, desc="preprocess", disable=not progress)]
        return out


# What a cached array is computed by: the package's reading, DWI and preprocessing code, and the libraries
# that decode and resample.
_CODE_PACKAGES = ("io", "dwi", "preprocess")
_LIBRARIES = ("numpy", "scipy", "SimpleITK", "nibabel")


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 of the source of ``age2hie_hub.{io,dwi,preprocess}`` and the versions of the imaging libraries."""
    from importlib import metadata

    package = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for sub in _CODE_PACKAGES:
        for source in sorted((package / sub).rglob("*.py")):
            h.update(source.relative_to(package).as_posix().encode())
            h.update(source.read_bytes())
    for lib in _LIBRARIES:
        try:
            version = metadata.version(lib)
        except metadata.PackageNotFoundError:
            version = "absent"
        h.update(f"{lib}=={version}".encode())
    return h.hexdigest()


def _ensure_one(job: tuple[Path, PreprocessConfig, str, tuple[str, ...]]) -> Path:
    root, config, dtype, paths = job
    return PreprocessCache(root, config, dtype).ensure(paths)


def compute(paths: Sequence[str | Path], config: PreprocessConfig) -> np.ndarray:
    """Read each channel's file and run the package's preprocessing (the same steps inference uses)."""
    from age2hie_hub.io import read_volume
    from age2hie_hub.preprocess import preprocess

    if len(paths) != config.channels:
        raise ValueError(f"preprocessing expects {config.channels} channel(s), the case has {len(paths)}: {paths}")
    volumes = [read_volume(p) for p in paths]
    out = preprocess(volumes if len(volumes) > 1 else volumes[0], config)
    return np.asarray(out.array, dtype=np.float32)
