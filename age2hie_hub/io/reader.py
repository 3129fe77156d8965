"""``read_volume``: one entry point for NIfTI, MetaImage, NRRD and DICOM, with the checks in ``checks.py``."""
from __future__ import annotations

import gzip
import logging
import zlib
from os import PathLike
from pathlib import Path

from age2hie_hub.io.checks import DEFAULT_MAX_BYTES, check_affine, check_exists, check_shape, clean_data, fail
from age2hie_hub.io.volume import Volume

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
DICOM_SUFFIXES = (".dcm", ".ima", ".zip")
DICOM_GZ_SUFFIXES = (".dcm.gz", ".ima.gz")  # single gzipped DICOM files; other *.gz are looked into
SUPPORTED = (", ".join(NIFTI_SUFFIXES + ITK_SUFFIXES)
             + ", a DICOM folder, a .zip of one, or a .dcm file (DICOM files may be gzipped: .dcm.gz, IM_0001.gz)")


def detect_format(path: Path) -> str:
    """'nifti', 'itk' or 'dicom' from the name (else from the DICOM preamble, inside the gzip for ``*.gz``)."""
    name = path.name.lower()
    if path.is_dir():
        return "dicom"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(ITK_SUFFIXES):
        return "itk"
    if name.endswith(DICOM_SUFFIXES + DICOM_GZ_SUFFIXES):
        return "dicom"
    gzipped = name.endswith(".gz")  # e.g. IM_0001.gz from a PACS export: look inside for the DICOM preamble
    try:
        with (gzip.open if gzipped else open)(path, "rb") as f:
            head = f.read(132)
    except OSError as exc:  # gzip.BadGzipFile is an OSError
        why = f"not a valid gzip file ({exc})" if gzipped else f"cannot be opened ({exc.strerror})"
        raise fail(path, why) from exc
    except (EOFError, zlib.error) as exc:
        raise fail(path, f"gzip file is truncated or corrupt ({exc})") from exc
    if head[128:132] == b"DICM":
        return "dicom"
    raise fail(path, f"unknown image format{' (gzip-compressed)' if gzipped else ''}; supported: {SUPPORTED}")


def read_volume(path: str | PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> Volume:
    """Read a 3D volume or 4D series into a :class:`Volume` (float32, RAS affine, metadata).

    DICOM may be a folder, a .zip or one file, and its files may be gzipped (``*.dcm.gz``, ``IM_0001.gz``);
    a zip's content and gzipped files may expand to ``2 * max_bytes`` at most.

    Raises :class:`~age2hie_hub.errors.VolumeReadError` naming the file and the problem for missing files,
    unknown formats, corrupt or truncated files, 2D/5D data, voxel sizes that are zero, negative or not
    finite, singular or non-finite affines, empty images and headers needing more than ``max_bytes``
    (checked from the header, before any voxel is read). Non-finite voxels
    become 0 with a warning in ``metadata["warnings"]``; an all-zero image is accepted with a warning (a
    lesion mask may legitimately be empty), an image with 0 voxels is an error.
    """
    path = Path(path).expanduser()
    check_exists(path)
    kind = detect_format(path)
    if kind == "nifti":
        from age2hie_hub.io.nifti import read_nifti as reader
    elif kind == "itk":
        from age2hie_hub.io.itk import read_itk as reader
    else:
        from age2hie_hub.io.dicom import read_dicom as reader
    try:
        data, affine, meta = reader(path, max_bytes)
    except MemoryError as exc:
        raise fail(path, "not enough memory to read the voxel data") from exc
    check_shape(path, data.shape, 4, max_bytes)
    check_affine(path, affine)  # the one geometry gate every format passes (readers check headers earlier too)
    data = clean_data(path, data, meta)
    meta["source"] = str(path)
    meta.setdefault("units", None)
    meta.setdefault("bvals", None)
    meta.setdefault("bvecs", None)
    meta.setdefault("sidecar", None)
    log.debug("read %s: shape %s, spacing %s", path, data.shape, meta.get("format"))
    return Volume(data=data, affine=affine, metadata=meta)
