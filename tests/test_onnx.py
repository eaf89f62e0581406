"""ONNX export (geosr.onnx): the exported graph run by onnxruntime equals the PyTorch generator, its free axes are
really free, the model card round-trips through the ONNX metadata, the Deepness layout has the shape and keys that
Deepness reads, and bad inputs give geosr's one-line errors.

Tolerance: the exported graph keeps fp32 weights and fp32 arithmetic, so it may differ from PyTorch only by the order
of float32 operations: max abs difference 1e-4 in the model range [-1, 1] (measured: under 1e-6 for the bundled
models, a few 1e-6 for a random x3 model), a fortieth of one uint8 step (2 / 255).

Each export takes 15-60 s on two busy CPU cores (PyTorch's torch.export-based exporter), so the exports are module
fixtures and the tests that need one are marked slow.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="ONNX export tests need onnx (pip install 'geosr[onnx]')")
pytest.importorskip("onnxscript", reason="ONNX export tests need onnxscript (pip install 'geosr[onnx]')")
pytest.importorskip("onnxruntime", reason="ONNX export tests need onnxruntime (pip install 'geosr[onnx]')")

import onnx  # noqa: E402

from geosr.checkpoint import ModelCard, load_generator, read_card, save_generator  # noqa: E402
from geosr.errors import ModelFileError, OptionError, OutputExistsError, WriteError  # noqa: E402
from geosr.models.generator import Generator, GeneratorConfig  # noqa: E402
from geosr.onnx import (  # noqa: E402
    DEFAULT_OPSET,
    OnnxError,
    export_onnx,
)
from geosr.onnxrun import load_onnx, read_onnx_metadata  # noqa: E402
from geosr.tiling import tile_array  # noqa: E402

TOLERANCE = 1e-4  # max abs difference, model range [-1, 1], fp32

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def torch_reference(model_path, x: np.ndarray) -> np.ndarray:
    """What geosr computes for model-range tiles ``x``: Generator.forward, clamped to [-1, 1] as geosr clamps it."""
    net, _ = load_generator(model_path)
    with torch.no_grad():
        return net(torch.from_numpy(x)).clamp(-1, 1).numpy()


def random_tiles(batch: int, height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (batch, 3, height, width)).astype(np.float32)


def assert_one_line(exc: BaseException, *names: str) -> None:
    text = str(exc)
    assert "\n" not in text and text.strip() == text, text
    for name in names:
        assert name in text, text


# --- exported files (module fixtures) -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def x3_model(tmp_path_factory):
    """Random x3 model with every part of the architecture: CBAM, the transformer refiner, the bicubic global skip.

    x3 is the hard case for the exporter: the refiner's padding to a multiple of 4 depends on the tile size modulo 4.
    """
    torch.manual_seed(3)
    config = GeneratorConfig(scale=3, channels=16, n_blocks=1, refiner_base=8, global_skip=True)
    card = ModelCard(config=config, name="tiny-x3", description="random x3 test model", tile_size=24, overlap=6)
    return save_generator(tmp_path_factory.mktemp("onnx-x3") / "tiny-x3.safetensors", Generator(config), card)


@pytest.fixture(scope="module")
def x3_export(x3_model, tmp_path_factory):
    return export_onnx(x3_model, tmp_path_factory.mktemp("onnx-x3-out") / "tiny-x3.onnx")


@pytest.fixture(scope="module")
def deepness_export(tiny_model_x4, tmp_path_factory):
    """The tiny x4 model (tanh output, transformer refiner) in the Deepness layout, 12-pixel tiles."""
    out = tmp_path_factory.mktemp("onnx-deepness") / "tiny-x4-deepness.onnx"
    return export_onnx(tiny_model_x4, out, deepness=True, tile_size=12, resolution_cm=30)


# --- the graph equals PyTorch -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_random_model_matches_pytorch_at_two_tile_and_batch_sizes(x3_model, x3_export):
    predictor = load_onnx(x3_export.path, threads=1)
    assert x3_export.input_shape == ("batch", 3, "height", "width")
    assert x3_export.output_shape == ("batch", 3, "out_height", "out_width")
    # 16: the upsampled 48 px need no padding for the refiner; 13 x 7 (39 x 21 px) need 1 and 3; batch 3, then 1
    for batch, h, w in ((3, 16, 16), (1, 13, 7)):
        x = random_tiles(batch, h, w, seed=h)
        y = predictor(x)
        assert y.shape == (batch, 3, 3 * h, 3 * w)
        assert np.abs(y - torch_reference(x3_model, x)).max() < TOLERANCE


@pytest.mark.slow
def test_bundled_model_matches_pytorch_at_two_tile_and_batch_sizes(tmp_path):
    export = export_onnx("degan-x4", tmp_path / "degan-x4.onnx")
    assert export.opset == DEFAULT_OPSET
    assert 25e6 < export.size_bytes < 40e6  # 7.56 M fp32 weights; the .safetensors holds them in fp16
    predictor = load_onnx(export.path, threads=1)
    assert predictor.scale == 4
    for batch, size in ((2, 16), (1, 24)):
        x = random_tiles(batch, size, size, seed=size)
        y = predictor(x)
        assert y.shape == (batch, 3, 4 * size, 4 * size)
        assert np.abs(y - torch_reference("degan-x4", x)).max() < TOLERANCE


@pytest.mark.slow
def test_onnx_predictor_serves_geosr_tiling_as_pytorch_does(x3_model, x3_export):
    """The exported file through geosr's tiling and blending gives the image PyTorch gives (a 40 x 30 array)."""
    net, card = load_generator(x3_model)

    def torch_predict(tiles):
        with torch.no_grad():
            return net(torch.from_numpy(tiles)).clamp(-1, 1).numpy()

    image = np.random.default_rng(1).uniform(-1, 1, (3, 30, 40)).astype(np.float32)
    options = dict(scale=3, tile_size=card.tile_size, overlap=card.overlap, batch_size=4)
    expected = tile_array(torch_predict, image, **options)
    got = tile_array(load_onnx(x3_export.path, threads=1), image, **options)
    assert got.shape == (3, 90, 120)
    assert np.abs(got - expected).max() < TOLERANCE


@pytest.mark.slow
def test_the_exported_file_has_no_consistency_correction(x3_model, x3_export, synthetic_image):
    """docs/onnx.md: the file is the network alone. Through geosr's tiling it gives what geosr upscale writes with
    --no-consistency (up to the graph's clamp of each tile before blending), not what it writes by default."""
    from geosr.api import upscale_array

    card = read_card(x3_model)
    image = synthetic_image(3, 30, 40, seed=4)  # uint8
    y = tile_array(
        load_onnx(x3_export.path, threads=1),
        image.astype(np.float32) / 127.5 - 1,
        scale=3,
        tile_size=card.tile_size,
        overlap=card.overlap,
        batch_size=4,
    )
    exported = np.clip(np.floor((y + 1) * 127.5 + 0.5), 0, 255)  # the value convention of docs/onnx.md
    plain, corrected = (
        upscale_array(image, model=str(x3_model), device="cpu", precision="fp32", consistency=c).astype(np.float64)
        for c in (False, True)
    )
    assert np.abs(exported - plain).mean() < 0.05  # measured: 0 (no tile overshoots [-1, 1] in an overlap here)
    assert np.abs(exported - corrected).mean() > 1  # measured: 6.0 grey levels for this random model


# --- metadata -----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_card_and_conventions_round_trip_through_the_metadata(x3_model, x3_export):
    proto = onnx.load(str(x3_export.path))
    onnx.checker.check_model(proto)
    assert proto.producer_name == "geosr"
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {DEFAULT_OPSET}
    initializers = [onnx.helper.tensor_dtype_to_np_dtype(t.data_type) for t in proto.graph.initializer]
    assert np.dtype(np.float16) not in initializers  # fp32 weights

    meta = read_onnx_metadata(x3_export.path)
    card = read_card(x3_model)
    assert meta["geosr_card"] == json.loads(json.dumps(card.to_dict()))
    assert meta["geosr_scale"] == 3 and meta["geosr_bands"] == ["red", "green", "blue"]
    assert (meta["geosr_tile_size"], meta["geosr_overlap"]) == (24, 6)
    assert meta["geosr_input_range"] == meta["geosr_output_range"] == [-1.0, 1.0]
    assert "127.5" in meta["geosr_value_convention"] and meta["geosr_layout"] == "dynamic"
    assert "model_type" not in meta  # Deepness cannot load a free tile size: its keys go with --deepness only
    assert load_onnx(x3_export.path).card.to_dict() == card.to_dict()


@pytest.mark.slow
def test_deepness_layout_has_the_shapes_values_and_keys_deepness_reads(tiny_model_x4, deepness_export):
    predictor = load_onnx(deepness_export.path, threads=1)
    # Deepness (ModelBase, Superresolution.check_loaded_model_outputs): one input and one output, the tile size
    # from the input's last axis (an int), batch 1, square output; metadata values read with json.loads
    session = predictor.session
    assert len(session.get_inputs()) == 1 and len(session.get_outputs()) == 1
    in_shape, out_shape = session.get_inputs()[0].shape, session.get_outputs()[0].shape
    assert in_shape == [1, 3, 12, 12] and out_shape == [1, 3, 48, 48]
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["model_type"]).capitalize() == "Superresolution"
    assert json.loads(meta["tile_size"]) == json.loads(meta["tiles_size"]) == 12
    assert json.loads(meta["tiles_overlap"]) == 0
    assert json.loads(meta["standardization_mean"]) == [0.0] * 3
    assert json.loads(meta["standardization_std"]) == [1.0] * 3
    assert json.loads(meta["resolution"]) == 30.0

    # Deepness feeds uint8 / 255 and multiplies the output by 255: the same values as geosr's uint8 convention
    pixels = np.random.default_rng(2).integers(0, 256, (1, 3, 12, 12)).astype(np.float32)
    y = predictor(pixels / 255) * 255
    expected = (torch_reference(tiny_model_x4, pixels / 127.5 - 1) + 1) * 127.5
    assert y.shape == (1, 3, 48, 48)
    assert np.abs(y - expected).max() < TOLERANCE * 127.5
    # the card inside says the tiling the file runs at: its fixed 12-pixel tile, as geosr_tile_size
    assert predictor.card.tile_size == predictor.metadata["geosr_tile_size"] == 12
    assert predictor.card.overlap == predictor.metadata["geosr_overlap"]

    # what the fixed graph cannot take is a one-line OnnxError naming the file, before onnxruntime's own message
    name = deepness_export.path.name
    with pytest.raises(OnnxError) as err:
        predictor(pixels / 127.5 - 1)  # geosr's [-1, 1] values for a [0, 1] model
    assert_one_line(err.value, name, "outside its input range [0, 1]", "geosr_value_convention")
    with pytest.raises(OnnxError) as err:
        predictor(np.zeros((2, 3, 12, 12), np.float32))  # batch 2 for a batch of 1
    assert_one_line(err.value, name, "a fixed input of 1 x 3 x 12 x 12", "tile_size=12")
    with pytest.raises(OnnxError) as err:
        predictor(np.zeros((1, 4, 12, 12), np.float32))
    assert_one_line(err.value, name, "tiles of its bands (red, green, blue)", "shape (1, 4, 12, 12)")
    with pytest.raises(ValueError, match="scale=2, but the predictor's model upscales x4: give scale=4"):
        tile_array(predictor, np.zeros((3, 12, 12), np.float32), scale=2, tile_size=12, overlap=0, batch_size=1)


# --- errors -------------------------------------------------------------------------------------------------------


def test_non_model_input_is_a_one_line_model_file_error(tmp_path):
    fake = tmp_path / "notes.safetensors"
    fake.write_text("not a model\n")
    with pytest.raises(ModelFileError) as err:
        export_onnx(fake, tmp_path / "out.onnx")
    assert_one_line(err.value, str(fake))
    assert not (tmp_path / "out.onnx").exists()


def test_bad_output_paths_are_one_line_errors_before_any_export(tiny_model, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(WriteError) as err:
        export_onnx(tiny_model, blocker / "model.onnx")
    assert_one_line(err.value, "a-file", "not a folder")
    with pytest.raises(WriteError) as err:
        export_onnx(tiny_model, tmp_path)
    assert_one_line(err.value, "is a folder")
    existing = tmp_path / "model.onnx"
    existing.write_bytes(b"old")
    with pytest.raises(OutputExistsError) as err:
        export_onnx(tiny_model, existing)
    assert_one_line(err.value, "--overwrite")
    assert existing.read_bytes() == b"old"


@pytest.mark.parametrize(
    "options, option",
    [
        (dict(opset=17), "--opset"),
        (dict(opset=24), "--opset"),
        (dict(tile_size=4), "--tile-size"),
        (dict(tile_size=32, overlap=17), "--overlap"),
        (dict(resolution_cm=30), "--resolution-cm"),  # without deepness
        (dict(deepness=True, resolution_cm=-1.0), "--resolution-cm"),
    ],
)
def test_bad_settings_are_option_errors_naming_the_option(tiny_model, tmp_path, options, option):
    with pytest.raises(OptionError) as err:
        export_onnx(tiny_model, tmp_path / "m.onnx", **options)
    assert err.value.option == option
    assert_one_line(err.value)


def test_missing_exporter_package_says_what_to_install(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript now raises ImportError
    with pytest.raises(OnnxError) as err:
        export_onnx(tiny_model, tmp_path / "m.onnx")
    assert_one_line(err.value, "onnxscript", "pip install")


def test_reading_a_file_that_is_not_onnx_is_a_one_line_error(tiny_model, tmp_path):
    with pytest.raises(OnnxError) as err:
        read_onnx_metadata(tiny_model)  # a safetensors file
    assert_one_line(err.value, str(tiny_model), "not an ONNX model file")
    with pytest.raises(OnnxError) as err:
        load_onnx(tmp_path / "missing.onnx")
    assert_one_line(err.value, "no such ONNX file")


@pytest.mark.slow
def test_geosr_export_writes_onnx_and_refuses_card_options(tiny_model, tmp_path):
    from click.testing import CliRunner

    from geosr.cli.main import cli

    out = tmp_path / "tiny.onnx"
    result = CliRunner().invoke(cli, ["export", str(tiny_model), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "ONNX opset 18" in result.output and out.exists()
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["geosr_scale"]) == read_card(tiny_model).scale
    result = CliRunner().invoke(cli, ["export", str(tiny_model), "-o", str(tmp_path / "b.onnx"), "--name", "x"])
    assert result.exit_code == 2 and "--name: not for an ONNX output" in result.output
    result = CliRunner().invoke(cli, ["export", str(tiny_model), "-o", str(tmp_path / "c.safetensors"), "--deepness"])
    assert result.exit_code == 2 and "for an ONNX output" in result.output
    result = CliRunner().invoke(cli, ["export", str(tiny_model), "-o", str(tmp_path / "b.onnx"), "--dtype", "fp16"])
    assert (
        result.exit_code == 2 and "always written in float32" in result.output and "leave --dtype out" in result.output
    )
    assert not (tmp_path / "b.onnx").exists() and not (tmp_path / "c.safetensors").exists()

    # -q: errors only, as for upscale; --dtype fp32 is what ONNX gets anyway
    result = CliRunner().invoke(
        cli, ["-q", "export", str(tiny_model), "-o", str(tmp_path / "q.onnx"), "--dtype", "fp32"]
    )
    assert result.exit_code == 0 and result.output == "" and (tmp_path / "q.onnx").is_file()

    # geosr info shows the card inside, the layout and the value range; a file named .onnx that is none is refused
    result = CliRunner().invoke(cli, ["info", str(out)])
    assert result.exit_code == 0, result.output
    assert (
        f"model file   {out}" in result.output and "onnx         dynamic layout, values in [-1.0, 1.0]" in result.output
    )
    assert f"name         {read_card(tiny_model).name}" in result.output
    info = json.loads(CliRunner().invoke(cli, ["info", "--json", str(out)]).output)
    assert info["geosr_card"] == read_card(tiny_model).to_dict() and info["geosr_layout"] == "dynamic"
    fake = tmp_path / "text.onnx"
    fake.write_text("hello\n")
    result = CliRunner().invoke(cli, ["info", str(fake)])
    assert result.exit_code == 1 and "not an ONNX model file" in result.output
