"""3D ResNet-10/18/34 in the state-dict key layout of torchvision's video `r3d_18` (Tran et al. 2018).

Keys: `stem.0` (Conv3d 3x7x7, stride 1x2x2, pad 1x3x3) / `stem.1` (BN); `layerN.M.conv1.0` / `conv1.1`,
`conv2.0` / `conv2.1` (3x3x3 convs + BN), `layerN.0.downsample.0/1` (1x1x1 conv + BN). The Kinetics
classifier `fc` is not part of the backbone: heads live in `Age2HieNet.head`. So a Kinetics-400 `r3d_18`
state dict loads key for key (see `importers.load_kinetics_r3d18`).

Axes: inputs are (N, C, X, Y, Z). `depth_axis` names the volume axis that plays the video's time axis
(the stem's kernel 3 / stride 1 axis); the network sees (N, C, depth, a, b) with the other two axes in
their order. Default "z": MRI slice axis, usually the thick one, so it is not halved in the stem.
`stem_pool=True` adds torchvision `resnet18`'s 3x3 stride-2 max-pool (in-plane only) after the stem,
which an inflated ImageNet ResNet-18 needs to see features at the scale it was trained at. It has no
weights, so the key layout is unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

DEPTH_AXES = ("x", "y", "z")
# (N, C, X, Y, Z) -> (N, C, depth, a, b)
_PERMUTATIONS = {"x": (0, 1, 2, 3, 4), "y": (0, 1, 3, 2, 4), "z": (0, 1, 4, 2, 3)}
BLOCKS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def scaled_width(base: int, width: float) -> int:
    """Channels of a slim (width < 1) or wide variant; at least 1."""
    return max(1, int(round(base * width)))


def _conv3x3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock3d(nn.Module):
    """torchvision video BasicBlock with Conv3DSimple: conv1 = [conv, BN, ReLU], conv2 = [conv, BN]."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(_conv3x3x3(in_planes, planes, stride), nn.BatchNorm3d(planes), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(_conv3x3x3(planes, planes), nn.BatchNorm3d(planes))
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv3d(in_planes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm3d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + residual)


class ResNet3d(nn.Module):
    """Backbone: volume (N, C, X, Y, Z) -> features (N, F), F = 512 * width."""

    def __init__(
        self,
        depth: int = 18,
        *,
        in_channels: int = 1,
        width: float = 1.0,
        depth_axis: str = "z",
        stem_pool: bool = False,
    ) -> None:
        super().__init__()
        if depth not in BLOCKS:
            raise ValueError(f"ResNet3d depth must be one of {sorted(BLOCKS)}, got {depth!r}")
        _check_common(in_channels, width)
        if depth_axis not in DEPTH_AXES:
            raise ValueError(f"depth_axis must be one of {DEPTH_AXES}, got {depth_axis!r}")
        self.depth = depth
        self.in_channels = in_channels
        self.depth_axis = depth_axis
        self._perm = _PERMUTATIONS[depth_axis]
        planes = [scaled_width(c, width) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, planes[0], kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(planes[0]),
            nn.ReLU(inplace=True),
        )
        self.stem_pool: nn.Module = (
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)) if stem_pool else nn.Identity()
        )
        in_planes = planes[0]
        for index, (n_blocks, out_planes) in enumerate(zip(BLOCKS[depth], planes), start=1):
            stride = 1 if index == 1 else 2
            blocks = [BasicBlock3d(in_planes, out_planes, stride)]
            blocks += [BasicBlock3d(out_planes, out_planes) for _ in range(n_blocks - 1)]
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
            in_planes = out_planes
        self.num_features = in_planes
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map before pooling: (N, F, depth', a', b') in the network's (depth, a, b) axis order."""
        x = self.stem_pool(self.stem(x.permute(self._perm)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # global mean, not AdaptiveAvgPool: identical result, any input size, exports cleanly to ONNX
        return self.forward_features(x).mean(dim=(2, 3, 4))


def _check_common(in_channels: int, width: float) -> None:
    if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
    if not isinstance(width, (int, float)) or not 0 < width <= 8:
        raise ValueError(f"width must be a number in (0, 8], got {width!r}")


def _init_weights(module: nn.Module) -> None:
    """torchvision's initialisation: Kaiming (fan_out) convs, BN weight 1 / bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
