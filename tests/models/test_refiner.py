"""The refiner's transformer layer: the computation and parameter names of nn.TransformerEncoderLayer, via SDPA."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from geosr.models import Generator, GeneratorConfig
from geosr.models.refiner import EncoderLayer, set_attention_dropout


def test_encoder_layer_matches_torch_transformer_encoder_layer():
    torch.manual_seed(0)
    reference = nn.TransformerEncoderLayer(64, 4, 128, 0.1, batch_first=True)
    layer = EncoderLayer(64, 4, 128, 0.1)
    assert list(layer.state_dict()) == list(reference.state_dict())  # model files load either way
    layer.load_state_dict(reference.state_dict())
    x = torch.randn(2, 50, 64, requires_grad=True)
    reference.eval(), layer.eval()
    with torch.inference_mode():  # torch's fast path
        assert torch.allclose(layer(x), reference(x), atol=1e-5)
    for m in (reference, layer):  # training mode, no dropout: same outputs and gradients
        m.train()
        for d in (m.dropout, m.dropout1, m.dropout2):
            d.p = 0.0
    reference.self_attn.dropout, layer.dropout_p = 0.0, 0.0
    (ga,) = torch.autograd.grad(reference(x).square().sum(), x)
    (gb,) = torch.autograd.grad(layer(x).square().sum(), x)
    assert torch.allclose(ga, gb, atol=1e-4)


def test_encoder_layer_runs_in_bf16_autocast_on_the_cpu():
    layer = EncoderLayer(64, 4, 128, 0.0).eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(torch.randn(1, 256, 64))
    assert y.shape == (1, 256, 64) and torch.isfinite(y.float()).all()


def test_attention_dropout_is_set_on_every_layer_and_only_there():
    g = Generator(GeneratorConfig(scale=2, channels=16, n_blocks=1, refiner_base=8))
    assert set_attention_dropout(g, 0.0) == 1
    layer = next(m for m in g.modules() if isinstance(m, EncoderLayer))
    assert layer.dropout_p == 0.0 and layer.dropout.p == layer.dropout1.p == 0.1  # the element-wise ones stay
    for d in (layer.dropout, layer.dropout1, layer.dropout2):
        d.p = 0.0
    layer.train()
    x = torch.randn(1, 64, 32)
    with torch.no_grad():
        assert torch.equal(layer(x), layer(x))  # nothing random is left in a training step
    set_attention_dropout(g, 0.5)
    with torch.no_grad():
        assert not torch.equal(layer(x), layer(x))
    with pytest.raises(ValueError, match=r"attention dropout must be in \[0, 1\), got 1"):
        set_attention_dropout(g, 1.0)
