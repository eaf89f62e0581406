"""Attention blocks of the generator: CBAM and the variants of the paper's ablation (Table 4).

- ``ChannelAttention`` (CAM): a shared MLP of 1x1 convs (reduction 16) over global average and max pooling.
- ``SpatialAttention`` (SAM): a 7x7 conv over the per-pixel channel mean and max.
- ``CBAM``: channel attention, then spatial attention on its output.
- ``SqueezeExcite`` (SE): the classic squeeze-and-excitation block (average pooling only).

The paper's last CBAM equation names the channel-refined map X_ca as the block's output, which would make the spatial
branch dead weight; geosr follows the original CBAM (Woo et al. 2018) and returns the spatially weighted map X_sa.
"""

from __future__ import annotations

import torch
from torch import nn

from geosr.limits import ATTENTIONS


def _bottleneck_mlp(channels: int, reduction: int) -> nn.Sequential:
    """The shared MLP of channel attention, as 1x1 convs: C -> C/reduction -> C."""
    hidden = max(channels // reduction, 1)
    return nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))


class ChannelAttention(nn.Module):
    """Channel attention: sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))) * x."""

    def __init__(self, *, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.mlp = _bottleneck_mlp(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))  # (B, C, 1, 1)
        mx = self.mlp(x.amax(dim=(2, 3), keepdim=True))  # (B, C, 1, 1)
        return x * torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    """Spatial attention: sigmoid(conv7x7([mean_c(x), max_c(x)])) * x."""

    def __init__(self, *, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)  # (B, 2, H, W)
        return x * torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """Convolutional block attention module: channel attention, then spatial attention (output X_sa)."""

    def __init__(self, *, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels=channels, reduction=reduction)
        self.spatial = SpatialAttention(kernel_size=kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: sigmoid(MLP(avgpool(x))) * x."""

    def __init__(self, *, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.mlp = _bottleneck_mlp(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.mlp(x.mean(dim=(2, 3), keepdim=True)))


def make_attention(kind: str, channels: int) -> nn.Module:
    """The attention block named by ``kind`` (one of ATTENTIONS) for ``channels`` channels."""
    if kind == "none":
        return nn.Identity()
    if kind == "se":
        return SqueezeExcite(channels=channels)
    if kind == "cam":
        return ChannelAttention(channels=channels)
    if kind == "sam":
        return SpatialAttention()
    if kind == "cbam":
        return CBAM(channels=channels)
    raise ValueError(f"attention {kind!r} is not one of {', '.join(ATTENTIONS)}")
