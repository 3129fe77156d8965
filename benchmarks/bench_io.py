"""I/O and DWI timings: read/write per format, DICOM conversion, trace ADC and mask. Prints a table.

    python benchmarks/bench_io.py [--repeat 3]

Synthetic volumes (random values, so compressed formats are at their slowest); real DICOM from the shared data
folder and heudiconv's test data when present. Times are medians of --repeat runs, in seconds.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from age2hie_hub.dwi import brain_mask, compute_adc
from age2hie_hub.io import Volume, read_volume, write_volume

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "siemens_xa30_dwi"


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    t1 = Volume(rng.normal(100, 20, size=(256, 256, 176)).astype(np.float32), affine)
    s0 = rng.uniform(200, 1000, size=(96, 96, 60))
    bvals = [0.0] * 5 + [1000.0] * 30 + [2000.0] * 30
    dwi = Volume(np.stack([s0 * np.exp(-b * 0.8e-3) for b in bvals], axis=-1).astype(np.float32),
                 np.diag([2.0, 2.0, 2.0, 1.0]), {"bvals": bvals})
    rows: list[tuple[str, str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in (".nii", ".nii.gz", ".mha", ".nrrd"):
            path = Path(tmp) / f"t1{suffix}"
            rows.append((f"write {suffix}", "256x256x176 float32", timed(lambda: write_volume(t1, path), args.repeat)))
            rows.append((f"read {suffix}", "256x256x176 float32", timed(lambda: read_volume(path), args.repeat)))
    rows.append(("compute_adc", "96x96x60x65, 2 shells", timed(lambda: compute_adc(dwi), args.repeat)))
    rows.append(("brain_mask", "96x96x60x65", timed(lambda: brain_mask(dwi), args.repeat)))
    if SHARED.is_dir():
        rows.append(("read DICOM (dcm2niix)", "XA30 enhanced 72x72x39x21",
                     timed(lambda: read_volume(SHARED / "dwi"), args.repeat)))
        xa = read_volume(SHARED / "dwi")
        rows.append(("compute_adc", "XA30 72x72x39x21", timed(lambda: compute_adc(xa), args.repeat)))
    try:
        import heudiconv

        folder = Path(heudiconv.__file__).parent / "tests" / "data" / "b0dwiForFmap"
        rows.append(("read DICOM (dcm2niix)", "Siemens mosaic 150x152x81x3",
                     timed(lambda: read_volume(folder), args.repeat)))
    except ImportError:
        pass
    width = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    print(f"{'operation':<{width[0]}}  {'input':<{width[1]}}  seconds (median of {args.repeat})")
    for op, what, sec in rows:
        print(f"{op:<{width[0]}}  {what:<{width[1]}}  {sec:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
