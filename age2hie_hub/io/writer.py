"""``write_volume``: NIfTI, MetaImage and NRRD, atomically (temporary file in the same folder, then rename)."""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from os import PathLike
from pathlib import Path

import numpy as np

from age2hie_hub.errors import VolumeWriteError
from age2hie_hub.io.volume import Volume

log = logging.getLogger(__name__)

WRITE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


def output_suffix(path: str | PathLike[str]) -> str:
    """The writable suffix of ``path`` or a VolumeWriteError listing the valid ones (cheap: CLIs check early)."""
    name = Path(path).name.lower()
    for suffix in WRITE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise VolumeWriteError(f"{path}: unknown output format; use one of {', '.join(WRITE_SUFFIXES)}")


def write_volume(volume: Volume, path: str | PathLike[str]) -> Path:
    """Write ``volume`` to ``path`` (format from the suffix). Nothing appears at ``path`` unless it succeeds.

    NIfTI gets qform and sform (scanner code) and, for a 4D series with b-values, FSL ``.bval``/``.bvec``
    files beside it. MetaImage/NRRD store the affine as ITK (LPS) origin, spacing and direction; they cannot
    hold shear, which raises VolumeWriteError.
    """
    path = Path(path).expanduser()
    suffix = output_suffix(path)
    folder = path.parent
    if not folder.is_dir():
        raise VolumeWriteError(f"{path}: output folder {folder} does not exist")
    stem = path.name[: -len(suffix)]
    # A private temp folder beside the target: detached formats (.mhd + .zraw, .nhdr + .raw.gz) keep the
    # data file name their header refers to, and the final rename stays on one file system.
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{stem}.", dir=folder))
    except OSError as exc:
        raise VolumeWriteError(f"{path}: cannot write in {folder} ({exc.strerror})") from exc
    try:
        tmp_file = tmp / path.name
        try:
            if suffix in (".nii", ".nii.gz"):
                _write_nifti(volume, tmp_file)
            else:
                from age2hie_hub.io.itk import write_itk

                write_itk(volume.data, volume.affine, tmp_file, volume.metadata)
        except (RuntimeError, ValueError, OSError) as exc:
            raise VolumeWriteError(f"{path}: cannot write {suffix} ({exc})") from exc
        # Companions (data file of a detached header, .bval/.bvec) first, the named file last.
        for extra in sorted(p for p in tmp.iterdir() if p != tmp_file):
            os.replace(extra, folder / extra.name)
        os.replace(tmp_file, path)
    except OSError as exc:
        raise VolumeWriteError(f"{path}: cannot write ({exc})") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.debug("wrote %s", path)
    return path


def _write_nifti(volume: Volume, path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(volume.data, dtype=np.float32), volume.affine)
    img.set_qform(volume.affine, code=1)
    img.set_sform(volume.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))
    bvals = volume.metadata.get("bvals")
    if volume.data.ndim == 4 and bvals is not None and len(bvals) == volume.data.shape[3]:
        stem = path.name[: -len(".nii.gz" if path.name.endswith(".gz") else ".nii")]
        np.savetxt(path.with_name(stem + ".bval"), np.asarray(bvals, dtype=float)[None], fmt="%g")
        bvecs = volume.metadata.get("bvecs")
        if bvecs is not None and len(bvecs) == len(bvals) and volume.metadata.get("bvecs_frame", "voxel") == "voxel":
            np.savetxt(path.with_name(stem + ".bvec"), np.asarray(bvecs, dtype=float).T, fmt="%.8g")
