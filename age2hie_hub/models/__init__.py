"""Architectures (3D ResNet, SFCN, 2D slice ResNet-18), task heads, and importers of foreign weights."""
from __future__ import annotations

from age2hie_hub.models.config import HEADS, ModelConfig
from age2hie_hub.models.heads import HEAD_ARGS, predict_outputs
from age2hie_hub.models.importers import (
    inflate_2d_to_3d,
    load_imagenet_resnet18,
    load_kinetics_r3d18,
    load_sfcn_ukbiobank,
)
from age2hie_hub.models.net import Age2HieNet, replace_head
from age2hie_hub.models.registry import arch_arg_names, build_backbone, build_model, list_models

__all__ = [
    "HEADS",
    "HEAD_ARGS",
    "Age2HieNet",
    "ModelConfig",
    "arch_arg_names",
    "build_backbone",
    "build_model",
    "inflate_2d_to_3d",
    "list_models",
    "load_imagenet_resnet18",
    "load_kinetics_r3d18",
    "load_sfcn_ukbiobank",
    "predict_outputs",
    "replace_head",
]
