"""A PNG montage of a synthetic cohort, for judging realism at a glance: T1 mid-slices across ages, or HIE
ADC slices with lesion outlines and their Z-ADC maps. Every figure is titled as synthetic."""
from __future__ import annotations

import csv
import logging
from os import PathLike
from pathlib import Path

import numpy as np

from age2hie_hub._atomic import atomic_path
from age2hie_hub.synth.cohort import OUTCOME_FILE


def _ras(volume) -> np.ndarray:
    """The volume's voxels in RAS order (display only: flips and transposes, no resampling)."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(volume.affine)
    return nib.orientations.apply_orientation(volume.data, ornt)


def _aspect(volume, a: int, b: int) -> float:
    """imshow aspect for a slice whose rows run along axis b and columns along axis a (after .T)."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(volume.affine)
    sp = np.asarray(volume.spacing)[np.argsort(ornt[:, 0])]
    return float(sp[b] / sp[a])


def make_montage(cohort_dir: str | PathLike[str], out_png: str | PathLike[str], max_subjects: int = 8) -> Path:
    """Write a montage of the cohort in ``cohort_dir`` (BIDS T1 or BONBID-HIE layout) to ``out_png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(cohort_dir)
    out = Path(out_png)
    if not str(out).lower().endswith(".png"):
        raise ValueError(f"{out}: the montage is a PNG; give a name ending in .png")
    if (root / "participants.tsv").is_file():
        fig = _t1_figure(plt, root, max_subjects)
    elif (root / "1ADC_ss").is_dir():
        fig = _hie_figure(plt, root, max_subjects)
    else:
        raise ValueError(f"{root}: neither a BIDS T1 cohort (participants.tsv) nor a BONBID-HIE one (1ADC_ss/)")
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=80, facecolor="black")
    finally:
        plt.close(fig)
    return out


def _spread(items: list, k: int) -> list:
    if len(items) <= k:
        return items
    return [items[int(round(i))] for i in np.linspace(0, len(items) - 1, k)]


def _t1_figure(plt, root: Path, k: int):
    from age2hie_hub.io import read_volume

    with open(root / "participants.tsv", newline="") as f:
        rows = sorted(csv.DictReader(f, delimiter="\t"), key=lambda r: float(r["age"]))
    if not rows:
        raise ValueError(f"{root}/participants.tsv lists no subjects")
    # Ages evenly spaced on a log(1 + age) scale: the first years change the most.
    ages = np.array([float(r["age"]) for r in rows])
    targets = np.expm1(np.linspace(np.log1p(ages.min()), np.log1p(ages.max()), min(k, len(rows))))
    picked: list[int] = []
    for t in targets:
        order = np.argsort(np.abs(ages - t), kind="stable")
        picked.append(int(next(i for i in order if i not in picked)))
    rows = [rows[i] for i in sorted(picked)]
    fig, axes = plt.subplots(3, len(rows), figsize=(2.0 * len(rows), 6.6), squeeze=False)
    for col, row in enumerate(rows):
        sub = row["participant_id"]
        vol = read_volume(root / sub / "anat" / f"{sub}_T1w.nii.gz")
        d = _ras(vol)
        vmax = float(np.percentile(d[d > 0], 99.5)) if (d > 0).any() else 1.0
        # Slices through the head's centre (not the grid's): heads differ in size and position.
        head = np.argwhere(d > 0.2 * vmax)
        lo, hi = head.min(0), head.max(0)
        x, y = ((lo[:2] + hi[:2]) // 2).tolist()
        z = int(lo[2] + 0.6 * (hi[2] - lo[2]))  # axial through the lateral ventricles
        for r, (img, asp) in enumerate(((d[:, :, z], _aspect(vol, 0, 1)),
                                        (d[:, y, :], _aspect(vol, 0, 2)), (d[x, :, :], _aspect(vol, 1, 2)))):
            ax = axes[r, col]
            ax.imshow(img.T, origin="lower", cmap="gray", vmin=0, vmax=vmax, aspect=asp)
            ax.axis("off")
        axes[0, col].set_title(f"{sub}\n{float(row['age']):.1f} y {row['sex']} site {row['site']}",
                               color="white", fontsize=8)
    fig.suptitle("SYNTHETIC T1 cohort (age2hie_hub.synth) - mid-slices by age", color="white", fontsize=10)
    fig.tight_layout()
    return fig


def _hie_figure(plt, root: Path, k: int):
    from age2hie_hub.io import read_volume

    table = root / OUTCOME_FILE
    if table.is_file():
        with open(table, newline="") as f:
            rows = sorted(csv.DictReader(f), key=lambda r: float(r["lesion_volume_ml"]))
    else:
        rows = [{"case_id": p.name[: -len("-ADC_ss.mha")]} for p in sorted((root / "1ADC_ss").glob("*-ADC_ss.mha"))]
    rows = _spread(rows, k)
    if not rows:
        raise ValueError(f"{root}: no cases found in 1ADC_ss/")
    fig, axes = plt.subplots(2, len(rows), figsize=(2.2 * len(rows), 5.0), squeeze=False)
    for col, row in enumerate(rows):
        case = row["case_id"]
        adc = read_volume(root / "1ADC_ss" / f"{case}-ADC_ss.mha")
        a = _ras(adc)
        lesion_path = root / "3LABEL" / f"{case}_lesion.mha"
        io_log = logging.getLogger("age2hie_hub.io")
        level = io_log.level
        io_log.setLevel(logging.ERROR)  # an empty lesion mask is expected here, not worth a warning
        try:
            les = _ras(read_volume(lesion_path)) if lesion_path.is_file() else np.zeros_like(a)
        finally:
            io_log.setLevel(level)
        zpath = next((root / "2Z_ADC").glob(f"Zmap_{case}-*.mha"), None)
        z = _ras(read_volume(zpath)) if zpath else np.zeros_like(a)
        per_slice = les.reshape(-1, les.shape[2]).sum(0)
        s = int(per_slice.argmax()) if per_slice.max() > 0 else a.shape[2] // 2 + 2
        vmax = float(np.percentile(a[a > 0], 99)) if (a > 0).any() else 1.0
        asp = _aspect(adc, 0, 1)
        axes[0, col].imshow(a[:, :, s].T, origin="lower", cmap="gray", vmin=0, vmax=vmax, aspect=asp)
        if les[:, :, s].any():
            axes[0, col].contour(les[:, :, s].T, [0.5], colors="red", linewidths=0.8)
        axes[1, col].imshow(np.ma.masked_where(a[:, :, s] == 0, z[:, :, s]).T, origin="lower", cmap="RdBu", vmin=-8, vmax=8, aspect=asp)
        label = f"{case.split('-')[0]}\n{row.get('pattern', '?')}"
        if "outcome" in row:
            label += f", {float(row['lesion_volume_ml']):.1f} mL, {'adverse' if row['outcome'] == '1' else 'normal'}"
        axes[0, col].set_title(label, color="white", fontsize=7)
        for r in range(2):
            axes[r, col].axis("off")
    axes[1, 0].set_title("Z-ADC (red: low)", color="white", fontsize=7)
    fig.suptitle("SYNTHETIC neonatal HIE cohort (age2hie_hub.synth) - ADC with lesion outline, Z-ADC",
                 color="white", fontsize=10)
    fig.tight_layout()
    return fig
