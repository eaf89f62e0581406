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
import torch.nn.functional as F
from torch import nn


class TimeEmbedding(nn.Sequential):
    """t in [0, 1], shape (B,), to a (B, dim) embedding: Linear(1, dim)-ReLU-Linear(dim, dim)."""

    def __init__(self, dim: int) -> None:
        super().__init__(nn.Linear(1, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))


class EncoderLayer(nn.Module):
    """A post-norm transformer encoder layer (ReLU FFN), computed with ``scaled_dot_product_attention``.

    The same computation and the same parameter names as ``nn.TransformerEncoderLayer(batch_first=True)``, so model
    files of either load into the other; SDPA never materialises the (tokens x tokens) attention matrix (a 64-pixel
    x4 tile has 4096 tokens: 4 heads of 4096^2 scores would be 256 MB per tile in fp32) and runs its fused kernels
    in bf16 on AMX CPUs and GPUs.
    """

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"transformer width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.dropout_p = dropout
        # holds in_proj_weight/in_proj_bias and out_proj, as nn.TransformerEncoderLayer names them
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, ffn)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        attn = self.self_attn
        qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)  # (B, N, 3D)
        q, k, v = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, N, D/H)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout_p if self.training else 0.0)
        return attn.out_proj(a.transpose(1, 2).reshape(b, n, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout1(self.attention(x)))
        return self.norm2(x + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(x))))))


def set_attention_dropout(model: nn.Module, p: float) -> int:
    """Set the training dropout on the attention weights of every encoder layer in ``model``; the layers changed.

    Only this dropout decides which kernel ``scaled_dot_product_attention`` takes: PyTorch's fused CPU kernel has
    none, so with p > 0 a CPU training step builds the (tokens x tokens) weights of every head and draws a mask over
    them (half of a step at 256-px patches). The FFN and residual dropouts are element-wise and stay as built.
    Inference never drops anything.
    """
    if not 0 <= p < 1:
        raise ValueError(f"attention dropout must be in [0, 1), got {p}")
    layers = [m for m in model.modules() if isinstance(m, EncoderLayer)]
    for layer in layers:
        layer.dropout_p = float(p)
    return len(layers)


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
        self.transformer = EncoderLayer(4 * base, heads, ffn, dropout) if transformer else None
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
