"""Model names -> checkpoint folder, with one fixed priority, then one loader (load_checkpoint).

Name grammar, tried in this order:
  1. a local folder path (holding config.json + model.safetensors)
  2. an alias from ALIASES (`age2hie`, `brain-age`): the folder bundled in age2hie_hub/data/models/<alias>/
     when present and no revision is asked for (its files are checked against the SHA256SUMS shipped with
     it first: the bundled weights are pinned by hash), else the alias's Hub repo
  3. `hf-hub:org/name` or `hf-hub:org/name@revision`
  4. `org/name` (a Hugging Face Hub repo id; revision from the `revision` argument)

Hub downloads go through huggingface_hub's snapshot_download (its cache, locks and offline mode). The
environment is read at call time, not import time: HF_ENDPOINT, HF_HUB_OFFLINE, HF_HUB_CACHE / HF_HOME.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from age2hie_hub.errors import CheckpointError, ModelNotFoundError
from age2hie_hub.hub.checkpoint import (
    CARD_NAME,
    CONFIG_NAME,
    ONNX_NAME,
    WEIGHTS_NAME,
    file_sha256,
    load_checkpoint,
)

if TYPE_CHECKING:
    import torch

    from age2hie_hub.models import Age2HieNet

logger = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).resolve().parents[1] / "data" / "models"
# The package's own bundled models always ship SHA256SUMS (export/release.py writes it); a folder there without
# one is refused. Another BUNDLED_DIR (tests, a downstream override) may hold unpinned folders: a warning.
_PACKAGE_BUNDLED_DIR = BUNDLED_DIR
SUMS_NAME = "SHA256SUMS"
_SUMS_LINE = re.compile(r"^([0-9a-f]{64}) [ *]([^/\\]+)$")
HUB_PREFIX = "hf-hub:"
# Hub repo names: letters, digits, '-', '_', '.'; one namespace. (huggingface_hub validates again.)
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


@dataclass(frozen=True)
class PretrainedInfo:
    alias: str
    repo_id: str  # where the release is published on the Hub
    task: str
    description: str
    bundled: bool = False  # True when a copy ships inside the package (no download needed)


# Release names and the Hub repos the release recipes (export/) publish them to. Until a release is
# published or bundled, its alias fails with ModelNotFoundError naming the repo it looked for.
ALIASES: dict[str, PretrainedInfo] = {
    info.alias: info
    for info in (
        PretrainedInfo(
            "age2hie",
            "age2hie-hub/age2hie",
            "hie_outcome",
            "AGE2HIE: P(adverse 2-year outcome) of neonatal HIE from ADC; 3D ResNet pretrained on brain age, "
            "then head refined and all layers fine-tuned",
        ),
        PretrainedInfo(
            "brain-age",
            "age2hie-hub/brain-age",
            "brain_age",
            "Brain age (years) from T1-weighted MRI; the AGE2HIE pretraining stage",
        ),
    )
}


def _bundled_folder(alias: str) -> Path | None:
    folder = BUNDLED_DIR / alias
    return folder if (folder / CONFIG_NAME).is_file() else None


# Folders already verified in this process, with the (name, size, mtime) of their files then: a process that loads
# a bundled model more than once (a notebook, a benchmark, the tests) does not rehash unchanged files each time.
_VERIFIED: dict[Path, tuple[tuple[str, int, int], ...]] = {}


def _stamp(folder: Path) -> tuple[tuple[str, int, int], ...]:
    return tuple((p.name, st.st_size, st.st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()
                 for st in (p.stat(),))


def verify_bundled(folder: Path) -> None:
    """Check a bundled model's files against the SHA256SUMS shipped with it; CheckpointError names the file.

    Every listed file must be present and match; config.json and model.safetensors (and model.onnx, when the
    folder holds one) must be listed, so nothing the loaders read escapes the check.
    """
    key = folder.resolve()
    if key in _VERIFIED and _VERIFIED[key] == _stamp(folder):
        return
    _verify_sums(folder)
    _VERIFIED[key] = _stamp(folder)


def _verify_sums(folder: Path) -> None:
    sums = folder / SUMS_NAME
    if not sums.is_file():
        if folder.resolve().parent == _PACKAGE_BUNDLED_DIR.resolve():
            raise CheckpointError(f"{sums} is missing, so the bundled model in {folder} cannot be checked against its "
                                  "pinned hashes; reinstall age2hie-hub")
        logger.warning("%s has no %s: its files are not pinned by hash", folder, SUMS_NAME)
        return
    listed: dict[str, str] = {}
    for number, line in enumerate(sums.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        match = _SUMS_LINE.match(line.strip())
        if match is None:
            raise CheckpointError(f"{sums} line {number}: not '<sha256>  <file name>' ({line[:80]!r}); the bundled "
                                  "model's checksums are damaged: reinstall age2hie-hub")
        listed[match.group(2)] = match.group(1)
    required = [CONFIG_NAME, WEIGHTS_NAME] + ([ONNX_NAME] if (folder / ONNX_NAME).exists() else [])
    unlisted = [name for name in required if name not in listed]
    if unlisted:
        raise CheckpointError(f"{folder / unlisted[0]} is not pinned in {sums}; the bundled model was modified: "
                              "reinstall age2hie-hub")
    for name, expected in sorted(listed.items()):
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing (listed in {sums}); reinstall age2hie-hub")
        actual = file_sha256(path)
        if actual != expected:
            raise CheckpointError(f"{path}: SHA-256 {actual[:16]}... differs from {expected[:16]}... pinned in {sums}; "
                                  "the bundled model was modified or damaged: reinstall age2hie-hub")


def list_pretrained() -> list[PretrainedInfo]:
    """The aliases from_pretrained accepts, with their Hub repo and whether a copy is bundled."""
    return [dataclasses.replace(info, bundled=_bundled_folder(a) is not None) for a, info in sorted(ALIASES.items())]


@dataclass(frozen=True)
class ParsedName:
    """What a name refers to, before any download. Exactly one of `folder` / `repo_id` is set."""

    name: str
    folder: Path | None = None
    repo_id: str | None = None
    revision: str | None = None
    alias: str | None = None


def _accepted_forms() -> str:
    aliases = ", ".join(sorted(ALIASES))
    return (
        "Accepted forms, in the order tried: (1) a local checkpoint folder holding config.json and "
        f"model.safetensors; (2) an alias: {aliases} (see list_pretrained()); (3) hf-hub:org/name or "
        "hf-hub:org/name@revision; (4) org/name, a Hugging Face Hub repo id (revision= pins a branch, tag or commit)"
    )


def _looks_like_path(name: str) -> bool:
    windows_drive = len(name) > 1 and name[1] == ":"  # C:\...
    return name.startswith((".", "/", "~")) or "\\" in name or name.endswith("/") or windows_drive


def parse_name(name: str, revision: str | None = None) -> ParsedName:
    """Apply the name grammar (no network). Unresolvable -> ModelNotFoundError listing accepted forms."""
    if not isinstance(name, (str, os.PathLike)) or not str(name).strip():
        raise ModelNotFoundError(f"model name must be a non-empty string, got {name!r}. {_accepted_forms()}")
    name = os.fspath(name).strip()
    path = Path(name).expanduser()
    if path.is_dir():
        if revision is not None:
            raise ModelNotFoundError(f"{name} is a local folder; revision={revision!r} only applies to Hub repos")
        return ParsedName(name, folder=path)
    if name in ALIASES:
        bundled = _bundled_folder(name)
        if bundled is not None and revision is None:
            return ParsedName(name, folder=bundled, alias=name)
        return ParsedName(name, repo_id=ALIASES[name].repo_id, revision=revision, alias=name)
    if name.startswith(HUB_PREFIX):
        repo_id, _, rev = name[len(HUB_PREFIX):].partition("@")
        if not _REPO_ID.match(repo_id) or (_ and not rev):
            raise ModelNotFoundError(f"{name!r} is not hf-hub:org/name[@revision]. {_accepted_forms()}")
        if rev and revision is not None and rev != revision:
            raise ModelNotFoundError(f"{name!r} pins revision {rev!r} but revision={revision!r} was also given")
        return ParsedName(name, repo_id=repo_id, revision=rev or revision)
    if _REPO_ID.match(name) and not path.exists():
        return ParsedName(name, repo_id=name, revision=revision)
    if path.exists() or _looks_like_path(name):
        what = "is a file, not a checkpoint folder" if path.exists() else "does not exist"
        raise ModelNotFoundError(f"{name}: the path {what}. {_accepted_forms()}")
    raise ModelNotFoundError(f"cannot resolve model name {name!r}. {_accepted_forms()}")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """HF_HUB_OFFLINE read now (the environment may change after huggingface_hub was imported)."""
    from huggingface_hub import constants

    return _env_flag("HF_HUB_OFFLINE") or _env_flag("TRANSFORMERS_OFFLINE") or bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> str | None:
    """HF_HUB_CACHE, else HF_HOME/hub, read now; None leaves huggingface_hub's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return None


def hub_endpoint() -> str | None:
    """HF_ENDPOINT read now; None leaves huggingface_hub's default (https://huggingface.co)."""
    value = os.environ.get("HF_ENDPOINT", "").strip()
    return value.rstrip("/") or None


@dataclass(frozen=True)
class ResolvedCheckpoint:
    folder: Path
    parsed: ParsedName
    commit: str | None = None  # the Hub commit of a downloaded snapshot


def download_checkpoint(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    include_onnx: bool = False,
) -> Path:
    """Snapshot of a Hub repo's checkpoint files (config.json, model.safetensors, README.md [, model.onnx]).

    Pickled weights (.bin, .pt, ...) are never downloaded. Errors become ModelNotFoundError with the cause.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    patterns = [CONFIG_NAME, WEIGHTS_NAME, CARD_NAME] + ([ONNX_NAME] if include_onnx else [])
    offline = local_files_only or hub_offline()
    endpoint = hub_endpoint()
    where = endpoint or "the Hugging Face Hub"
    label = f"{repo_id}@{revision}" if revision else repo_id
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=os.fspath(cache_dir) if cache_dir is not None else hub_cache_dir(),
            local_files_only=offline,
            token=token,
            endpoint=endpoint,
            allow_patterns=patterns,
            library_name="age2hie-hub",
        )
    except RevisionNotFoundError as err:
        raise ModelNotFoundError(f"{repo_id} on {where} has no revision {revision!r}: {_first_line(err)}") from err
    except RepositoryNotFoundError as err:
        raise ModelNotFoundError(
            f"{repo_id} was not found on {where} (a private repo needs token=...): {_first_line(err)}"
        ) from err
    except LocalEntryNotFoundError as err:
        why = "offline (local_files_only or HF_HUB_OFFLINE=1)" if offline else "the Hub could not be reached"
        raise ModelNotFoundError(
            f"{label} is not in the local cache and {why}; download it once online (same cache_dir / HF_HOME), "
            f"or pass a local folder. ({_first_line(err)})"
        ) from err
    except HFValidationError as err:
        raise ModelNotFoundError(f"{repo_id!r} is not a valid Hub repo id: {err}. {_accepted_forms()}") from err
    except HfHubHTTPError as err:
        raise ModelNotFoundError(f"downloading {label} from {where} failed: {_first_line(err)}") from err
    return Path(folder)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def resolve_checkpoint(
    name: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    include_onnx: bool = False,
) -> ResolvedCheckpoint:
    """A name -> a local checkpoint folder (downloading from the Hub when the name says so)."""
    parsed = parse_name(name, revision)
    if parsed.folder is not None:
        if parsed.alias is not None:  # a bundled copy: refuse it unless its files match their pinned hashes
            verify_bundled(parsed.folder)
        return ResolvedCheckpoint(parsed.folder, parsed)
    assert parsed.repo_id is not None  # parse_name sets exactly one of folder / repo_id
    folder = download_checkpoint(
        parsed.repo_id,
        revision=parsed.revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        token=token,
        include_onnx=include_onnx,
    )
    if not (folder / WEIGHTS_NAME).is_file() or not (folder / CONFIG_NAME).is_file():
        raise CheckpointError(
            f"Hub repo {parsed.repo_id} (revision {parsed.revision or 'main'}) has no {CONFIG_NAME} + {WEIGHTS_NAME}; "
            "age2hie-hub reads safetensors checkpoints written by save_pretrained / push_to_hub only "
            "(pickled .bin/.pt weights are never downloaded or unpickled)"
        )
    return ResolvedCheckpoint(folder, parsed, commit=folder.name)


def from_pretrained(
    name: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    device: "str | torch.device | None" = None,
) -> "Age2HieNet":
    """Resolve `name` (folder, alias, hf-hub:org/name@rev, org/name) and load it strictly, in eval mode.

    The model carries `.checkpoint_config` and `.checkpoint_source` (folder, sha256, repo_id, revision, commit).
    """
    resolved = resolve_checkpoint(
        name, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token
    )
    return load_resolved(resolved, device=device)


def load_resolved(resolved: ResolvedCheckpoint, *, device: "str | torch.device | None" = None) -> "Age2HieNet":
    """Load a checkpoint `resolve_checkpoint` already found (no second trip to the resolver or the Hub).

    Same model as `from_pretrained`: strict, eval mode, `.checkpoint_source` naming the name, repo and commit.
    """
    model = load_checkpoint(resolved.folder, device=device)
    parsed = resolved.parsed
    model.checkpoint_source = dataclasses.replace(
        model.checkpoint_source,
        name=parsed.name,
        repo_id=parsed.repo_id,
        revision=(parsed.revision or "main") if parsed.repo_id else None,
        commit=resolved.commit,
    )
    logger.info("loaded %s from %s", parsed.name, resolved.folder)
    return model
