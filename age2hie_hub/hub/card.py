"""The model card (README.md) that save_pretrained writes, and how to tell it from a hand-edited one.

The text comes from the full renderer in `age2hie_hub.modelcard` (ModelCard/ModelCardData; every number
from config.json). The card ends with a marker holding the hash of its own text, so save_pretrained can
tell a card it generated (safe to regenerate) from one a person edited (kept unless overwrite_card=True).
"""
from __future__ import annotations

import hashlib
import re

from age2hie_hub.hub.config import CheckpointConfig

_MARKER = "<!-- age2hie-hub generated card sha256:{} -->"
_MARKER_RE = re.compile(r"<!-- age2hie-hub generated card sha256:([0-9a-f]{64}) -->\s*$")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def card_is_generated(text: str) -> bool:
    """True when `text` is a card this module wrote and nobody has edited since."""
    match = _MARKER_RE.search(text)
    return match is not None and _sha(text[: match.start()]) == match.group(1)


def build_model_card(config: CheckpointConfig) -> str:
    """README.md text for a checkpoint folder: the full card rendered from config.json, plus the marker."""
    from age2hie_hub.modelcard import render_model_card

    text = str(render_model_card(config))
    if not text.endswith("\n"):
        text += "\n"
    return text + _MARKER.format(_sha(text)) + "\n"
