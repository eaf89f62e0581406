"""Model files come from strangers: every bad one is refused by info, upscale and evaluate with one line, exit 1,
before any model is built and without running anything in it (geosr never unpickles).

tests/test_checkpoint.py covers the library side (load_generator) of pickles, truncation and invalid cards; here the
same faults go through each command, and the checks that nothing was executed or allocated."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import rasterio
import torch
from badinput import files_in, image, refused, run
from testdata import write_geotiff

import geosr.checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def data(tmp_path) -> Path:
    root = tmp_path / "data"
    for i in range(3):
        write_geotiff(root / f"img{i}.tif", image(3, 24, 24, seed=i))
    return root


def command(name: str, model: Path, data: Path, tmp_path: Path) -> list:
    if name == "info":
        return ["info", model]
    if name == "upscale":
        return ["upscale", data / "img0.tif", "-o", tmp_path / "out" / "x2.tif", "--model", model, "-q"]
    return ["-q", "evaluate", "--model", model, "--data", data, "--split", "all", "--out", tmp_path / "out" / "r.json"]


COMMANDS = ["info", "upscale", "evaluate"]


class Payload:
    """A pickle that, if ever unpickled, would create a file: the proof that nothing was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def rewrite_header(src: Path, dst: Path, edit) -> Path:
    """Copy a model file with its JSON header (tensors and card) edited by ``edit(header)``."""
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    dst.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])
    return dst


def edit_card(change):
    def edit(header):
        card = json.loads(header["__metadata__"]["geosr_card"])
        change(card)
        header["__metadata__"]["geosr_card"] = json.dumps(card)

    return edit


class Builds(list):
    """The devices of the generators built on a real device; ``every``: of all, meta-device ones included."""

    every: list


@pytest.fixture
def no_model_built(monkeypatch):
    """Record every generator built on a real device (meta-device ones allocate nothing and are allowed; they are
    recorded in ``.every`` only)."""
    built = Builds()
    built.every = []
    real = geosr.checkpoint.Generator

    class Watched(real):
        def __init__(self, *args, **kwargs):
            device = torch.empty(0).device  # torch.device("meta") as a context sets the default device
            built.every.append(device)
            if device.type != "meta":
                built.append(device)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(geosr.checkpoint, "Generator", Watched)
    return built


@pytest.mark.parametrize("cmd", COMMANDS)
def test_a_pickle_renamed_safetensors_is_never_unpickled(cmd, tmp_path, data, no_model_built):
    marker = tmp_path / "executed"
    bad = tmp_path / "model.safetensors"
    torch.save({"weights": Payload(marker)}, bad)
    refused(run(*command(cmd, bad, data, tmp_path)), 1, "model.safetensors", "pickled", "never unpickles")
    assert not marker.exists() and no_model_built == []
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cmd", COMMANDS)
def test_a_truncated_model_file(cmd, tiny_model, tmp_path, data, no_model_built):
    bad = tmp_path / "cut.safetensors"
    raw = tiny_model.read_bytes()
    bad.write_bytes(raw[: len(raw) * 3 // 4])
    refused(run(*command(cmd, bad, data, tmp_path)), 1, "cut.safetensors", "truncated", "copy it again")
    assert no_model_built == [] and not (tmp_path / "out").exists()


BAD_CARDS = {
    "channels-absurd": (edit_card(lambda c: c["config"].update(channels=10**9)), "channels must be 16..512"),
    "blocks-absurd": (edit_card(lambda c: c["config"].update(n_blocks=10**6)), "n_blocks must be 0..64"),
    "bands-negative": (edit_card(lambda c: c["config"].update(in_channels=-3)), "in_channels must be 1..64"),
    "tile-absurd": (edit_card(lambda c: c.update(tile_size=10**12)), "the card's tile size 1000000000000: must be"),
    "overlap-over-half": (
        edit_card(lambda c: c.update(overlap=17)),
        "the card's overlap 17: must be an integer of 0..16",
    ),
    "scale-string": (edit_card(lambda c: c["config"].update(scale="4")), "scale must be one of"),
    "config-missing": (edit_card(lambda c: c.pop("config")), "no generator config"),
    "card-missing": (lambda h: h["__metadata__"].pop("geosr_card"), "without a geosr model card"),
    "card-not-json": (lambda h: h["__metadata__"].update(geosr_card="{oops"), "not valid JSON"),
    "card-a-list": (lambda h: h["__metadata__"].update(geosr_card="[1, 2]"), "not a JSON object"),
    "header-a-list": (lambda h: (h.clear(), h.update(__metadata__=[1])), "without a geosr model card"),
}


@pytest.mark.parametrize("case", list(BAD_CARDS))
@pytest.mark.parametrize("cmd", COMMANDS)
def test_metadata_with_absurd_or_missing_values(cmd, case, tiny_model, tmp_path, data, no_model_built):
    edit, message = BAD_CARDS[case]
    bad = rewrite_header(tiny_model, tmp_path / "edited.safetensors", edit)
    refused(run(*command(cmd, bad, data, tmp_path)), 1, "edited.safetensors", message)
    assert no_model_built == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("cmd", COMMANDS)
def test_weights_whose_shapes_do_not_match_the_card(cmd, tiny_model, tmp_path, data, no_model_built):
    """The card says 32 channels, the tensors hold 16: refused from the header, before a model is built."""
    bad = rewrite_header(
        tiny_model, tmp_path / "mismatch.safetensors", edit_card(lambda c: c["config"].update(channels=32))
    )
    refused(run(*command(cmd, bad, data, tmp_path)), 1, "mismatch.safetensors", "has shape", "export the model again")
    assert no_model_built == [] and not (tmp_path / "out").exists()


def test_weights_of_a_foreign_dtype_are_refused(tiny_model, tmp_path, data, no_model_built):
    def to_int(header):
        name = next(k for k in header if k != "__metadata__")
        header[name]["dtype"] = "I32"

    bad = rewrite_header(tiny_model, tmp_path / "ints.safetensors", to_int)
    refused(run(*command("upscale", bad, data, tmp_path)), 1, "ints.safetensors", "stored as 'I32'")
    assert no_model_built == []


@pytest.mark.parametrize("cmd", COMMANDS)
def test_a_missing_model_file_and_a_folder(cmd, tmp_path, data):
    refused(
        run(*command(cmd, tmp_path / "nope.safetensors", data, tmp_path)), 1, "nope.safetensors", "no such model file"
    )
    (tmp_path / "dir.safetensors").mkdir()
    refused(run(*command(cmd, tmp_path / "dir.safetensors", data, tmp_path)), 1, "dir.safetensors", "folder")
    assert files_in(tmp_path / "data") == ["img0.tif", "img1.tif", "img2.tif"]


def test_the_watch_sees_a_model_built_from_a_good_file(tiny_model, tmp_path, data, no_model_built):
    """A good file's generator is built once, on the meta device (no storage, no random initialisation), and gets the
    file's weights: the watch sees that build, and no generator built on a real device."""
    result = run(*command("upscale", tiny_model, data, tmp_path))
    assert result.exit_code == 0, result.output
    assert [d.type for d in no_model_built.every] == ["meta"] and no_model_built == []


def with_nan(src: Path, dst: Path) -> tuple[Path, str]:
    """A copy of a real model file with its first weight (in name order) turned to NaN in its stored bytes."""
    raw = bytearray(src.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    name = sorted(k for k in header if k != "__metadata__")[0]
    assert header[name]["dtype"] == "F32"
    start = 8 + n + header[name]["data_offsets"][0]
    raw[start : start + 4] = struct.pack("<f", float("nan"))
    dst.write_bytes(bytes(raw))
    return dst, name


@pytest.mark.parametrize("cmd", ["upscale", "evaluate", "export"])
def test_weights_holding_nan_are_refused_before_a_model_is_built(cmd, tiny_model, tmp_path, data, no_model_built):
    """NaN weights would give all-NaN (or, cast to integers, all-zero) output with exit 0, and export would publish
    them again: every command that reads the weights refuses the file, naming it and the tensor."""
    bad, name = with_nan(tiny_model, tmp_path / "nan.safetensors")
    args = (
        ["export", bad, "-o", tmp_path / "out" / "published.safetensors"]
        if cmd == "export"
        else command(cmd, bad, data, tmp_path)
    )
    refused(run(*args), 1, "nan.safetensors", f"weight {name} holds NaN or infinite values", "another model file")
    assert no_model_built == [] and not (tmp_path / "out").exists()


def test_card_text_with_control_characters_is_shown_escaped_and_never_written_raw(tiny_model, tmp_path, data):
    """A card whose name clears the screen and whose description reverses the text: info shows the escapes as text,
    and the output's tags hold them as text too."""
    evil = rewrite_header(
        tiny_model,
        tmp_path / "evil.safetensors",
        edit_card(lambda c: c.update(name="\x1b[2J\x1b[31mevil\x07", description="safe\u202eexe.tif\nline two")),
    )
    shown = run("info", evil)
    assert shown.exit_code == 0, shown.output
    assert "\x1b" not in shown.output and "\u202e" not in shown.output and "\x07" not in shown.output
    assert "\\x1b[2J\\x1b[31mevil\\x07 - safe\\u202eexe.tif\\nline two" in shown.output
    result = run(*command("upscale", evil, data, tmp_path))
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "out" / "x2.tif") as d:
        tag = d.tags()["GEOSR_MODEL"]
    assert "\\x1b[2J\\x1b[31mevil\\x07" in tag and "\x1b" not in tag
