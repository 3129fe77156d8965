"""Where the crop lands on real whole-head T1 (IXI) and on real neonatal ADC (BONBID-HIE); prints tables.

    python benchmarks/bench_crop_real.py [--data ../shared/data] [--folds 5] [--only ixi|bonbid]

IXI (155 whole-head adult T1 with neck, 2 mm): for each crop mode and box size, the share of the DLMUSE brain
voxels (labels > 0, the true brain) whose centres lie inside the output box, and the distance (mm) from the
box centre to the centre of the brain's bounding box, and how many scans preprocessing warned about (foreground
or, under crop "brain", the estimated brain cut off by the box). Crop modes: ``foreground`` with the threshold foreground
(the package's old default), ``foreground`` with the Otsu foreground, ``brain`` with its default offset, and
``brain`` with an offset fitted on the labels of the other folds (k-fold, so every subject is measured with an
offset that never saw its labels). Prediction itself never reads the labels.

BONBID-HIE (68 skull-stripped ADC maps, some with a non-zero background): the share of the brain (voxels with
ADC > 0 inside the largest connected region of the raw map, plus every lesion voxel of ``3LABEL``) and of the
lesion voxels inside the box of the age2hie bundle's preprocessing (3.5 mm, 32x36x28), with its foreground
``threshold`` and with ``otsu``, and the share of non-zero voxels outside the brain (the background).

Needs the shared data folder (``../shared/data`` beside the checkout, or ``--data``); exits cleanly without it.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

import numpy as np

from age2hie_hub.io import read_volume
from age2hie_hub.preprocess import PreprocessConfig, brain_offset_from_labels, preprocess, reorient_to_ras

REPO = Path(__file__).resolve().parents[1]
SIZES = {  # name: (spacing mm, shape)
    "4 mm 40x48x40 (160x192x160 mm)": ((4.0, 4.0, 4.0), (40, 48, 40)),
    "4 mm 36x44x36 (144x176x144 mm)": ((4.0, 4.0, 4.0), (36, 44, 36)),
    "2 mm 80x96x80 (160x192x160 mm)": ((2.0, 2.0, 2.0), (80, 96, 80)),
    "4 mm 44x52x44 (176x208x176 mm)": ((4.0, 4.0, 4.0), (44, 52, 44)),
}


def inside(points: np.ndarray, affine: np.ndarray, shape) -> np.ndarray:
    """Which world points (3, N) lie inside the output box's footprint."""
    step = np.diag(affine)[:3]
    lo = affine[:3, 3] - step / 2
    hi = lo + step * np.asarray(shape)
    return np.all((points >= lo[:, None]) & (points <= hi[:, None]), axis=0)


def world_points(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    idx = np.asarray(np.nonzero(mask), dtype=np.float64)
    return affine[:3, :3] @ idx + affine[:3, 3:4]


def box_centre(affine: np.ndarray, shape) -> np.ndarray:
    return affine[:3, 3] + np.diag(affine)[:3] * (np.asarray(shape) - 1) / 2


def ixi(root: Path, folds: int) -> None:
    subjects = sorted(p.name for p in root.glob("sub-*") if p.is_dir())
    if not subjects:
        print(f"no subjects in {root}")
        return
    t1, brains, offsets = [], [], []
    base = PreprocessConfig(foreground="otsu", crop="brain")
    t0 = time.perf_counter()
    for s in subjects:
        vol = read_volume(root / s / "anat" / f"{s}_T1w.nii.gz")
        lab = read_volume(root / "derivatives" / "dlmuse" / s / "anat" / f"{s}_dseg.nii.gz")
        t1.append(vol)
        ras = reorient_to_ras(lab)
        pts = world_points(ras.data > 0, ras.affine)
        brains.append((pts, (pts.min(axis=1) + pts.max(axis=1)) / 2))
        offsets.append(brain_offset_from_labels(vol, lab, base))
    offsets = np.array(offsets)
    n = len(subjects)
    fold_of = np.arange(n) % folds
    fitted = [tuple(offsets[fold_of != fold_of[i]].mean(axis=0)) for i in range(n)]
    print(f"IXI: {n} subjects read in {time.perf_counter() - t0:.1f} s")
    print(f"brain centre - anchor (mm, R/A/S), all subjects: mean {np.round(offsets.mean(axis=0), 1)}, "
          f"sd {np.round(offsets.std(axis=0), 1)}; fitted on all: {tuple(np.round(offsets.mean(axis=0), 1))}\n")

    modes = {
        "foreground, threshold (old default)": lambda i: {"crop": "foreground", "foreground": "threshold"},
        "foreground, otsu": lambda i: {"crop": "foreground", "foreground": "otsu"},
        "brain, otsu, default offset": lambda i: {"crop": "brain", "foreground": "otsu"},
        f"brain, otsu, offset fitted ({folds}-fold)": lambda i: {"crop": "brain", "foreground": "otsu",
                                                                 "brain_offset": fitted[i]},
    }
    header = (f"| box | crop | brain inside, mean | min | subjects < 99 % | centre error mm, median | 95th pct | "
              f"max | mean R/A/S error mm | scans warned | ms/scan |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for size, (spacing, shape) in SIZES.items():
        for mode, fields in modes.items():
            share, err, axis_err, warned = [], [], [], 0
            t0 = time.perf_counter()
            for i, vol in enumerate(t1):
                cfg = PreprocessConfig(spacing=spacing, shape=shape, **fields(i))
                out = preprocess(vol, cfg)
                warned += bool(out.warnings)
                pts, centre = brains[i]
                share.append(inside(pts, out.affine, shape).mean())
                d = box_centre(out.affine, shape) - centre
                err.append(np.linalg.norm(d))
                axis_err.append(d)
            ms = (time.perf_counter() - t0) / len(t1) * 1000
            share, err, axis_err = np.array(share), np.array(err), np.array(axis_err)
            print(f"| {size} | {mode} | {share.mean():.4f} | {share.min():.3f} | {int((share < 0.99).sum())} | "
                  f"{np.median(err):.1f} | {np.percentile(err, 95):.1f} | {err.max():.1f} | "
                  f"{' / '.join(f'{v:+.1f}' for v in axis_err.mean(axis=0))} | {warned} | {ms:.0f} |")


def bonbid(root: Path) -> None:
    from scipy import ndimage

    cases = sorted((root / "1ADC_ss").glob("*.mha"))
    if not cases:
        print(f"no ADC maps in {root / '1ADC_ss'}")
        return
    from age2hie_hub.hub import read_config
    from age2hie_hub.hub.resolve import BUNDLED_DIR

    bundle = read_config(BUNDLED_DIR / "age2hie").preprocess  # the settings the age2hie model uses
    rows = []
    print(f"\nBONBID-HIE: {len(cases)} ADC maps; the age2hie bundle's preprocessing: {bundle}")
    for path in cases:
        case = path.name.split("-VISIT")[0]
        vol = read_volume(path)
        lesion = read_volume(root / "3LABEL" / f"{case}-VISIT_01_lesion.mha")
        data = np.asarray(vol.data, dtype=np.float32)
        ras = reorient_to_ras(vol)
        raw = np.asarray(ras.data) > 0
        labels, count = ndimage.label(raw)
        brain = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:])) if count > 1 else raw
        les = reorient_to_ras(lesion)
        brain |= np.asarray(les.data) > 0
        outside = np.asarray(ras.data)[~ndimage.binary_dilation(brain, iterations=3)]
        background = float(np.mean(outside != 0)) if outside.size else 0.0  # share of non-zero voxels outside
        scaled = vol.with_data(data / 1e6, units="mm2/s")  # 1e-6 mm2/s as stored -> mm2/s
        for name in ("threshold", "otsu"):
            cfg = dataclasses.replace(bundle, foreground=name)
            try:
                out = preprocess(scaled, cfg)
            except Exception as exc:  # noqa: BLE001 - a benchmark row, not a product path
                rows.append((case, name, background, np.nan, np.nan, f"error: {exc}"))
                continue
            share = inside(world_points(brain, ras.affine), out.affine, cfg.shape).mean()
            lpts = world_points(np.asarray(les.data) > 0, les.affine)
            lshare = inside(lpts, out.affine, cfg.shape).mean() if lpts.shape[1] else np.nan
            rows.append((case, name, background, share, lshare, "; ".join(out.warnings)))
    for name in ("threshold", "otsu"):
        sel = [r for r in rows if r[1] == name]
        share = np.array([r[3] for r in sel])
        nonzero_bg = [r for r in sel if r[2] > 0.01]
        print(f"foreground {name}: brain inside mean {np.nanmean(share):.4f}, min {np.nanmin(share):.3f}, "
              f"cases < 99 %: {int(np.sum(share < 0.99))}; lesions inside min {np.nanmin([r[4] for r in sel]):.3f}; "
              f"{len(nonzero_bg)} cases with non-zero background, their brain-inside min "
              f"{min((r[3] for r in nonzero_bg), default=float('nan')):.3f}; warnings on "
              f"{sum(1 for r in sel if r[5])} cases")
        for r in sel:
            if r[3] < 0.99 or r[2] > 0.01 or r[5]:
                print(f"  {r[0]}: non-zero background {r[2]:.1%}, brain inside {r[3]:.3f}, lesion inside {r[4]:.3f} {r[5]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only", choices=("ixi", "bonbid"))
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # cut-off warnings are counted in the tables, not printed per scan
    if not args.data.is_dir():
        print(f"shared data not found at {args.data}; nothing to measure (pass --data)")
        sys.exit(0)
    if args.only in (None, "ixi"):
        ixi(args.data / "ixi_t1", args.folds)
    if args.only in (None, "bonbid"):
        bonbid(args.data / "bonbid2023")


if __name__ == "__main__":
    main()
