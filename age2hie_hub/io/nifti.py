"""NIfTI (.nii, .nii.gz) through nibabel, with FSL and BIDS sidecars."""
from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from age2hie_hub.io.checks import check_affine, check_shape, check_spacing, fail
from age2hie_hub.io.sidecars import find_sidecars

log = logging.getLogger(__name__)

# What nibabel and gzip raise on damaged files.
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile, nib.filebasedimages.ImageFileError,
                nib.spatialimages.HeaderDataError)


def read_nifti(path: Path, max_bytes: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Voxels (float32, scaled by the header's slope/intercept), RAS affine and metadata."""
    try:
        # No memory map: the Volume must not change if the file is later overwritten (and Windows could
        # not replace a mapped file).
        img = nib.load(str(path), mmap=False)
    except _READ_ERRORS as exc:
        raise fail(path, f"not a readable NIfTI file ({exc})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise fail(path, f"expected NIfTI, nibabel read it as {type(img).__name__}")
    hdr = img.header
    shape = check_shape(path, img.shape, hdr.get_data_dtype().itemsize, max_bytes)
    # nibabel silently "fixes" zero/negative pixdim on load (0 -> 1, abs()); a voxel size we would have to guess
    # is an error here, so check the raw header whenever the affine comes from pixdim (no sform).
    if not hdr.get_sform(coded=True)[1]:
        check_spacing(path, _raw_pixdim(path, type(hdr))[1:4])
    affine = np.asarray(img.affine, dtype=np.float64)
    check_affine(path, affine)
    if not str(path).lower().endswith(".gz"):
        # Truncated uncompressed file: say so plainly before nibabel's memmap does something odder.
        need = int(hdr.get_data_offset()) + int(np.prod(img.shape)) * hdr.get_data_dtype().itemsize
        have = path.stat().st_size
        if have < need:
            raise fail(path, f"file is truncated: the header needs {need} bytes, the file has {have}")
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32, caching="unchanged"), dtype=np.float32)
    except _READ_ERRORS as exc:
        raise fail(path, f"voxel data cannot be read; the file is corrupt or truncated ({exc})") from exc
    data = data.reshape(shape)
    meta: dict[str, Any] = {"format": "nifti"}
    meta.update(find_sidecars(path, 1 if data.ndim == 3 else data.shape[3]))
    return data, affine, meta


def _raw_pixdim(path: Path, header_class: type) -> np.ndarray:
    try:
        with nib.openers.ImageOpener(str(path)) as f:
            raw = header_class.from_fileobj(f, check=False)
    except _READ_ERRORS as exc:
        raise fail(path, f"NIfTI header cannot be read ({exc})") from exc
    return np.asarray(raw["pixdim"], dtype=np.float64)
