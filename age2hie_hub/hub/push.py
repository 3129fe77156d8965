"""Publish a checkpoint folder (or a model, saved first) to the Hugging Face Hub in one commit."""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from age2hie_hub.errors import CheckpointError
from age2hie_hub.hub.card import card_is_generated
from age2hie_hub.hub.checkpoint import CARD_NAME, PICKLE_SUFFIXES, load_checkpoint, read_config, save_pretrained
from age2hie_hub.hub.config import CheckpointConfig
from age2hie_hub.hub.resolve import hub_endpoint

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo, HfApi

    from age2hie_hub.models import Age2HieNet

logger = logging.getLogger(__name__)


def _folder_files(folder: Path) -> list[Path]:
    """Every file to publish: hidden files/folders and pickles are left out (pickles are never published)."""
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        if path.suffix.lower() in PICKLE_SUFFIXES:
            logger.warning("push_to_hub: not publishing pickle file %s (age2hie-hub checkpoints are safetensors)", path)
            continue
        files.append(path)
    return files


def push_to_hub(
    model_or_folder: "Age2HieNet | str | os.PathLike[str]",
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | bool | None = None,
    create_pr: bool = False,
    config: CheckpointConfig | None = None,
    overwrite_card: bool = False,
) -> "CommitInfo":
    """Upload a checkpoint as one commit; returns huggingface_hub's CommitInfo (`.oid`, `.commit_url`, `.pr_url`).

    A folder is checked first by loading it strictly (a broken checkpoint is never published). A model is
    saved to a temporary folder with `config` (default: its `.checkpoint_config`); its generated card does
    not replace a hand-edited README.md already in the repo unless `overwrite_card`. A folder is pushed
    as it is, card included. The repo is created if missing (`private` applies then); a `revision` branch
    is created from main if missing.
    """
    if isinstance(model_or_folder, (str, os.PathLike)):
        if config is not None:
            raise ValueError("config= applies when pushing a model; a folder is pushed with its own config.json")
        return _push_folder(Path(model_or_folder), repo_id, private, revision, commit_message, token, create_pr)
    with tempfile.TemporaryDirectory(prefix="age2hie-push-") as tmp:
        folder = save_pretrained(model_or_folder, Path(tmp) / "checkpoint", config)
        return _push_folder(
            folder, repo_id, private, revision, commit_message, token, create_pr,
            checked=True, keep_remote_card=not overwrite_card,
        )


def _push_folder(
    folder: Path,
    repo_id: str,
    private: bool,
    revision: str | None,
    commit_message: str | None,
    token: str | bool | None,
    create_pr: bool,
    checked: bool = False,
    keep_remote_card: bool = False,
) -> "CommitInfo":
    from huggingface_hub import CommitOperationAdd, HfApi

    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a checkpoint folder (save one with save_pretrained first)")
    if not checked:
        load_checkpoint(folder)  # strict: refuses pickles, missing or mismatched keys, bad config.json
    config = read_config(folder)
    files = _folder_files(folder)
    api = HfApi(endpoint=hub_endpoint(), token=token, library_name="age2hie-hub")
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision is not None and revision != "main" and not revision.startswith("refs/pr/"):
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    if keep_remote_card and _remote_card_is_hand_edited(api, repo_id, revision):
        logger.info("push_to_hub: keeping the hand-edited %s in %s (pass overwrite_card=True to replace it)", CARD_NAME, repo_id)
        files = [p for p in files if p.relative_to(folder).as_posix() != CARD_NAME]
    from age2hie_hub import __version__

    message = commit_message or (
        f"Upload {config.task} checkpoint ({config.model.arch}, {config.model.head} head) with age2hie-hub {__version__}"
    )
    operations = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p)) for p in files]
    # create_commit, not upload_folder: upload_folder may split a folder over several commits.
    info = api.create_commit(
        repo_id, operations, commit_message=message, revision=revision, create_pr=create_pr, repo_type="model"
    )
    logger.info("pushed %s to %s: %s", folder, repo_url, info.commit_url)
    return info


def _remote_card_is_hand_edited(api: "HfApi", repo_id: str, revision: str | None) -> bool:
    """True when the repo (at `revision`) has a README.md that our card generator did not write unchanged."""
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    with tempfile.TemporaryDirectory(prefix="age2hie-card-") as tmp:
        try:
            path = api.hf_hub_download(repo_id, CARD_NAME, revision=revision, local_dir=tmp)
        except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
            return False
        return not card_is_generated(Path(path).read_text(encoding="utf-8"))
