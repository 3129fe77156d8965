"""The parent checkpoint of a transfer, resolved once: its weights, its preprocessing and its provenance.

A transfer names its parent in ``method.weights``: a folder, a bundled alias (``brain-age``) or a Hub name
(``hf-hub:org/name[@revision]``, ``org/name``). ``resolve_parent`` resolves that name once, with the hub's
own resolver and loader (``from_pretrained``), and the one result serves both the target's preprocessing
(``target_preprocess``) and the starting weights (``stages.init_model``), so they can never come from two
different places.

Target preprocessing, precisely: start from the parent's ``preprocess`` (from its config.json); each key the
transfer config's ``preprocess`` mapping holds replaces that key (a key is explicit when it is written in the
mapping, whatever its value; a key not written keeps the parent's value, never the package default);
``channels`` always follows the target data. Without a parent (scratch, imported weights) the keys not written
take the package defaults.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from age2hie_hub.preprocess.config import PreprocessConfig

if TYPE_CHECKING:
    from age2hie_hub.hub import CheckpointConfig, CheckpointSource
    from age2hie_hub.models import Age2HieNet

log = logging.getLogger(__name__)

__all__ = ["ParentCheckpoint", "resolve_parent", "target_preprocess"]


@dataclass(frozen=True, eq=False)
class ParentCheckpoint:
    """A resolved parent: the loaded network (never trained in place: ``replace_head`` copies its body), the
    config read from the same folder, and what a child's provenance records about it."""

    name: str  # as given in method.weights
    model: "Age2HieNet"
    config: "CheckpointConfig"
    source: "CheckpointSource"
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.config.preprocess


def resolve_parent(weights: str) -> ParentCheckpoint:
    """Resolve and load a parent checkpoint once (folder, bundled alias, or Hub name)."""
    from age2hie_hub.hub import from_pretrained

    if not weights:
        raise ValueError("a transfer from a checkpoint needs method.weights: a checkpoint folder, an alias "
                         "(e.g. brain-age) or a Hub name")
    name = str(weights)
    model = from_pretrained(name)
    src = model.checkpoint_source
    if src.repo_id:
        record = src.repo_id  # a Hub parent: its repo, pinned below by commit and weights hash
    elif Path(name).expanduser().is_dir():
        record = str(Path(name).expanduser().resolve())
    else:
        record = name  # a bundled alias, pinned by its weights hash
    provenance = {"parent": record, "parent_task": model.checkpoint_config.task, "parent_weights_sha256": src.sha256}
    if src.repo_id:
        provenance.update({"parent_revision": src.revision, "parent_commit": src.commit})
    log.info("parent %s: %s (weights sha256 %s...)", name, src.folder, src.sha256[:12])
    return ParentCheckpoint(name, model, model.checkpoint_config, src, provenance)


def target_preprocess(overrides: dict[str, Any], channels: int, parent: ParentCheckpoint | None) -> PreprocessConfig:
    """The target's preprocessing: the parent's, with the keys written in ``overrides`` replaced (see the
    module docstring); the package defaults underneath when there is no parent."""
    overrides = dict(overrides or {})
    if parent is None:
        return PreprocessConfig.from_dict({**overrides, "channels": channels})
    base = parent.preprocess.to_dict()
    if overrides:
        changed = {k: v for k, v in overrides.items() if base.get(k) != v}
        log.info("target preprocessing: the parent's, with %s set by the config", changed or "nothing changed")
    return PreprocessConfig.from_dict({**base, **overrides, "channels": channels})
