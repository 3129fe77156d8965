"""Fetch a release for an offline machine: into the Hugging Face cache (or a folder), every file hash-checked.

`download(name)` resolves `name` with the same grammar as from_pretrained (parse_name), pins the revision to
one commit, downloads config.json, model.safetensors, README.md, and model.onnx and SHA256SUMS when the
release has them, then checks every file twice over where the release allows:

- against the Hub's own record of the file at that commit (huggingface_hub's `list_repo_tree`): the LFS
  SHA-256 for files stored in LFS, else the git blob id (SHA-1 of `blob <size>\\0<content>`), and the size;
- against the release's SHA256SUMS when it ships one (`export/release.py` writes it); then config.json,
  model.safetensors and model.onnx must be listed in it.

Nothing is presented as complete before every check has passed:

- Hub cache: files go through huggingface_hub's hf_hub_download at the pinned commit (its locks, its
  per-file temporary names, its size check), which writes no branch/tag ref. The ref (`refs/main`, or the
  revision asked for) that an offline `from_pretrained(name)` follows is written by this module, last, and only
  when all checks passed. A failure (a check, the network, Ctrl-C) takes back the snapshot entries this run
  made, and the blob of a file that failed a check, so a rerun downloads that file again instead of trusting
  it; the blobs of files that passed stay, and a rerun checks them again.
- `local_dir`: files go into a hidden sibling `.NAME.partial/` (kept after a network failure so a rerun can
  reuse what it holds, deleted after a failed hash check), which is renamed onto `local_dir` only when every
  check passed; an earlier download there is replaced whole.

A bundled alias (`age2hie`, `brain-age` without a revision) is already in the package: nothing is downloaded,
its files are checked against its pinned SHA256SUMS (verify_bundled).
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from age2hie_hub._atomic import write_text_atomic
from age2hie_hub.errors import CheckpointError, ModelNotFoundError
from age2hie_hub.hub.checkpoint import CARD_NAME, CONFIG_NAME, ONNX_NAME, WEIGHTS_NAME, file_sha256, read_config
from age2hie_hub.hub.resolve import (
    _SUMS_LINE,
    SUMS_NAME,
    _first_line,
    hub_cache_dir,
    hub_endpoint,
    hub_offline,
    parse_name,
    verify_bundled,
)

logger = logging.getLogger(__name__)

REQUIRED_FILES = (CONFIG_NAME, WEIGHTS_NAME)
OPTIONAL_FILES = (CARD_NAME, ONNX_NAME, SUMS_NAME)
# Files a release's SHA256SUMS must list when it ships one (what the loaders read).
PINNED_FILES = (CONFIG_NAME, WEIGHTS_NAME, ONNX_NAME)
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class DownloadedFile:
    name: str
    size: int
    sha256: str
    checks: tuple[str, ...]  # what it was checked against: "hub-lfs-sha256" / "hub-git-sha1", "SHA256SUMS"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"checks": list(self.checks)}


@dataclass(frozen=True)
class DownloadedRelease:
    """Where a release was put and what was checked. `folder` is what from_pretrained / --model reads."""

    name: str  # as given
    folder: Path  # the snapshot folder in the cache, the local_dir, or the bundled folder
    bundled: bool = False  # True: already in the package, nothing was downloaded
    repo_id: str | None = None
    revision: str | None = None  # as asked (None: the default branch)
    commit: str | None = None  # the commit every file came from
    cache_dir: Path | None = None  # the Hub cache used (None with local_dir or a bundled alias)
    local_dir: Path | None = None
    files: tuple[DownloadedFile, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update(
            folder=str(self.folder),
            cache_dir=str(self.cache_dir) if self.cache_dir else None,
            local_dir=str(self.local_dir) if self.local_dir else None,
            files=[f.to_dict() for f in self.files],
        )
        return out


def download(
    name: str,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_dir: str | os.PathLike[str] | None = None,
    *,
    token: str | bool | None = None,
) -> Path:
    """Download and hash-check a release so that it loads offline; returns the folder it is in.

    Into the Hugging Face cache (`cache_dir`, default HF_HUB_CACHE / HF_HOME/hub) where
    `from_pretrained(name, revision=revision)` then finds it with HF_HUB_OFFLINE=1, or into `local_dir`
    (then pass that folder as the model). See fetch_release for the details it records.
    """
    return fetch_release(name, revision=revision, cache_dir=cache_dir, local_dir=local_dir, token=token).folder


def fetch_release(
    name: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
) -> DownloadedRelease:
    """download(), returning what was fetched and checked (DownloadedRelease).

    Raises ModelNotFoundError (unknown name, repo or revision; offline; network failure) or CheckpointError
    (a file fails a hash check, the release lacks config.json/model.safetensors, a damaged SHA256SUMS); each
    message names the repo and the file.
    """
    if cache_dir is not None and local_dir is not None:
        raise ValueError("give cache_dir or local_dir, not both")
    parsed = parse_name(name, revision)
    if parsed.folder is not None:
        if parsed.alias is None:
            raise ModelNotFoundError(f"{name} is a local folder, not a Hub release: nothing to download")
        verify_bundled(parsed.folder)
        sums = parsed.folder / SUMS_NAME
        listed = _read_sums(sums, name) if sums.is_file() else {}
        files = tuple(DownloadedFile(f, (parsed.folder / f).stat().st_size, digest, (SUMS_NAME,))
                      for f, digest in sorted(listed.items()) if (parsed.folder / f).is_file())
        return DownloadedRelease(name, parsed.folder, bundled=True, files=files)
    assert parsed.repo_id is not None  # parse_name sets exactly one of folder / repo_id
    repo_id, revision = parsed.repo_id, parsed.revision
    label = f"{repo_id}@{revision}" if revision else repo_id
    where = hub_endpoint() or "the Hugging Face Hub"
    if hub_offline():
        raise ModelNotFoundError(
            f"cannot download {label}: offline mode is on (HF_HUB_OFFLINE=1); run age2hie-download on a machine "
            "with network access, then copy the cache or folder"
        )

    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=hub_endpoint(), token=token, library_name="age2hie-hub")
    with _hub_errors(repo_id, revision, label, where, None):
        commit = api.model_info(repo_id, revision=revision).sha
        entries = {e.path: e for e in api.list_repo_tree(repo_id, revision=commit) if isinstance(e, RepoFile)}
    if not commit or not _COMMIT.match(commit):
        raise ModelNotFoundError(f"{where} did not give a commit for {label} (got {commit!r})")
    missing = [f for f in REQUIRED_FILES if f not in entries]
    if missing:
        raise CheckpointError(
            f"{repo_id} at {commit[:12]} has no {' or '.join(missing)}: not an age2hie-hub release "
            "(config.json + model.safetensors, written by save_pretrained / export.release)"
        )
    wanted = [f for f in REQUIRED_FILES + OPTIONAL_FILES if f in entries]
    remote = {f: entries[f] for f in wanted}

    if local_dir is not None:
        return _to_local_dir(name, api, repo_id, revision, commit, remote, Path(local_dir), where)
    root = Path(os.fspath(cache_dir)).expanduser() if cache_dir is not None else _default_cache()
    return _to_cache(name, api, repo_id, revision, commit, remote, root.resolve(), where)


def _default_cache() -> Path:
    from huggingface_hub import constants

    return Path(hub_cache_dir() or constants.HF_HUB_CACHE).expanduser()


# ---- the two destinations ----


def _to_cache(name: str, api: Any, repo_id: str, revision: str | None, commit: str, remote: dict[str, Any],
              cache: Path, where: str) -> DownloadedRelease:
    from huggingface_hub.file_download import repo_folder_name

    storage = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    snapshot = storage / "snapshots" / commit
    before = {f for f in remote if os.path.lexists(snapshot / f)}  # e.g. from an earlier from_pretrained
    paths: dict[str, Path] = {}
    try:
        for filename in remote:
            with _hub_errors(repo_id, commit, f"{repo_id}@{commit[:12]}", where, filename):
                paths[filename] = Path(api.hf_hub_download(repo_id, filename, revision=commit, cache_dir=cache))
        files = _check(repo_id, commit, remote, paths)
        read_config(snapshot)
    except BaseException as err:  # a failed check, the network, Ctrl-C: take back what this run put there
        bad = err.filename if isinstance(err, _FileCheckError) else None
        _discard(snapshot, (set(paths) - before) | ({bad} if bad else set()), bad)
        raise
    ref = revision or "main"
    if not _COMMIT.match(ref):
        # Written last: until now an offline from_pretrained(name) could not reach this snapshot.
        write_text_atomic(storage / "refs" / ref, commit)
    logger.info("%s@%s: %d files checked, in %s", repo_id, commit[:12], len(files), snapshot)
    return DownloadedRelease(name, snapshot, repo_id=repo_id, revision=revision, commit=commit, cache_dir=cache,
                             files=files)


def _discard(snapshot: Path, names: set[str], bad: str | None) -> None:
    """Remove the snapshot entries `names` (the folder too when nothing else is in it), and the blob of `bad`.

    The blob of a file that failed a check goes too: hf_hub_download skips a download whose blob exists, and
    a rerun must fetch it again. Blobs of files that passed stay (named by their hash, shared between snapshots),
    so a rerun after a network failure downloads only what is missing, then checks everything again.
    """
    for name in sorted(names):
        pointer = snapshot / name
        if name == bad and pointer.is_symlink():
            pointer.resolve().unlink(missing_ok=True)
        pointer.unlink(missing_ok=True)
    if snapshot.is_dir() and not any(snapshot.iterdir()):
        snapshot.rmdir()


def _to_local_dir(name: str, api: Any, repo_id: str, revision: str | None, commit: str, remote: dict[str, Any],
                  local_dir: Path, where: str) -> DownloadedRelease:
    target = local_dir.expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target} exists and is not a folder; choose a folder for --local-dir")
    if target.is_dir():
        other = sorted(p.name for p in target.iterdir()
                       if p.name != ".cache" and p.name not in REQUIRED_FILES + OPTIONAL_FILES)
        if other and not (target / CONFIG_NAME).is_file():
            raise ValueError(f"{target} is not empty ({', '.join(other[:3])}, ...) and is not an earlier download; "
                             "choose a new or empty folder for --local-dir")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.partial"  # a fixed name: a rerun reuses what a failed run fetched
    paths: dict[str, Path] = {}
    for filename in remote:
        with _hub_errors(repo_id, commit, f"{repo_id}@{commit[:12]}", where, filename):
            paths[filename] = Path(api.hf_hub_download(repo_id, filename, revision=commit, local_dir=staging))
    for stale in staging.iterdir():  # files of an earlier commit that this release does not have
        if stale.is_file() and stale.name not in remote:
            stale.unlink()
    try:
        files = _check(repo_id, commit, remote, paths)
        read_config(staging)
    except CheckpointError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _replace_folder(staging, target)
    logger.info("%s@%s: %d files checked, in %s", repo_id, commit[:12], len(files), target)
    return DownloadedRelease(name, target, repo_id=repo_id, revision=revision, commit=commit, local_dir=target,
                             files=files)


def _replace_folder(new: Path, target: Path) -> None:
    """Rename `new` onto `target`; an existing `target` is moved aside first and deleted after."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


# ---- checks ----


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file (`git hash-object`), which the Hub records for files not stored in LFS."""
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check(repo_id: str, commit: str, remote: dict[str, Any], paths: dict[str, Path]) -> tuple[DownloadedFile, ...]:
    """Every file against the Hub's record, then against the release's SHA256SUMS. CheckpointError names the file."""
    at = f"{repo_id}@{commit[:12]}"
    sums = _read_sums(paths[SUMS_NAME], at) if SUMS_NAME in paths else None
    if sums is not None:
        unlisted = [f for f in PINNED_FILES if f in paths and f not in sums]
        if unlisted:
            raise CheckpointError(f"{unlisted[0]} from {at} is not listed in the release's {SUMS_NAME}; "
                                  "the release is inconsistent and was not installed")
    out = []
    for filename, path in paths.items():
        entry = remote[filename]
        size = path.stat().st_size
        sha256 = file_sha256(path)
        if size != entry.size:
            raise _FileCheckError(filename, f"{filename} from {at}: {size} bytes where the Hub records {entry.size}; "
                                  "it was deleted, nothing was installed: run the download again")
        lfs = entry.lfs
        lfs_sha = lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)
        if lfs_sha:
            check, expected, actual = "hub-lfs-sha256", str(lfs_sha).lower(), sha256
        else:
            check, expected, actual = "hub-git-sha1", str(entry.blob_id).lower(), git_blob_sha1(path)
        if actual != expected:
            algo = "SHA-256" if lfs_sha else "git blob id"
            raise _FileCheckError(filename, f"{filename} from {at}: {algo} {actual[:16]}... differs from "
                                  f"{expected[:16]}... recorded by the Hub; it was deleted, nothing was installed: "
                                  "run the download again")
        checks = [check]
        if sums is not None and filename in sums:
            if sha256 != sums[filename]:
                raise _FileCheckError(filename, f"{filename} from {at}: SHA-256 {sha256[:16]}... differs from "
                                      f"{sums[filename][:16]}... listed in the release's {SUMS_NAME}; it was deleted, "
                                      "nothing was installed")
            checks.append(SUMS_NAME)
        out.append(DownloadedFile(filename, size, sha256, tuple(checks)))
    return tuple(out)


class _FileCheckError(CheckpointError):
    """A downloaded file failed a hash or size check; `filename` says which."""

    def __init__(self, filename: str, message: str) -> None:
        super().__init__(message)
        self.filename = filename


def _read_sums(path: Path, at: str) -> dict[str, str]:
    listed: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        match = _SUMS_LINE.match(line.strip())
        if match is None:
            raise CheckpointError(f"{SUMS_NAME} from {at}, line {number}: not '<sha256>  <file name>' "
                                  f"({line[:80]!r}); the release's checksums are damaged, nothing was installed")
        listed[match.group(2)] = match.group(1)
    return listed


# ---- errors ----


def _network_errors() -> tuple[type[BaseException], ...]:
    """OSError plus the transport errors of whichever HTTP client this huggingface_hub uses."""
    errors: list[type[BaseException]] = [OSError]
    for module, attr in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "RequestException")):
        try:
            errors.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


class _hub_errors:  # noqa: N801 - used as a context manager, reads like one
    """Turn huggingface_hub's errors into one-line ModelNotFoundError / CheckpointError naming repo and file."""

    def __init__(self, repo_id: str, revision: str | None, label: str, where: str, filename: str | None) -> None:
        self.repo_id, self.revision, self.label, self.where, self.filename = repo_id, revision, label, where, filename

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: Any) -> bool:
        if err is None or not isinstance(err, Exception):
            return False
        from huggingface_hub.errors import (
            EntryNotFoundError,
            HfHubHTTPError,
            HFValidationError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        what = f"{self.filename} from {self.label}" if self.filename else self.label
        if isinstance(err, RevisionNotFoundError):
            raise ModelNotFoundError(f"{self.repo_id} on {self.where} has no revision {self.revision!r}: "
                                     f"{_first_line(err)}") from err
        if isinstance(err, RepositoryNotFoundError):
            raise ModelNotFoundError(f"{self.repo_id} was not found on {self.where} (a private repo needs a token): "
                                     f"{_first_line(err)}") from err
        if isinstance(err, EntryNotFoundError):
            raise ModelNotFoundError(f"{what}: not found on {self.where}: {_first_line(err)}") from err
        if isinstance(err, HFValidationError):
            raise ModelNotFoundError(f"{self.repo_id!r} is not a valid Hub repo id: {_first_line(err)}") from err
        if isinstance(err, LocalEntryNotFoundError):
            raise ModelNotFoundError(f"{what}: {self.where} could not be reached (network off, proxy or HF_ENDPOINT?): "
                                     f"{_first_line(err)}") from err
        if isinstance(err, HfHubHTTPError):
            raise ModelNotFoundError(f"{what}: download from {self.where} failed: {_first_line(err)}") from err
        if isinstance(err, _network_errors()):
            done = "the partial file was not kept; run the download again" if self.filename else "nothing was downloaded"
            raise ModelNotFoundError(f"{what}: download from {self.where} failed ({_first_line(err)}); {done}") from err
        return False
