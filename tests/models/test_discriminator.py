"""The DEGAN discriminator: one logit per image for any size >= 32, shallow and deep features."""

import pytest
import torch

from geosr.models import Discriminator

torch.set_num_threads(2)


@pytest.mark.parametrize("size", [32, 45, 256])
def test_one_logit_per_image(size):
    d = Discriminator(base=16)
    logits = d(torch.randn(2, 3, size, size))
    assert logits.shape == (2,)


def test_default_width_and_features():
    d = Discriminator()
    logits, feats = d(torch.randn(1, 3, 32, 32), return_features=True)
    assert logits.shape == (1,)
    assert [f.shape[1] for f in feats] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert feats[-1].shape[-1] == 2  # four stride-2 blocks: 32 -> 2


def test_shallow_features_reach_the_logit():
    d = Discriminator(base=8)
    x = torch.randn(2, 3, 64, 64)
    _, feats = d(x, return_features=True)
    d.zero_grad()
    d(x).sum().backward()
    # fc1 takes the pooled shallow features first: their weights get gradient.
    shallow_cols = 8 * 36
    assert d.fc1.weight.grad[:, :shallow_cols].abs().sum() > 0


def test_too_small_input_is_refused():
    with pytest.raises(ValueError, match="H, W >= 32"):
        Discriminator(base=8)(torch.randn(1, 3, 31, 64))
