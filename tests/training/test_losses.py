"""Losses and the VGG19 feature network: values by hand, torchvision's layout, the weight sources and their errors."""

from __future__ import annotations

import math
import urllib.error

import pytest
import torch

from geosr.training import vgg as vggmod
from geosr.training.losses import adversarial_d, adversarial_g, charbonnier, feature_matching
from geosr.training.vgg import VGG19_LAYOUT, VGGFeatures, VGGWeightsError, layer_index, load_vgg19_weights


def test_charbonnier_by_hand():
    a, b = torch.zeros(4), torch.tensor([0.0, 3.0, 4.0, 0.0])
    assert charbonnier(a, b, eps=0.0).item() == pytest.approx(7 / 4)
    assert charbonnier(a, a, eps=1e-3).item() == pytest.approx(1e-3)


def test_adversarial_losses_by_hand():
    zero = torch.zeros(3)
    assert adversarial_g(zero).item() == pytest.approx(math.log(2))
    terms = adversarial_d(torch.full((2,), 20.0), torch.full((2,), -20.0))
    assert terms["d_real"].item() < 1e-8 and terms["d_fake"].item() < 1e-8
    f = [torch.ones(1, 2, 4, 4), torch.zeros(1, 3, 2, 2)]
    assert feature_matching(f, [torch.zeros_like(x) for x in f]).item() == pytest.approx(0.5)


def test_layer_indices_follow_torchvision():
    assert layer_index("conv1_1") == 0
    assert layer_index("conv2_2") == 7
    assert layer_index("conv5_4") == 34 and layer_index("relu5_4") == 35
    with pytest.raises(ValueError):
        layer_index("conv6_1")


def torchvision_like_state(layer_count: int = 37) -> dict[str, torch.Tensor]:
    """Random weights with the keys and shapes of torchvision's vgg19 (features and a classifier)."""
    state, i, c_in = {}, 0, 3
    for v in VGG19_LAYOUT:
        if v == "M":
            i += 1
            continue
        state[f"features.{i}.weight"] = torch.randn(v, c_in, 3, 3) * 0.01
        state[f"features.{i}.bias"] = torch.zeros(v)
        c_in, i = v, i + 2
    state["classifier.0.weight"] = torch.zeros(2, 2)
    return state


def test_features_load_torchvision_keys_and_stay_frozen(tmp_path):
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save(torchvision_like_state(), path)
    net = VGGFeatures(load_vgg19_weights(path), "conv2_2")
    assert len(net.features) == 8 and not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training
    assert net(torch.zeros(1, 3, 16, 16)).shape == (1, 128, 8, 8)
    with pytest.raises(VGGWeightsError, match="lack"):
        VGGFeatures({"features.0.weight": torch.zeros(64, 3, 3, 3)}, "conv2_2")


def test_offline_without_a_cache_names_both_remedies(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(VGGWeightsError) as err:
        load_vgg19_weights()
    message = str(err.value)
    assert "--vgg-weights PATH" in message and "--perceptual-weight 0" in message and "no network" in message
    assert str(tmp_path / "hub") in message
    with pytest.raises(VGGWeightsError, match="no such VGG19 weight file"):
        load_vgg19_weights(tmp_path / "missing.pth")
    assert vggmod.VGG19_URL.endswith("vgg19-dcbb9e9d.pth")
