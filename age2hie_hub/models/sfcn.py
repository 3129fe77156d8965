"""SFCN, the Simple Fully Convolutional Network of Peng et al. 2021 (Medical Image Analysis 68:101871).

Key layout of the public UKBiobank_deep_pretrain `SFCN` class: `feature_extractor.conv_i.0` (Conv3d, with
bias) and `.1` (BN) for i = 0..5; blocks 0-4 are conv 3x3x3 -> BN -> max-pool 2 -> ReLU, block 5 is conv
1x1x1 -> BN -> ReLU. The original classifier (AvgPool3d [5, 6, 5] -> dropout -> `classifier.conv_6`, a 1x1x1
conv to 40 age bins) becomes: global mean pooling here + an `age_softbin` head (`head.fc`), which is the same
computation for the 160x192x160 UK Biobank input and works for any input size. `load_sfcn_ukbiobank` maps
`classifier.conv_6` onto that head.

Axes are used as given, (N, C, X, Y, Z), as the original reads NIfTI arrays. Each side must be at least
2**5 = 32 voxels (five stride-2 max-pools).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from age2hie_hub.models.resnet3d import _check_common, scaled_width

DEFAULT_CHANNELS = (32, 64, 128, 256, 256, 64)


class SFCN(nn.Module):
    """Backbone: volume (N, C, X, Y, Z) -> features (N, channels[-1] * width)."""

    def __init__(
        self,
        *,
        in_channels: int = 1,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        _check_common(in_channels, width)
        if (
            not isinstance(channels, (list, tuple))
            or len(channels) < 2
            or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels)
        ):
            raise ValueError(f"channels must be a list of >= 2 positive integers, got {channels!r}")
        widths = [scaled_width(c, width) for c in channels]
        self.in_channels = in_channels
        self.n_pools = len(widths) - 1
        self.feature_extractor = nn.Sequential()
        previous = in_channels
        for i, out in enumerate(widths):
            last = i == len(widths) - 1
            layers: list[nn.Module] = [
                nn.Conv3d(previous, out, kernel_size=1 if last else 3, padding=0 if last else 1),
                nn.BatchNorm3d(out),
            ]
            if not last:
                layers.append(nn.MaxPool3d(2, stride=2))
            layers.append(nn.ReLU())
            self.feature_extractor.add_module(f"conv_{i}", nn.Sequential(*layers))
            previous = out
        self.num_features = previous

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map before pooling: (N, F, X / 32, Y / 32, Z / 32) for the default 6 blocks."""
        smallest = 2**self.n_pools
        if not torch.jit.is_tracing() and min(x.shape[2:]) < smallest:
            raise ValueError(
                f"sfcn: every spatial side must be >= {smallest} voxels ({self.n_pools} max-pools), "
                f"got input shape {tuple(x.shape)}; pad or resample the volume"
            )
        return self.feature_extractor(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean(dim=(2, 3, 4))
