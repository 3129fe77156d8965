"""DICOM (a folder, a .zip of one, or a single file) through the ``dcm2niix`` converter.

dcm2niix is the field's reference converter: it handles Siemens mosaics, enhanced multi-frame files, classic
per-slice files and multi-volume diffusion series with their b-values and gradients. We never parse vendor
DICOM ourselves: we run it into a temporary folder (``-z n -b y``) and read the NIfTI + .bval/.bvec + JSON it
writes. When the input holds several series, the one with the most volumes wins; a tie is an error that lists
them, so the user points at one series folder.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from age2hie_hub.errors import VolumeReadError
from age2hie_hub.io.checks import fail
from age2hie_hub.io.nifti import raw_header, read_nifti

log = logging.getLogger(__name__)

DCM2NIIX_TIMEOUT_S = 600


def dcm2niix_executable() -> str:
    """Path of the dcm2niix binary: the PyPI wheel's own first, then PATH."""
    try:
        import dcm2niix  # the PyPI wheel ships the binary inside the package

        candidate = Path(dcm2niix.bin)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    except (ImportError, AttributeError):
        pass
    found = shutil.which("dcm2niix")
    if found is None:
        raise fail("dcm2niix", "the dcm2niix converter is not installed; run `pip install dcm2niix`")
    return found


def read_dicom(path: Path, max_bytes: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="age2hie-dicom-") as tmp:
        tmpdir = Path(tmp)
        if path.is_dir():
            source, single = path, False
        elif zipfile.is_zipfile(path):
            source, single = _extract_zip(path, tmpdir / "in", max_bytes), False
        else:
            source, single = path, True
        out = tmpdir / "out"
        out.mkdir()
        _run_dcm2niix(path, source, out, single)
        series = _converted_series(path, out)
        chosen = _choose(path, series)
        try:
            data, affine, meta = read_nifti(chosen, max_bytes)
        except VolumeReadError as exc:
            # Name the user's DICOM input, not the temporary file dcm2niix wrote.
            problem = str(exc).removeprefix(f"{chosen}: ")
            raise fail(path, f"series {chosen.stem}: {problem}") from exc
    meta["format"] = "dicom"
    meta["dicom_series"] = chosen.name[: -len(".nii")]
    return data, affine, meta


def _extract_zip(zpath: Path, dest: Path, max_bytes: int) -> Path:
    try:
        with zipfile.ZipFile(zpath) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            total = sum(m.file_size for m in members)
            # The data converted from the zip can't be bigger than the zip's content: refuse zip bombs early.
            if total > 2 * max_bytes:
                raise fail(zpath, f"zip holds {total / 2**30:.2f} GiB uncompressed, over the limit; unzip it yourself")
            for m in members:
                target = (dest / m.filename).resolve()
                if not str(target).startswith(str(dest.resolve()) + os.sep):
                    raise fail(zpath, f"zip member {m.filename!r} points outside the archive; refusing to extract")
            zf.extractall(dest)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise fail(zpath, f"zip archive is corrupt or truncated ({exc})") from exc
    if not members:
        raise fail(zpath, "zip archive is empty")
    return dest


def _run_dcm2niix(path: Path, source: Path, out: Path, single: bool) -> None:
    cmd = [dcm2niix_executable(), "-z", "n", "-b", "y", "-ba", "y", "-f", "%s_%d", "-o", str(out)]
    if single:
        cmd += ["-s", "y"]
    cmd.append(str(source))
    log.debug("running %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=DCM2NIIX_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise fail(path, f"dcm2niix did not finish in {DCM2NIIX_TIMEOUT_S} s") from exc
    except OSError as exc:
        raise fail(path, f"dcm2niix could not be started ({exc})") from exc
    log.debug("dcm2niix stdout:\n%s", proc.stdout)
    if proc.returncode != 0 and not any(out.glob("*.nii")):
        # dcm2niix exit 2 = no DICOM found; others are conversion failures. Its last error line says why.
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        why = next((ln for ln in reversed(lines) if "rror" in ln or "arning" in ln), lines[-1] if lines else "")
        what = "no DICOM images found" if proc.returncode == 2 else f"dcm2niix failed (exit {proc.returncode})"
        raise fail(path, f"{what}: {why.strip()[:300]}" if why else what)
    if proc.returncode != 0:
        log.warning("%s: dcm2niix exited with %d but converted some images; check the result", path, proc.returncode)


def _converted_series(path: Path, out: Path) -> dict[Path, int]:
    series: dict[Path, int] = {}
    for nii in sorted(out.glob("*.nii")):
        try:
            # The raw header: nibabel's header fixes would print to stderr for files read_nifti refuses anyway.
            header = raw_header(nii)
        except VolumeReadError as exc:
            header, why = None, exc
        else:
            why = "not a NIfTI header"
        if header is None:
            log.warning("%s: dcm2niix wrote an unreadable file %s (%s); skipped", path, nii.name, why)
            continue
        dim = header["dim"]
        series[nii] = int(dim[4]) if int(dim[0]) > 3 and int(dim[4]) > 1 else 1
    if not series:
        raise fail(path, "no DICOM images found (dcm2niix converted nothing)")
    return series


def _choose(path: Path, series: dict[Path, int]) -> Path:
    if len(series) == 1:
        return next(iter(series))
    most = max(series.values())
    best = [p for p, n in series.items() if n == most]
    listing = ", ".join(f"{p.stem} ({n} volume{'s' if n > 1 else ''})" for p, n in series.items())
    if len(best) > 1:
        raise fail(path, f"holds {len(series)} series and none has the most volumes: {listing}; "
                         "point at a folder with one series")
    log.info("%s: %d series (%s); using %s", path, len(series), listing, best[0].stem)
    return best[0]
