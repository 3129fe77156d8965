"""The architecture registry: a dict of builder functions, name -> backbone."""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from age2hie_hub.models.config import ModelConfig
from age2hie_hub.models.heads import build_head
from age2hie_hub.models.net import Age2HieNet
from age2hie_hub.models.resnet3d import ResNet3d
from age2hie_hub.models.sfcn import SFCN
from age2hie_hub.models.slice2d import SliceResNet18


def _resnet3d_10(**kw: Any) -> nn.Module:
    return ResNet3d(10, **kw)


def _resnet3d_18(**kw: Any) -> nn.Module:
    return ResNet3d(18, **kw)


def _resnet3d_34(**kw: Any) -> nn.Module:
    return ResNet3d(34, **kw)


# Each builder takes the config's arch_args as keywords and returns a backbone with `in_channels`,
# `num_features` and forward (N, C, X, Y, Z) -> (N, num_features).
_BUILDERS: dict[str, tuple[Callable[..., nn.Module], Callable[..., nn.Module]]] = {
    # name: (builder, class whose keyword arguments are the valid arch_args)
    "resnet3d_10": (_resnet3d_10, ResNet3d),
    "resnet3d_18": (_resnet3d_18, ResNet3d),
    "resnet3d_34": (_resnet3d_34, ResNet3d),
    "sfcn": (SFCN, SFCN),
    "slice_resnet18": (SliceResNet18, SliceResNet18),
}


def list_models() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(_BUILDERS)


def arch_arg_names(arch: str) -> list[str]:
    """The arch_args an architecture accepts."""
    _check_arch(arch)
    params = inspect.signature(_BUILDERS[arch][1]).parameters.values()
    return sorted(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def _check_arch(arch: str) -> None:
    if arch not in _BUILDERS:
        raise ValueError(f"unknown architecture {arch!r}; valid names are {list_models()}")


def build_backbone(arch: str, arch_args: Mapping[str, Any] | None = None) -> nn.Module:
    """A freshly initialised backbone; unknown arch or arch_args raise ValueError naming the valid ones."""
    _check_arch(arch)
    args = dict(arch_args or {})
    valid = arch_arg_names(arch)
    unknown = sorted(set(args) - set(valid))
    if unknown:
        raise ValueError(f"architecture {arch!r}: unknown arch_args {unknown}; valid are {valid}")
    return _BUILDERS[arch][0](**args)


def build_model(config: ModelConfig) -> Age2HieNet:
    """Age2HieNet from its config: registered backbone + head, freshly initialised (train mode)."""
    backbone = build_backbone(config.arch, config.arch_args)
    head = build_head(config.head, backbone.num_features, config.head_args)
    return Age2HieNet(config, backbone, head)
