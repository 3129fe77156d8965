"""2D ResNet-18 slice model in torchvision's `resnet18` key layout (He et al. 2016), as in the
YouTube-to-brain study (Malik & Bzdok 2022): ImageNet weights load key for key (`load_imagenet_resnet18`).

A volume (N, C, X, Y, Z) is cut into its slices along `axis` (default "z": for RAS-ordered arrays, axial
slices of shape (X, Y)); every slice goes through the same 2D network (shared weights), giving one
feature vector per slice, and the slices are pooled into one vector per volume:

- `pooling="mean"`: the plain average over all slices (no weights; background slices count too).
- `pooling="attention"`: gated attention pooling (Ilse et al. 2018, attention-based deep MIL): per-slice
  score `w . (tanh(V h) * sigmoid(U h))`, softmax over the slices, weighted sum. Its weights are ours
  (`pool.V`, `pool.U`, `pool.w`), not part of the ImageNet layout, and start at random.

Keys: `conv1`, `bn1`, `layer1..4.M.{conv1,bn1,conv2,bn2}`, `layerN.0.downsample.0/1` (+ `pool.*`).
The ImageNet `fc` is not part of the backbone: the task head lives in `Age2HieNet.head`.
"""
from __future__ import annotations

import torch
from torch import nn

from age2hie_hub.models.resnet3d import _check_common, _init_weights, scaled_width

SLICE_AXES = ("x", "y", "z")
POOLINGS = ("mean", "attention")
# (N, C, X, Y, Z) -> (N, S, C, a, b), the two in-plane axes kept in order (as resnet3d's depth_axis)
_PERMUTATIONS = {"x": (0, 2, 1, 3, 4), "y": (0, 3, 1, 2, 4), "z": (0, 4, 1, 2, 3)}


class BasicBlock2d(nn.Module):
    """torchvision BasicBlock: conv1/bn1/relu, conv2/bn2, + identity or downsample (1x1 conv + BN)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + residual)


class GatedAttentionPool(nn.Module):
    """(N, S, F) -> (N, F): attention-weighted mean over slices (Ilse et al. 2018, gated variant)."""

    def __init__(self, num_features: int, hidden: int) -> None:
        super().__init__()
        self.V = nn.Linear(num_features, hidden)
        self.U = nn.Linear(num_features, hidden)
        self.w = nn.Linear(hidden, 1)

    def weights(self, h: torch.Tensor) -> torch.Tensor:
        """Per-slice weights (N, S), summing to 1 over slices."""
        score = self.w(torch.tanh(self.V(h)) * torch.sigmoid(self.U(h))).squeeze(-1)
        return torch.softmax(score, dim=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return (self.weights(h).unsqueeze(-1) * h).sum(dim=1)


class MeanPool(nn.Module):
    """(N, S, F) -> (N, F): the mean over slices."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mean(dim=1)


class SliceResNet18(nn.Module):
    """Backbone: volume (N, C, X, Y, Z) -> features (N, 512 * width), via 2D ResNet-18 on each slice."""

    def __init__(
        self,
        *,
        in_channels: int = 1,
        width: float = 1.0,
        axis: str = "z",
        pooling: str = "mean",
        attention_dim: int = 128,
    ) -> None:
        super().__init__()
        _check_common(in_channels, width)
        if axis not in SLICE_AXES:
            raise ValueError(f"axis must be one of {SLICE_AXES}, got {axis!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if not isinstance(attention_dim, int) or attention_dim < 1:
            raise ValueError(f"attention_dim must be a positive integer, got {attention_dim!r}")
        self.in_channels = in_channels
        self.axis = axis
        self._perm = _PERMUTATIONS[axis]
        planes = [scaled_width(c, width) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(in_channels, planes[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_planes = planes[0]
        for index, out_planes in enumerate(planes, start=1):
            stride = 1 if index == 1 else 2
            blocks = [BasicBlock2d(in_planes, out_planes, stride), BasicBlock2d(out_planes, out_planes)]
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
            in_planes = out_planes
        self.num_features = in_planes
        _init_weights(self)
        self.pool: nn.Module = GatedAttentionPool(in_planes, attention_dim) if pooling == "attention" else MeanPool()

    def encode_slices(self, slices: torch.Tensor) -> torch.Tensor:
        """2D images (M, C, a, b) -> features (M, F): torchvision resnet18 up to its average pool."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(slices))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))

    def slice_features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-slice features (N, S, F) of volumes (N, C, X, Y, Z)."""
        n = x.shape[0]
        slices = x.permute(self._perm)
        s, c, a, b = slices.shape[1:]
        return self.encode_slices(slices.reshape(n * s, c, a, b)).reshape(n, s, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.slice_features(x))
