"""`geosr info`: print a model file's card, list the bundled models, or show how a raster geosr wrote was made."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from geosr.cli.exits import handle_errors
from geosr.cli.options import NonEmptyPath, verbosity_options
from geosr.errors import printable


def model_file_facts(path) -> dict:
    """A model file itself: where it is, its size, the stored weight types and its SHA-256 (what a raster geosr
    wrote records as GEOSR_MODEL_SHA256)."""
    from geosr.checkpoint import model_sha256
    from geosr.safetensorsfile import read_header

    dtypes = sorted({v["dtype"] for k, v in read_header(path).items() if k != "__metadata__" and isinstance(v, dict)})
    return {
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "weights_stored_as": dtypes,
        "sha256": model_sha256(path),
    }


def file_facts(path) -> list[str]:
    """model_file_facts as lines."""
    from geosr.raster import size_str

    facts = model_file_facts(path)
    stored = "/".join(facts["weights_stored_as"]) or "none"
    return [
        f"file         {printable(facts['path'])}",
        f"size         {size_str(facts['size_bytes'])}, weights stored as {stored}",
        f"sha256       {facts['sha256']}",
    ]


def format_card(card, path: str, facts: list[str] | None = None) -> str:
    """A readable, multi-line description of a model card (``facts``: file_facts' lines, after the first)."""
    from geosr.checkpoint import expected_shapes

    cfg = card.config
    lines = [
        f"model file   {path}",
        *(facts or []),
        f"name         {card.name}" + (f" - {card.description}" if card.description else ""),
        f"scale        x{cfg.scale}",
        f"bands        {cfg.in_channels} in ({', '.join(card.bands)}), {cfg.out_channels} out",
        f"architecture {cfg.n_blocks} residual block{'s' if cfg.n_blocks != 1 else ''}, {cfg.channels} channels, "
        f"attention {cfg.attention}, refiner {cfg.refiner}, global skip {'on' if cfg.global_skip else 'off'}",
        f"parameters   {sum(math.prod(shape) for shape in expected_shapes(cfg).values()) / 1e6:.2f} M",
        f"tiles        {card.tile_size} px, overlap {card.overlap} px (input pixels)",
        f"radiometry   {json.dumps(card.radiometry)}",
        f"geosr        {card.geosr_version} (format {card.format_version})",
    ]
    for title, block in (("training", card.training), ("metrics", card.metrics)):
        if block:
            lines.append(f"{title}:")
            lines += [f"  {k}: {json.dumps(v) if not isinstance(v, str) else v}" for k, v in block.items()]
        else:
            lines.append(f"{title:<12} (none recorded)")
    return "\n".join(lines)


def _facts(p) -> tuple[str, str, str]:
    """(size, CRS, pixel size) of a geosr.provenance.RasterProvenance, as text."""
    bands = f"{p.count} band{'s' if p.count != 1 else ''} {'/'.join(p.dtypes)}"
    size = f"{p.width} x {p.height} pixels, {bands}"
    if p.georeferencing == "gcps":
        return size, f"{p.crs or 'none'} (by ground control points)", "none (ground control points, no geotransform)"
    if p.georeferencing == "none":
        return size, "none (not georeferenced)", "none (not georeferenced)"
    pixel = f"{p.pixel_size[0]:.6g} x {p.pixel_size[1]:.6g}" + (f" {p.units}" if p.units else "")
    return size, p.crs or "none (a geotransform without a CRS)", pixel


def format_provenance(p) -> str:
    """How a raster geosr wrote was made: its size, CRS and pixel size, and every GEOSR_* tag, one per line; for a
    raster not written by geosr one line that says so, with the same facts."""
    size, crs, pixel = _facts(p)
    path = printable(str(p.path))
    if not p.written_by_geosr:
        return f"{path}: not written by geosr (no GEOSR_* tags); {size}, CRS {crs}, pixel size {pixel}"
    width = max(12, *(len(k) for k in p.tags))
    lines = [
        f"{'raster':<{width}} {path}",
        f"{'size':<{width}} {size}",
        f"{'crs':<{width}} {crs}",
        f"{'pixel size':<{width}} {pixel}",
    ]
    lines += [f"{k:<{width}} {printable(v)}" for k, v in p.tags.items()]
    return "\n".join(lines)


def read_raster(target: str):
    """The geosr.provenance.RasterProvenance of ``target`` when it is meant as a raster, else None (a model).

    A name with a raster suffix is a raster (RasterError when GDAL cannot read it); a .safetensors file or a name
    that is no file (a bundled model's) is a model; any other file is a raster if GDAL reads it, else a model (whose
    reading then says what is wrong with it).
    """
    from geosr.errors import RasterError
    from geosr.provenance import read_provenance
    from geosr.raster import RASTER_SUFFIXES
    from geosr.sources import is_remote

    path = Path(target)
    if is_remote(target) or path.suffix.lower() in RASTER_SUFFIXES:  # a URL or /vsi path: a raster (models are local)
        return read_provenance(target)
    if not path.is_file() or path.suffix.lower() == ".safetensors":
        return None
    try:
        return read_provenance(path)
    except RasterError:
        return None


@click.command()
@click.argument("target", metavar="[MODEL | RASTER]", required=False, type=NonEmptyPath())
@click.option("--json", "as_json", is_flag=True, help="Print the card (or the raster's facts and tags) as JSON.")
@verbosity_options
@handle_errors
def info(target: str | None, as_json: bool) -> None:
    """Show the model card of MODEL (a .safetensors model file or a bundled model name); without MODEL, list the
    models bundled with geosr. Given a RASTER written by geosr (geosr upscale's output; a local file, a URL or a
    /vsi path), show how it was made: its size, CRS and pixel size, and every GEOSR_* tag (model, model file
    SHA-256, scale, tiling, precision, consistency, self-ensemble, radiometry), one per line.

    A raster not written by geosr (no GEOSR_* tags) gets one line that says so, with its size, CRS and pixel size;
    the exit status is 0 for it too (--json says "written_by_geosr": false). A path that is neither a model file nor
    a raster GDAL reads is an error (exit 1).

    Of a model file the header is read, the weights it lists are checked against the card, and the file is hashed
    (the SHA-256 that outputs record as GEOSR_MODEL_SHA256): no weight is loaded and no model is built. An ONNX file
    geosr export wrote shows the card inside it, its layout and value range. Of a raster only the metadata is read;
    a GeoTIFF whose blocks run past the end of the file (cut short) is an error.
    """
    from geosr.bundled import bundled_models, default_model_name
    from geosr.checkpoint import read_card

    if target is None:
        models = bundled_models()
        if as_json:
            click.echo(
                json.dumps({name: read_card(path).to_dict() for name, path in models.items()}, indent=2, sort_keys=True)
            )
            return
        if not models:
            click.echo("no model is bundled with this installation of geosr")
            return
        for name, path in models.items():
            card = read_card(path)
            m = card.metrics
            quality = (
                f"val PSNR {m['val_psnr']:.2f} dB / SSIM {m['val_ssim']:.4f} (bicubic "
                f"{m['val_psnr_bicubic']:.2f} / {m['val_ssim_bicubic']:.4f})"
                if {"val_psnr", "val_psnr_bicubic"} <= set(m)
                else "no metrics recorded"
            )
            default = " (default)" if default_model_name(card.scale) == name else ""
            click.echo(f"{name:<16} x{card.scale}{default:<10} {quality}")
        return
    from geosr.errors import GeosrError
    from geosr.raster.reading import check_regular_file

    advice = "geosr info reads model files and rasters: give a file"  # a bundled model's name is no path: it passes
    check_regular_file(Path(target), GeosrError, advice=advice)
    if Path(target).suffix.lower() == ".onnx":
        _onnx_info(target, as_json)
        return
    raster = read_raster(target)
    if raster is not None:
        from geosr.raster.writing import damaged_output
        from geosr.sources import RemoteSource

        problem = None if isinstance(raster.path, RemoteSource) else damaged_output(Path(target), sparse_ok=True)
        if problem:
            raise GeosrError(f"{target}: damaged, {problem}; get the file again (or from its source)")
        click.echo(json.dumps(raster.to_dict(), indent=2) if as_json else format_provenance(raster))
        return
    from geosr.checkpoint import model_file

    card = read_card(target, weights=True)  # the header's tensors against the card: a card edited to lie is refused
    if as_json:  # the card's keys, and the file's under "file"
        doc = {**card.to_dict(), "file": model_file_facts(model_file(target))}
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
    else:
        click.echo(format_card(card, target, file_facts(model_file(target))))


def _onnx_info(target: str, as_json: bool) -> None:
    """The card and the ONNX facts of a model geosr export wrote as ONNX."""
    from geosr.checkpoint import ModelCard
    from geosr.onnx import OnnxError
    from geosr.onnxrun import read_onnx_metadata

    meta = read_onnx_metadata(target)
    if "geosr_card" not in meta:
        raise OnnxError(
            f"{target}: an ONNX model without geosr metadata (not written by geosr export); nothing to show"
        )
    card = ModelCard.from_dict(meta["geosr_card"], source=target)
    if as_json:
        click.echo(json.dumps({**meta, "geosr_card": card.to_dict()}, indent=2, sort_keys=True))
        return
    low, high = meta.get("geosr_input_range", ["?", "?"])
    onnx = (
        f"onnx         {meta.get('geosr_layout', '?')} layout, values in [{low}, {high}], "
        f"exported by geosr {meta.get('geosr_version', '?')}"
    )
    click.echo(format_card(card, target, [onnx]))
