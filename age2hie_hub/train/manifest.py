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

__all__ = ["Case", "Cohort", "BonbidCase", "list_bonbid", "site_of", "read_csv_manifest", "read_bids", "read_bonbid",
           "read_cohort", "ManifestError"]


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


def files_sha256(*paths: str | Path) -> str:
    """One sha256 over the contents of ``paths`` in order (a manifest and its table, a case's channels).

    With one path it equals the file's own sha256 (``hub.checkpoint.file_sha256``)."""
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
    return _finish(cases, target, task, classes, str(path), files_sha256(path), mods)


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
    sha = hashlib.sha256((files_sha256(table) + listing).encode()).hexdigest()
    return _finish(cases, target, task, classes, str(table), sha, (suffix,))


# ---- BONBID-HIE ---------------------------------------------------------------------------------------------

BONBID_CHANNELS = ("ADC", "Z-ADC")
_IMAGE_EXT = r"(mha|mhd|nrrd|nii|nii\.gz)"
# 1ADC_ss/<case>-ADC_ss.mha; 2Z_ADC/Zmap_<case>-ADC_smooth2mm_clipped10.mha (any suffix after "-" or "_");
# 3LABEL/<case>_lesion.mha. <case> is e.g. MGHNICU_010-VISIT_01 (real data) or BCH_001 (our synthetic cohorts).
_ADC_RE = re.compile(rf"^(?P<id>.+?)-ADC_ss\.{_IMAGE_EXT}$")
_ZMAP_RE = re.compile(rf"^Zmap_(?P<id>.+?)(?:[-_.].*)?\.{_IMAGE_EXT}$")
_LABEL_RE = re.compile(rf"^(?P<id>.+?)[-_]lesion\.{_IMAGE_EXT}$")
_VISIT_RE = re.compile(r"^(?P<subject>.+?)-VISIT_\d+$")
# BONBID-HIE's hospital prefixes -> the site names the paper uses (BCH: Boston Children's, MGH: Massachusetts General).
SITE_PREFIXES = {"MGHNICU": "MGH", "BCHNICU": "BCH"}


@dataclass(frozen=True)
class BonbidCase:
    """One scan of a BONBID-HIE folder, found from the file names alone (no table needed)."""

    case_id: str  # as in the file names: "MGHNICU_010-VISIT_01"
    subject_id: str  # the infant: "MGHNICU_010" (the case id without its -VISIT_nn suffix)
    site: str  # from the id's hospital prefix: "MGH", "BCH" (see site_of)
    adc: Path
    zadc: Path | None = None
    label: Path | None = None

    def channel(self, name: str) -> Path:
        path = self.adc if name == "ADC" else self.zadc
        if path is None:
            raise ManifestError(f"no 2Z_ADC/Zmap_{self.case_id}[-_]*.mha beside {self.adc} (channel {name!r})")
        return path


def site_of(case_id: str) -> str:
    """The site in a BONBID-HIE id: its prefix before the first '_', '-' or digit run, with the hospital
    prefixes of the published data mapped to the paper's site names (MGHNICU -> MGH, BCHNICU -> BCH)."""
    prefix = re.split(r"[_\-\d]", case_id, maxsplit=1)[0] or "site0"
    return SITE_PREFIXES.get(prefix.upper(), prefix)


def _zmap_case(name: str, ids: set[str]) -> str | None:
    """The case a ``Zmap_<case><suffix>`` name belongs to: the longest case id followed by '-', '_' or '.'
    (ids may share prefixes: MGHNICU_01 and MGHNICU_010)."""
    m = _ZMAP_RE.match(name)
    if m is None:
        return None
    rest = name[len("Zmap_"):]
    hits = [i for i in ids if rest.startswith(i) and rest[len(i):len(i) + 1] in ("-", "_", ".")]
    return max(hits, key=len) if hits else m.group("id")


def _by_case(folder: Path, case_of: Any, ids: set[str]) -> dict[str, Path]:
    """Files of ``folder`` keyed by the case id their name holds; two files for one case is an error."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for f in sorted(folder.iterdir()):
        cid = case_of(f.name, ids)
        if cid is None:
            continue
        if cid in found:
            raise ManifestError(f"{folder}: two files for case {cid}: {found[cid].name} and {f.name}")
        found[cid] = f
    return found


def _label_case(name: str, ids: set[str]) -> str | None:
    m = _LABEL_RE.match(name)
    return m.group("id") if m else None


def list_bonbid(root: str | Path) -> list[BonbidCase]:
    """The cases of a BONBID-HIE folder (``1ADC_ss/``, ``2Z_ADC/``, ``3LABEL/``), sorted by case id.

    A case is an ADC file ``1ADC_ss/<case>-ADC_ss.mha``; its Z-ADC map and lesion mask are attached when
    present. Files that match no ADC case are logged and ignored.
    """
    root = Path(root)
    adc_dir = root / "1ADC_ss"
    if not adc_dir.is_dir():
        raise ManifestError(f"{root}: not a BONBID-HIE folder (no 1ADC_ss/ inside)")
    adc: dict[str, Path] = {}
    for f in sorted(adc_dir.iterdir()):
        m = _ADC_RE.match(f.name)
        if m is None:
            log.info("%s: not a <case>-ADC_ss image, ignored", f)
            continue
        if m.group("id") in adc:
            raise ManifestError(f"{adc_dir}: two ADC files for case {m.group('id')}: {adc[m.group('id')].name} and {f.name}")
        adc[m.group("id")] = f
    if not adc:
        raise ManifestError(f"{adc_dir}: no <case>-ADC_ss.mha files")
    ids = set(adc)
    zmaps = _by_case(root / "2Z_ADC", _zmap_case, ids)
    labels = _by_case(root / "3LABEL", _label_case, ids)
    for what, files in (("2Z_ADC", zmaps), ("3LABEL", labels)):
        stray = sorted(set(files) - ids)
        if stray:
            log.warning("%s: %d file(s) with no 1ADC_ss case, ignored: %s", root / what, len(stray),
                        ", ".join(files[s].name for s in stray[:5]))
    cases = []
    for cid in sorted(adc):
        m = _VISIT_RE.match(cid)
        cases.append(BonbidCase(cid, m.group("subject") if m else cid, site_of(cid), adc[cid], zmaps.get(cid),
                                labels.get(cid)))
    return cases


def _bonbid_table(root: Path, table: str | Path | None) -> Path:
    if table is not None:
        return Path(table).expanduser()
    tables = sorted([*root.glob("*.csv"), *root.glob("*.tsv")])
    if len(tables) != 1:
        raise ManifestError(
            f"{root}: found {len(tables)} target tables (*.csv/*.tsv) {[t.name for t in tables]} where one is read "
            "by default; pass table: <file> (e.g. the lesion-burden table written by `age2hie-train lesion-targets`)")
    return tables[0]


def read_bonbid(
    root: str | Path, table: str | Path | None = None, *, target: str = "outcome",
    channels: Sequence[str] = ("ADC",), subject_column: str | None = None, site_column: str = "site",
    task: str = "auto", classes: Sequence[str] | None = None, outcome_table: str | Path | None = None,
) -> Cohort:
    """The BONBID-HIE layout (``1ADC_ss/<case>-ADC_ss.mha``, ``2Z_ADC/Zmap_<case>*.mha``) + a target table.

    File names are the challenge's own: ``MGHNICU_010-VISIT_01-ADC_ss.mha``,
    ``Zmap_MGHNICU_010-VISIT_01-ADC_smooth2mm_clipped10.mha`` (and ``3LABEL/<case>_lesion.mha``, see
    ``list_bonbid``). ``channels``: ("ADC",) or ("ADC", "Z-ADC").

    ``table`` (CSV/TSV; default: the only *.csv/*.tsv in ``root``) may live anywhere, e.g. a target derived
    from the lesion masks (``age2hie-train lesion-targets``). Its id column (``subject_column``; default the
    first of case_id, subject_id, participant_id, ...) holds a case id (``MGHNICU_010-VISIT_01``) or, when the
    subject has a single scan, a subject id (``MGHNICU_010``). The site is the ``site_column`` value, or when
    the table has none, the id's hospital prefix (``site_of``: MGHNICU -> MGH, BCHNICU -> BCH). Scans without a
    row are left out (logged). ``outcome_table`` is the older name of ``table``.
    """
    root = Path(root)
    if outcome_table is not None:
        if table is not None:
            raise ManifestError("pass table or outcome_table (its older name), not both")
        table = outcome_table
    for ch in channels:
        if ch not in BONBID_CHANNELS:
            raise ManifestError(f"unknown BONBID-HIE channel {ch!r}; use 'ADC' and/or 'Z-ADC'")
    found = list_bonbid(root)
    by_case = {c.case_id: c for c in found}
    by_subject: dict[str, list[BonbidCase]] = {}
    for c in found:
        by_subject.setdefault(c.subject_id, []).append(c)
    table = _bonbid_table(root, table)
    header, rows = _read_table(table)
    _need(table, header, target, "target")
    if subject_column is None:
        subject_column = "case_id" if "case_id" in header else None
    subj_col = _pick_subject_column(table, header, subject_column)
    if subj_col is None:
        raise ManifestError(f"{table}: no case/subject id column (one of {SUBJECT_COLUMNS}); columns are {header}")
    cases: list[Case] = []
    used: set[str] = set()
    for line, row in enumerate(rows, start=2):
        sid = row[subj_col]
        if not row.get(target):
            raise ManifestError(f"{table} line {line}: case {sid} has an empty {target!r}")
        case = by_case.get(sid)
        if case is None:
            matches = by_subject.get(sid, [])
            if len(matches) > 1:
                raise ManifestError(f"{table} line {line}: subject {sid} has {len(matches)} scans "
                                    f"({', '.join(m.case_id for m in matches)}); give the case id")
            if not matches:
                raise ManifestError(f"{table} line {line}: no {root / '1ADC_ss'}/{sid}-ADC_ss.mha (nor any "
                                    f"<{sid}>-VISIT_nn) for case {sid}")
            case = matches[0]
        if case.case_id in used:
            raise ManifestError(f"{table} line {line}: case {case.case_id} appears twice")
        used.add(case.case_id)
        files = [case.channel(ch) for ch in channels]
        site = row.get(site_column) or case.site
        cases.append(Case(sid, tuple(str(f.resolve()) for f in files), row[target], site))
    left = sorted(set(by_case) - used)
    if left:
        log.info("%s: %d scan(s) in %s have no row in %s and are left out: %s", root, len(left), root / "1ADC_ss",
                 table, ", ".join(left[:5]) + (" ..." if len(left) > 5 else ""))
    return _finish(cases, target, task, classes, str(table), files_sha256(table), tuple(channels))


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
