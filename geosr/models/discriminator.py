"""The DEGAN discriminator (Section 2.3): a CNN that scores HR images as real or generated.

    x (B, in, H, W), H, W >= 32
      block0   conv3x3 s1 in->n, LeakyReLU(0.2)       (no batch norm on the input block, as in SRGAN)
      block1   conv3x3 s2 n->n, BN, LeakyReLU          -> shallow features (B, n, H/2, W/2)
      block2   s1 n->2n     block3 s2 2n->2n
      block4   s1 2n->4n    block5 s2 4n->4n
      block6   s1 4n->8n    block7 s2 8n->8n          -> deep features (B, 8n, H/16, W/16)
      pool     AdaptiveAvgPool2d(6) of shallow and deep, concatenated   (B, 9n, 6, 6)
      fc1      (9n*36 -> 1024), LeakyReLU, fc2 (1024 -> 1)              one logit per image

Channels start at n (default 64) and double every other block; strides alternate 1 and 2. The paper says the
discriminator uses both shallow and deep features; geosr pools the output of the first strided block and of the last
block to 6x6 and feeds both to fc1. ``forward(x, return_features=True)`` also returns every block's output, for
feature-matching losses.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(c_in: int, c_out: int, stride: int, norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


class Discriminator(nn.Module):
    """Conv-BN-LeakyReLU discriminator with shallow + deep pooled features and a two-layer head."""

    min_size = 32

    def __init__(self, *, in_channels: int = 3, base: int = 64, n_blocks: int = 8, fc: int = 1024) -> None:
        super().__init__()
        if n_blocks < 2 or n_blocks % 2:
            raise ValueError(f"n_blocks must be an even number >= 2, got {n_blocks}")
        blocks = []
        c_in, c = in_channels, base
        for i in range(n_blocks):
            if i > 0 and i % 2 == 0:
                c = 2 * c_in
            stride = 1 if i % 2 == 0 else 2
            blocks.append(_block(c_in, c, stride, norm=i > 0))
            c_in = c
        self.blocks = nn.ModuleList(blocks)
        self.shallow_index = 1
        self.pool = nn.AdaptiveAvgPool2d(6)
        self.fc1 = nn.Linear((base + c) * 36, fc)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.fc2 = nn.Linear(fc, 1)

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """One logit per image, shape (B,); with ``return_features`` also the list of block outputs."""
        if x.ndim != 4 or min(x.shape[-2:]) < self.min_size:
            raise ValueError(f"discriminator needs (B, C, H, W) with H, W >= {self.min_size}, got {tuple(x.shape)}")
        feats = []
        h = x
        for block in self.blocks:
            h = block(h)
            feats.append(h)
        shallow = self.pool(feats[self.shallow_index])  # (B, n, 6, 6)
        deep = self.pool(h)  # (B, 8n, 6, 6)
        z = torch.cat([shallow, deep], dim=1).flatten(1)  # (B, 9n*36)
        logit = self.fc2(self.act(self.fc1(z))).squeeze(1)  # (B,)
        return (logit, feats) if return_features else logit
