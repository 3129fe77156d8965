"""Expand command-line inputs (files, folders, globs, CSV lists) into a list of scans."""
from __future__ import annotations

import csv
import glob
from dataclasses import dataclass
from pathlib import Path

SCAN_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr", ".zip")
SECOND_COLUMNS = ("second_channel", "z_adc", "zadc")
GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Source:
    """One scan to predict: its path, its optional second channel, or why it cannot be listed."""

    path: str
    second_channel: str | None = None
    error: str | None = None  # set when the entry itself is unusable (e.g. a glob matching nothing)


def is_scan_file(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith(SCAN_SUFFIXES)


def _from_folder(folder: Path) -> list[Source]:
    """A folder of scan files lists each of them; any other folder is one scan (a DICOM series)."""
    files = sorted(p for p in folder.iterdir() if is_scan_file(p))
    if files:
        return [Source(str(p)) for p in files]
    return [Source(str(folder))]


def _from_csv(path: Path) -> list[Source]:
    """A CSV list: a `path` column (else the first column), optional `second_channel` / `z_adc` column.

    Relative paths are relative to the CSV file's folder, so a list travels with its data.
    """
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    if not rows:
        return [Source(str(path), error=f"{path}: the CSV list is empty")]
    header = [c.strip().lower() for c in rows[0]]
    if "path" in header:
        path_col, body = header.index("path"), rows[1:]
        second_col = next((header.index(c) for c in SECOND_COLUMNS if c in header), None)
    else:
        path_col, second_col, body = 0, None, rows
    base = path.parent

    def resolve(value: str) -> str:
        p = Path(value.strip()).expanduser()
        return str(p if p.is_absolute() else base / p)

    out = []
    for row in body:
        second = row[second_col].strip() if second_col is not None and second_col < len(row) else ""
        out.append(Source(resolve(row[path_col]), resolve(second) if second else None))
    return out


def expand_sources(items: list[str]) -> list[Source]:
    """Files as given; folders of scans -> their scans; globs -> matches; *.csv -> the listed scans."""
    out: list[Source] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            out.extend(_from_folder(path))
        elif path.suffix.lower() == ".csv" and path.is_file():
            out.extend(_from_csv(path))
        elif not path.exists() and GLOB_CHARS & set(item):
            matches = sorted(glob.glob(str(path), recursive=True))
            if not matches:
                out.append(Source(item, error=f"{item}: no file matches this pattern"))
            for match in matches:
                m = Path(match)
                if m.is_dir():
                    out.extend(_from_folder(m))
                elif is_scan_file(m):
                    out.append(Source(match))
        else:
            out.append(Source(str(path)))  # a missing file is reported by the reader, with its reason
    return out
