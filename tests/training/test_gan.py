"""The GAN step: the model learns, both networks change, D is frozen while G steps, the terms are named."""

from __future__ import annotations

import copy

import pytest
import torch

from geosr.models import Discriminator, Generator, GeneratorConfig
from geosr.training.ema import EMA
from geosr.training.gan import Amp, LossWeights, discriminator_step, generator_step
from geosr.training.losses import ContentLoss
from geosr.training.vgg import VGGFeatures

TINY = GeneratorConfig(scale=2, channels=16, n_blocks=1, refiner_base=8)
AMP = Amp.create(torch.device("cpu"), "fp32")


def batch(seed: int = 0, n: int = 4, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth patterns in [-0.8, 0.8] (HR) and their 2x2 means (LR)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    f = torch.rand(n, 3, 2, generator=g) * 3 + 0.5
    ph = torch.rand(n, 3, 1, 1, generator=g) * 6.28
    hr = 0.8 * torch.sin(6.28 * (f[..., 0, None, None] * xx + f[..., 1, None, None] * yy) + ph)
    lr = torch.nn.functional.avg_pool2d(hr, 2)
    return hr, lr


def snapshot(m: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in m.parameters()]


def changed(before: list[torch.Tensor], m: torch.nn.Module) -> float:
    """Fraction of parameter tensors that changed."""
    after = list(m.parameters())
    return sum(not torch.equal(a, b) for a, b in zip(before, after)) / len(after)


def test_a_few_steps_on_a_fixed_batch_reduce_the_content_loss():
    torch.manual_seed(0)
    g = Generator(TINY)
    opt = torch.optim.Adam(g.parameters(), lr=2e-3)
    hr, lr = batch()
    content = ContentLoss()
    losses = []
    for _ in range(40):
        _, terms = generator_step(
            g, lr, hr, opt=opt, content=content, weights=LossWeights(1, 0, 0, 0), amp=AMP, diffusion=True
        )
        losses.append(terms["mse"].item())
    assert losses[-1] < 0.85 * losses[0], losses


def test_one_gan_step_changes_both_networks_and_freezes_d_during_the_g_step():
    torch.manual_seed(0)
    g, d = Generator(TINY), Discriminator(in_channels=3, base=8)
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-3)
    hr, lr = batch()
    g0, d0 = snapshot(g), snapshot(d)
    sr, terms = generator_step(g, lr, hr, opt=opt_g, content=ContentLoss(), weights=LossWeights(), amp=AMP, d=d)
    assert changed(g0, g) > 0.9
    assert changed(d0, d) == 0  # frozen: the G step must not move D
    assert all(p.grad is None for p in d.parameters()) and not any(p.requires_grad for p in d.parameters())
    assert not sr.requires_grad
    terms.update(discriminator_step(d, hr, sr, opt=opt_d, amp=AMP))
    assert changed(d0, d) > 0.9
    assert set(terms) == {
        "mse",
        "adversarial",
        "g_total",
        "d_real",
        "d_fake",
        "d_total",
        "d_logit_real",
        "d_logit_fake",
    }
    w = LossWeights()
    expected = w.mse * terms["mse"] + w.adversarial * terms["adversarial"]
    assert terms["g_total"].item() == pytest.approx(expected.item())


def test_feature_matching_and_perceptual_terms_are_named():
    torch.manual_seed(0)
    g, d = Generator(TINY), Discriminator(in_channels=3, base=8)
    opt = torch.optim.Adam(g.parameters(), lr=1e-3)
    hr, lr = batch()
    content = ContentLoss(VGGFeatures.random_for_tests("conv2_2"))
    _, terms = generator_step(
        g, lr, hr, opt=opt, content=content, weights=LossWeights(0.5, 0.5, 0.1, 1.0), amp=AMP, d=d, diffusion=False
    )
    assert {"mse", "perceptual", "adversarial", "feature_matching", "g_total"} == set(terms)
    assert all(torch.isfinite(v) for v in terms.values())


def test_bf16_autocast_step_runs_on_the_cpu():
    torch.manual_seed(0)
    g = Generator(TINY)
    opt = torch.optim.Adam(g.parameters(), lr=1e-3)
    hr, lr = batch()
    _, terms = generator_step(
        g,
        lr,
        hr,
        opt=opt,
        content=ContentLoss(),
        weights=LossWeights(1, 0, 0, 0),
        amp=Amp.create(torch.device("cpu"), "bf16"),
    )
    assert terms["mse"].dtype == torch.float32 and torch.isfinite(terms["mse"])
    assert all(p.dtype == torch.float32 for p in g.parameters())


def test_ema_warms_up_then_averages():
    m = torch.nn.Linear(2, 2)
    ema = EMA(m, decay=0.999)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema.update(m)  # first update: d = 1/10, so 90 % of the new weights
    before = ema.model.weight.clone()
    for _ in range(5):
        ema.update(m)
    assert (ema.model.weight - 1).abs().max() < (before - 1).abs().max()
    state = ema.state_dict()
    other = EMA(torch.nn.Linear(2, 2))
    other.load_state_dict(state)
    assert other.updates == 6 and torch.equal(other.model.weight, ema.model.weight)


def test_the_d_step_reports_its_mean_logits_and_they_part_as_d_learns():
    """d_logit_real and d_logit_fake are the means of D's logits on HR and SR before its step (as BasicSR logs them);
    a D that trains against a fixed generator pushes them apart (real up, fake down)."""
    torch.manual_seed(0)
    g, d = Generator(TINY), Discriminator(in_channels=3, base=8)
    hr, lr = batch()
    with torch.no_grad():
        sr = g(lr)
        reference = copy.deepcopy(d)
        real, fake = reference(hr).mean().item(), reference(sr).mean().item()
    opt = torch.optim.Adam(d.parameters(), lr=2e-3)
    terms = discriminator_step(d, hr, sr, opt=opt, amp=AMP)
    assert terms["d_logit_real"].item() == pytest.approx(real, abs=1e-6)
    assert terms["d_logit_fake"].item() == pytest.approx(fake, abs=1e-6)
    assert not terms["d_logit_real"].requires_grad
    gap = terms["d_logit_real"] - terms["d_logit_fake"]
    for _ in range(30):
        terms = discriminator_step(d, hr, sr, opt=opt, amp=AMP)
    assert terms["d_logit_real"] - terms["d_logit_fake"] > gap + 1
