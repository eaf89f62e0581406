"""The refiner: the paper's "diffusion module" (Section 2.2.1), a small U-Net with a transformer bottleneck.

It works on the upsampled 128-channel features of the generator:

    x (B, 128, H, W)
      down0: conv3x3 s1 128->64   (B, 64, H, W)        -> skip0
      down1: conv3x3 s2 64->128   (B, 128, H/2, W/2)   -> skip1
      down2: conv3x3 s2 128->256  (B, 256, H/4, W/4)   bottleneck
      + embed(t)                  Linear(1,256)-ReLU-Linear(256,256), broadcast over the bottleneck
      transformer                 one encoder layer, 4 heads, FFN 1024, dropout 0.1, over the H/4*W/4 tokens
      up1: convT 4/2/1 256->128   + conv1x1(skip1)
      up0: convT 4/2/1 128->64    + conv1x1(skip0)
      out: conv3x3 64->128
    returns x + out               (residual refinement)

Choices where the paper is silent: the refiner's output is added to its input (residual refinement, so an untrained
refiner starts close to the identity); ReLU after each down conv and up conv; the transformer is post-norm as in
``nn.TransformerEncoderLayer``'s default. H and W must be multiples of 4: the generator pads before and crops after.
The diffusion step ``t`` is 0 at inference (clean features); training may perturb the features and pass the level.
"""

from __future__ import annotations

import torch
from torch import nn

REFINERS = ("none", "unet", "unet-transformer")


class TimeEmbedding(nn.Sequential):
    """t in [0, 1], shape (B,), to a (B, dim) embedding: Linear(1, dim)-ReLU-Linear(dim, dim)."""

    def __init__(self, dim: int) -> None:
        super().__init__(nn.Linear(1, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))


class Refiner(nn.Module):
    """U-Net refiner with an optional transformer bottleneck; see the module docstring for the layout."""

    def __init__(
        self,
        *,
        channels: int = 128,
        base: int = 64,
        transformer: bool = True,
        heads: int = 4,
        ffn: int = 1024,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        act = nn.ReLU(inplace=True)
        self.down0 = nn.Sequential(nn.Conv2d(channels, base, 3, 1, 1), act)
        self.down1 = nn.Sequential(nn.Conv2d(base, 2 * base, 3, 2, 1), act)
        self.down2 = nn.Sequential(nn.Conv2d(2 * base, 4 * base, 3, 2, 1), act)
        self.time = TimeEmbedding(4 * base)
        self.transformer = (
            nn.TransformerEncoderLayer(
                d_model=4 * base, nhead=heads, dim_feedforward=ffn, dropout=dropout, batch_first=True
            )
            if transformer
            else None
        )
        self.up1 = nn.Sequential(nn.ConvTranspose2d(4 * base, 2 * base, 4, 2, 1), act)
        self.skip1 = nn.Conv2d(2 * base, 2 * base, 1)
        self.up0 = nn.Sequential(nn.ConvTranspose2d(2 * base, base, 4, 2, 1), act)
        self.skip0 = nn.Conv2d(base, base, 1)
        self.out = nn.Conv2d(base, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        if h % 4 or w % 4:
            raise ValueError(f"refiner input must have H and W divisible by 4, got {h}x{w}")
        skips = []
        h0 = self.down0(x)  # (B, base, H, W)
        skips.append(h0)
        h1 = self.down1(h0)  # (B, 2base, H/2, W/2)
        skips.append(h1)
        z = self.down2(h1)  # (B, 4base, H/4, W/4)
        z = z + self.time(t.view(b, 1).to(z.dtype))[:, :, None, None]
        if self.transformer is not None:
            c, hq, wq = z.shape[1:]
            tokens = z.flatten(2).transpose(1, 2)  # (B, H/4*W/4, 4base)
            tokens = self.transformer(tokens)
            z = tokens.transpose(1, 2).reshape(b, c, hq, wq)
        u = self.up1(z) + self.skip1(skips.pop())  # (B, 2base, H/2, W/2)
        u = self.up0(u) + self.skip0(skips.pop())  # (B, base, H, W)
        return x + self.out(u)  # (B, channels, H, W)
