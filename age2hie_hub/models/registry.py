"""The architecture registry: a dict of builder functions, name -> backbone."""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from age2hie_hub.models.config import ModelConfig
from age2hie_hub.models.heads import HEAD_ARGS, build_head
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


def build_model(
    config: ModelConfig | str,
    /,
    *,
    head: str | None = None,
    head_args: Mapping[str, Any] | None = None,
    arch_args: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Age2HieNet:
    """Age2HieNet, freshly initialised (train mode), from a :class:`ModelConfig` or an architecture name.

    ``build_model(ModelConfig("sfcn", head="age_softbin"))`` and, as with timm's ``create_model``,
    ``build_model("resnet3d_18", head="outcome", in_channels=2)``: with a name, ``head`` (default
    ``"outcome"``) and ``head_args`` fill those ModelConfig fields and every other keyword is an arch_arg
    (``arch_args={...}`` is accepted too). Unknown names, arch_args and head_args raise ValueError naming the
    valid ones; anything but a ModelConfig or a name raises TypeError showing both calls.
    """
    if isinstance(config, str):
        config = _config_from_name(config, head, head_args, arch_args, kwargs)
    elif isinstance(config, ModelConfig):
        given = sorted(k for k, v in [("head", head), ("head_args", head_args), ("arch_args", arch_args)]
                       if v is not None) + sorted(kwargs)
        if given:
            raise TypeError(
                f"build_model(ModelConfig(...)) takes no other arguments, got {given}; put them in the config "
                "(dataclasses.replace(config, ...)) or call build_model(\"<arch>\", head=..., **arch_args)"
            )
    else:
        example = 'ModelConfig(arch="sfcn", head="outcome")'
        hint = "ModelConfig.from_dict(d)" if isinstance(config, Mapping) else example
        raise TypeError(
            f"build_model() takes a ModelConfig or an architecture name, got {type(config).__name__}; "
            f"call build_model({hint}) or build_model(\"sfcn\", head=\"outcome\", in_channels=1)"
        )
    backbone = build_backbone(config.arch, config.arch_args)
    head_module = build_head(config.head, backbone.num_features, config.head_args)
    return Age2HieNet(config, backbone, head_module)


def _config_from_name(
    arch: str,
    head: str | None,
    head_args: Mapping[str, Any] | None,
    arch_args: Mapping[str, Any] | None,
    kwargs: dict[str, Any],
) -> ModelConfig:
    _check_arch(arch)
    both = sorted(set(arch_args or {}) & set(kwargs))
    if both:
        raise TypeError(f"build_model({arch!r}): {both} given both as keywords and in arch_args")
    args = {**(arch_args or {}), **kwargs}
    unknown = sorted(set(args) - set(arch_arg_names(arch)))
    if unknown:
        head_name = head or "outcome"
        misplaced = [k for k in unknown if k in HEAD_ARGS.get(head_name, {})]
        hint = f"; {misplaced} are head_args of {head_name!r}: pass head_args={{...}}" if misplaced else ""
        raise ValueError(f"architecture {arch!r}: unknown arch_args {unknown}; valid are {arch_arg_names(arch)}{hint}")
    return ModelConfig(arch=arch, arch_args=args, head=head or "outcome", head_args=dict(head_args or {}))
