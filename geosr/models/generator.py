"""The DEGAN generator (Li et al., Front. Earth Sci. 2025, Section 2.2).

    x (B, in, h, w) in [-1, 1]
      head      convs in->16->32->64->128, ReLU              (B, 128, h, w)
      body      14 residual blocks + one long skip           (B, 128, h, w)
      attention CBAM (or an ablation variant)                (B, 128, h, w)
      upsample  sub-pixel, x2 per stage (x3 in one stage)    (B, 128, H, W), H = s*h
      refiner   U-Net "diffusion" refiner, transformer       (B, 128, H, W)
      tail      convs 128->64->32->16->out, ReLU between     (B, out, H, W)
      tanh                                                   in [-1, 1]

With ``global_skip`` (off in the paper's configuration) the output is ``bicubic(x) + tail``: the network learns only
the residual over bicubic upsampling, which it reaches in far fewer training steps than the identity itself. The
residual is not squashed by tanh: a saturated tanh has no gradient, and one loss spike would leave the residual stuck
at +-1 for good (seen in training). Callers clamp the output to [-1, 1].

Any input size works: the refiner needs H and W divisible by 4, so the upsampled features are padded (edge replication)
before it and cropped after it.

Parameter counts of the default configuration: 6.97 M at x2 and 7.56 M at x4 (the paper: 6.99 M and 7.58 M).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geosr.limits import ATTENTIONS, REFINERS, SCALES
from geosr.models.attention import make_attention
from geosr.models.blocks import ConvReLU, ResidualStack, SubPixelUpsample, conv3x3
from geosr.models.refiner import Refiner


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything needed to rebuild a generator; stored in every model file.

    scale: upscaling factor (2, 3 or 4).
    in_channels, out_channels: bands in and out (3 for RGB; multispectral models use more).
    channels: width of the trunk (128 in the paper).
    n_blocks: residual blocks (14 reproduces the paper's parameter counts).
    attention: 'cbam' (paper), 'se', 'cam', 'sam' or 'none' (Table 4 ablations).
    refiner: 'unet-transformer' (paper), 'unet' or 'none' (Table 5 ablations).
    refiner_base: C_base of the refiner (64 in the paper).
    global_skip: add the bicubic upsampling of the input to the output (off in the paper).
    res_scale: factor on each residual block's branch (1.0 in the paper; EDSR's 0.1 keeps a deep stack without
        normalisation from amplifying its input block after block under Adam).
    """

    scale: int = 4
    in_channels: int = 3
    out_channels: int = 3
    channels: int = 128
    n_blocks: int = 14
    attention: str = "cbam"
    refiner: str = "unet-transformer"
    refiner_base: int = 64
    global_skip: bool = False
    res_scale: float = 1.0

    def __post_init__(self) -> None:
        checks = [
            (self.scale in SCALES, f"scale must be one of {SCALES}, got {self.scale!r}"),
            (_int_in(self.in_channels, 1, 64), f"in_channels must be 1..64, got {self.in_channels!r}"),
            (_int_in(self.out_channels, 1, 64), f"out_channels must be 1..64, got {self.out_channels!r}"),
            (_int_in(self.channels, 16, 512), f"channels must be 16..512, got {self.channels!r}"),
            (_int_in(self.n_blocks, 0, 64), f"n_blocks must be 0..64, got {self.n_blocks!r}"),
            (self.attention in ATTENTIONS, f"attention must be one of {ATTENTIONS}, got {self.attention!r}"),
            (self.refiner in REFINERS, f"refiner must be one of {REFINERS}, got {self.refiner!r}"),
            (_int_in(self.refiner_base, 8, 256), f"refiner_base must be 8..256, got {self.refiner_base!r}"),
            (isinstance(self.global_skip, bool), f"global_skip must be true or false, got {self.global_skip!r}"),
            (
                isinstance(self.res_scale, (int, float))
                and not isinstance(self.res_scale, bool)
                and 0 < self.res_scale <= 1,
                f"res_scale must be in (0, 1], got {self.res_scale!r}",
            ),
        ]
        if self.global_skip and self.in_channels != self.out_channels:
            checks.append((False, "global_skip needs in_channels == out_channels"))
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneratorConfig:
        """Build from a dict, refusing unknown keys (a model file from a newer geosr says so instead of misbehaving)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown generator settings {unknown}")
        return cls(**data)


def _int_in(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


class Generator(nn.Module):
    """The DEGAN generator; inputs and outputs are in [-1, 1] (see the module docstring for the layout)."""

    def __init__(self, config: GeneratorConfig | None = None, *, init_weights: bool = True) -> None:
        """Build the generator ``config`` describes (the paper's default when None).

        init_weights=False skips ``reset_parameters``: for a network whose weights are all loaded next. Built that
        way under ``torch.device("meta")`` it holds no storage and draws no random numbers (geosr.checkpoint loads
        model files so); on a real device its weights are PyTorch's per-layer defaults, not a trainable start.
        """
        super().__init__()
        self.config = config = config or GeneratorConfig()
        c = config.channels
        self.head = nn.Sequential(
            ConvReLU(config.in_channels, c // 8),
            ConvReLU(c // 8, c // 4),
            ConvReLU(c // 4, c // 2),
            ConvReLU(c // 2, c),
        )
        self.body = ResidualStack(c, config.n_blocks, res_scale=config.res_scale)
        self.attention = make_attention(config.attention, c)
        self.upsample = SubPixelUpsample(c, config.scale)
        if config.refiner == "none":
            self.refiner = None
        else:
            self.refiner = Refiner(
                channels=c, base=config.refiner_base, transformer=config.refiner == "unet-transformer"
            )
        self.tail = nn.Sequential(
            ConvReLU(c, c // 2),
            ConvReLU(c // 2, c // 4),
            ConvReLU(c // 4, c // 8),
            conv3x3(c // 8, config.out_channels),
        )
        if init_weights:
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """He (Kaiming) initialisation of every conv for the ReLUs that follow, zero biases, and the second conv of
        each residual block scaled by 0.1 so the deep stack starts near the identity. PyTorch's default conv
        initialisation shrinks the signal at every layer, and a 40-layer ReLU net without normalisation then starts
        as a constant function."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for block in self.body.blocks:
            block.conv2.weight.data.mul_(0.1)
        # The output conv feeds tanh, not a ReLU: keep it small so training starts out of saturation.
        nn.init.kaiming_normal_(self.tail[-1].weight, nonlinearity="linear")
        self.tail[-1].weight.data.mul_(0.1)

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, x: torch.Tensor, t: torch.Tensor | float | None = None, perturb: bool = False) -> torch.Tensor:
        """Super-resolve ``x`` (B, in_channels, h, w) in [-1, 1] to (B, out_channels, s*h, s*w).

        t: the diffusion step in [0, 1], a float or a (B,) tensor; 0 (clean features) when None.
        perturb: add Gaussian noise of standard deviation ``t * std(features)`` to the refiner's input features
            (per sample), so the refiner learns to denoise at every level. Training only; inference keeps it off.
        """
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected input of shape (B, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        b, _, h, w = x.shape
        s = self.config.scale
        f = self.head(x)  # (B, C, h, w)
        f = self.body(f)  # (B, C, h, w)
        f = self.attention(f)  # (B, C, h, w)
        f = self.upsample(f)  # (B, C, H, W)
        if self.refiner is not None:
            t = _as_steps(t, b, f)
            if perturb:
                std = f.detach().float().std(dim=(1, 2, 3), keepdim=True).to(f.dtype)
                f = f + t.view(b, 1, 1, 1) * std * torch.randn_like(f)
            ph, pw = (-(s * h)) % 4, (-(s * w)) % 4
            if ph or pw:
                f = F.pad(f, (0, pw, 0, ph), mode="replicate")  # (B, C, H', W'), H', W' multiples of 4
            f = self.refiner(f, t)[:, :, : s * h, : s * w]  # (B, C, H, W)
        r = self.tail(f)  # (B, out, H, W)
        if self.config.global_skip:
            up = F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)
            return up + r
        return torch.tanh(r.float())  # in float32: under bf16 autocast tanh rounds to exactly +-1 from |r| > 3.5


def _as_steps(t: torch.Tensor | float | None, batch: int, like: torch.Tensor) -> torch.Tensor:
    """The diffusion step as a (B,) tensor on the features' device."""
    if t is None:
        return torch.zeros(batch, device=like.device)
    if not torch.is_tensor(t):
        return torch.full((batch,), float(t), device=like.device)
    return t.to(like.device).float().expand(batch) if t.ndim == 0 else t.to(like.device).float().view(batch)


def count_parameters(module: nn.Module) -> int:
    """The number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())
