"""The preprocessing cache is keyed by the code that computes it: an array made by older reading or
preprocessing code (or other imaging-library versions) is never served after that code changes."""
from __future__ import annotations

import numpy as np

from age2hie_hub.io import Volume, write_volume
from age2hie_hub.preprocess.config import PreprocessConfig
from age2hie_hub.train import cache as cache_module
from age2hie_hub.train.cache import PreprocessCache, code_fingerprint

PREP = {"spacing": (4.0, 4.0, 4.0), "shape": (8, 8, 8)}


def _scan(path):
    data = np.zeros((20, 20, 20), np.float32)
    data[5:15, 5:15, 5:15] = 100.0
    write_volume(Volume(data, np.diag([2.0, 2.0, 2.0, 1.0]), {}), path)
    return (str(path),)


def test_fingerprint_covers_the_preprocessing_source_and_libraries(tmp_path, monkeypatch):
    first = code_fingerprint()
    assert len(first) == 64 and code_fingerprint() == first  # stable within a process
    # An edit to any preprocessing source file changes it (simulated on a copy of the package layout).
    fake = tmp_path / "age2hie_hub"
    for sub in ("io", "dwi", "preprocess", "train"):
        (fake / sub).mkdir(parents=True)
        (fake / sub / "x.py").write_text("A = 1\n")
    monkeypatch.setattr(cache_module, "__file__", str(fake / "train" / "cache.py"))
    code_fingerprint.cache_clear()
    try:
        before = code_fingerprint()
        (fake / "preprocess" / "x.py").write_text("A = 2\n")
        code_fingerprint.cache_clear()
        after = code_fingerprint()
        (fake / "train" / "x.py").write_text("A = 3\n")  # not preprocessing code: no effect
        code_fingerprint.cache_clear()
        assert before != after and code_fingerprint() == after
    finally:
        code_fingerprint.cache_clear()


def test_a_code_change_misses_the_old_entry(tmp_path, monkeypatch):
    case = _scan(tmp_path / "a.nii.gz")
    cache = PreprocessCache(tmp_path / "c", PreprocessConfig(**PREP))
    old = cache.ensure(case)
    assert PreprocessCache(tmp_path / "c", PreprocessConfig(**PREP)).path_for(case) == old  # same code: a hit
    monkeypatch.setattr(cache_module, "code_fingerprint", lambda: "0" * 64)
    changed = PreprocessCache(tmp_path / "c", PreprocessConfig(**PREP))
    assert changed.path_for(case) != old
