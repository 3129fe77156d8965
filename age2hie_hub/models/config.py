"""What it takes to rebuild a network: architecture + head, as plain data stored in config.json."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from age2hie_hub._config import check_keys, to_plain

HEADS = ("age_regression", "age_softbin", "outcome", "classification")


@dataclass(frozen=True)
class ModelConfig:
    arch: str  # registry name, see age2hie_hub.models.list_models()
    arch_args: dict[str, Any] = field(default_factory=dict)  # e.g. {"in_channels": 1, "width": 1.0}
    head: str = "outcome"
    head_args: dict[str, Any] = field(default_factory=dict)  # e.g. {"bins": 40, "age_range": [0, 97]}

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        check_keys(cls, data)
        return cls(**data)
