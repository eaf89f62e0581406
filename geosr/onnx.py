"""ONNX export of a geosr model file, and a small onnxruntime runner for the exported file.

``export_onnx(model, out)`` writes the generator of a geosr model file as an ONNX model that runs without geosr or
PyTorch (onnxruntime, QGIS's Deepness plugin, any ONNX runtime):

- the inference graph of ``geosr upscale``: diffusion step t = 0, no feature noise, fp32 weights, the output clamped
  to the model range as geosr clamps it before converting back to raster values;
- exported by PyTorch's ``torch.export``-based exporter (``torch.onnx.export(..., dynamo=True)``, which needs the
  ``onnxscript`` package) at opset 18 by default: ``scaled_dot_product_attention`` is decomposed into
  MatMul/Softmax, which every onnxruntime since 1.14 runs; opset 23 writes one ``Attention`` node instead (a recent
  onnxruntime is needed for it);
- the model card in the ONNX file's ``metadata_props``, every value JSON-encoded (see ``geosr.onnxmeta``).

Two layouts:

``"dynamic"`` (default)
    input ``input`` of shape (batch, bands, height, width) float32 in [-1, 1], output ``output`` of shape
    (batch, bands_out, scale * height, scale * width) in [-1, 1]; batch, height and width are free (any tile size
    from 1 pixel up). uint8 data maps 0..255 to -1..1 (``v / 127.5 - 1``), other dtypes a global per-band value
    range to -1..1, as the card's ``radiometry`` says.

``"deepness"`` (``deepness=True``)
    the form the QGIS plugin Deepness runs as a ``Superresolution`` model: a fixed input of (1, bands, T, T) with T
    the tile size, values in [0, 1] (Deepness divides uint8 by 255), output in [0, 1] (Deepness multiplies it by its
    "Output scaling", 255 by default); the graph maps 0..1 to -1..1 on the way in and back on the way out. Deepness
    reads the tile size from the input shape, so a dynamic one cannot load there. The Deepness metadata keys
    (``model_type``, ``tile_size``, ``tiles_overlap``, ``standardization_mean``/``std``, ``resolution``) are written
    with it; see docs/onnx.md for their source and the caveats.

``geosr.onnxrun.load_onnx(path)`` opens an exported file with onnxruntime and returns an ``OnnxPredictor``, a
callable from (B, bands, h, w) float32 tiles to super-resolved tiles, like ``geosr.predictor.Predictor``;
``read_onnx_metadata`` reads the metadata back. ``onnx``, ``onnxscript`` and ``onnxruntime`` are optional
(``pip install geosr[onnx]``);
a missing one is an ``OnnxError`` saying what to install.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from geosr.checkpoint import ModelCard, load_generator
from geosr.errors import GeosrError, OptionError, OutputExistsError, WriteError
from geosr.fileio import atomic_write
from geosr.limits import default_overlap
from geosr.models.generator import Generator
from geosr.onnxmeta import deepness_metadata, geosr_metadata
from geosr.tiling import tiling_problem
from geosr.version import __version__

log = logging.getLogger("geosr.onnx")

DEFAULT_OPSET = 18  # SDPA decomposed into MatMul/Softmax: runs on every onnxruntime since 1.14
OPSETS = range(18, 24)  # what torch.onnx's exporter writes (18 is its own; 23 adds the Attention op)
MAX_DYNAMIC = 4096  # the largest batch and tile side (input pixels) the dynamic layout declares
INPUT_NAME, OUTPUT_NAME = "input", "output"
INSTALL_HINT = "pip install 'geosr[onnx]' (or: pip install onnx onnxscript onnxruntime)"


class OnnxError(GeosrError):
    """An ONNX export that cannot be made as asked, or an ONNX file that cannot be read as a geosr model."""


@dataclass(frozen=True)
class OnnxExport:
    """What ``export_onnx`` wrote: the file, its opset and layout, its input and output shapes (an int per fixed axis,
    a name per free one), its size in bytes and its metadata (key -> JSON text)."""

    path: Path
    opset: int
    layout: str
    input_shape: tuple[int | str, ...]
    output_shape: tuple[int | str, ...]
    size_bytes: int
    metadata: dict[str, str]


class InferenceGraph(nn.Module):
    """``Generator.forward`` as ``geosr upscale`` runs it (t = 0, no perturbation), output clamped to [-1, 1], in a
    form whose shapes stay symbolic under ``torch.export``; with ``unit_range`` it takes and returns [0, 1] values.

    ``Generator.forward`` pads the upsampled features to a multiple of 4 only when they are not one; that branch on
    the size would fix an exported graph to one of its two cases (tile sizes with padding, or without). Here the pad
    is always taken (0 to 3 pixels, nothing when 0), with its size from a floor division: the exporter mistranslates
    the modulo of a negative size that the generator uses. Everything else calls the generator's own modules, and
    the tests compare this graph with ``Generator.forward`` at several sizes.
    """

    def __init__(self, net: Generator, *, unit_range: bool = False) -> None:
        super().__init__()
        self.net = net
        self.unit_range = unit_range

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.net
        s = g.config.scale
        if self.unit_range:
            x = x * 2 - 1  # [0, 1] -> [-1, 1]
        b, _, h, w = x.shape
        f = g.upsample(g.attention(g.body(g.head(x))))  # (B, C, H, W), H = s*h
        if g.refiner is not None:
            hh, ww = s * h, s * w
            pad_h, pad_w = (hh + 3) // 4 * 4 - hh, (ww + 3) // 4 * 4 - ww
            f = F.pad(f, (0, pad_w, 0, pad_h), mode="replicate")  # (B, C, H', W'), multiples of 4
            f = g.refiner(f, x.new_zeros(b))[:, :, :hh, :ww]  # t = 0: clean features, as at inference
        r = g.tail(f)  # (B, out, H, W)
        if g.config.global_skip:
            y = F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False) + r
        else:
            y = torch.tanh(r)
        y = y.clamp(-1.0, 1.0)
        return (y + 1) / 2 if self.unit_range else y


# --- export -------------------------------------------------------------------------------------------------------


def export_onnx(
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    opset: int | None = None,
    deepness: bool = False,
    tile_size: int | None = None,
    overlap: int | None = None,
    resolution_cm: float | None = None,
    overwrite: bool = False,
) -> OnnxExport:
    """Write the generator of ``model`` (a geosr model file or a bundled model's name) as an ONNX model to ``out``.

    opset: ONNX opset, 18..23 (None: 18); deepness: the fixed-size [0, 1] layout QGIS's Deepness runs (see the module
    docstring), else the dynamic [-1, 1] one; tile_size, overlap: the recommended tile and overlap in input pixels
    written in the metadata (None: the card's; an overlap defaults to a quarter of a given tile size), and with
    ``deepness`` the tile size is the model's fixed input size; resolution_cm: the ground resolution of the imagery
    in cm per pixel, written as Deepness's ``resolution`` (which Deepness resamples its input layer to; only with
    ``deepness``); overwrite: replace an existing ``out``.

    The file is written atomically, with fp32 weights. Returns an ``OnnxExport``. Raises OptionError for a bad
    opset, tile size, overlap or resolution (``option`` names the command-line option), ModelFileError for a
    ``model`` that is not a valid geosr model file, OutputExistsError when ``out`` exists and ``overwrite`` is false,
    WriteError when ``out`` cannot be written, OnnxError when onnx or onnxscript is missing or the exporter fails.
    Every message is one line that names the file or the value.
    """
    opset = _checked_opset(opset)
    _check_resolution(resolution_cm, deepness)
    out = Path(out)
    check_onnx_output(out, overwrite=overwrite)
    onnx = _require("onnx", "onnxscript")

    net, card = load_generator(model)  # ModelFileError for anything that is not a geosr model file
    tile, overlap = _metadata_tiling(card, tile_size, overlap)
    layout = "deepness" if deepness else "dynamic"
    log.info("exporting %s (x%d) as ONNX, opset %d, %s layout", model, card.scale, opset, layout)
    proto = _export_graph(net, tile, opset, deepness, source=str(model))
    metadata = geosr_metadata(card, tile=tile, overlap=overlap, layout=layout)
    if deepness:
        metadata.update(deepness_metadata(card, tile=tile, resolution_cm=resolution_cm))
    _describe(proto, card, metadata)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise OnnxError(f"{model}: the exported ONNX graph is invalid ({_first_line(exc)}); please report it") from None

    atomic_write(out, proto.SerializeToString(), what="the ONNX model", remedy="choose another output path")
    result = OnnxExport(
        path=out,
        opset=opset,
        layout=layout,
        input_shape=_shape(proto.graph.input[0]),
        output_shape=_shape(proto.graph.output[0]),
        size_bytes=out.stat().st_size,
        metadata=metadata,
    )
    log.info(
        "wrote %s: %.1f MB, input %s, output %s", out, result.size_bytes / 1e6, result.input_shape, result.output_shape
    )
    return result


def _checked_opset(opset: int | None) -> int:
    """The opset to export at (None: DEFAULT_OPSET); OptionError for one outside OPSETS."""
    opset = DEFAULT_OPSET if opset is None else opset
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in OPSETS:
        raise OptionError(f"opset {opset!r}: must be one of {OPSETS.start}..{OPSETS.stop - 1}", option="--opset")
    return opset


def _check_resolution(resolution_cm: float | None, deepness: bool) -> None:
    """OptionError for a resolution without ``deepness``, or one that is not a positive number of cm per pixel."""
    if resolution_cm is None:
        return
    if not deepness:
        raise OptionError("a resolution is written for Deepness only; add --deepness", option="--resolution-cm")
    if (
        isinstance(resolution_cm, bool)
        or not isinstance(resolution_cm, (int, float))
        or not (math.isfinite(resolution_cm) and resolution_cm > 0)
    ):
        raise OptionError(
            f"resolution {resolution_cm!r}: must be a positive number of cm per pixel", option="--resolution-cm"
        )


def _metadata_tiling(card: ModelCard, tile_size: int | None, overlap: int | None) -> tuple[int, int]:
    """The tile and overlap the metadata recommends: the card's unless given (a quarter of a given tile size when the
    overlap is not given); OptionError (--tile-size, --overlap) for a tiling geosr.tiling refuses."""
    tile = card.tile_size if tile_size is None else tile_size
    if overlap is None:
        overlap = card.overlap if tile_size is None else default_overlap(tile)
    problem = tiling_problem(tile, overlap)
    if problem:
        option = "--tile-size" if problem.startswith("tile size") else "--overlap"
        raise OptionError(problem, option=option)
    return tile, overlap


def _export_graph(net: Generator, tile: int, opset: int, deepness: bool, source: str):
    """The ONNX model of ``net``'s inference graph in the layout asked for: the Deepness one at a fixed (1, bands,
    tile, tile) input, the dynamic one with its free axes named; OnnxError when the exporter fixed a free axis."""
    graph = InferenceGraph(net, unit_range=deepness).eval()
    bands_in = net.config.in_channels
    if deepness:
        example = torch.zeros(1, bands_in, tile, tile)
        dynamic_shapes = None
    else:
        example = torch.zeros(2, bands_in, tile, tile)
        # DYNAMIC rather than named Dims: at x3 torch.export cannot prove guards such as 3h <= 4 * ((3h + 3) // 4),
        # true for every h, and named Dims make an unproven guard an error.
        free = torch.export.Dim.DYNAMIC(min=1, max=MAX_DYNAMIC)
        dynamic_shapes = ({0: free, 2: free, 3: free},)
    proto = _torch_export(graph, example, dynamic_shapes, opset, source=source)
    if not deepness:
        _name_dims(proto.graph.input[0], ["batch", None, "height", "width"])
        _name_dims(proto.graph.output[0], ["batch", None, "out_height", "out_width"])
        shape = _shape(proto.graph.input[0])
        fixed = [
            f"{name} = {shape[axis]}"
            for axis, name in ((0, "batch"), (2, "height"), (3, "width"))
            if isinstance(shape[axis], int)
        ]
        if fixed:  # the exporter specialised an axis: the file would refuse every other size
            raise OnnxError(
                f"{source}: PyTorch's exporter fixed {', '.join(fixed)} instead of leaving it free; "
                "please report it (--deepness exports a fixed size on purpose)"
            )
    return proto


def _describe(proto, card: ModelCard, metadata: dict[str, str]) -> None:
    """Write ``metadata`` into the ONNX model's metadata_props, and geosr as its producer, the card's name and
    description as its graph's name and doc string."""
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name, proto.producer_version = "geosr", __version__
    proto.doc_string = f"{card.name}: {card.description}".strip().rstrip(":")
    proto.graph.name = card.name


def check_onnx_output(out: Path, *, overwrite: bool) -> None:
    """Raise unless an ONNX file may be written at ``out``, before the export's minute of work.

    WriteError for a folder, or a path whose nearest existing folder is a file or not writable; OutputExistsError for
    an existing file (a dangling link included) when ``overwrite`` is false.
    """
    if out.is_dir():
        raise WriteError(f"{out}: is a folder; give an output file name (e.g. {out / 'model.onnx'})", option="--output")
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise OutputExistsError(f"{out}: already exists; pass --overwrite to replace it", option="--overwrite")
    folder = out.parent
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise WriteError(f"{out}: {folder} is a file, not a folder; choose another output path", option="--output")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise WriteError(
            f"{out}: cannot write in {folder} (no permission or a read-only disk); choose another output path",
            option="--output",
        )


def _torch_export(graph: nn.Module, example: torch.Tensor, dynamic_shapes, opset: int, source: str):
    """``torch.onnx.export`` (the torch.export-based exporter) of ``graph``; returns the onnx.ModelProto."""
    # The exporter logs its passes at INFO (onnxscript, onnx_ir) and warns that torchvision's ops are skipped: quiet
    # them for the call, so that `geosr -v export` shows geosr's own lines.
    quiet = {"onnxscript": logging.WARNING, "onnx_ir": logging.WARNING, "torch.onnx": logging.ERROR}
    levels = {name: logging.getLogger(name).level for name in quiet}
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(level)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # deprecations inside PyTorch's exporter: nothing a user can act on
            program = torch.onnx.export(
                graph,
                (example,),
                dynamo=True,
                opset_version=opset,
                dynamic_shapes=dynamic_shapes,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                external_data=False,
                optimize=True,
                verbose=False,
            )
    except Exception as exc:  # the exporter's own error types (torch.onnx.errors, torch.export)
        raise OnnxError(f"{source}: PyTorch's ONNX exporter failed at opset {opset} ({_first_line(exc)})") from None
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    return program.model_proto


def _name_dims(value_info, names: list[str | None]) -> None:
    """Give the free axes of a graph input or output the names ``names`` (None keeps an axis as it is)."""
    for dim, name in zip(value_info.type.tensor_type.shape.dim, names):
        if name is not None and not dim.HasField("dim_value"):
            dim.dim_param = name


def _shape(value_info) -> tuple[int | str, ...]:
    return tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.splitlines()[0].split()) if text else type(exc).__name__


def _require(*names: str):
    """Import the optional packages ``names`` (the first is returned) or raise OnnxError naming the missing one."""
    modules = []
    for name in names:
        try:
            modules.append(__import__(name))
        except ImportError:
            raise OnnxError(f"ONNX support needs the {name} package, which is not installed; {INSTALL_HINT}") from None
    return modules[0]
