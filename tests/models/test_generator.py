"""The DEGAN generator: shapes, parameter counts of the paper, ablation variants, padding for any size."""

import pytest
import torch

from geosr.limits import ATTENTIONS, REFINERS
from geosr.models import Generator, GeneratorConfig, count_parameters

torch.set_num_threads(2)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shape_on_odd_sizes(scale):
    model = Generator(GeneratorConfig(scale=scale)).eval()
    x = torch.rand(2, 3, 37, 53) * 2 - 1
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (2, 3, 37 * scale, 53 * scale)
    assert y.abs().max() <= 1.0  # tanh output


@pytest.mark.parametrize("scale, paper_millions", [(2, 6.99), (4, 7.58)])
def test_parameter_count_matches_the_paper(scale, paper_millions):
    n = count_parameters(Generator(GeneratorConfig(scale=scale)))
    assert abs(n / 1e6 - paper_millions) / paper_millions < 0.02, n


def test_scales_differ_by_one_subpixel_conv():
    n2 = count_parameters(Generator(GeneratorConfig(scale=2)))
    n4 = count_parameters(Generator(GeneratorConfig(scale=4)))
    assert n4 - n2 == 128 * 512 * 9 + 512


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("refiner", REFINERS)
def test_every_ablation_variant_runs_forward_and_backward(attention, refiner):
    cfg = GeneratorConfig(scale=2, channels=32, n_blocks=2, attention=attention, refiner=refiner, refiner_base=16)
    model = Generator(cfg).train()
    x = torch.rand(2, 3, 10, 14) * 2 - 1
    y = model(x, t=torch.rand(2), perturb=True)
    assert y.shape == (2, 3, 20, 28)
    y.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("size", [(1, 1), (1, 5), (3, 2), (7, 9)])
def test_tiny_inputs_work(size):
    model = Generator(GeneratorConfig(scale=3, channels=16, n_blocks=1, refiner_base=8)).eval()
    with torch.inference_mode():
        y = model(torch.zeros(1, 3, *size))
    assert y.shape == (1, 3, 3 * size[0], 3 * size[1])


def test_multispectral_channels_and_global_skip():
    cfg = GeneratorConfig(
        scale=2, in_channels=4, out_channels=4, channels=16, n_blocks=1, refiner_base=8, global_skip=True
    )
    model = Generator(cfg).eval()
    with torch.inference_mode():
        for p in model.tail[-1].parameters():  # zero residual: the output is exactly the bicubic upsampling
            p.zero_()
        x = torch.rand(1, 4, 9, 11) * 2 - 1
        y = model(x)
    expected = torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    torch.testing.assert_close(y, expected)


def test_inference_is_deterministic_and_t_changes_the_output():
    torch.manual_seed(0)
    model = Generator(GeneratorConfig(scale=2, channels=16, n_blocks=1, refiner_base=8)).eval()
    x = torch.rand(1, 3, 8, 8)
    with torch.inference_mode():
        a, b = model(x), model(x)
        c = model(x, t=1.0)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scale": 5}, "scale"),
        ({"in_channels": 0}, "in_channels"),
        ({"in_channels": 100000}, "in_channels"),
        ({"attention": "bam"}, "attention"),
        ({"refiner": "ddpm"}, "refiner"),
        ({"n_blocks": -1}, "n_blocks"),
        ({"global_skip": True, "in_channels": 4}, "global_skip"),
        ({"res_scale": 0}, "res_scale"),
        ({"res_scale": 2.0}, "res_scale"),
    ],
)
def test_invalid_configs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GeneratorConfig(**kwargs)


def test_wrong_input_channels_names_the_shape():
    model = Generator(GeneratorConfig(scale=2, channels=16, n_blocks=1, refiner="none"))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*\(1, 4, 8, 8\)"):
        model(torch.zeros(1, 4, 8, 8))


def test_res_scale_scales_every_residual_branch():
    torch.manual_seed(0)
    cfg = GeneratorConfig(scale=2, channels=16, n_blocks=2, refiner="none", attention="none")
    plain = Generator(cfg)
    scaled = Generator(GeneratorConfig(**{**cfg.to_dict(), "res_scale": 0.1}))
    scaled.load_state_dict(plain.state_dict())
    x = torch.rand(1, 16, 6, 6)
    block = plain.body.blocks[0]
    branch = block(x) - x
    torch.testing.assert_close(scaled.body.blocks[0](x) - x, 0.1 * branch)


def test_init_weights_false_on_meta_builds_the_same_network_without_storage_or_random_numbers():
    cfg = GeneratorConfig(scale=4)
    torch.manual_seed(0)
    rng = torch.get_rng_state()
    with torch.device("meta"):
        empty = Generator(cfg, init_weights=False)
    assert torch.equal(torch.get_rng_state(), rng)  # no initialisation drew from the global generator
    assert all(t.is_meta for t in empty.state_dict().values())
    full = Generator(cfg)
    assert {k: v.shape for k, v in empty.state_dict().items()} == {k: v.shape for k, v in full.state_dict().items()}
    assert [n for n, _ in empty.named_buffers()] == [n for n, _ in full.named_buffers()]


def test_init_weights_is_what_makes_the_start_trainable():
    """reset_parameters (He init, scaled residual branches) is skipped only on request."""
    cfg = GeneratorConfig(scale=2, channels=16, n_blocks=2, refiner_base=8)
    torch.manual_seed(0)
    plain = Generator(cfg)
    torch.manual_seed(0)
    raw = Generator(cfg, init_weights=False)
    assert all(b.conv2.bias.abs().sum() == 0 for b in plain.body.blocks)  # zero biases: reset_parameters ran
    assert all(b.conv2.bias.abs().sum() > 0 for b in raw.body.blocks)  # PyTorch's own defaults
