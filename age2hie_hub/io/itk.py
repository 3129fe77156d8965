"""MetaImage (.mha/.mhd) and NRRD (.nrrd/.nhdr) through SimpleITK.

ITK stores geometry in LPS: world = origin + D @ diag(spacing) @ index. Our affines are RAS (nibabel's
convention), so both the direction/spacing block and the origin are flipped on x and y: A = F @ D @ S,
t = F @ origin, with F = diag(-1, -1, 1). Writing inverts exactly that.

SimpleITK reads every header. The voxels of the usual MetaImage (one data file or the header's own, one scalar
component, a plain element type, zlib-compressed or raw) are read here, inflated by libdeflate: the same
arrays, in ~40 % less time than SimpleITK's reader on a BONBID-HIE map (docs/preprocessing.md), and damaged
compressed voxels are an error naming the file (SimpleITK printed "Uncompress failed" and carried on).
Anything else is read by SimpleITK.
"""
from __future__ import annotations

import logging
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from age2hie_hub.io import _inflate
from age2hie_hub.io.checks import check_affine, check_shape, check_spacing, fail

log = logging.getLogger(__name__)

# MetaImage element types numpy reads as they are stored (MET_LONG/ULONG differ in size between writers).
_MET_TYPES = {"MET_UCHAR": "u1", "MET_CHAR": "i1", "MET_USHORT": "u2", "MET_SHORT": "i2", "MET_UINT": "u4",
              "MET_INT": "i4", "MET_LONG_LONG": "i8", "MET_ULONG_LONG": "u8", "MET_FLOAT": "f4", "MET_DOUBLE": "f8"}

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def itk_geometry_to_affine(spacing, direction, origin) -> np.ndarray:
    """ITK (LPS) spacing, direction (row-major, flat), origin -> 4x4 RAS affine (3 spatial axes)."""
    dim = len(spacing)
    d = np.asarray(direction, dtype=np.float64).reshape(dim, dim)[:3, :3]
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ d @ np.diag(np.asarray(spacing, dtype=np.float64)[:3])
    affine[:3, 3] = LPS_TO_RAS @ np.asarray(origin, dtype=np.float64)[:3]
    return affine


def affine_to_itk_geometry(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """4x4 RAS affine -> ITK (spacing, direction flat row-major, origin), all in LPS."""
    a = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(a, axis=0)
    direction = a / spacing
    origin = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)[:3, 3]
    return tuple(spacing.tolist()), tuple(direction.ravel().tolist()), tuple(origin.tolist())


def _pixel_itemsize(sitk: Any, reader: Any) -> int:
    name = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    bits = re.search(r"(\d+)-bit", name)
    size = int(bits.group(1)) // 8 if bits else 8
    return size * (2 if "complex" in name else 1)


def read_itk(path: Path, max_bytes: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()  # header only: geometry and size before any voxel is read
    except RuntimeError as exc:
        raise fail(path, f"not a readable {path.suffix} image ({_itk_message(exc)})") from exc
    size = list(reader.GetSize())
    n_comp = int(reader.GetNumberOfComponents())
    spacing = list(reader.GetSpacing())
    shape = size + ([n_comp] if n_comp > 1 else [])
    if len(size) > 3 and n_comp > 1:
        raise fail(path, f"image is {len(size)}D with {n_comp} components per voxel; only 3D/4D is supported")
    shape = check_shape(path, shape, _pixel_itemsize(sitk, reader), max_bytes)
    check_spacing(path, spacing)
    affine = itk_geometry_to_affine(spacing, reader.GetDirection(), reader.GetOrigin())
    check_affine(path, affine)
    keys = {k: reader.GetMetaData(k) for k in reader.GetMetaDataKeys()}
    arr = None
    if path.suffix.lower() in (".mha", ".mhd"):
        fields, voxels_at = _metaimage_precheck(path, int(np.prod(shape)) * _pixel_itemsize(sitk, reader))
        if n_comp == 1 and voxels_at is not None:
            arr = _metaimage_voxels(path, fields, voxels_at, size)
    if arr is None:
        try:
            image = reader.Execute()
        except RuntimeError as exc:
            raise fail(path, f"voxel data cannot be read; the file is corrupt or truncated ({_itk_message(exc)})") from exc
        if "complex" in image.GetPixelIDTypeAsString():
            raise fail(path, "complex-valued images are not supported; save magnitude images")
        arr = sitk.GetArrayFromImage(image)  # (z, y, x[, c]) or (t, z, y, x); a copy this array owns
    if n_comp > 1:
        arr = np.moveaxis(arr, -1, 0)  # components act as volumes: (c, z, y, x)
    # -> (x, y, z[, t]) as a transposed view: a C-order copy of it was a large part of reading a BONBID-sized
    # scan (docs/preprocessing.md), and SimpleITK's own copy is all the memory traffic the reader needs.
    data = arr.astype(np.float32, copy=False).T.reshape(shape)
    meta: dict[str, Any] = {"format": path.suffix.lower().lstrip(".")}
    meta.update(_nrrd_dwi(keys, data.shape))
    if keys.get("age2hie_units"):  # written by write_itk
        meta["units"] = keys["age2hie_units"]
    return data, affine, meta


def _nrrd_dwi(keys: dict[str, str], shape: tuple[int, ...]) -> dict[str, Any]:
    """b-values from a Slicer-style NRRD DWI (``DWMRI_b-value`` + ``DWMRI_gradient_NNNN``), if present."""
    if "DWMRI_b-value" not in keys or len(shape) != 4:
        return {}
    try:
        b = float(keys["DWMRI_b-value"])
        grads = [np.array(keys[f"DWMRI_gradient_{i:04d}"].split(), dtype=float) for i in range(shape[3])]
    except (KeyError, ValueError):
        log.warning("NRRD DWI keys are incomplete; b-values ignored")
        return {}
    # Slicer convention: the b-value of a gradient is b * |g|^2 (a unit gradient gets the nominal b).
    bvals = [round(b * float(g @ g), 6) for g in grads]
    bvecs = [(g / np.linalg.norm(g)).tolist() if np.linalg.norm(g) > 0 else [0.0, 0.0, 0.0] for g in grads]
    # NRRD gradients are in world (measurement-frame) coordinates, not FSL's voxel frame: say so.
    return {"bvals": bvals, "bvecs": bvecs, "bvecs_frame": "world"}


def _itk_message(exc: RuntimeError) -> str:
    """ITK exceptions are multi-line with source-file noise and a stale errno "Reason"; keep the description."""
    text = str(exc)
    m = re.search(r"(?:Description|description):\s*(.+)", text) or re.search(r"ITK ERROR: [^:]*:\s*(.+)", text)
    line = m.group(1) if m else text.strip().splitlines()[-1] if text.strip() else "unknown error"
    return line.strip()[:300]


def _metaimage_voxels(path: Path, fields: dict[str, str], voxels_at: tuple[Path, int],
                      size: list[int]) -> np.ndarray | None:
    """The voxels of a single-component MetaImage whose data is one file (the header's own or one beside it;
    ``voxels_at``: that file and where in it the voxels start), as SimpleITK's ``GetArrayFromImage`` gives them
    (index order reversed: (z, y, x) or (t, z, y, x); writable, owned), or None where SimpleITK should read the
    file (another layout or element type). Damaged compressed voxels raise VolumeReadError naming the file.
    """
    kind = _MET_TYPES.get(fields.get("ElementType", ""))
    if (not _inflate.available() or kind is None or fields.get("BinaryData", "").lower() != "true"
            or fields.get("ElementNumberOfChannels", "1") != "1" or fields.get("HeaderSize", "0") != "0"):
        return None
    msb = fields.get("BinaryDataByteOrderMSB", fields.get("ElementByteOrderMSB", "False")).lower() == "true"
    dtype = np.dtype(kind).newbyteorder(">" if msb else "<")
    n_bytes = int(np.prod(size)) * dtype.itemsize
    data_path, offset = voxels_at
    with open(data_path, "rb") as f:
        f.seek(offset)
        if fields.get("CompressedData", "False").lower() != "true":
            data = bytearray(n_bytes)
            if f.readinto(data) != n_bytes:
                return None
        else:
            stored = fields.get("CompressedDataSize", "")
            data = _inflate_voxels(path, f.read(int(stored)) if stored.isdigit() else f.read(), n_bytes)
    arr = np.frombuffer(data, dtype=dtype).reshape(size[::-1])
    return arr if dtype.isnative else arr.astype(dtype.newbyteorder("="))


def _inflate_voxels(path: Path, stream: bytes, n_bytes: int) -> np.ndarray | bytearray:
    """A MetaImage's zlib stream, inflated to exactly ``n_bytes``: by libdeflate, else (a stream it refuses) by
    zlib, which takes what libdeflate's stricter one-call rules do not; a stream neither can read to that size is
    an error naming the file (SimpleITK prints "Uncompress failed" for damage and carries on)."""
    data = _inflate.inflate(stream, n_bytes, "zlib")
    if data is not None:
        return data
    inflate = zlib.decompressobj()
    try:
        data = inflate.decompress(stream, n_bytes)  # no further than the header says: a bomb stops here
    except zlib.error as exc:
        raise fail(path, f"voxel data cannot be read; the compressed voxel data is damaged ({exc})") from exc
    if len(data) == n_bytes and not inflate.eof and inflate.unconsumed_tail:
        raise fail(path, f"voxel data cannot be read; the compressed voxel data holds more than the {n_bytes} bytes "
                         "the header's size and element type need")
    if len(data) < n_bytes or not inflate.eof:
        raise fail(path, f"voxel data cannot be read; the compressed voxel data is truncated or damaged (the header "
                         f"needs {n_bytes} bytes, the stream gives {len(data)}"
                         f"{'' if inflate.eof else ' without reaching its checksum'})")
    return bytearray(data)


def _metaimage_precheck(path: Path, n_bytes: int) -> tuple[dict[str, str], tuple[Path, int] | None]:
    """Missing or short raw data in a MetaImage, found from its text header; returns the header's fields and
    where the voxels are: (the file holding them, the byte they start at), None for a series of files.

    MetaIO reports these only by printing to stderr and a misleading errno; checking first gives the user
    one clear message. The length of compressed data (CompressedData = True) is left to the inflater.
    """
    fields: dict[str, str] = {}
    header_len = 0
    with open(path, "rb") as f:
        for raw in f:
            header_len += len(raw)
            key, _, value = raw.decode("latin-1").partition("=")
            fields[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile" or header_len > 65536:
                break
    data_file = fields.get("ElementDataFile")
    if data_file is None or data_file.split()[0] == "LIST" or "%" in data_file:
        return fields, None  # multi-file series: let ITK handle it
    voxels_at = (path, header_len) if data_file == "LOCAL" else (path.parent / data_file, 0)
    if not voxels_at[0].is_file():
        raise fail(path, f"its data file {data_file!r} is missing (expected beside the header)")
    if fields.get("CompressedData", "False").lower() == "true":
        return fields, voxels_at  # compressed size says nothing about the voxel count; inflating checks it
    have = voxels_at[0].stat().st_size - voxels_at[1]
    if have < n_bytes:
        raise fail(path, f"file is truncated: the header needs {n_bytes} bytes of voxel data, found {have}")
    return fields, voxels_at


def write_itk(data: np.ndarray, affine: np.ndarray, path: Path, metadata: dict[str, Any]) -> None:
    """Write with SimpleITK (the format follows the file name). Raises RuntimeError/ValueError on failure."""
    import SimpleITK as sitk

    spacing, direction, origin = affine_to_itk_geometry(affine)
    d = np.asarray(direction).reshape(3, 3)
    if not np.allclose(d.T @ d, np.eye(3), atol=1e-4):
        raise ValueError("the affine has shear; MetaImage/NRRD can only store rotations and spacing (use NIfTI)")
    arr = np.ascontiguousarray(data.T)  # (x, y, z[, t]) -> ([t,] z, y, x)
    image = sitk.GetImageFromArray(arr, isVector=False)
    if data.ndim == 4:
        d4 = np.eye(4)
        d4[:3, :3] = d
        image.SetSpacing(spacing + (1.0,))
        image.SetDirection(tuple(d4.ravel().tolist()))
        image.SetOrigin(origin + (0.0,))
    else:
        image.SetSpacing(spacing)
        image.SetDirection(direction)
        image.SetOrigin(origin)
    units = metadata.get("units")
    if isinstance(units, str):
        image.SetMetaData("age2hie_units", units)
    sitk.WriteImage(image, str(path), useCompression=True)
