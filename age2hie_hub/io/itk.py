"""MetaImage (.mha/.mhd) and NRRD (.nrrd/.nhdr) through SimpleITK.

ITK stores geometry in LPS: world = origin + D @ diag(spacing) @ index. Our affines are RAS (nibabel's
convention), so both the direction/spacing block and the origin are flipped on x and y: A = F @ D @ S,
t = F @ origin, with F = diag(-1, -1, 1). Writing inverts exactly that.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from age2hie_hub.io.checks import check_affine, check_shape, check_spacing, fail

log = logging.getLogger(__name__)

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
    if path.suffix.lower() in (".mha", ".mhd"):
        _metaimage_precheck(path, int(np.prod(shape)) * _pixel_itemsize(sitk, reader))
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


def _metaimage_precheck(path: Path, n_bytes: int) -> None:
    """Missing or short raw data in a MetaImage, found from its text header.

    MetaIO reports these only by printing to stderr and a misleading errno; checking first gives the user
    one clear message. The length of compressed data (CompressedData = True) is left to ITK.
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
        return  # multi-file series: let ITK handle it
    target = path if data_file == "LOCAL" else path.parent / data_file
    if not target.is_file():
        raise fail(path, f"its data file {data_file!r} is missing (expected beside the header)")
    if fields.get("CompressedData", "False").lower() == "true":
        return  # compressed size says nothing about the voxel count; ITK checks the stream
    have = target.stat().st_size - (header_len if data_file == "LOCAL" else 0)
    if have < n_bytes:
        raise fail(path, f"file is truncated: the header needs {n_bytes} bytes of voxel data, found {have}")


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
