"""NIfTI (.nii, .nii.gz) through nibabel, with FSL and BIDS sidecars."""
from __future__ import annotations

import gzip
import io
import logging
import math
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from age2hie_hub.errors import VolumeReadError
from age2hie_hub.io import _inflate
from age2hie_hub.io.checks import check_affine, check_shape, check_spacing, fail
from age2hie_hub.io.sidecars import find_sidecars

log = logging.getLogger(__name__)

# Bytes inflated beyond the image to reach a gzip member's checksum (files rarely hold anything after the voxels;
# when they hold more, the checksum is not reached and not checked).
_PAST_IMAGE = 1 << 20

# An inflated file: bytes from zlib, a writable uint8 array or bytearray from libdeflate (io/_inflate.py).
_Buffer = bytes | bytearray | np.ndarray

# What nibabel and gzip raise on damaged files.
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile, nib.filebasedimages.ImageFileError,
                nib.spatialimages.HeaderDataError)


def read_nifti(path: Path, max_bytes: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Voxels (float32, scaled by the header's slope/intercept), RAS affine and metadata."""
    # nibabel silently "fixes" zero/negative voxel sizes on load (0 -> 1, abs(); logged straight to stderr) and
    # passes NaN through, so the raw header is checked first. pixdim[1..3] must be finite and > 0 whatever the
    # sform says (the standard requires it; FSL and others take voxel sizes from pixdim): a flip is the job of
    # the sform/qform (and qfac in pixdim[0]), never of a negative voxel size.
    gzipped = str(path).lower().endswith(".gz")
    data = img = None
    if gzipped:
        header, inflated = _load_gz(path, max_bytes)
        data = _voxels_in_memory(header, inflated)
        if data is None:  # scaling only nibabel applies as it should: its image, over the same bytes
            img = _from_bytes(path, header, inflated)
    else:
        img = _load(path)
        header = img.header
    shape = check_shape(path, header.get_data_shape(), header.get_data_dtype().itemsize, max_bytes)
    # nibabel's own choice of sform/qform (the affine of its checked header), read from the image or the header.
    affine = np.asarray(header.get_best_affine() if img is None else img.affine, dtype=np.float64)
    check_affine(path, affine)
    if not gzipped:
        # Truncated uncompressed file: say so plainly before nibabel's memmap does something odder.
        need = int(header.get_data_offset()) + int(np.prod(img.shape)) * header.get_data_dtype().itemsize
        have = path.stat().st_size
        if have < need:
            raise fail(path, f"file is truncated: the header needs {need} bytes, the file has {have}")
    if data is None:
        try:
            data = _scaled_float32(img)
        except _READ_ERRORS as exc:
            raise fail(path, f"voxel data cannot be read; the file is corrupt or truncated ({exc})") from exc
    data = data.reshape(shape)
    meta: dict[str, Any] = {"format": "nifti"}
    meta.update(find_sidecars(path, 1 if data.ndim == 3 else data.shape[3]))
    return data, affine, meta


def _scaled_float32(img: nib.Nifti1Image | nib.Nifti2Image) -> np.ndarray:
    """The voxels as float32 times the header's slope plus intercept, as nibabel's ``get_fdata`` gives them.

    Integers of up to 16 bits with a float32 slope and no intercept (e.g. IXI's uint8 x 13.9) are scaled in
    float32: the product of two float32 values is rounded once either way, so the values are the same, in less
    time than nibabel's float64 scaling (docs/preprocessing.md). Anything else goes through nibabel.
    """
    proxy = img.dataobj
    slope, inter = getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)
    if not _scales_in_float32(img.header.get_data_dtype(), slope, inter):
        return np.asarray(img.get_fdata(dtype=np.float32, caching="unchanged"), dtype=np.float32)
    data = np.asarray(proxy.get_unscaled()).astype(np.float32)
    if slope != 1:
        data *= np.float32(slope)
    return data


def _scales_in_float32(dtype: np.dtype, slope: float, inter: float) -> bool:
    """Integers of up to 16 bits times a float32 slope, no intercept: scaled in float32, the values are nibabel's
    (one rounding of a product of two float32 values either way)."""
    return (dtype.kind in "iu" and dtype.itemsize <= 2 and bool(np.isfinite(slope)) and slope != 0
            and float(np.float32(slope)) == float(slope) and inter == 0)


def _voxels_in_memory(header: nib.Nifti1Header | nib.Nifti2Header, inflated: _Buffer) -> np.ndarray | None:
    """What :func:`_scaled_float32` gives, read straight from the inflated file (no copy into nibabel's file
    object and out again: docs/preprocessing.md), for the usual layouts: integers of up to 16 bits times a float32
    slope without intercept, and float32 voxels without scaling. None for anything else (nibabel reads it)."""
    try:
        slope, inter = header.get_slope_inter()  # (None, None): the header asks for no scaling
    except nib.spatialimages.HeaderDataError:
        return None
    slope = 1.0 if slope is None else float(slope)
    inter = 0.0 if inter is None else float(inter)
    dtype = header.get_data_dtype()
    integers = _scales_in_float32(dtype, slope, inter)
    if not (integers or (dtype.kind == "f" and dtype.itemsize == 4 and slope == 1 and inter == 0)):
        return None
    shape = header.get_data_shape()
    raw = np.frombuffer(inflated, dtype=dtype, count=math.prod(shape), offset=int(header.get_data_offset()))
    raw = raw.reshape(shape, order="F")  # NIfTI stores the first axis fastest
    if integers:
        return np.multiply(raw, np.float32(slope), dtype=np.float32)  # one pass: cast and product, each exact
    # float32 as stored: the inflated buffer's own memory when it is writable (libdeflate's), else a copy
    return raw.astype(np.float32, copy=not (raw.dtype.isnative and raw.flags.writeable))


def _from_bytes(path: Path, header: nib.Nifti1Header | nib.Nifti2Header,
                inflated: _Buffer) -> nib.Nifti1Image | nib.Nifti2Image:
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    try:
        return image_class.from_bytes(bytes(inflated))
    except (ValueError, EOFError, nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError) as exc:
        raise fail(path, f"not a readable NIfTI file ({exc})") from exc


def _load(path: Path) -> nib.Nifti1Image | nib.Nifti2Image:
    """An uncompressed NIfTI through nibabel, after the raw header check."""
    _check_raw_pixdim(path)
    try:
        # No memory map: the Volume must not change if the file is later overwritten (and Windows could
        # not replace a mapped file).
        img = nib.load(str(path), mmap=False)
    except _READ_ERRORS as exc:
        raise fail(path, f"not a readable NIfTI file ({exc})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise fail(path, f"expected NIfTI, nibabel read it as {type(img).__name__}")
    return img


def _load_gz(path: Path, max_bytes: int) -> tuple[nib.Nifti1Header | nib.Nifti2Header, _Buffer]:
    """(the header as nibabel reads it, with its checks and fixes; the inflated file, header to voxels) of a .nii.gz
    decompressed in one pass into memory (faster than nibabel's streamed gzip: docs/preprocessing.md), no
    further than the header says the image needs: the header is read and checked (voxel size, size limit)
    before the voxels are decompressed, so a bomb stops at ``max_bytes``."""
    try:
        raw = path.read_bytes()
        inflate = zlib.decompressobj(wbits=31)  # gzip framing
        head = inflate.decompress(raw, 540)  # the larger (NIfTI-2) header
        header_class = _header_class(head)
        if header_class is None:
            raise fail(path, "not a readable NIfTI file (no NIfTI header in the gzip stream)")
        # The fixed header only (extensions follow it and may run past what has been inflated so far).
        size = 540 if header_class is nib.Nifti2Header else 348
        header = header_class(binaryblock=head[:size], check=False)
        _check_pixdim(path, header)
        shape = check_shape(path, header.get_data_shape(), header.get_data_dtype().itemsize, max_bytes)
        need = int(header.get_data_offset()) + math.prod(shape) * header.get_data_dtype().itemsize
        whole = _whole_member(raw, need)
        if whole is not None:
            return _checked_header(header, whole), whole
        # Anything else (several members, more than a little past the image, damage) is inflated as a stream,
        # from the start again, up to what the header needs, and named precisely when it fails.
        inflate = zlib.decompressobj(wbits=31)
        parts = [inflate.decompress(raw, need)]
        have = len(parts[0])
        while have < need:
            if inflate.eof:  # end of a gzip member: block-gzipped files hold several
                if not inflate.unused_data:
                    break
                pending, inflate = inflate.unused_data, zlib.decompressobj(wbits=31)
            else:
                pending = inflate.unconsumed_tail
                if not pending:  # input used up inside a member: truncated
                    break
            part = inflate.decompress(pending, need - have)
            parts.append(part)
            have += len(part)
        if have < need:
            raise fail(path, f"voxel data cannot be read; the file is corrupt or truncated (the header needs "
                             f"{need} bytes, the gzip stream holds {have})")
        # A member ends with the CRC-32 of its bytes: inflating on to it (past the image by a little at most) has
        # the inflater check it, so damage the deflate codes cannot show (in stored blocks) is found too.
        if not inflate.eof:
            inflate.decompress(inflate.unconsumed_tail, _PAST_IMAGE)
            if not inflate.eof and not inflate.unconsumed_tail:
                raise fail(path, "the gzip stream is truncated: it ends before its checksum")
        inflated = parts[0] if len(parts) == 1 else b"".join(parts)
        return _checked_header(header, inflated), inflated
    except VolumeReadError:  # the header checks' own messages, unwrapped
        raise
    except (zlib.error, EOFError, ValueError, nib.filebasedimages.ImageFileError,
            nib.spatialimages.HeaderDataError) as exc:
        raise fail(path, f"not a readable NIfTI file ({exc})") from exc
    except OSError as exc:
        raise fail(path, f"cannot be read ({exc})") from exc


def _checked_header(raw: nib.Nifti1Header | nib.Nifti2Header, inflated: _Buffer) -> nib.Nifti1Header | nib.Nifti2Header:
    """The header (and its extensions, up to the voxel offset ``raw`` gives) as nibabel's own reader builds it
    from these bytes, checks and fixes included, so that the affine it gives is nibabel's."""
    end = max(int(raw.get_data_offset()), raw.sizeof_hdr)
    return type(raw).from_fileobj(io.BytesIO(bytes(inflated[:end])), check=True)


def _whole_member(raw: bytes, need: int) -> _Buffer | None:
    """The usual .nii.gz, one gzip member holding the image and at most ``_PAST_IMAGE`` bytes more, inflated in
    one call (its CRC-32 and size checked by libdeflate); None for anything else, left to the streamed path.

    The member's size is taken from its trailer (ISIZE, the size modulo 2**32) only within those bounds of what
    the header needs, so a file that lies about it cannot make this allocate more (a bomb stops at its bound).
    """
    if len(raw) < 18:
        return None
    size = int.from_bytes(raw[-4:], "little")
    if not need <= size <= need + _PAST_IMAGE:
        return None
    return _inflate.inflate(raw, size, "gzip")  # None: damaged, several members, another size (then streamed)


def _check_raw_pixdim(path: Path) -> None:
    """Refuse a header whose voxel size pixdim[1..3] is zero, negative or not finite, before nibabel fixes it."""
    raw = raw_header(path)
    if raw is None:
        return  # not a NIfTI header: nib.load says so
    _check_pixdim(path, raw)


def _check_pixdim(path: Path, raw: nib.Nifti1Header | nib.Nifti2Header) -> None:
    ndim = int(raw["dim"][0])
    if ndim < 3 or ndim > 7:
        return  # 2D or a corrupt dim[0]: check_shape names the problem
    check_spacing(path, np.asarray(raw["pixdim"][1:4], dtype=np.float64), what="header voxel size (pixdim[1..3])")


def raw_header(path: Path) -> nib.Nifti1Header | nib.Nifti2Header | None:
    """The header as stored, without nibabel's checks and fixes (which log to stderr); None if not NIfTI."""
    try:
        with nib.openers.ImageOpener(str(path)) as f:
            header_class = _header_class(f.read(540))
            if header_class is None:
                return None
            f.seek(0)
            return header_class.from_fileobj(f, check=False)
    except _READ_ERRORS as exc:
        raise fail(path, f"not a readable NIfTI file; the header cannot be read ({exc})") from exc


def _header_class(head: bytes) -> type | None:
    """Nifti1Header or Nifti2Header from sizeof_hdr (348 or 540, either byte order)."""
    if len(head) < 348:
        return None
    for order in ("<", ">"):
        size = int(np.frombuffer(head[:4], dtype=f"{order}i4")[0])
        if size == 348:
            return nib.Nifti1Header
        if size == 540 and len(head) >= 540:
            return nib.Nifti2Header
    return None
