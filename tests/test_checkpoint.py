"""Model files: bit-exact round trips, loading without random initialisation, and refusal of pickles, truncated files
and bad cards, before building."""

import json
import pickle
import struct
import subprocess
import sys

import pytest
import torch

from geosr.bundled import resolve_model
from geosr.checkpoint import ModelCard, load_generator, read_card, save_generator
from geosr.errors import ModelFileError
from geosr.models import Generator, GeneratorConfig


@pytest.fixture(autouse=True, scope="module")
def warm_up_kernels():
    """Run every kernel of the generator once before any test compares outputs bit for bit.

    The first ``torch.tanh`` call of a process now and then computes half of its elements differently from every
    later call on the same input (PyTorch 2.13 CPU, 2 threads: up to 8e-6 on the generator's output, in about one
    process in ten); two models compared on that first call would differ for a reason that is not theirs.
    """
    torch.manual_seed(0)
    with torch.inference_mode():
        Generator(GeneratorConfig(scale=2, channels=16, n_blocks=1, refiner_base=8)).eval()(torch.rand(1, 3, 48, 48))


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


def test_an_onnx_export_given_as_a_model_names_what_it_is(tmp_path):
    path = tmp_path / "degan-x4.onnx"
    path.write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(64))  # an ONNX protobuf's first bytes
    with pytest.raises(ModelFileError, match="named as an ONNX model, .*use the one this was exported from"):
        load_generator(path)


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
        (lambda c: c.update(tile_size=0), "the card's tile size 0: must be an integer of 8..4096"),
        (lambda c: c.update(tile_size=64, overlap=33), "the card's overlap 33: must be an integer of 0..32"),
        (lambda c: c.update(overlap=True), "the card's overlap True"),
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


def poison(src, dst, names, value=float("nan")):
    """Copy a model file with the first element of each tensor in ``names`` overwritten by ``value`` in the
    tensor's own dtype (the header and card stay valid)."""
    raw = bytearray(src.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    for name in names:
        info = header[name]
        packed = struct.pack({"F32": "<f", "F16": "<e"}[info["dtype"]], value)
        start = 8 + n + info["data_offsets"][0]
        raw[start : start + len(packed)] = packed
    dst.write_bytes(bytes(raw))
    return dst


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_weights_with_nan_or_inf_are_refused_naming_the_first_bad_tensor(tmp_path, value, dtype):
    from geosr.checkpoint import init_from_model

    model, card = _tiny(scale=2)
    good = save_generator(tmp_path / "m.safetensors", model, card, dtype=dtype)
    names = sorted(model.state_dict())
    bad = poison(good, tmp_path / "bad.safetensors", [names[-1], names[3]], value)
    for load in (load_generator, lambda p: init_from_model(Generator(card.config), p)):
        with pytest.raises(ModelFileError) as err:
            load(bad)
        message = str(err.value)
        assert message.startswith(f"{bad}: weight {names[3]} holds NaN or infinite values")
        assert f"(2 of {len(names)} tensors do)" in message and "\n" not in message
    load_generator(good)  # the untouched file still loads


def test_export_refuses_weights_beyond_the_range_of_the_dtype(tmp_path):
    model, card = _tiny(scale=2)
    name = sorted(model.state_dict())[0]
    with torch.no_grad():
        model.state_dict()[name].view(-1)[0] = 1e6  # finite in fp32, infinite in fp16
    save_generator(tmp_path / "fp32.safetensors", model, card)
    with pytest.raises(ModelFileError, match=rf"fp16.safetensors: not written: weight {name} .* in float16"):
        save_generator(tmp_path / "fp16.safetensors", model, card, dtype=torch.float16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp32.safetensors"]


def test_a_failed_model_write_keeps_the_previous_file(tmp_path, monkeypatch):
    import errno
    import os

    from geosr.errors import WriteError

    model, card = _tiny(scale=2)
    path = save_generator(tmp_path / "m.safetensors", model, card)
    before = path.read_bytes()

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    card.description = "a second version"
    with pytest.raises(
        WriteError,
        match="m.safetensors: cannot write the model file .No space left on device.; its "
        "previous version is kept; free some space",
    ):
        save_generator(path, model, card)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


# --- loading builds the network once, on the meta device, with no random initialisation ----------------------------

VARIANTS = [
    {},
    {"attention": "se", "refiner": "unet"},
    {"attention": "sam", "refiner": "none"},
    {"attention": "none", "global_skip": True},
]


def _loaded_the_old_way(path):
    """A generator built normally (random init) with the file's weights copied in: what load_generator did before."""
    from safetensors.torch import load_file

    card = read_card(path)
    model = Generator(card.config)
    model.load_state_dict(load_file(str(path)))  # copy_ casts fp16 and bf16 to the parameters' float32
    return model.eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("variant", VARIANTS, ids=["cbam", "se-unet", "sam-norefiner", "skip"])
def test_loaded_model_is_bit_identical_to_one_built_normally(tmp_path, dtype, variant):
    model, card = _tiny(scale=2, **variant)
    path = save_generator(tmp_path / "m.safetensors", model, card, dtype=dtype)
    loaded, _ = load_generator(path)
    reference = _loaded_the_old_way(path)
    a, b = loaded.state_dict(), reference.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(2, 3, 9, 7, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(loaded(x), reference(x))


def test_bundled_model_loads_bit_identical_to_one_built_normally():
    path = resolve_model("degan-x2")
    loaded, _ = load_generator(path)
    reference = _loaded_the_old_way(path)
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(loaded(x), reference(x))


def test_loaded_model_has_real_float32_parameters_of_its_own(tmp_path):
    model, card = _tiny(scale=2)
    path = save_generator(tmp_path / "m.safetensors", model, card, dtype=torch.float16)
    loaded, _ = load_generator(path)
    reference = Generator(card.config)
    params = dict(loaded.named_parameters())
    assert params.keys() == dict(reference.named_parameters()).keys()
    for name, p in params.items():
        assert isinstance(p, torch.nn.Parameter) and p.requires_grad, name
        assert p.device.type == "cpu" and not p.is_meta and p.dtype == torch.float32, name
        assert p.is_contiguous() and p.untyped_storage().nbytes() == p.numel() * 4, name  # owns its memory
    assert [n for n, _ in loaded.named_buffers()] == [n for n, _ in reference.named_buffers()]
    assert not any(b.is_meta for b in loaded.buffers())
    assert not loaded.training
    # trainable as loaded: a backward pass reaches every parameter
    loaded.train()(torch.rand(1, 3, 6, 6)).square().mean().backward()
    assert all(p.grad is not None for p in loaded.parameters())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_channels_last_loading_equals_converting_after_loading(tmp_path, dtype):
    cl = torch.channels_last
    model, card = _tiny(scale=2)
    path = save_generator(tmp_path / "m.safetensors", model, card, dtype=dtype)
    direct, _ = load_generator(path, memory_format=cl)
    converted = load_generator(path)[0].to(memory_format=cl)
    a, b = dict(direct.named_parameters()), dict(converted.named_parameters())
    assert any(p.ndim == 4 for p in a.values())
    for name, p in a.items():
        assert p.stride() == b[name].stride() and torch.equal(p, b[name]), name
        assert p.is_contiguous(memory_format=cl if p.ndim == 4 else torch.contiguous_format), name
    x = (torch.rand(2, 3, 9, 7, generator=torch.Generator().manual_seed(3)) * 2 - 1).contiguous(memory_format=cl)
    with torch.inference_mode():
        assert torch.equal(direct(x), converted(x))


def test_loading_draws_no_random_numbers(tmp_path):
    model, card = _tiny(scale=2)
    path = save_generator(tmp_path / "m.safetensors", model, card)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    load_generator(path)
    assert torch.equal(torch.get_rng_state(), state)


def test_loading_imports_no_compiler_stack(tmp_path):
    """Initialising meta tensors (kaiming_normal_) imports torch._dynamo, seconds of start-up; loading must not."""
    model, card = _tiny(scale=2)
    path = save_generator(tmp_path / "m.safetensors", model, card)
    code = (
        "import sys, torch\n"
        "before = 'torch._dynamo' in sys.modules\n"
        "from geosr.checkpoint import load_generator, expected_shapes, read_card\n"
        f"expected_shapes(read_card({str(path)!r}).config); load_generator({str(path)!r})\n"
        "print(before, 'torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    if out[0] == "True":
        pytest.skip("this PyTorch imports torch._dynamo with torch itself")
    assert out == ["False", "False"]


def test_a_generator_tensor_that_model_files_do_not_hold_is_an_error_not_an_empty_tensor(tmp_path, monkeypatch):
    import geosr.checkpoint as checkpoint

    model, card = _tiny(scale=2)
    path = save_generator(tmp_path / "m.safetensors", model, card)
    build = checkpoint._meta_generator

    def with_scratch_buffer(config):
        net = build(config)
        net.register_buffer("scratch", torch.empty(3, device="meta"), persistent=False)  # not in state_dict
        return net

    monkeypatch.setattr(checkpoint, "_meta_generator", with_scratch_buffer)
    with pytest.raises(RuntimeError, match=r"m.safetensors: model files hold no value for .*\['scratch'\]"):
        load_generator(path)


def test_init_from_model_still_copies_into_an_existing_model(tmp_path):
    from geosr.checkpoint import init_from_model

    model, card = _tiny(scale=2)
    path = save_generator(tmp_path / "m.safetensors", model, card, dtype=torch.float16)
    target = Generator(card.config)
    params = {n: p for n, p in target.named_parameters()}
    info = init_from_model(target, path)
    assert info["copied"] == info["total"] == len(model.state_dict())
    assert all(p is params[n] for n, p in target.named_parameters())  # the same Parameter objects (optimizers)
    reference = _loaded_the_old_way(path)
    assert all(torch.equal(target.state_dict()[k], v) for k, v in reference.state_dict().items())
