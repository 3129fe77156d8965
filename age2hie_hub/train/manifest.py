"""Cohorts: which volumes, which target, which site. Read from a CSV manifest, a BIDS data set, or BONBID-HIE.

A target is any column. Numbers with many distinct values are a regression target; anything else (strings,
0/1, a few integer codes) is a classification target with ``classes`` in a stable order.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from age2hie_hub.errors import Age2HieError

log = logging.getLogger(__name__)

TASKS = ("auto", "regression", "classification")
# A numeric column with more distinct values than this is treated as continuous.
MAX_CLASSES_AUTO = 10
SUBJECT_COLUMNS = ("subject_id", "participant_id", "subject", "case_id", "id", "case")

__all__ = ["Case", "Cohort", "read_csv_manifest", "read_bids", "read_bonbid", "read_cohort", "ManifestError"]


class ManifestError(Age2HieError, ValueError):
    """A manifest, participants table or outcome table is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class Case:
    subject: str
    paths: tuple[str, ...]  # one file per input channel, absolute
    target: Any  # float (regression) or class name (str)
    site: str = "site0"


@dataclass(frozen=True)
class Cohort:
    cases: tuple[Case, ...]
    target_name: str
    task: str  # "regression" or "classification"
    classes: tuple[str, ...] = ()  # classification: index = class id
    source: str = ""  # the manifest/table it was read from
    sha256: str = ""  # hash of the manifest file(s): recorded in every checkpoint trained on it
    modalities: tuple[str, ...] = ("image",)
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def labels(self) -> np.ndarray:
        """float targets (regression) or int class ids (classification)."""
        if self.task == "regression":
            return np.array([float(c.target) for c in self.cases], dtype=np.float64)
        index = {name: i for i, name in enumerate(self.classes)}
        return np.array([index[str(c.target)] for c in self.cases], dtype=np.int64)

    @property
    def sites(self) -> np.ndarray:
        return np.array([c.site for c in self.cases])

    @property
    def subjects(self) -> list[str]:
        return [c.subject for c in self.cases]

    @property
    def strata(self) -> np.ndarray:
        """What folds are stratified on: the class, or quantile bins of a continuous target."""
        if self.task == "classification":
            return self.labels
        from age2hie_hub.train.splits import quantile_strata

        return quantile_strata(self.labels)

    @property
    def n_channels(self) -> int:
        return len(self.cases[0].paths) if self.cases else 0

    def subset(self, positions: Sequence[int]) -> "Cohort":
        return replace(self, cases=tuple(self.cases[int(i)] for i in positions))


def file_sha256(*paths: str | Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _finish(cases: list[Case], target: str, task: str, classes: Sequence[str] | None, source: str,
            sha: str, modalities: Sequence[str]) -> Cohort:
    """Decide regression vs classification and validate targets; name the source on any problem."""
    if not cases:
        raise ManifestError(f"{source}: no cases found")
    if task not in TASKS:
        raise ManifestError(f"task must be one of {TASKS}, got {task!r}")
    values = [str(c.target).strip() for c in cases]
    numeric = all(_is_number(v) for v in values)
    if task == "auto":
        if classes:
            task = "classification"
        else:
            task = "regression" if numeric and len(set(values)) > MAX_CLASSES_AUTO else "classification"
    if task == "regression":
        for c, v in zip(cases, values, strict=True):
            if not _is_number(v):
                raise ManifestError(f"{source}: subject {c.subject}: target {target!r} = {v!r} is not a number")
        cases = [replace(c, target=float(v)) for c, v in zip(cases, values, strict=True)]
        return Cohort(tuple(cases), target, "regression", (), source, sha, tuple(modalities))
    if numeric:
        values = [_canonical_number(v) for v in values]
    found = sorted(set(values), key=lambda v: (float(v), v) if numeric else (0, v))
    if classes:
        classes = tuple(str(c) for c in classes)
        unknown = sorted(set(values) - set(classes))
        if unknown:
            raise ManifestError(f"{source}: target {target!r} has values {unknown} not in classes {list(classes)}")
    else:
        classes = tuple(found)
    if len(classes) < 2:
        raise ManifestError(f"{source}: target {target!r} has a single value {found}; nothing to classify")
    cases = [replace(c, target=v) for c, v in zip(cases, values, strict=True)]
    return Cohort(tuple(cases), target, "classification", tuple(classes), source, sha, tuple(modalities))


def _is_number(v: str) -> bool:
    try:
        return np.isfinite(float(v))
    except ValueError:
        return False


def _canonical_number(v: str) -> str:
    """'1', '1.0' and ' 1' are the same class."""
    f = float(v)
    return str(int(f)) if f.is_integer() else repr(f)


def _read_table(path: Path, delimiter: str | None = None) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        raise ManifestError(f"{path}: file not found")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        text = fh.read()
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() == ".tsv" or ("\t" in text.splitlines()[0] if text else False) else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    rows = list(reader)
    header = [h.strip() for h in (reader.fieldnames or [])]
    rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in rows]
    return header, rows


def _need(path: Path, header: list[str], column: str, what: str) -> None:
    if column not in header:
        raise ManifestError(f"{path}: no {what} column {column!r}; columns are {header}")


def _pick_subject_column(path: Path, header: list[str], column: str | None) -> str | None:
    if column is not None:
        _need(path, header, column, "subject")
        return column
    return next((c for c in SUBJECT_COLUMNS if c in header), None)


def read_csv_manifest(
    path: str | Path, *, target: str = "target", path_column: str = "path",
    channel_columns: Sequence[str] = (), site_column: str = "site", subject_column: str | None = None,
    task: str = "auto", classes: Sequence[str] | None = None, skip_missing: bool = False,
    modalities: Sequence[str] | None = None,
) -> Cohort:
    """A CSV/TSV with one row per case: ``path`` (+ ``channel_columns`` e.g. a Z-ADC path), target, site, id.

    Relative paths are relative to the manifest's folder. Rows with an empty target are an error unless
    ``skip_missing``. A missing site column puts every case in one site.
    """
    path = Path(path)
    header, rows = _read_table(path)
    _need(path, header, path_column, "path")
    _need(path, header, target, "target")
    for col in channel_columns:
        _need(path, header, col, "channel")
    subj_col = _pick_subject_column(path, header, subject_column)
    cases = []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        if not row.get(target):
            if skip_missing:
                log.info("%s line %d: empty target %r, skipped", path, line, target)
                continue
            raise ManifestError(f"{path} line {line}: empty target {target!r} (fill it or pass skip_missing)")
        files = []
        for col in (path_column, *channel_columns):
            if not row.get(col):
                raise ManifestError(f"{path} line {line}: empty {col!r}")
            f = Path(row[col]).expanduser()
            f = f if f.is_absolute() else path.parent / f
            if not f.exists():
                raise ManifestError(f"{path} line {line}: {col} file {f} does not exist")
            files.append(str(f.resolve()))
        subject = row[subj_col] if subj_col and row.get(subj_col) else Path(files[0]).name.split(".")[0]
        cases.append(Case(subject, tuple(files), row[target], row.get(site_column) or "site0"))
    mods = tuple(modalities) if modalities else (path_column, *channel_columns)
    return _finish(cases, target, task, classes, str(path), file_sha256(path), mods)


def read_bids(
    root: str | Path, *, target: str = "age", suffix: str = "T1w", site_column: str = "site",
    task: str = "auto", classes: Sequence[str] | None = None, skip_missing: bool = True,
) -> Cohort:
    """A BIDS data set: ``participants.tsv`` targets + ``sub-*/[ses-*/]anat/*_<suffix>.nii[.gz]`` images.

    A participant with several sessions/runs contributes its first image in sorted order (one case each).
    Participants without an image or without a target are skipped with a log line.
    """
    root = Path(root)
    table = root / "participants.tsv"
    header, rows = _read_table(table, "\t")
    _need(table, header, "participant_id", "participant_id")
    _need(table, header, target, "target")
    cases = []
    for line, row in enumerate(rows, start=2):
        pid = row["participant_id"]
        pid = pid if pid.startswith("sub-") else f"sub-{pid}"
        value = row.get(target, "")
        if not value or value.lower() == "n/a":
            if not skip_missing:
                raise ManifestError(f"{table} line {line}: {pid} has no {target!r}")
            log.info("%s: %s has no %r, skipped", table, pid, target)
            continue
        images = sorted((root / pid).glob(f"**/anat/*_{suffix}.nii*"))
        if not images:
            log.warning("%s: no *_%s.nii[.gz] under %s, skipped", table, suffix, root / pid)
            continue
        cases.append(Case(pid, (str(images[0].resolve()),), value, row.get(site_column) or "site0"))
    # Paths relative to the data set's root: the hash names the data, not where it happens to be on disk.
    base = root.resolve()
    listing = "".join(Path(os.path.relpath(c.paths[0], base)).as_posix() for c in cases)
    sha = hashlib.sha256((file_sha256(table) + listing).encode()).hexdigest()
    return _finish(cases, target, task, classes, str(table), sha, (suffix,))


_ADC_RE = re.compile(r"^(?P<id>.+?)-ADC_ss\.(mha|nii|nii\.gz|nrrd)$")


def read_bonbid(
    root: str | Path, outcome_table: str | Path | None = None, *, target: str = "outcome",
    channels: Sequence[str] = ("ADC",), subject_column: str | None = None, site_column: str = "site",
    task: str = "auto", classes: Sequence[str] | None = None,
) -> Cohort:
    """The BONBID-HIE layout: ``1ADC_ss/<id>-ADC_ss.mha`` and ``2Z_ADC/Zmap_<id>*.mha`` + an outcome table.

    ``channels``: ("ADC",) or ("ADC", "Z-ADC"). The outcome table (default: the only *.csv/*.tsv in ``root``)
    has a subject id column, the ``target`` column and optionally a site column; without one the site is the
    id's prefix before the first "_" or digit run (e.g. "MGHNICU_010" -> "MGHNICU").
    """
    root = Path(root)
    adc_dir, z_dir = root / "1ADC_ss", root / "2Z_ADC"
    if not adc_dir.is_dir():
        raise ManifestError(f"{root}: not a BONBID-HIE folder (no 1ADC_ss/ inside)")
    for ch in channels:
        if ch not in ("ADC", "Z-ADC"):
            raise ManifestError(f"unknown BONBID-HIE channel {ch!r}; use 'ADC' and/or 'Z-ADC'")
    if outcome_table is None:
        tables = sorted([*root.glob("*.csv"), *root.glob("*.tsv")])
        if len(tables) != 1:
            raise ManifestError(f"{root}: expected one outcome table (*.csv/*.tsv), found {[t.name for t in tables]}"
                                "; pass outcome_table")
        outcome_table = tables[0]
    table = Path(outcome_table)
    header, rows = _read_table(table)
    _need(table, header, target, "target")
    subj_col = _pick_subject_column(table, header, subject_column)
    if subj_col is None:
        raise ManifestError(f"{table}: no subject id column (one of {SUBJECT_COLUMNS}); columns are {header}")
    adc = {}
    for f in sorted(adc_dir.iterdir()):
        m = _ADC_RE.match(f.name)
        if m:
            adc[m.group("id")] = f
    zmaps = sorted(z_dir.iterdir()) if z_dir.is_dir() else []
    cases = []
    for line, row in enumerate(rows, start=2):
        sid = row[subj_col]
        if not row.get(target):
            raise ManifestError(f"{table} line {line}: subject {sid} has an empty {target!r}")
        if sid not in adc:
            raise ManifestError(f"{table} line {line}: no {adc_dir}/{sid}-ADC_ss.* for subject {sid}")
        files = []
        for ch in channels:
            if ch == "ADC":
                files.append(adc[sid])
            else:
                z = [f for f in zmaps if f.name.startswith(f"Zmap_{sid}")]
                if len(z) != 1:
                    raise ManifestError(f"{z_dir}: expected one Zmap_{sid}*.mha for subject {sid}, found {len(z)}")
                files.append(z[0])
        site = row.get(site_column) or re.split(r"[_\-\d]", sid, maxsplit=1)[0] or "site0"
        cases.append(Case(sid, tuple(str(f.resolve()) for f in files), row[target], site))
    return _finish(cases, target, task, classes, str(table), file_sha256(table), tuple(channels))


def read_cohort(spec: dict[str, Any]) -> Cohort:
    """Dispatch on ``spec["format"]`` ("csv", "bids", "bonbid"); the other keys go to the reader."""
    spec = dict(spec)
    fmt = spec.pop("format", "csv")
    location = spec.pop("path", None)
    if location is None:
        raise ManifestError(f"data spec needs a 'path' (manifest file or folder), got {spec}")
    readers = {"csv": read_csv_manifest, "bids": read_bids, "bonbid": read_bonbid}
    if fmt not in readers:
        raise ManifestError(f"unknown data format {fmt!r}; use one of {sorted(readers)}")
    try:
        return readers[fmt](location, **spec)
    except TypeError as exc:
        raise ManifestError(f"data spec for format {fmt!r}: {exc}") from None
