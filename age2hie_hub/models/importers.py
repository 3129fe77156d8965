"""Importers of foreign pretrained weights, each called by name, each loading every key it promises.

Files are read with `safetensors` (`.safetensors`) or `torch.load(weights_only=True)` (anything else), so a
pickle holding code is refused, never run. Matching is strict: a missing, unexpected or mis-shaped key is a
`CheckpointError` naming the keys. What is deliberately not loaded (a foreign classifier) is logged.

Input channels (first conv): a source with the target's channel count is copied. Otherwise the kernel is
summed over the source channels (RGB -> grey: a grey image copied to R, G and B gives the same response as
the summed kernel on the grey image) and, for C > 1 target channels, divided by C and repeated C times,
so C identical input channels again give that same response.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Union

import torch
from torch import nn

from age2hie_hub.errors import CheckpointError
from age2hie_hub.models.heads import AgeSoftBinHead
from age2hie_hub.models.net import Age2HieNet
from age2hie_hub.models.resnet3d import ResNet3d
from age2hie_hub.models.sfcn import SFCN
from age2hie_hub.models.slice2d import SliceResNet18

log = logging.getLogger(__name__)

StateDictSource = Union[str, os.PathLike, Mapping[str, torch.Tensor]]
_SHOW = 8  # keys named in an error message, per kind


def read_state_dict(source: StateDictSource) -> tuple[dict[str, torch.Tensor], str]:
    """A flat {key: tensor} dict and a name for messages, from a file path or an in-memory mapping.

    A file holding `{"state_dict": {...}}` or `{"model": {...}}` is unwrapped (logged).
    """
    if isinstance(source, Mapping):
        state, name = dict(source), "<state dict>"
    else:
        path = Path(source)
        name = str(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such weights file")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            if path.suffix == ".safetensors":
                state = load_file(str(path), device="cpu")
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            detail = _unpickler_detail(str(exc))
            if "Unsupported global" not in detail:
                raise CheckpointError(f"{path}: not a readable PyTorch weights file ({detail})") from None
            raise CheckpointError(
                f"{path}: refused to unpickle: the file holds objects other than tensors and plain containers "
                f"({detail}); it was read with weights_only=True so that no code inside it runs. Re-save it "
                f"as a plain state dict (torch.save(model.state_dict(), ...)) or as .safetensors"
            ) from None
        except (RuntimeError, OSError, EOFError, ValueError, SafetensorError) as exc:
            raise CheckpointError(f"{path}: not a readable PyTorch or safetensors weights file ({exc})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and set(state) == {wrapper} and isinstance(state[wrapper], Mapping):
            log.info("%s: using the state dict under %r", name, wrapper)
            state = dict(state[wrapper])
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{name}: expected a state dict (a mapping of names to tensors)")
    return state, name


def _unpickler_detail(message: str) -> str:
    """The one informative line of torch's weights_only error (not its advice to turn the check off)."""
    marker = "WeightsUnpickler error:"
    if marker in message:
        message = message.split(marker, 1)[1]
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[0] if lines else "unreadable pickle"


def adapt_in_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """First-conv kernel (O, C_src, ...) for `in_channels` inputs (rule in the module docstring)."""
    if weight.shape[1] == in_channels:
        return weight
    summed = weight.sum(dim=1, keepdim=True)
    repeats = [1, in_channels] + [1] * (weight.dim() - 2)
    return (summed / in_channels).repeat(repeats)


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], name: str, what: str,
                 own_keys: frozenset[str] = frozenset()) -> None:
    """Load `state` into `module`, every key matched except `own_keys` (ours, kept at initialisation)."""
    target = module.state_dict()
    # BatchNorm counters are absent from checkpoints saved before PyTorch 0.4.1: not weights, so tolerated
    missing = sorted(k for k in set(target) - set(state) - own_keys if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(target))
    shapes = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
        for k in set(state) & set(target)
        if state[k].shape != target[k].shape
    )
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
            if keys:
                more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
                parts.append(f"{len(keys)} {label}: {keys[:_SHOW]}{more}")
        raise CheckpointError(
            f"{name}: does not match the {what} layout: " + "; ".join(parts)
            + ". Check that the file is the right checkpoint and the model's arch_args (depth, width) match it."
        )
    merged = dict(target)
    merged.update({k: v.to(dtype=target[k].dtype) for k, v in state.items()})
    module.load_state_dict(merged, strict=True)
    if own_keys:
        log.info("%s: kept at initialisation (not in the %s layout): %s", name, what, sorted(own_keys))


def _split_classifier(state: dict[str, torch.Tensor], prefix: str, name: str) -> dict[str, torch.Tensor]:
    classifier = {k: v for k, v in state.items() if k.startswith(prefix)}
    for k in classifier:
        del state[k]
    if classifier:
        log.info("%s: dropped the source classifier %s (the model has its own head)", name, sorted(classifier))
    return classifier


def _require(model: Age2HieNet, backbone_type: type, function: str) -> None:
    if not isinstance(model, Age2HieNet) or not isinstance(model.backbone, backbone_type):
        arch = model.config.arch if isinstance(model, Age2HieNet) else type(model).__name__
        raise TypeError(f"{function} needs an Age2HieNet with a {backbone_type.__name__} backbone, got {arch!r}")


def load_kinetics_r3d18(model: Age2HieNet, source: StateDictSource) -> Age2HieNet:
    """Load a torchvision video `r3d_18` state dict (e.g. Kinetics-400) into a 3D ResNet backbone, in place.

    Every backbone key must match (the model must be resnet3d_18 at width 1); the Kinetics `fc` is dropped
    and logged; the RGB stem is adapted to the model's input channels. Returns `model`.
    """
    _require(model, ResNet3d, "load_kinetics_r3d18")
    state, name = read_state_dict(source)
    return _load_r3d(model, state, name, "torchvision r3d_18")


def _load_r3d(model: Age2HieNet, state: dict[str, torch.Tensor], name: str, what: str) -> Age2HieNet:
    _split_classifier(state, "fc.", name)
    if "stem.0.weight" in state:
        state["stem.0.weight"] = adapt_in_channels(state["stem.0.weight"], model.in_channels)
    _load_strict(model.backbone, state, name, what)
    log.info("%s: loaded %d backbone tensors into %s", name, len(state), model.config.arch)
    return model


def load_imagenet_resnet18(model: Age2HieNet, source: StateDictSource) -> Age2HieNet:
    """Load a torchvision `resnet18` state dict (e.g. ImageNet) in place, and return `model`.

    - slice_resnet18: loaded key for key (attention-pool weights, if any, stay at initialisation).
    - resnet3d_18: inflated first with `inflate_2d_to_3d`. Build it with `arch_args={"stem_pool": True}`
      to keep the 2D network's max-pool and so its scale; without it a note is logged.
    The ImageNet `fc` is dropped and logged; the RGB conv1 is adapted to the model's input channels.
    """
    if isinstance(model, Age2HieNet) and isinstance(model.backbone, ResNet3d):
        state, name = read_state_dict(source)
        if not isinstance(model.backbone.stem_pool, nn.MaxPool3d):
            log.info(
                "%s: the 2D ResNet-18 max-pools after its stem; this 3D model has stem_pool=False, so it sees "
                "the inflated filters at twice the in-plane resolution", name,
            )
        return _load_r3d(model, inflate_2d_to_3d(state), name, "inflated torchvision resnet18")
    _require(model, SliceResNet18, "load_imagenet_resnet18")
    state, name = read_state_dict(source)
    _split_classifier(state, "fc.", name)
    if "conv1.weight" in state:
        state["conv1.weight"] = adapt_in_channels(state["conv1.weight"], model.in_channels)
    own = frozenset(k for k in model.backbone.state_dict() if k.startswith("pool."))
    _load_strict(model.backbone, state, name, "torchvision resnet18", own_keys=own)
    log.info("%s: loaded %d backbone tensors into %s", name, len(state), model.config.arch)
    return model


def load_sfcn_ukbiobank(model: Age2HieNet, source: StateDictSource) -> Age2HieNet:
    """Load the UKBiobank_deep_pretrain SFCN brain-age weights (`run_20190719_00_epoch_best_mae.p`) in place.

    The `module.` prefix of its DataParallel save is stripped. `feature_extractor.*` must match the backbone
    exactly. `classifier.conv_6` (64 -> 40 bins) is loaded into the head when it is an `age_softbin` head of
    the same size (its bins then should be the original 42-82 years, which is checked and warned about);
    otherwise it is dropped and logged. Returns `model`.
    """
    _require(model, SFCN, "load_sfcn_ukbiobank")
    state, name = read_state_dict(source)
    state = {re.sub(r"^module\.", "", k): v for k, v in state.items()}
    classifier = {k: v for k, v in state.items() if k.startswith("classifier.")}
    backbone = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    if "feature_extractor.conv_0.0.weight" in backbone:
        key = "feature_extractor.conv_0.0.weight"
        backbone[key] = adapt_in_channels(backbone[key], model.in_channels)
    _load_strict(model.backbone, backbone, name, "UKBiobank SFCN feature_extractor")

    weight, bias = classifier.get("classifier.conv_6.weight"), classifier.get("classifier.conv_6.bias")
    head = model.head
    fits = (
        isinstance(head, AgeSoftBinHead)
        and weight is not None
        and bias is not None
        and weight.dim() == 5
        and tuple(weight.shape[:2]) == tuple(head.fc.weight.shape)
        and tuple(bias.shape) == tuple(head.fc.bias.shape)
    )
    if fits:
        with torch.no_grad():
            head.fc.weight.copy_(weight.flatten(1))
            head.fc.bias.copy_(bias)
        if head.age_range != (42.0, 82.0):
            log.warning(
                "%s: the UK Biobank bins span 42-82 years; this head's age_range is %s, so its ages will be "
                "wrong until it is retrained", name, list(head.age_range),
            )
        log.info("%s: loaded classifier.conv_6 into the age_softbin head", name)
    elif classifier:
        log.info("%s: dropped the source classifier %s (the model's %r head does not match it)",
                 name, sorted(classifier), model.config.head)
    log.info("%s: loaded %d backbone tensors into %s", name, len(backbone), model.config.arch)
    return model


_2D_TO_3D = [
    (re.compile(r"^conv1\.weight$"), "stem.0.weight"),
    (re.compile(r"^bn1\.(.+)$"), r"stem.1.\1"),
    (re.compile(r"^(layer\d+\.\d+)\.conv1\.weight$"), r"\1.conv1.0.weight"),
    (re.compile(r"^(layer\d+\.\d+)\.bn1\.(.+)$"), r"\1.conv1.1.\2"),
    (re.compile(r"^(layer\d+\.\d+)\.conv2\.weight$"), r"\1.conv2.0.weight"),
    (re.compile(r"^(layer\d+\.\d+)\.bn2\.(.+)$"), r"\1.conv2.1.\2"),
    (re.compile(r"^(layer\d+\.\d+\.downsample\.[01]\..+)$"), r"\1"),
    (re.compile(r"^(fc\..+)$"), r"\1"),
]


def inflate_2d_to_3d(resnet_state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision 2D ResNet-18/34 state dict -> the r3d key layout, 2D kernels inflated I3D-style.

    Each 2D kernel (O, I, k, k) becomes (O, I, d, k, k) by repeating it d times along depth and dividing
    by d (d = 3 for the stem's 7x7 and the 3x3 convs, 1 for the 1x1 downsample convs). On an input that
    is constant along depth, every inflated conv then gives exactly the 2D conv's response, away from the
    zero-padded first and last slices: no rescaling is needed. BatchNorm statistics and `fc` carry over
    unchanged. The 2D stem's max-pool has no 3D counterpart in r3d: build the 3D model with
    `stem_pool=True` for matching scales. An unknown key is a CheckpointError naming it.
    """
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in resnet_state_dict.items():
        for pattern, replacement in _2D_TO_3D:
            if pattern.match(key):
                new_key = pattern.sub(replacement, key)
                break
        else:
            unknown.append(key)
            continue
        if value.dim() == 4:  # conv kernel (O, I, kh, kw)
            depth = 1 if value.shape[-1] == 1 else 3
            value = value.unsqueeze(2).repeat(1, 1, depth, 1, 1) / depth
        out[new_key] = value
    if unknown:
        raise CheckpointError(
            f"inflate_2d_to_3d: keys not in the torchvision resnet18/34 layout: {sorted(unknown)[:_SHOW]}"
            + (f" (+{len(unknown) - _SHOW} more)" if len(unknown) > _SHOW else "")
        )
    return out
