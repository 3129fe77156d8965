"""Deprecated: the model card moved into the hub (``age2hie_hub.hub.card``).

Kept so that ``from age2hie_hub.modelcard import render_model_card`` keeps working, with a DeprecationWarning
naming the new home. The evaluation rows the card reads are now ``age2hie_hub.hub.evaluation`` (one row per
metric, ``read_evaluation``), and the release metadata loader belongs to the release recipe
(``export.release.load_release_metadata`` in the repository); those names raise with a pointer.
"""
from __future__ import annotations

import warnings
from typing import Any

_MOVED = {name: "age2hie_hub.hub.card" for name in (
    "render_model_card", "model_card_data", "BASE_TAGS", "CITATIONS", "LIBRARY_NAME", "TASK_INFO")}
_GONE = {
    "load_release_metadata": "export.release.load_release_metadata (the release recipe in the repository)",
    "RELEASE_KEYS": "export.release.RELEASE_KEYS (the release recipe in the repository)",
    "normalize_evaluation": "age2hie_hub.hub.evaluation.read_evaluation (returns an Evaluation of one row per metric)",
    "EvalRow": "age2hie_hub.hub.evaluation.EvalRow (one row per metric)",
    "METRIC_INFO": "age2hie_hub.hub.evaluation.METRIC_INFO",
    "PROTOCOL_NAMES": "age2hie_hub.hub.evaluation.PROTOCOL_NAMES",
    "TEMPLATE": "age2hie_hub.hub.card.card_template() (the template ships as age2hie_hub/hub/templates/modelcard.md)",
}

__all__ = sorted(_MOVED)


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(f"age2hie_hub.modelcard.{name} moved to {_MOVED[name]}.{name}; import it from there",
                      DeprecationWarning, stacklevel=2)
        from age2hie_hub.hub import card

        return getattr(card, name)
    if name in _GONE:
        raise AttributeError(f"age2hie_hub.modelcard.{name} is gone; use {_GONE[name]}")
    raise AttributeError(f"module 'age2hie_hub.modelcard' has no attribute {name!r}")
