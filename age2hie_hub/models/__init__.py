"""Architectures (3D ResNet, SFCN, 2D slice ResNet-18), task heads, and importers of foreign weights.

Names are imported lazily: `age2hie_hub.models.config` (plain data, read by config.json code and by the
ONNX backend) must not pull in torch.
"""
from __future__ import annotations

from age2hie_hub._lazy import lazy_getattr
from age2hie_hub.models.config import HEADS, ModelConfig

_LAZY = {
    "HEAD_ARGS": "heads",
    "predict_outputs": "heads",
    "inflate_2d_to_3d": "importers",
    "load_imagenet_resnet18": "importers",
    "load_kinetics_r3d18": "importers",
    "load_sfcn_ukbiobank": "importers",
    "Age2HieNet": "net",
    "replace_head": "net",
    "arch_arg_names": "registry",
    "build_backbone": "registry",
    "build_model": "registry",
    "list_models": "registry",
}

__all__ = ["HEADS", "ModelConfig", *_LAZY]


__getattr__ = lazy_getattr(__name__, {name: f"age2hie_hub.models.{module}" for name, module in _LAZY.items()})
