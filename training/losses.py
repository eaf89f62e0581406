"""The losses of DEGAN (the paper's Section 2.4), as modules that return named, unweighted terms.

    generator:     mse_weight * MSE(SR, HR)
                 + l1_weight * L1(SR, HR)                                        (optional; 0 in the paper)
                 + perceptual_weight * Charbonnier(VGG19(SR), VGG19(HR))        (features of ``vgg_layer``)
                 + adversarial_weight * BCEWithLogits(D(SR), real)
                 + feature_matching_weight * mean over D's blocks of L1(D_k(SR), D_k(HR))   (optional, VGG-free)
    discriminator: BCEWithLogits(D(HR), real) + BCEWithLogits(D(SR.detach()), fake)

The paper's weights are 0.5 / 0.5 / 0.1; feature matching (Salimans et al. 2016, as in pix2pixHD) is geosr's
addition: a perceptual term computed on the discriminator's own features, for training where the VGG19 weights are
not available. Every term is computed in float32, whatever the autocast precision of the networks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def charbonnier(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """mean(sqrt((a - b)^2 + eps^2)): a smooth L1."""
    d = a.float() - b.float()
    return torch.sqrt(d * d + eps * eps).mean()


class ContentLoss(nn.Module):
    """Pixel MSE, the pixel L1 when ``l1``, and the VGG-feature Charbonnier loss when a VGG is given; returns
    {'mse': ..., 'l1': ..., 'perceptual': ...}."""

    def __init__(self, vgg: nn.Module | None = None, eps: float = 1e-3, *, l1: bool = False) -> None:
        super().__init__()
        self.vgg = vgg
        self.eps = eps
        self.l1 = l1

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = {"mse": F.mse_loss(sr.float(), hr.float())}
        if self.l1:
            terms["l1"] = F.l1_loss(sr.float(), hr.float())
        if self.vgg is not None:
            with torch.no_grad():
                target = self.vgg(hr)
            terms["perceptual"] = charbonnier(self.vgg(sr), target, self.eps)
        return terms


def adversarial_g(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's adversarial loss: BCE of D's logits on SR against 'real'."""
    logits = fake_logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def adversarial_d(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """The discriminator's losses on HR (target real) and on detached SR (target fake)."""
    real, fake = real_logits.float(), fake_logits.float()
    return {
        "d_real": F.binary_cross_entropy_with_logits(real, torch.ones_like(real)),
        "d_fake": F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)),
    }


def feature_matching(fake_feats: list[torch.Tensor], real_feats: list[torch.Tensor]) -> torch.Tensor:
    """Mean over blocks of the L1 distance between D's features of SR and of HR (HR's are constants)."""
    terms = [F.l1_loss(f.float(), r.detach().float()) for f, r in zip(fake_feats, real_feats)]
    return torch.stack(terms).mean()
