"""A minimal, honest model card (README.md) built from a CheckpointConfig with huggingface_hub's ModelCard.

It states only what config.json records: no metric appears unless the training run wrote it. The
card ends with a marker holding the hash of its own text, so save_pretrained can tell a card it
generated (safe to regenerate) from one a person edited (kept unless overwrite_card=True).
The richer release cards are built in model_cards/ on top of this one.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from age2hie_hub.hub.config import CheckpointConfig

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
_MARKER = "<!-- age2hie-hub generated card sha256:{} -->"
_MARKER_RE = re.compile(r"<!-- age2hie-hub generated card sha256:([0-9a-f]{64}) -->\s*$")

_TASK_TEXT = {
    "hie_outcome": "the probability of an adverse 2-year neurocognitive outcome after neonatal hypoxic-ischemic "
    "encephalopathy (HIE)",
    "brain_age": "brain age",
    "classification": "a class label",
    "regression": "a continuous target",
}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def card_is_generated(text: str) -> bool:
    """True when `text` is a card this module wrote and nobody has edited since."""
    match = _MARKER_RE.search(text)
    return match is not None and _sha(text[: match.start()]) == match.group(1)


def _hub_repo_id(parent: Any) -> str | None:
    """`parent` when it names a Hub repo (org/name or hf-hub:org/name[@rev]); a local path is not a base_model."""
    if not isinstance(parent, str):
        return None
    repo = parent[len("hf-hub:"):].partition("@")[0] if parent.startswith("hf-hub:") else parent
    return repo if _REPO_ID.match(repo) else None


def _fmt(value: Any) -> str:
    return "`" + json.dumps(value, sort_keys=True) + "`"


def build_model_card(config: CheckpointConfig) -> str:
    """README.md text: YAML metadata (library_name age2hie-hub, tags) + a description from the config."""
    from huggingface_hub import ModelCard, ModelCardData

    prov = config.provenance
    model = config.model
    tags = ["age2hie-hub", "pytorch", "safetensors", "medical-imaging", "mri", "3d", config.task, model.arch]
    data = ModelCardData(
        library_name="age2hie-hub",
        tags=tags,
        license=prov.get("license"),
        base_model=_hub_repo_id(prov.get("parent")),
    )
    what = _TASK_TEXT[config.task]
    if config.task == "brain_age":
        what += f" in {config.age_unit}"
    lines = [
        f"# {model.arch} ({model.head} head): {config.task}",
        "",
        f"A 3D brain-MRI model for the `age2hie-hub` Python package that predicts {what} "
        f"from {', '.join(config.input_modalities)} input.",
        "",
    ]
    if prov.get("synthetic"):
        lines += [
            "> **Trained on synthetic data.** These weights demonstrate and test the pipeline; they say nothing about "
            "real patients.",
            "",
        ]
    lines += [
        "## Model",
        "",
        "| field | value |",
        "|---|---|",
        f"| architecture | `{model.arch}` {_fmt(model.arch_args)} |",
        f"| head | `{model.head}` {_fmt(model.head_args)} |",
        f"| task | `{config.task}` |",
    ]
    if config.labels:
        lines.append(f"| labels | {', '.join(f'`{label}`' for label in config.labels)} |")
    if config.task == "hie_outcome":
        lines.append(f"| decision threshold | P(adverse) >= {config.threshold} |")
    lines += [
        "",
        "## Input and preprocessing",
        "",
        f"Channels: {', '.join(config.input_modalities)}. Preprocessing (applied by `age2hie_hub` from config.json):",
        "",
        "| step | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in config.preprocess.to_dict().items()]
    lines += ["", "## Training data and provenance", ""]
    if prov:
        lines += [f"- **{k}**: {_fmt(v)}" for k, v in prov.items()]
    else:
        lines.append("Not recorded in config.json.")
    lines += ["", "## Evaluation", ""]
    if config.metrics:
        lines += [f"- **{k}**: {_fmt(v)}" for k, v in config.metrics.items()]
        lines.append("")
        lines.append("As recorded by the training run in config.json.")
    else:
        lines.append("No evaluation is recorded in config.json.")
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from age2hie_hub import from_pretrained",
        "",
        'model = from_pretrained("<this repo id or folder>")  # eval mode, strict safetensors load',
        "```",
        "",
        "## Limitations",
        "",
        "A research model, not a medical device: do not use it for clinical decisions. It expects input like its "
        "training data (modalities and preprocessing above).",
        "",
    ]
    card = ModelCard("---\n" + data.to_yaml() + "\n---\n\n" + "\n".join(lines))
    text = str(card)
    if not text.endswith("\n"):
        text += "\n"
    return text + _MARKER.format(_sha(text)) + "\n"
