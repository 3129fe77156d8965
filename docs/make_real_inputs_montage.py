"""Montage of what the models see on real scans: docs/img/real_inputs_montage.png.

    python docs/make_real_inputs_montage.py [--data ../shared/data] [--output docs/img/real_inputs_montage.png]

Three orthogonal mid slices (axial, coronal, sagittal through the box centre) of the preprocessed array, for 8
real IXI whole-head T1 (left) and 8 real BONBID-HIE ADC maps (right), evenly spread over each sorted folder:

- IXI: the brain-age preprocessing (``IXI_CONFIG``): crop "brain" on the Otsu head outline, 4 mm, 40x48x40
  (160x192x160 mm), z-score, anti-aliased, with the brain offset fitted on the 155 IXI DLMUSE label maps
  (benchmarks/bench_crop_real.py).
- BONBID-HIE: the bundled age2hie model's preprocessing (3.5 mm, 32x36x28) with anti-aliasing on, as a model
  trained today gets it.

Slices are shown in neurological convention (the subject's right on the right, anterior/superior up), grey
from -2.5 to 2.5 (z-scores). Data: IXI (CC BY-SA 3.0, SBIA terms of the NiChart copy) and BONBID-HIE 2023
(CC BY-NC 4.0); see docs/preprocessing.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CASES = 8
IXI_CONFIG = {"spacing": (4.0, 4.0, 4.0), "shape": (40, 48, 40), "intensity": "zscore", "crop": "brain",
              "foreground": "otsu", "brain_offset": (0.0, -0.1, -82.4)}


def evenly(items: list, n: int) -> list:
    return [items[int(round(i))] for i in np.linspace(0, len(items) - 1, n)] if len(items) > n else items


def mid_slices(array: np.ndarray) -> list[np.ndarray]:
    """Axial, coronal, sagittal slices through the centre of a (X=R, Y=A, Z=S) array, ready for imshow
    with origin="lower" (rows: A or S upwards; columns: R rightwards, or A rightwards for sagittal)."""
    x, y, z = (s // 2 for s in array.shape)
    return [array[:, :, z].T, array[:, y, :].T, array[x, :, :].T]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "img" / "real_inputs_montage.png")
    args = parser.parse_args()
    ixi_root, bonbid_root = args.data / "ixi_t1", args.data / "bonbid2023" / "1ADC_ss"
    if not ixi_root.is_dir() or not bonbid_root.is_dir():
        print(f"real data not found under {args.data} (need ixi_t1/ and bonbid2023/1ADC_ss/)", file=sys.stderr)
        return 1

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from age2hie_hub.hub import read_config
    from age2hie_hub.hub.resolve import BUNDLED_DIR
    from age2hie_hub.io import read_volume
    from age2hie_hub.preprocess import PreprocessConfig, preprocess

    ixi_cfg = PreprocessConfig(**IXI_CONFIG)
    adc_cfg = dataclasses.replace(read_config(BUNDLED_DIR / "age2hie").preprocess, antialias=True)
    panels = []
    for sub in evenly(sorted(p.name for p in ixi_root.glob("sub-*")), CASES):
        out = preprocess(read_volume(ixi_root / sub / "anat" / f"{sub}_T1w.nii.gz"), ixi_cfg)
        panels.append(("IXI " + sub[4:], out))
    for path in evenly(sorted(bonbid_root.glob("*.mha")), CASES):
        vol = read_volume(path)
        out = preprocess(vol.with_data(np.asarray(vol.data, np.float32) * np.float32(1e-6), units="mm2/s"), adc_cfg)
        panels.append((path.name.split("-VISIT")[0], out))

    fig, axes = plt.subplots(CASES, 6, figsize=(12, 2.1 * CASES), gridspec_kw={"wspace": 0.04, "hspace": 0.2})
    fig.subplots_adjust(top=0.96)
    for k, (name, out) in enumerate(panels):
        row, col0 = k % CASES, 3 * (k // CASES)
        for j, (image, view) in enumerate(zip(mid_slices(out.array[0]), ("axial", "coronal", "sagittal"))):
            ax = axes[row, col0 + j]
            ax.imshow(image, cmap="gray", vmin=-2.5, vmax=2.5, origin="lower", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name} {view}" if j == 0 else view, fontsize=7, loc="left")
            if out.warnings:
                ax.spines[:].set_color("red")
    fig.suptitle(
        f"What the models see, real scans. Left: IXI whole-head T1, crop 'brain', {ixi_cfg.spacing[0]:g} mm "
        f"{'x'.join(map(str, ixi_cfg.shape))}, z-score (IXI, CC BY-SA 3.0).\nRight: BONBID-HIE 2023 ADC, "
        f"{adc_cfg.spacing[0]:g} mm {'x'.join(map(str, adc_cfg.shape))}, {adc_cfg.intensity} (CC BY-NC 4.0). "
        "Mid slices, neurological convention; red frame: a cut-off warning.", fontsize=8, y=0.995)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=args.output.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=80, bbox_inches="tight")
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, args.output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    warned = [name for name, out in panels if out.warnings]
    print(f"wrote {args.output}" + (f"; cut-off warnings (red frame): {', '.join(warned)}" if warned else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
