"""`geosr export`: turn a training run's model file into a model to publish: a smaller dtype, a name, measured metrics.

    geosr export runs/x4/best.safetensors -o degan-x4-fp16.safetensors --name degan-x4 --dtype fp16
    geosr evaluate -m degan-x4-fp16.safetensors -d UCMerced_LandUse/Images --split val -o val.json
    geosr export degan-x4-fp16.safetensors -o degan-x4.safetensors --metrics val.json

The metrics come from a `geosr evaluate` report of the exported file itself, so the card states what the published
weights (after the cast to fp16) measure: a report of any other model file is refused, and so is an output that is
the input (an export never rewrites the model it reads, --overwrite or not).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from geosr.cli.exits import handle_errors, stop_on_sigterm
from geosr.cli.options import (
    LocalPath,
    NonEmptyPath,
    checked,
    output_option,
    overlap_option,
    overwrite_option,
    tile_size_option,
    verbosity,
    verbosity_options,
)
from geosr.errors import GeosrError, OptionError

log = logging.getLogger("geosr")

if TYPE_CHECKING:
    from geosr.checkpoint import ModelCard

DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}  # --dtype: the torch dtype's name


class ExportError(GeosrError):
    """A model that cannot be exported as asked."""


def _model_name(value: str) -> str:
    """--name: any text but an empty or blank one (the name `--model NAME` finds, and what geosr info shows)."""
    if not value.strip():
        raise OptionError(
            "an empty or blank model name; give --name a name (e.g. degan-x4), or leave --name out to keep the card's",
            option="--name",
        )
    return value


@click.command()
@click.argument("model", metavar="MODEL", type=NonEmptyPath())
@output_option(
    "The model file to write: .safetensors (a geosr model), or .onnx (the generator as ONNX, with the "
    "card in its metadata; needs the onnx extra).",
    dest="out",
    metavar="FILE",
    type=LocalPath(dir_okay=False, path_type=Path),
)
@click.option(
    "--dtype",
    type=click.Choice(sorted(DTYPES)),
    default="fp16",
    show_default=True,
    help="Stored weight type of a .safetensors output (the model always runs from float32 copies; fp16 halves the "
    "file). An ONNX output is float32.",
)
@click.option(
    "--name",
    callback=checked(_model_name),
    help="Model name in the card (the name `--model NAME` finds when bundled).",
)
@click.option("--description", help="One-line description in the card.")
@click.option(
    "--metrics",
    "report",
    type=NonEmptyPath(dir_okay=False, path_type=Path),
    help="A `geosr evaluate -o FILE.json` report of this model file (MODEL itself): its mean goes into the card.",
)
@tile_size_option("Recommended tile size in input pixels [the model's].")
@overlap_option(
    "Recommended overlap in input pixels, at most half the tile size [the model's; a quarter of "
    "--tile-size when that is given]."
)
@click.option("--note", "notes", multiple=True, help="A line for the card's training notes (repeatable).")
@click.option("--opset", type=int, help="ONNX opset of a .onnx output, 18..23 [18].")
@click.option(
    "--deepness",
    is_flag=True,
    help="A .onnx output in the form QGIS's Deepness plugin runs: input 1 x bands x TILE x TILE in [0, 1].",
)
@click.option(
    "--resolution-cm",
    type=float,
    help="With --deepness: the imagery's resolution in cm per pixel, Deepness's processing resolution.",
)
@overwrite_option("Replace an existing output file (never MODEL itself).")
@verbosity_options
@click.pass_context
@handle_errors
@stop_on_sigterm
def export(
    ctx,
    model,
    out,
    dtype,
    name,
    description,
    report,
    tile_size,
    overlap,
    notes,
    opset,
    deepness,
    resolution_cm,
    overwrite,
) -> None:
    """Write MODEL (a geosr model file) as a model to publish: cast to --dtype, renamed, with measured metrics; or,
    to a .onnx output, its generator as ONNX (docs/onnx.md)."""
    from geosr.checkpoint import model_file
    from geosr.raster import check_output_file, check_output_location, size_str
    from geosr.tiling import tiling_problem

    if out.suffix.lower() not in (".safetensors", ".onnx"):
        raise click.UsageError(
            f"{out}: geosr export writes a geosr model (.safetensors) or ONNX (.onnx), chosen by "
            "the name; name the output FILE.safetensors or FILE.onnx"
        )
    source = model_file(model)
    check_output_file(out, overwrite=overwrite, source=source)  # never the input, even with --overwrite
    check_output_location(out)  # a folder that is a file, or one this user cannot write in: now, not after the work
    if out.suffix.lower() == ".onnx":
        _to_onnx(
            ctx,
            model,
            out,
            opset=opset,
            deepness=deepness,
            tile_size=tile_size,
            overlap=overlap,
            resolution_cm=resolution_cm,
            overwrite=overwrite,
        )
        return
    if opset is not None or deepness or resolution_cm is not None:
        raise click.UsageError("--opset, --deepness and --resolution-cm are for an ONNX output (-o FILE.onnx)")
    import torch

    from geosr.checkpoint import load_generator, save_generator

    net, card = load_generator(model)
    card = _edited_card(
        card,
        source,
        name=name,
        description=description,
        tile_size=tile_size,
        overlap=overlap,
        report=report,
        notes=notes,
    )
    problem = tiling_problem(card.tile_size, card.overlap)
    if problem and (tile_size is not None or overlap is not None):
        raise OptionError(problem, option="--overlap" if overlap is not None else "--tile-size")
    card.validate(str(out))
    if report is not None:
        _check_cast_keeps_the_measure(report, source, dtype)
    elif card.metrics and not _cast_is_exact(source, dtype):
        log.warning(
            "%s: the card's metrics were measured on weights that --dtype %s changes: left out of %s; evaluate it and "
            "export it again with --metrics",
            model, dtype, out,
        )  # fmt: skip
        card = replace(card, metrics={})
    target = getattr(torch, DTYPES[dtype])
    if target != torch.float32:
        limit = torch.finfo(target).max
        for key, value in net.state_dict().items():
            if value.is_floating_point() and value.abs().max() > limit:
                raise ExportError(f"{model}: weight {key} exceeds the {dtype} range ({limit:g}); export as fp32")
    save_generator(out, net, card, dtype=target)
    if verbosity(ctx) >= 0:
        click.echo(f"{out}: {card.name}, x{card.scale}, {dtype}, {size_str(out.stat().st_size)}")


def _to_onnx(ctx: click.Context, model: str, out: Path, **export: Any) -> None:
    """The ONNX output: ``export`` (opset, deepness, tiling, resolution, overwrite) to geosr.onnx.export_onnx; a usage
    error for the options that edit a card, which an ONNX output has no place for."""
    if ctx.params.get("dtype") not in (None, "fp32") and (
        ctx.get_parameter_source("dtype") is not click.core.ParameterSource.DEFAULT
    ):
        raise click.UsageError(
            f"--dtype {ctx.params['dtype']}: an ONNX output is always written in float32 (onnxruntime runs it so); "
            "leave --dtype out"
        )
    card_edits = {
        "name": "--name",
        "description": "--description",
        "report": "--metrics",
        "notes": "--note",
    }
    given = [
        flag
        for param, flag in card_edits.items()
        if ctx.get_parameter_source(param) is not click.core.ParameterSource.DEFAULT
    ]
    if given:
        raise click.UsageError(
            f"{', '.join(given)}: not for an ONNX output; export a .safetensors model with "
            "them first, then that file to .onnx"
        )
    from geosr.onnx import export_onnx
    from geosr.raster import size_str

    result = export_onnx(model, out, **export)
    shape = " x ".join(map(str, result.input_shape))
    if verbosity(ctx) >= 0:
        click.echo(f"{out}: ONNX opset {result.opset}, input {shape}, {size_str(result.size_bytes)}")


def _edited_card(
    card: ModelCard,
    model: Path,
    *,
    name: str | None,
    description: str | None,
    tile_size: int | None,
    overlap: int | None,
    report: Path | None,
    notes: tuple[str, ...],
) -> ModelCard:
    """``card`` (of the model file ``model``) with the options' edits: name, description, tiling (an overlap defaults
    to a quarter of a given tile size), the metrics of a geosr evaluate report of ``model``, training notes added."""
    from geosr.evaluation_report import card_metrics
    from geosr.limits import default_overlap

    changes: dict = {}
    if name is not None:
        changes["name"] = name
    if description is not None:
        changes["description"] = description
    if tile_size is not None:
        changes["tile_size"] = tile_size
        if overlap is None:
            changes["overlap"] = default_overlap(tile_size)
    if overlap is not None:
        changes["overlap"] = overlap
    if report is not None:
        tiling = (changes.get("tile_size", card.tile_size), changes.get("overlap", card.overlap))
        changes["metrics"] = card_metrics(report, card.scale, tiling)
        _check_report_model(report, model)
    if notes:
        changes["training"] = {**card.training, "notes": [*card.training.get("notes", []), *notes]}
    return replace(card, **changes)


# The casts that keep every weight's value (the widening ones): a report of the source measures the export too.
_EXACT_CASTS = {("F16", "fp32"), ("BF16", "fp32"), ("F32", "fp32"), ("F16", "fp16"), ("BF16", "bf16")}


def _stored_dtypes(model: Path) -> set[str]:
    """The safetensors dtypes of the float weights of ``model`` (F32, F16, BF16)."""
    from geosr.safetensorsfile import read_header

    return {v["dtype"] for k, v in read_header(model).items() if k != "__metadata__" and v["dtype"][0] in "FB"}


def _cast_is_exact(model: Path, dtype: str) -> bool:
    """Whether --dtype keeps every weight of ``model`` as it is."""
    return all((d, dtype) in _EXACT_CASTS for d in _stored_dtypes(model))


def _check_cast_keeps_the_measure(report: Path, model: Path, dtype: str) -> None:
    """Raise ExportError (option --metrics) where --dtype would change the weights the report measured (fp32 weights
    cast to fp16, say): the card would state figures of other weights than the published ones."""
    stored = _stored_dtypes(model)
    if not _cast_is_exact(model, dtype):
        raise ExportError(
            f"{report}: it measured the {'/'.join(sorted(stored))} weights of {model}, which --dtype {dtype} changes; "
            f"export as {dtype} first, evaluate that file, then export it with --metrics",
            option="--metrics",
        )


def _check_report_model(report: Path, model: Path) -> None:
    """Raise ExportError (option --metrics) unless the geosr evaluate report ``report`` (already read once by
    card_metrics) measured the model file ``model``.

    A report that records its model's SHA-256 (``model_sha256``) must record ``model``'s; otherwise the model path it
    records must name ``model``'s file (links, ``..`` and hard links resolved), read as given, or, when relative, from
    this folder or from the report's (where geosr evaluate ran when it wrote the report beside it).
    """
    from geosr.checkpoint import model_sha256
    from geosr.raster import same_file

    doc = json.loads(report.read_text())
    measured, sha = doc.get("model"), doc.get("model_sha256")
    remedy = f"evaluate this model (geosr evaluate -m {model} ... -o FILE.json) or pass its own report"
    if isinstance(sha, str):
        own = model_sha256(model)
        if sha.lower() != own:
            raise ExportError(
                f"{report}: a report of {measured} (SHA-256 {sha[:12]}...), not of {model} (SHA-256 "
                f"{own[:12]}...); {remedy}",
                option="--metrics",
            )
        return
    if not isinstance(measured, str) or not measured:
        raise ExportError(f"{report}: the report names no model file; {remedy}", option="--metrics")
    named = Path(measured)
    if any(same_file(p, model) for p in (named, report.parent / named) if p.exists()):
        return
    raise ExportError(f"{report}: a report of {measured}, not of {model}; {remedy}", option="--metrics")
