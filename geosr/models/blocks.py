"""Convolutional building blocks of the generator: conv + activation, residual blocks, sub-pixel upsampling.

Choices where the paper is silent:
- Residual blocks carry no batch norm (as in EDSR and later SR generators): batch norm in SR generators causes
  artefacts and couples tiles to batch statistics; the parameter count barely changes (7 k of 7 M).
- Activations are plain ReLU after each conv, except the second conv of a residual block (its sum is not
  activated, as in EDSR) and the output conv (followed by tanh in the generator).
"""

from __future__ import annotations

import torch
from torch import nn


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    """A 3x3 convolution that keeps the size (padding 1) at stride 1."""
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)


class ConvReLU(nn.Sequential):
    """3x3 conv followed by ReLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(conv3x3(c_in, c_out), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """x + res_scale * conv(relu(conv(x))): the paper's Eq. 5-6 (res_scale 1), without batch norm."""

    def __init__(self, channels: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.res_scale = res_scale
        self.conv1 = conv3x3(channels, channels)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.conv2(self.act(self.conv1(x)))
        return x + (branch if self.res_scale == 1 else self.res_scale * branch)


class ResidualStack(nn.Module):
    """n residual blocks with one long skip around the stack (the paper's Eq. 7): x + blocks(x)."""

    def __init__(self, channels: int, n_blocks: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[ResidualBlock(channels, res_scale) for _ in range(n_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.blocks(x)


class SubPixelUpsample(nn.Sequential):
    """Sub-pixel upsampling: per x2 stage a conv to 4C channels and PixelShuffle(2); x3 as one PixelShuffle(3) stage."""

    def __init__(self, channels: int, scale: int) -> None:
        if scale in (2, 4):
            stages = {2: 1, 4: 2}[scale]
            layers: list[nn.Module] = []
            for _ in range(stages):
                layers += [conv3x3(channels, 4 * channels), nn.PixelShuffle(2), nn.ReLU(inplace=True)]
        elif scale == 3:
            layers = [conv3x3(channels, 9 * channels), nn.PixelShuffle(3), nn.ReLU(inplace=True)]
        else:
            raise ValueError(f"scale {scale} is not supported; use 2, 3 or 4")
        super().__init__(*layers)
