"""DICOM (a folder, a .zip of one, or a single file) through the ``dcm2niix`` converter.

dcm2niix is the field's reference converter: it handles Siemens mosaics, enhanced multi-frame files, classic
per-slice files and multi-volume diffusion series with their b-values and gradients. We never parse vendor
DICOM ourselves: we run it into a temporary folder (``-z n -b y``) and read the NIfTI + .bval/.bvec + JSON it
writes. When the input holds several series, the one with the most volumes wins; a tie is an error that lists
them, so the user points at one series folder.

Gzip-compressed DICOM files (``*.dcm.gz``, ``IM_0001.gz`` as some PACS exports write them), in a folder, a zip or
alone, are decompressed into the temporary folder first (dcm2niix does not read them). Decompression counts bytes
while streaming and stops at the same limit as a zip's content (``2 * max_bytes`` for the whole input), so a
gzip bomb costs at most that much disk; the temporary folder is always removed.
"""
from __future__ import annotations

import gzip
import logging
import os
import shutil
import subprocess
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from age2hie_hub.errors import VolumeReadError
from age2hie_hub.io.checks import fail
from age2hie_hub.io.nifti import raw_header, read_nifti

log = logging.getLogger(__name__)

DCM2NIIX_TIMEOUT_S = 600
GZIP_SUFFIX = ".gz"
_CHUNK = 1 << 20


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
    limit = 2 * max_bytes  # decompressed bytes one input may expand to (a zip's content and its gzip files)
    with tempfile.TemporaryDirectory(prefix="age2hie-dicom-") as tmp:
        tmpdir = Path(tmp)
        if path.is_dir():
            source, single = _stage_gzipped_folder(path, tmpdir / "in", limit), False
        elif zipfile.is_zipfile(path):
            source, used = _extract_zip(path, tmpdir / "in", max_bytes)
            _gunzip_in_place(path, source, limit - used, limit)
            single = False
        elif path.name.lower().endswith(GZIP_SUFFIX):
            source = tmpdir / "in" / path.name[: -len(GZIP_SUFFIX)]
            source.parent.mkdir()
            _gunzip(path, source, limit, limit, path)
            single = True
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


def _extract_zip(zpath: Path, dest: Path, max_bytes: int) -> tuple[Path, int]:
    """Extract into ``dest``; return it and the bytes extracted."""
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
    return dest, total


def _is_gzipped(name: str) -> bool:
    return name.lower().endswith(GZIP_SUFFIX)


def _stage_gzipped_folder(folder: Path, dest: Path, limit: int) -> Path:
    """``folder`` itself when it holds no ``*.gz``; else a copy in ``dest`` with every .gz decompressed.

    Files that are not gzipped are linked, not copied (dcm2niix follows symbolic links), and count for nothing
    against the limit; the user's folder is never written to.
    """
    listing = [(Path(root), sorted(files)) for root, _dirs, files in os.walk(folder)]
    if not any(_is_gzipped(name) for _root, files in listing for name in files):
        return folder
    left = limit
    for root, files in listing:
        rel = root.relative_to(folder)
        (dest / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            src = root / name
            if _is_gzipped(name):
                target = dest / rel / name[: -len(GZIP_SUFFIX)]
                if target.name in files:  # both x and x.gz: keep both, the decompressed one under another name
                    target = target.with_name(target.name + ".gunzipped")
                left -= _gunzip(src, target, left, limit, src)
            else:
                try:
                    (dest / rel / name).symlink_to(src.resolve())
                except OSError:  # no symbolic links here (e.g. Windows without the privilege): copy
                    shutil.copy2(src, dest / rel / name)
    log.info("%s: decompressed its gzipped files (%s) into a temporary folder", folder, _size(limit - left))
    return dest


def _gunzip_in_place(zpath: Path, folder: Path, left: int, limit: int) -> None:
    """Decompress the ``*.gz`` files a zip held (extracted into our temporary ``folder``), ``left`` bytes at most."""
    for gz in sorted(p for p in folder.rglob("*") if p.is_file() and _is_gzipped(p.name)):
        target = gz.with_name(gz.name[: -len(GZIP_SUFFIX)])
        if target.exists():
            target = target.with_name(target.name + ".gunzipped")
        left -= _gunzip(gz, target, left, limit, zpath, member=gz.relative_to(folder).as_posix())
        gz.unlink()


def _gunzip(src: Path, target: Path, left: int, limit: int, named: Path, member: str | None = None) -> int:
    """Stream-decompress ``src`` to ``target``, stopping once more than ``left`` bytes (of ``limit``) come out.

    Returns the bytes written. Errors name ``named`` (the user's file; for a zip, the zip and its ``member``).
    """
    what = f"member {member}: " if member else ""
    written = 0
    try:
        with gzip.open(src, "rb") as fin, open(target, "wb") as fout:
            while chunk := fin.read(max(1, min(_CHUNK, left - written + 1))):
                written += len(chunk)
                if written > left:
                    raise fail(named, f"{what}decompressing this gzip file takes the input over {_size(limit)}, the "
                                      "limit for one input (twice max_bytes); decompress it yourself or pass a "
                                      "larger max_bytes")
                fout.write(chunk)
    except EOFError as exc:
        raise fail(named, f"{what}gzip file is truncated ({exc})") from exc
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise fail(named, f"{what}not a valid gzip file ({exc})") from exc
    except OSError as exc:
        raise fail(named, f"{what}cannot be decompressed ({exc.strerror or exc})") from exc
    return written


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


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
