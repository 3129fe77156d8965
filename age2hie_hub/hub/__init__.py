"""Checkpoint folders (config.json + model.safetensors + README.md), names, and the Hugging Face Hub."""
from __future__ import annotations

from age2hie_hub.hub.checkpoint import (
    CONFIG_NAME,
    ONNX_NAME,
    WEIGHTS_NAME,
    CheckpointSource,
    load_checkpoint,
    read_config,
    save_pretrained,
)
from age2hie_hub.hub.config import CheckpointConfig
from age2hie_hub.hub.download import DownloadedFile, DownloadedRelease, download, fetch_release
from age2hie_hub.hub.push import push_to_hub
from age2hie_hub.hub.resolve import (
    ALIASES,
    PretrainedInfo,
    from_pretrained,
    list_pretrained,
    parse_name,
    resolve_checkpoint,
)

__all__ = [
    "ALIASES",
    "CONFIG_NAME",
    "ONNX_NAME",
    "WEIGHTS_NAME",
    "CheckpointConfig",
    "CheckpointSource",
    "DownloadedFile",
    "DownloadedRelease",
    "PretrainedInfo",
    "download",
    "fetch_release",
    "from_pretrained",
    "list_pretrained",
    "load_checkpoint",
    "parse_name",
    "push_to_hub",
    "read_config",
    "resolve_checkpoint",
    "save_pretrained",
]
