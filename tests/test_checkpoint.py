"""Model files: bit-exact round trips, and refusal of pickles, truncated files and bad cards, before building."""

import json
import pickle
import struct

import pytest
import torch

from geosr.checkpoint import ModelCard, load_generator, read_card, save_generator
from geosr.errors import ModelFileError
from geosr.models import Generator, GeneratorConfig


def _tiny(scale=4, **kw):
    torch.manual_seed(0)
    cfg = GeneratorConfig(scale=scale, channels=16, n_blocks=1, refiner_base=8, **kw)
    return Generator(cfg), ModelCard(config=cfg, description="test", training={"steps": 3}, metrics={"psnr": 1.0})


def test_default_x4_round_trip_is_bit_exact(tmp_path):
    cfg = GeneratorConfig(scale=4)
    model = Generator(cfg)
    path = save_generator(tmp_path / "m.safetensors", model, ModelCard(config=cfg))
    loaded, card = load_generator(path)
    assert card.config == cfg
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(1, 3, 12, 12)
    with torch.inference_mode():
        assert torch.equal(model.eval()(x), loaded(x))


def test_card_round_trip(tmp_path):
    model, card = _tiny(scale=2)
    path = save_generator(tmp_path / "m.safetensors", model, card)
    again = read_card(path)
    assert again.to_dict() == card.to_dict()
    assert again.scale == 2 and again.training == {"steps": 3}


def test_fp16_files_load_as_fp32(tmp_path):
    model, card = _tiny()
    path = save_generator(tmp_path / "m.safetensors", model, card, dtype=torch.float16)
    loaded, _ = load_generator(path)
    w = next(loaded.parameters())
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, next(model.parameters()), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors"])
def test_pickle_files_are_refused(tmp_path, suffix):
    model, _ = _tiny()
    path = tmp_path / f"model{suffix}"
    torch.save(model.state_dict(), path)  # zip-based pickle
    with pytest.raises(ModelFileError, match="pickled PyTorch file") as err:
        load_generator(path)
    assert str(path) in str(err.value)
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(ModelFileError, match="pickled"):
        load_generator(legacy)


def test_truncated_and_corrupt_files_are_refused(tmp_path):
    model, card = _tiny()
    good = save_generator(tmp_path / "m.safetensors", model, card).read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelFileError, match="truncated") as err:
        load_generator(truncated)
    assert "truncated.safetensors" in str(err.value)
    for name, data in [("empty", b""), ("garbage", b"\x05" * 64), ("header", good[:100])]:
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(data)
        with pytest.raises(ModelFileError, match=name):
            load_generator(path)
    with pytest.raises(ModelFileError, match="no such model file"):
        load_generator(tmp_path / "missing.safetensors")


def _rewrite_card(src, dst, edit):
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    card = json.loads(header["__metadata__"]["geosr_card"])
    edit(card)
    header["__metadata__"]["geosr_card"] = json.dumps(card)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    dst.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["config"].update(in_channels=10**6), "in_channels"),
        (lambda c: c["config"].update(channels=10**7), "channels"),
        (lambda c: c["config"].update(scale=8), "scale"),
        (lambda c: c["config"].update(mystery=1), "unknown generator settings"),
        (lambda c: c.update(tile_size=0), "tile_size"),
        (lambda c: c.update(bands=["a"]), "band names"),
        (lambda c: c.pop("config"), "no generator config"),
        (lambda c: c.update(format_version=99), "upgrade geosr"),
    ],
)
def test_invalid_cards_are_refused_before_building(tmp_path, edit, message):
    model, card = _tiny()
    src = save_generator(tmp_path / "m.safetensors", model, card)
    bad = tmp_path / "bad.safetensors"
    _rewrite_card(src, bad, edit)
    with pytest.raises(ModelFileError, match=message) as err:
        load_generator(bad)
    assert "bad.safetensors" in str(err.value)


def test_weights_that_do_not_match_the_card_are_refused(tmp_path):
    model, card = _tiny()
    src = save_generator(tmp_path / "m.safetensors", model, card)
    bad = tmp_path / "bad.safetensors"
    _rewrite_card(src, bad, lambda c: c["config"].update(n_blocks=2))
    with pytest.raises(ModelFileError, match="do not match"):
        load_generator(bad)


def test_a_safetensors_file_without_card_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ModelFileError, match="without a geosr model card"):
        load_generator(path)


@pytest.mark.parametrize("low_byte", [0x80, 0x50])
def test_header_lengths_that_look_like_pickle_magic_still_load(tmp_path, low_byte):
    """A header length whose first byte is 0x80 (pickle's opcode) or 'P' (zip's) is still a safetensors file."""
    model, card = _tiny()
    for pad in range(0, 300):
        card.description = "x" * pad
        path = save_generator(tmp_path / "m.safetensors", model, card)
        if path.read_bytes()[0] == low_byte:
            break
    else:
        pytest.skip("no padding gave that header length")
    loaded, again = load_generator(path)
    assert again.description == card.description
