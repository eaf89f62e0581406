"""`geosr evaluate`: PSNR/SSIM of a model and of bicubic with the UC Merced SR literature's protocol."""

from __future__ import annotations

from pathlib import Path

import click

from geosr.cli.exits import handle_errors, stop_on_sigterm
from geosr.cli.options import (
    LocalPath,
    NonEmptyPath,
    bands_option,
    batch_size_option,
    consistency_option,
    device_option,
    model_option,
    output_option,
    overlap_option,
    overwrite_option,
    precision_option,
    scale_option,
    self_ensemble_option,
    tile_size_option,
    verbosity,
    verbosity_options,
)
from geosr.cli.progress import progress_bar
from geosr.cli.threads import threads_option
from geosr.errors import DataError, OptionError, OutputExistsError

REPORT_SUFFIXES = (".json", ".csv")


def _report_path(ctx, param, value: Path | None) -> Path | None:
    if value is not None and value.suffix.lower() not in REPORT_SUFFIXES:
        raise click.BadParameter(f"{value}: write .json or .csv")
    return value


@click.command(context_settings={"max_content_width": 120})
@model_option(
    "A model file (.safetensors; geosr train's best.safetensors) or a bundled model's name; default: the "
    "bundled model for --scale.",
    dest="model_spec",
)
@click.option(
    "--data",
    "-d",
    "data",
    required=True,
    type=NonEmptyPath(),
    metavar="DIR",
    help="The data set: UC Merced, AID, any (class-)folder of images, HR/ + LR_xN/, GeoTIFF tiles.",
)
@click.option(
    "--split",
    type=click.Choice(["val", "test", "all"]),
    default="test",
    show_default=True,
    help="Which images: the data set's deterministic split (UC Merced: val 50-59, test 60-99).",
)
@scale_option()
@bands_option(
    "1-based bands to measure, any number: the model runs them in groups of its channels, as upscale does "
    "(default: the first bands, as many as the model takes, or all of an image with fewer)."
)
@output_option(
    "Also write the results to FILE.json or FILE.csv (per image, per class, mean).",
    dest="out",
    required=False,
    metavar="FILE",
    type=LocalPath(dir_okay=False, path_type=Path),
    callback=_report_path,
)
@click.option(
    "--save-images",
    type=LocalPath(file_okay=False, path_type=Path),
    default=None,
    metavar="DIR",
    help="Write the model's SR images to DIR/<class>/<name> (.png, or .tif for georeferenced or non-8-bit).",
)
@click.option(
    "--preview",
    type=LocalPath(file_okay=False, path_type=Path),
    default=None,
    metavar="DIR",
    help="Write side-by-side PNG crops HR | bicubic | model of every image to DIR.",
)
@click.option(
    "--max-images",
    type=click.IntRange(0),
    default=0,
    help="Measure only this many images, spread evenly over the split (0: all).",
)
@tile_size_option("Tile size in input pixels, as geosr upscale takes it [model card].")
@overlap_option("Overlap of neighbouring tiles in input pixels, as geosr upscale takes it [model card].")
@batch_size_option("Tiles per model call.", default=8)
@consistency_option()
@self_ensemble_option()
@click.option(
    "--uncertainty",
    is_flag=True,
    default=False,
    help="Also measure geosr upscale's error map (--uncertainty there) against the actual error: Spearman "
    "per pixel and per 8x8 block against the bicubic gradient's, and its calibration; in the -o report too "
    "(JSON: 'uncertainty' and per image; CSV: the uncertainty_* columns). Implies --self-ensemble.",
)
@overwrite_option(
    "Replace an existing -o file that is not a report of geosr evaluate, and images of --save-images or --preview."
)
@device_option()
@precision_option("Precision of the model's forward pass (fp32 measures exactly).", default="fp32")
@threads_option
@verbosity_options
@click.pass_context
@handle_errors
@stop_on_sigterm
def evaluate(
    ctx,
    model_spec,
    data,
    split,
    scale,
    bands,
    out,
    save_images,
    preview,
    max_images,
    tile_size,
    overlap,
    batch_size,
    consistency,
    self_ensemble,
    uncertainty,
    overwrite,
    device,
    precision,
) -> None:
    """PSNR and SSIM of a model and of bicubic upsampling on a data set's split, per class and overall, with the
    protocol of the UC Merced super-resolution literature: mean of per-channel PSNR on 0..255, Gaussian SSIM
    (11, sigma 1.5) averaged over channels, SCALE pixels cropped at each border, LR by MATLAB-style bicubic
    downsampling (with antialiasing) of the HR cropped to a multiple of the scale; paired layouts use their own LR.
    The model runs tiled as geosr upscale runs it (the model card's tiles unless --tile-size/--overlap), so the SR
    images --save-images writes are the ones geosr upscale writes for the same LR image, model and --precision.

    \b
    geosr evaluate --model runs/x4/best.safetensors --data ../shared/data/ucmerced --split val
    """
    from geosr.checkpoint import load_generator, model_sha256, read_card
    from geosr.datasets import check_pairs, spread
    from geosr.device import resolve_device, resolve_precision
    from geosr.evaluation import evaluate_images
    from geosr.evaluation_report import Report
    from geosr.plan import card_tiling
    from geosr.predictor import select_model
    from geosr.uncertainty import calibration_factor

    path = select_model(model_spec, scale)  # the card and the weights' shapes are checked before the model is built
    header_card = read_card(path)
    tile, lap = card_tiling(header_card, path.name, tile_size, overlap)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    images = _images(data, split)
    items = spread(images.items, max_images)
    _check_outputs(out, save_images, preview, path, images.root, items, overwrite)
    scale = header_card.scale
    check_pairs(images.layout, items, scale)
    given = bands is not None
    bands = _model_bands(bands, items, header_card.config.in_channels)
    dtypes = _check_headers(items, bands, given, scale)
    model, card = load_generator(path, device=dev)
    sha256 = model_sha256(path)
    k = calibration_factor(card, sha256) if uncertainty else None
    self_ensemble = self_ensemble or uncertainty  # the map's output is the self-ensemble's mean

    bar = progress_bar(total=len(items), unit="image", disable=verbosity(ctx) < 0, leave=False, dynamic_ncols=True)
    try:
        results = evaluate_images(
            items,
            scale,
            model,
            bands=bands,
            device=dev,
            precision=prec,
            tile_size=tile,
            overlap=lap,
            batch_size=batch_size,
            consistency=consistency,
            self_ensemble=self_ensemble,
            uncertainty_k=k,
            on_image=_image_writer(bar, save_images, preview),
        )
    finally:
        bar.close()
    report = Report(
        data=str(Path(data).resolve()),
        layout=images.layout,
        split=split,
        scale=scale,
        model=str(path),
        results=results,
        consistency=consistency,
        self_ensemble=self_ensemble,
        model_sha256=sha256,
        tile_size=tile,
        overlap=lap,
        precision=prec,
    )
    if not results:
        raise DataError(f"{data}: none of the {len(items)} images can be measured (see the warnings above)")
    where = f"{images.root} ({images.layout}, {split} split"
    _show_and_write(report, uncertainty, out, f"{path} (x{scale}) on {where}", len(items), dtypes)


def _images(data, split: str):
    """The data set's images of ``split`` (geosr.datasets.find_images); DataError when the split has none."""
    from geosr.datasets import find_images, split_rule

    images = find_images(data, split)
    if not len(images):
        rule = split_rule(images.layout)
        hint = "; use --split val or --split all" if split == "test" else "; use --split all"
        raise DataError(f"{data}: the {split} split has no images (split rule: {rule}){hint}")
    return images


def _check_outputs(out, save_images, preview, model: Path, root: Path, items, overwrite: bool) -> None:
    """Before any work: the report (-o) and the images (--save-images, --preview) may be written where asked.

    An existing -o file is replaced only when it is a report of geosr evaluate, or with --overwrite; the image
    folders lie outside the data set (a later evaluation would measure them), no two images of the run are
    written to one file, and none replaces an existing one without --overwrite."""
    from geosr.evaluation_report import is_evaluation_report
    from geosr.fileio import check_target
    from geosr.raster import check_output_location

    if out is not None:
        check_target(
            out,
            what="the evaluation report",
            option="--output",
            overwrite=overwrite,
            inputs=[model],
            replaceable=is_evaluation_report,
        )
        check_output_location(out)  # a read-only folder: now, not after every image is measured

    def saved(item) -> list[Path]:  # the files --save-images may write for an item (geosr.pictures.save_image)
        stem = _saved_stem(save_images, item.label, item.name)
        return [stem.with_suffix(".png"), stem.with_suffix(".tif")]

    def strip(item) -> list[Path]:  # the --preview strip of an item
        return [_strip_path(preview, item.label, item.name)]

    for folder, option, files in ((save_images, "--save-images", saved), (preview, "--preview", strip)):
        if folder is None:
            continue
        check_output_location(folder)
        if folder.resolve() == root.resolve() or root.resolve() in folder.resolve().parents:
            raise OptionError(
                f"{folder}: lies in the data set {root}, where a later evaluation would take the images written for "
                f"real ones; give {option} a folder outside it",
                option=option,
            )
        seen: dict[Path, Path] = {}
        for item in items:
            paths = files(item)
            if paths[0] in seen:
                raise OptionError(
                    f"{seen[paths[0]]} and {item.path} would both be written to {paths[0]}; rename one of them, or "
                    f"leave out {option}",
                    option=option,
                )
            seen[paths[0]] = item.path
            existing = [f for f in paths if f.exists()]
            if existing and not overwrite:
                raise OutputExistsError(
                    f"{existing[0]}: already exists; pass --overwrite to replace the images in {folder}, or give "
                    f"{option} another folder",
                    option="--overwrite",
                )


def _model_bands(bands, items, c: int) -> list[int] | tuple[int, ...]:
    """The bands to measure: --bands (any number: the model of ``c`` input channels runs them in groups, as geosr
    upscale does), or the first image's first ``c`` bands (all of them where it has fewer)."""
    from geosr.datasets import default_bands

    return default_bands(items[0].path, c, fewer=True) if bands is None else bands


def _check_headers(items, bands, given: bool, scale: int) -> set[str]:
    """Every image's header before any work (an image that cannot be measured found now, not after the others):
    the bands measured (from --bands, else those of the first image), the size the protocol needs. Returns the
    images' dtypes."""
    from geosr.datasets import check_bands, image_info
    from geosr.evaluation import check_size

    dtypes = set()
    for item in items:
        info = image_info(item.path)
        dtypes.add(info.dtype)
        if not given and max(bands) > info.count:
            raise DataError(
                f"{item.path} has {info.count} band{'s' if info.count != 1 else ''}, {items[0].path} (the first "
                f"image, whose bands {','.join(map(str, bands))} are measured) {max(bands)} or more: evaluate images "
                "of different band counts apart, or pass --bands that every image has"
            )
        check_bands(item.path, info.count, bands)
        if item.lr_path(scale) is None:
            check_size(item.path, info.width, info.height, scale)
    return dtypes


def _image_writer(bar, save_images: Path | None, preview: Path | None):
    """evaluate_images's on_image: the progress bar, and the SR image (--save-images) and preview strip (--preview)
    of every image."""
    from geosr.pictures import preview_strip, save_image, to_dtype

    def on_image(result, outputs):
        bar.update(1)
        if save_images is not None and outputs.sr is not None:
            stem = _saved_stem(save_images, result.label, result.name)
            save_image(stem, to_dtype(outputs.sr, outputs.pair.dtype), like=outputs.pair.item.path)
        if preview is not None:
            save_image(_strip_path(preview, result.label, result.name), preview_strip(outputs))

    return on_image


def _saved_stem(folder: Path, label: str, name: str) -> Path:
    """--save-images: an image's path without its suffix (save_image adds .png or .tif), FOLDER/<class>/<name>."""
    return folder / label / name


def _strip_path(folder: Path, label: str, name: str) -> Path:
    """--preview: an image's strip, FOLDER/<class>_<name>.png (flat: a class's slashes become underscores)."""
    return folder / (f"{label.replace('/', '_')}_{name}.png" if label else f"{name}.png")


def _show_and_write(report, uncertainty: bool, out: Path | None, head: str, listed: int, dtypes: set[str]) -> None:
    """The head line (``head``, the images measured of the ``listed``), a note on non-8-bit figures, the summary
    table (and the error map's measures, with --uncertainty) on stdout; the report to ``out``."""
    from geosr.evaluation_report import format_table, write_report
    from geosr.uncertainty import format_summary, summarise_measures

    n = len(report.results)
    left = f"; {listed - n} left out" if n < listed else ""
    click.echo(f"{head}, {n} image{'s' if n != 1 else ''}{left})")
    if dtypes - {"uint8"}:
        click.echo(
            f"Images of {', '.join(sorted(dtypes - {'uint8'}))} are measured on each band's percentile range (the "
            "range the model sees) mapped to 0..255: their PSNR/SSIM do not compare with 8-bit figures, their gain "
            "over bicubic does."
        )
    click.echo(format_table(report.summary()))
    if uncertainty:
        click.echo(format_summary(summarise_measures([r.uncertainty for r in report.results])))
    if out is not None:
        write_report(report, out)
