"""Preprocessing speed on synthetic volumes of real-world sizes; prints a table.

    python benchmarks/bench_preprocess.py [--repeats 5] [--threads N] [--bonbid [DIR]] [--ixi [DIR]]

Inputs are synthetic (an ellipsoidal "brain" with noise) at the sizes that matter: a BONBID-HIE ADC map
(256x256x40 at 0.9x0.9x2.5 mm, straight and 12 degrees oblique, ADC + Z-ADC) and an adult T1
(256x256x176 at 1 mm -> SFCN's 160x192x160), and a whole-head grid as in IXI (120x120x90 at 2 mm, noisy
background) with crop "brain" at 4 mm; with and without anti-aliasing (on by default). The second table
times the resampling step alone with three backends on the same grids, which is why resample.py uses SimpleITK.
With --bonbid (default ../shared/data/bonbid2023/1ADC_ss) a third table runs every real BONBID-HIE ADC map
through the age2hie grid with anti-aliasing, by the package and by the straightforward implementation it
replaced (scipy's gaussian_filter on a C-order copy of the whole reachable block): median times of the same
run, the largest difference of the model inputs (z-scores) and how many voxels differ in being 0.
With --ixi (default ../shared/data/ixi_t1) a fourth table runs every real IXI T1 through the bundled
brain-age model's preprocessing (crop "brain", foreground "otsu") by the package and by the foreground step
it replaced (scipy's gaussian_filter, np.histogram and ndimage.label at full resolution): median times of the
same run, how many output boxes differ, the largest differences of the Otsu level, the model input and the
bundled model's brain age (torch, one thread).
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from age2hie_hub.io import Volume
from age2hie_hub.preprocess import PreprocessConfig, preprocess
from age2hie_hub.preprocess.pipeline import _foreground as ours_foreground
from age2hie_hub.preprocess.resample import resample_array, voxel_map

# The pre-rewrite implementations the package is compared with live beside the tests that check against them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_preprocessing import reference_foreground, reference_resample  # noqa: E402

DEFAULT_BONBID = Path(__file__).resolve().parents[2] / "shared" / "data" / "bonbid2023" / "1ADC_ss"
DEFAULT_IXI = Path(__file__).resolve().parents[2] / "shared" / "data" / "ixi_t1"


def brain(shape: tuple[int, int, int], affine: np.ndarray, size_mm, seed: int = 0) -> Volume:
    """An ellipsoid of ADC-like values (mm^2/s) with axes ``size_mm``, centred in the field of view."""
    rng = np.random.default_rng(seed)
    idx = np.indices(shape, dtype=np.float32)
    centre = (np.array(shape, dtype=np.float32) - 1) / 2
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    r = sum(((idx[a] - centre[a]) * spacing[a] / (size_mm[a] / 2)) ** 2 for a in range(3))
    data = np.where(r < 1, 1e-3 + 2e-4 * rng.standard_normal(shape, dtype=np.float32), 0).astype(np.float32)
    return Volume(data, affine, {"source": "synthetic", "units": "mm2/s"})


def affine_of(spacing, degrees: float = 0.0) -> np.ndarray:
    t = np.radians(degrees)
    rot = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    out = np.eye(4)
    out[:3, :3] = rot @ np.diag([-spacing[0], spacing[1], spacing[2]])  # stored LAS, like many scanners
    out[:3, 3] = [100.0, -110.0, -40.0]
    return out


def timeit(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (imports, thread pools)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


def scipy_resample(data, src_affine, dst_affine, shape):
    from scipy import ndimage

    m = voxel_map(src_affine, dst_affine)
    return ndimage.affine_transform(data, m[:3, :3], m[:3, 3], output_shape=shape, order=1, mode="nearest",
                                    output=np.float32)


def torch_resample(data, src_affine, dst_affine, shape):
    import torch

    m = voxel_map(src_affine, dst_affine)
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1)
    src = (m[:3, :3].astype(np.float32) @ idx + m[:3, 3:4].astype(np.float32))
    n = np.array(data.shape, dtype=np.float32)[:, None]
    grid = (2 * src + 1) / n - 1  # align_corners=False normalisation; grid_sample wants (z, y, x) order
    grid_t = torch.from_numpy(grid[::-1].T.copy()).reshape(1, *shape, 3)
    vol = torch.from_numpy(np.ascontiguousarray(data))[None, None]
    return torch.nn.functional.grid_sample(vol, grid_t, mode="bilinear", padding_mode="zeros",
                                           align_corners=False)[0, 0].numpy()


def ixi_table(folder: Path, repeats: int) -> None:
    """Every real IXI T1 through the bundled brain-age preprocessing: the package against reference_foreground,
    and the bundled model's brain age on both inputs."""
    import torch

    from age2hie_hub.hub import load_checkpoint
    from age2hie_hub.hub.checkpoint import read_config
    from age2hie_hub.hub.resolve import BUNDLED_DIR
    from age2hie_hub.io import read_volume
    from age2hie_hub.preprocess import pipeline
    from age2hie_hub.preprocess.orient import reorient_to_ras

    paths = sorted(folder.glob("sub-*/anat/*_T1w.nii.gz"))
    if not paths:
        print(f"\nno IXI T1 (sub-*/anat/*_T1w.nii.gz) in {folder}: real-data table skipped")
        return
    torch.set_num_threads(1)
    folder_model = BUNDLED_DIR / "brain-age"
    config = read_config(folder_model).preprocess
    model = load_checkpoint(folder_model).eval()
    times = {"ours": [], "ref": [], "fg ours": [], "fg ref": []}
    boxes, worst_level, worst_input, worst_age, moved, ages = [], 0.0, 0.0, 0.0, 0, []
    for path in paths:
        volume = read_volume(path)
        data = reorient_to_ras(volume).data
        runs = {}
        for key, fn in (("ours", pipeline._foreground), ("ref", reference_foreground)):
            pipeline._foreground = fn
            try:
                pre = preprocess(volume, config)
                times[key].append(timeit(lambda: preprocess(volume, config), repeats))
                mask, level = fn(data, config, [])
                times["fg " + key].append(timeit(lambda: fn(data, config, []), repeats))
            finally:
                pipeline._foreground = ours_foreground
            with torch.no_grad():
                age = float(model(torch.from_numpy(pre.array[None])).reshape(-1)[0])
            runs[key] = pre, mask, level, age
        (pre, mask, level, age), (pre_r, mask_r, level_r, age_r) = runs["ours"], runs["ref"]
        if not np.array_equal(pre.affine, pre_r.affine):
            boxes.append(f"{path.name}: {np.round(pre.affine[:3, 3] - pre_r.affine[:3, 3], 1)} mm")
        moved += int(np.count_nonzero(mask != mask_r))
        worst_level = max(worst_level, abs(level - level_r) / level_r)
        worst_input = max(worst_input, float(np.max(np.abs(pre.array - pre_r.array))))
        worst_age = max(worst_age, abs(age - age_r))
        ages.append(age)
    print(f"\nreal IXI T1, {len(paths)} scans from {folder}, bundled brain-age preprocessing (crop brain, "
          f"foreground otsu), median ms")
    print(f"{'':10s} {'package':>8s} {'previous':>9s}")
    print(f"{'preprocess':10s} {statistics.median(times['ours']):8.1f} {statistics.median(times['ref']):9.1f}")
    print(f"{'foreground':10s} {statistics.median(times['fg ours']):8.1f} {statistics.median(times['fg ref']):9.1f}")
    print(f"boxes that differ: {len(boxes)}" + "".join(f"\n  {b}" for b in boxes))
    print(f"max relative difference of the Otsu level {worst_level:.2e}; head-outline voxels that differ, all scans: "
          f"{moved}")
    print(f"model input max |diff| (z-score) {worst_input:.2e}; brain age max |diff| {worst_age:.4f} years "
          f"(ages {min(ages):.1f}-{max(ages):.1f})")


def bonbid_table(folder: Path, repeats: int) -> None:
    """Every real BONBID-HIE map: the package's anti-aliased preprocessing against reference_resample."""
    from age2hie_hub.dwi import adc_to_mm2s
    from age2hie_hub.io import read_volume
    from age2hie_hub.preprocess import pipeline

    paths = sorted(folder.glob("*.mha"))
    if not paths:
        print(f"\nno BONBID-HIE maps (*.mha) in {folder}: real-data table skipped")
        return
    config = PreprocessConfig(spacing=(3.5, 3.5, 3.5), shape=(32, 36, 28))  # the age2hie grid, antialias on
    ours_ms, ref_ms, worst, flips = [], [], 0.0, 0
    for path in paths:
        volume = adc_to_mm2s(read_volume(path))[0]
        ours = preprocess(volume, config).array
        ours_ms.append(timeit(lambda: preprocess(volume, config), repeats))
        pipeline.resample_array = reference_resample
        try:
            ref = preprocess(volume, config).array
            ref_ms.append(timeit(lambda: preprocess(volume, config), repeats))
        finally:
            pipeline.resample_array = resample_array
        worst = max(worst, float(np.max(np.abs(ours - ref))))
        flips += int(np.count_nonzero((ours == 0) != (ref == 0)))
    print(f"\nreal BONBID-HIE ADC, {len(paths)} maps from {folder}, -> 3.5 mm 32x36x28, anti-aliased, median ms")
    print(f"{'package':>10s} {'scipy gaussian_filter':>22s} {'max |diff| (z-score)':>22s} {'voxels 0 in one only':>21s}")
    print(f"{statistics.median(ours_ms):10.1f} {statistics.median(ref_ms):22.1f} {worst:22.2e} {flips:21d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="SimpleITK/torch threads (0: library default)")
    parser.add_argument("--bonbid", type=Path, nargs="?", const=DEFAULT_BONBID, default=None,
                        help=f"also compare on real BONBID-HIE ADC maps (default folder {DEFAULT_BONBID})")
    parser.add_argument("--ixi", type=Path, nargs="?", const=DEFAULT_IXI, default=None,
                        help=f"also compare on real IXI T1 (default folder {DEFAULT_IXI})")
    parser.add_argument("--only-real", action="store_true", help="skip the synthetic tables")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.threads:
        import SimpleITK as sitk
        import torch

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
        torch.set_num_threads(args.threads)

    neonate, adult = (90, 110, 80), (140, 175, 130)  # brain sizes, mm
    adc = brain((256, 256, 40), affine_of((0.9, 0.9, 2.5)), neonate)
    adc_oblique = brain((256, 256, 40), affine_of((0.9, 0.9, 2.5), 12.0), neonate)
    zadc = adc.with_data((adc.data - 1e-3) / 2e-4)
    t1 = brain((256, 256, 176), affine_of((1.0, 1.0, 1.0)), adult)
    hie = dict(spacing=(2, 2, 2), shape=(64, 64, 48))
    sfcn = dict(spacing=(1, 1, 1), shape=(160, 192, 160), intensity="mean")
    head = brain((120, 120, 90), affine_of((2.0, 2.0, 2.0)), (180, 220, 200))  # IXI-sized whole-head grid
    head = head.with_data(head.data * 1e6 + np.float32(20.0))  # T1-like values, noisy non-zero background
    bonbid = dict(spacing=(3.5, 3.5, 3.5), shape=(32, 36, 28))
    ixi = dict(spacing=(4, 4, 4), shape=(40, 48, 40), crop="brain", foreground="otsu")
    cases = [
        ("BONBID ADC -> 2 mm 64x64x48", adc, PreprocessConfig(**hie)),
        ("  same, antialias off", adc, PreprocessConfig(**hie, antialias=False)),
        ("BONBID ADC -> 3.5 mm 32x36x28", adc, PreprocessConfig(**bonbid)),
        ("  same, antialias off", adc, PreprocessConfig(**bonbid, antialias=False)),
        ("head 2 mm -> 4 mm, crop brain", head, PreprocessConfig(**ixi)),
        ("  same, antialias off", head, PreprocessConfig(**ixi, antialias=False)),
        ("  same, crop foreground threshold", head, PreprocessConfig(**{**ixi, "crop": "foreground",
                                                                        "foreground": "threshold"})),
        ("  same, nearest", adc, PreprocessConfig(**hie, interpolation="nearest")),
        ("  same, bspline", adc, PreprocessConfig(**hie, interpolation="bspline")),
        ("  same, adc_fixed + clip", adc, PreprocessConfig(**hie, intensity="adc_fixed", clip=(0, 3))),
        ("  12 deg oblique", adc_oblique, PreprocessConfig(**hie)),
        ("  ADC + Z-ADC (2 channels)", [adc, zadc], PreprocessConfig(**hie, channels=2)),
        ("T1 1 mm -> 160x192x160 (SFCN)", t1, PreprocessConfig(**sfcn)),
        ("  same, bspline", t1, PreprocessConfig(**sfcn, interpolation="bspline")),
    ]
    if args.only_real:
        cases = []
    else:
        print(f"preprocess(), median of {args.repeats} (synthetic volumes)")
        print(f"{'case':34s} {'input':>14s} {'output':>18s} {'ms':>9s}")
    for name, vols, config in cases:
        first = vols[0] if isinstance(vols, list) else vols
        ms = timeit(lambda: preprocess(vols, config), args.repeats)
        out = f"{config.channels}x" + "x".join(map(str, config.shape))
        print(f"{name:34s} {'x'.join(map(str, first.spatial_shape)):>14s} {out:>18s} {ms:9.1f}")

    if cases:
        print("\nresampling step alone, linear, same grids")
        print(f"{'grid':34s} {'SimpleITK (used)':>17s} {'scipy affine_tr.':>17s} {'torch grid_sample':>18s}")
    for name, vol, config in [cases[0], cases[4], cases[6]] if cases else []:
        pre = preprocess(vol, config)
        row = []
        for fn in (
            lambda: resample_array(vol.data, vol.affine, pre.affine, config.shape),
            lambda: scipy_resample(vol.data, vol.affine, pre.affine, config.shape),
            lambda: torch_resample(vol.data, vol.affine, pre.affine, config.shape),
        ):
            row.append(timeit(fn, args.repeats))
        print(f"{name.strip():34s} {row[0]:14.1f} ms {row[1]:14.1f} ms {row[2]:15.1f} ms")

    if args.bonbid is not None:
        bonbid_table(args.bonbid, args.repeats)
    if args.ixi is not None:
        ixi_table(args.ixi, args.repeats)


if __name__ == "__main__":
    main()
