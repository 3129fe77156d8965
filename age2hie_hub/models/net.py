"""Age2HieNet: one backbone (volume -> pooled features) + one head (features -> raw output)."""
from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from age2hie_hub.models.config import ModelConfig
from age2hie_hub.models.heads import build_head

log = logging.getLogger(__name__)


class Age2HieNet(nn.Module):
    """A network rebuilt from `config` alone (see `build_model`).

    `forward(x)` takes (N, C, X, Y, Z) float volumes and returns the head's raw output: outcome logits (N,),
    age_regression ages (N,), age_softbin log-probabilities (N, bins), classification logits (N, K).
    `predict_outputs(raw)` turns that into named predictions.
    """

    def __init__(self, config: ModelConfig, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.head = head

    @property
    def in_channels(self) -> int:
        return int(self.backbone.in_channels)

    @property
    def num_features(self) -> int:
        return int(self.backbone.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # checked eagerly; skipped while tracing (TorchScript ONNX export), where sizes are tensors
        if not torch.jit.is_tracing():
            self._check_input(x)
        return self.head(self.backbone(x))

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 5:
            raise ValueError(f"{self.config.arch}: expected input (N, C, X, Y, Z), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.config.arch}: expected {self.in_channels} input channel(s), got {x.shape[1]} "
                f"(input shape {tuple(x.shape)})"
            )

    def predict_outputs(self, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        """outcome: `probability`; age heads: `age` (+ `age_sd` for age_softbin); classification: `probabilities`."""
        return self.head.predict_outputs(raw)


def replace_head(model: Age2HieNet, head: str, head_args: Mapping[str, Any] | None = None) -> Age2HieNet:
    """A new Age2HieNet with a copy of `model`'s backbone (weights, mode, device) and a fresh `head`.

    This is the one explicit step of transfer learning (brain age -> HIE outcome); the old head's keys
    are logged at INFO. `model` itself is left unchanged.
    """
    config = dataclasses.replace(model.config, head=head, head_args=dict(head_args or {}))
    new_head = build_head(head, model.num_features, config.head_args)
    backbone = copy.deepcopy(model.backbone)
    param = next(backbone.parameters(), None)
    if param is not None:
        new_head = new_head.to(device=param.device, dtype=param.dtype)
    new = Age2HieNet(config, backbone, new_head)
    new.train(model.training)
    dropped = sorted(f"head.{k}" for k in model.head.state_dict())
    log.info(
        "replace_head: %s head %r -> %r; dropped %s; new head initialised at random",
        model.config.arch, model.config.head, head, dropped,
    )
    return new
