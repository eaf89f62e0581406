"""VGG19 features for the perceptual loss, with torchvision's layer layout and its ImageNet weights.

The module is written here (no torchvision dependency) with the layout of ``torchvision.models.vgg19().features``, so
torchvision's weight file ``vgg19-dcbb9e9d.pth`` loads into it key for key. The weights come from, in order:

1. ``--vgg-weights PATH``: a local copy (.pth as torchvision ships it, or .safetensors);
2. torch hub's cache (``$TORCH_HOME/hub/checkpoints``), downloaded there once by
   ``torch.hub.load_state_dict_from_url`` and checked against the hash in the file name.

Offline with nothing cached, ``load_vgg19_weights`` raises VGGWeightsError naming both remedies (a local file, or
``--perceptual-weight 0``). The network is never silently left random: building one without weights takes the
explicit, test-only ``VGGFeatures.random_for_tests``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from geosr.errors import GeosrError

log = logging.getLogger("geosr.training")

VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
VGG19_FILE = "vgg19-dcbb9e9d.pth"
# torchvision's configuration "E": channels of the 3x3 convs, "M" for 2x2 max pooling.
VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGWeightsError(GeosrError):
    """The VGG19 weights for the perceptual loss cannot be found or read."""


def layer_index(name: str) -> int:
    """Index in ``features`` of a layer named like 'conv5_4' (the conv, before its ReLU) or 'relu5_4'."""
    kind, _, pos = name.partition("_")
    block, conv = int(kind[-1]), int(pos)
    i = 0
    b, c = 1, 0
    for v in VGG19_LAYOUT:
        if v == "M":
            b, c = b + 1, 0
            i += 1
            continue
        c += 1
        if (b, c) == (block, conv):
            return i if kind.startswith("conv") else i + 1
        i += 2
    raise ValueError(f"no VGG19 layer {name!r}")


class VGGFeatures(nn.Module):
    """VGG19 ``features`` up to and including ``layer``; input in [-1, 1] (ImageNet-normalised inside); frozen."""

    def __init__(self, state_dict: dict[str, torch.Tensor], layer: str = "conv5_4") -> None:
        super().__init__()
        last = layer_index(layer)
        layers: list[nn.Module] = []
        c_in = 3
        for v in VGG19_LAYOUT:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(inplace=True)]
                c_in = v
        self.features = nn.Sequential(*layers[: last + 1])
        self.layer = layer
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if state_dict is not None:
            wanted = {k for k in self.state_dict() if k.startswith("features.")}
            missing = sorted(wanted - set(state_dict))
            if missing:
                raise VGGWeightsError(f"the VGG19 weights lack {missing[:3]}; is this torchvision's {VGG19_FILE}?")
            try:
                self.load_state_dict({k: state_dict[k] for k in wanted}, strict=False)
            except RuntimeError as exc:
                raise VGGWeightsError(f"the VGG19 weights do not fit torchvision's VGG19 ({exc})") from None
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def random_for_tests(cls, layer: str = "conv2_2") -> VGGFeatures:
        """A randomly initialised VGG: for tests of the training code only, never for real training."""
        return cls(None, layer)  # type: ignore[arg-type]

    def train(self, mode: bool = True) -> VGGFeatures:
        return super().train(False)  # always in eval mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = ((x + 1) / 2 - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return self.features(x)


def _hub_file() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


def load_vgg19_weights(path: str | os.PathLike | None = None, *, download: bool = True) -> dict[str, torch.Tensor]:
    """torchvision's VGG19 ImageNet weights: from ``path``, or torch hub's cache (downloading them once).

    Raises VGGWeightsError, naming both remedies, when they cannot be read or fetched.
    """
    remedy = (
        f"pass --vgg-weights PATH to a local copy of torchvision's {VGG19_FILE} ({VGG19_URL}), or train without the "
        "perceptual loss: --perceptual-weight 0 (optionally with --feature-matching-weight)"
    )
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise VGGWeightsError(f"{path}: no such VGG19 weight file; {remedy}")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                return load_file(str(path))
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a corrupt or foreign file: say so in one line
            # torch's own text is a page that ends by suggesting weights_only=False, which geosr never does
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "weights_only" in reason or "Weights only load failed" in reason:
                reason = "not a PyTorch state dict of tensors"
            raise VGGWeightsError(
                f"{path}: cannot read VGG19 weights ({reason[:200]}): not a VGG19 checkpoint (vgg19-dcbb9e9d.pth or "
                f"a .safetensors of its weights); {remedy}"
            ) from None
    cached = _hub_file()
    if not cached.is_file() and not download:
        raise VGGWeightsError(f"the VGG19 weights are not in torch hub's cache ({cached}); {remedy}")
    try:
        if not cached.is_file():
            log.warning("downloading the VGG19 ImageNet weights (548 MB) into %s, once", cached.parent)
        return torch.hub.load_state_dict_from_url(
            VGG19_URL, map_location="cpu", progress=False, check_hash=True, weights_only=True
        )
    except Exception as exc:  # URLError, HTTPError, hash mismatch, a half-written file...
        raise VGGWeightsError(
            f"the VGG19 weights are not cached ({cached}) and cannot be downloaded ({type(exc).__name__}: {exc}); "
            f"{remedy}"
        ) from None
