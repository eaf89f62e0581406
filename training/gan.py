"""One training iteration of DEGAN, in the canonical order of SRGAN/BasicSR:

1. freeze D; SR = G(LR) (with the diffusion step: noise of level t ~ U(0, t_max) on the refiner's input, t passed);
   the generator loss (content + adversarial [+ feature matching]); step G;
2. unfreeze D; step D on HR (real) and SR.detach() (fake).

Without a discriminator (adversarial and feature-matching weights 0, or during the warm-up epochs) only step 1 runs,
on the content loss: no D forward at all. Each step returns its loss terms by name (unweighted, plus the weighted
totals ``g_total`` and ``d_total``) as detached tensors, so the caller decides when to synchronise. The D step also
returns D's mean logits on the real and the fake batch (``d_logit_real``, ``d_logit_fake``), as BasicSR logs them:
the first signal of a collapsing GAN is a D that wins outright (the two drift far apart and stay there).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from geosr.device import autocast
from geosr.training.losses import ContentLoss, adversarial_d, adversarial_g, feature_matching


@dataclass(frozen=True)
class LossWeights:
    """The weight of each loss term in the generator's loss."""

    mse: float = 0.5
    perceptual: float = 0.5
    adversarial: float = 0.1
    feature_matching: float = 0.0
    l1: float = 0.0


@dataclass
class Amp:
    """The autocast precision ('fp32', 'bf16', 'fp16') on a device, and the gradient scaler (active for fp16 only)."""

    device: torch.device
    precision: str
    scaler: torch.amp.GradScaler

    @classmethod
    def create(cls, device: torch.device, precision: str) -> Amp:
        return cls(device, precision, torch.amp.GradScaler(device.type, enabled=precision == "fp16"))

    def autocast(self):
        return autocast(self.device, self.precision)


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    """Freeze (False) or unfreeze (True) every parameter of ``module``."""
    for p in module.parameters():
        p.requires_grad_(flag)


def generate(g: nn.Module, lr: torch.Tensor, *, diffusion: bool, t_max: float = 1.0) -> torch.Tensor:
    """G(LR) for training: with ``diffusion``, per-sample noise levels t ~ U(0, t_max) perturb the refiner's input."""
    if not diffusion:
        return g(lr)
    t = torch.rand(lr.shape[0], device=lr.device) * t_max
    return g(lr, t=t, perturb=True)


def _step(loss: torch.Tensor, net: nn.Module, opt: torch.optim.Optimizer, amp: Amp, grad_clip: float | None) -> None:
    opt.zero_grad(set_to_none=True)
    amp.scaler.scale(loss).backward()
    if grad_clip:
        amp.scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    amp.scaler.step(opt)


def generator_step(
    g: nn.Module,
    lr: torch.Tensor,
    hr: torch.Tensor,
    *,
    opt: torch.optim.Optimizer,
    content: ContentLoss,
    weights: LossWeights,
    amp: Amp,
    d: nn.Module | None = None,
    diffusion: bool = True,
    t_max: float = 1.0,
    grad_clip: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Step G once; returns (SR detached, loss terms). ``d`` (the bare module, not a DDP wrapper) is frozen here.

    With ``d`` None the loss is the content loss alone (warm-up, or content-only training).
    """
    if d is not None:
        set_requires_grad(d, False)
    with amp.autocast():
        sr = generate(g, lr, diffusion=diffusion, t_max=t_max)
        terms = content(sr, hr)
        if d is not None:
            if weights.feature_matching > 0:
                fake_logits, fake_feats = d(sr, return_features=True)
                with torch.no_grad():
                    _, real_feats = d(hr, return_features=True)
                terms["feature_matching"] = feature_matching(fake_feats, real_feats)
            else:
                fake_logits = d(sr)
            terms["adversarial"] = adversarial_g(fake_logits)
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    _step(total, g, opt, amp, grad_clip)
    terms["g_total"] = total
    return sr.detach(), {k: v.detach() for k, v in terms.items()}


def discriminator_step(
    d: nn.Module,
    hr: torch.Tensor,
    sr: torch.Tensor,
    *,
    opt: torch.optim.Optimizer,
    amp: Amp,
    grad_clip: float | None = None,
) -> dict[str, torch.Tensor]:
    """Unfreeze D and step it on HR (real) and the detached SR (fake).

    Returns the losses d_real, d_fake, d_total and D's mean logits (before this step) d_logit_real, d_logit_fake.
    """
    set_requires_grad(d, True)
    with amp.autocast():
        real_logits = d(hr)
        fake_logits = d(sr.detach())
    terms = adversarial_d(real_logits, fake_logits)
    total = terms["d_real"] + terms["d_fake"]
    _step(total, d, opt, amp, grad_clip)
    terms["d_total"] = total
    terms["d_logit_real"] = real_logits.detach().float().mean()
    terms["d_logit_fake"] = fake_logits.detach().float().mean()
    return {k: v.detach() for k, v in terms.items()}
