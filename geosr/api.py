"""geosr from Python: super-resolve files, folders, numpy arrays and xarray DataArrays; the functions of ``geosr``.

    import geosr

    geosr.upscale("scene.tif", "scene_x4.tif")                     # as `geosr upscale scene.tif -o scene_x4.tif`
    summary = geosr.upscale_folder("tiles/", "tiles_x4/", report="tiles_x4.json")
    model = geosr.load_model("degan-x4")                           # load once, pass as model= to every call
    sr = geosr.upscale_array(rgb, model=model, nodata=0)           # (bands, H, W) -> (bands, 4H, 4W), same dtype
    sr = geosr.upscale_array(img, model=model, band_axis=-1)       # (H, W, bands) -> (4H, 4W, bands)
    sr_da = geosr.upscale_dataarray(da, model=model)               # coordinates, CRS and transform follow

The defaults are the command line's: the bundled model for the scale (x4 when neither model nor scale is given), the
model card's tile size and overlap, device and precision "auto", consistency on. Errors are the exceptions of
geosr.errors (``geosr.GeosrError`` and its subclasses, with one-line messages that name the keyword arguments); an
option that does not exist is a TypeError, as for any Python function. ``model`` is a bundled model's name, a model
file, or a model from ``load_model`` (which keeps its device and precision: device= or precision= naming others is an
OptionError).

Options (keyword arguments, in input pixels where they are sizes), the same as `geosr upscale`'s: tile_size, overlap,
batch_size, bands (1-based, in output order), value_range ((min, max) mapped to the model's range instead of
percentiles), consistency (bool), and for files also aoi (a GeoJSON file, WKT, a shapely polygon or a geosr.aoi.AOI),
bbox ((minx, miny, maxx, maxy)), aoi_crs, cog, compress, overwrite, panel_width.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from geosr.apiwords import (
    check_loaded,
    check_names,
    checked_device,
    checked_flag,
    checked_path,
    checked_precision,
    checked_scale,
    file_options,
    python_messages,
    python_words,
)
from geosr.arraylayout import dataarray_grid, dataarray_layout, numpy_layout, upscaled_coords
from geosr.arrays import upscale_in_layout
from geosr.batch import BatchJob, BatchSummary, run_batch
from geosr.errors import ModelFileError, OptionError, RasterError
from geosr.lazy import fixed_radiometry, is_dask_array, model_ref, upscale_lazy
from geosr.pipeline import FileResult, ProgressCallback
from geosr.plan import card_tiling
from geosr.predictor import Predictor, load_predictor, select_model
from geosr.provenance import provenance_tags
from geosr.raster import carried_tags
from geosr.sources import is_remote
from geosr.stac import resolve_inputs

log = logging.getLogger("geosr.api")

PathLike = str | os.PathLike
ModelSpec = str | os.PathLike | Predictor | None

_ARRAY_OPTIONS = ("tile_size", "overlap", "batch_size", "bands", "consistency", "panel_width")


# --- models ---------------------------------------------------------------------------------------------------------


@python_messages
def load_model(
    name_or_path: PathLike | None = None,
    device: str = "auto",
    precision: str = "auto",
    *,
    scale: int | None = None,
    self_ensemble: bool = False,
) -> Predictor:
    """Load a model for inference: a bundled model's name ("degan-x4", ``geosr info`` lists them) or a model file.

    None takes the bundled model for ``scale`` (4 when None too). device: auto, cpu, cuda, cuda:N or mps; precision:
    auto, fp32, bf16 or fp16; self_ensemble: every tile runs 8 times, flipped and transposed, and the outputs are
    averaged (higher PSNR for 8 times the compute). Returns the predictor to pass as ``model=`` to the other functions
    (load it once for many calls). Raises ModelFileError for a missing or invalid model file or one of another scale
    than ``scale``, DeviceError for a device or precision this machine lacks.
    """
    checked_path(name_or_path, "name_or_path", optional=True)
    checked_flag(self_ensemble, "self_ensemble")
    device, precision, scale = checked_device(device), checked_precision(precision), checked_scale(scale)
    return load_predictor(name_or_path, scale, device, precision, self_ensemble=self_ensemble)


def _model_loader(model: ModelSpec, scale: int | None, device: str, precision: str) -> Callable[[], Predictor]:
    """Every check of ``model``, ``scale``, ``device`` and ``precision`` that loads nothing (a model file's header at
    most), made now, before any output is looked at; returns what loads the model when a file needs it."""
    scale = checked_scale(scale)
    device, precision = checked_device(device), checked_precision(precision)
    if isinstance(model, Predictor):
        if scale is not None and scale != model.scale:
            raise ModelFileError(
                f"{model.source} is a x{model.scale} model but scale={scale} asks for x{scale}; "
                f"pass a x{scale} model or scale={model.scale}",
                option="--scale",
            )
        check_loaded(model, device, precision)
        return lambda: model
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise OptionError(
            f"model {model!r}: give a model file, a bundled model's name (geosr info lists them) or a model from "
            "geosr.load_model",
            option="model",
        )
    path = select_model(model, scale)
    return lambda: load_predictor(path, scale, device, precision)


# --- files ----------------------------------------------------------------------------------------------------------


@python_messages
def upscale(
    src: PathLike,
    dst: PathLike,
    scale: int | None = None,
    model: ModelSpec = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    skip_existing: bool = False,
    progress: ProgressCallback | None = None,
    assets: Sequence[str] | None = None,
    **options: Any,
) -> FileResult:
    """Super-resolve the raster ``src`` into ``dst``, as ``geosr upscale SRC -o DST`` does.

    src: a local file, or any path GDAL reads (geosr.sources: an http(s):// URL, s3://, gs://, az://, zip://, a /vsi
    path), or a STAC item (a JSON file or URL) with ``assets``: the keys of the assets read as its bands, in order
    (geosr.stac). dst: the output file (GeoTIFF; .png/.jpg for plain images), or an existing folder to hold it.
    scale: 2, 3 or 4 (None: the model's; 4 for the bundled default); model: see the module docstring. skip_existing:
    leave an existing output alone (the result says "skipped"). progress: called with a geosr.pipeline.Progress as
    tiles are done. options: see the module docstring. Returns the FileResult (status "done" or "skipped", seconds,
    output pixels, tiles). Raises GeosrError (RasterError, ModelFileError, OutputExistsError, OptionError, ...) with
    a one-line message; nothing of the output is left on any error or interruption.
    """
    checked_path(src, "src")
    checked_path(dst, "dst")
    checked_flag(skip_existing, "skip_existing")
    [source] = resolve_inputs([src], assets)
    if not is_remote(source) and source.is_dir():
        raise RasterError(f"{src}: is a folder; geosr.upscale_folder super-resolves the rasters of a folder")
    folder_meant = isinstance(dst, str) and dst.endswith(("/", os.sep))  # "new/": a folder to make, as on the CLI
    job = BatchJob((source,), dst if folder_meant else Path(dst), file_options("upscale", options), skip_existing)
    [result] = run_batch(job, _model_loader(model, scale, device, precision), progress=progress).results
    return result


@python_messages
def upscale_folder(
    src: PathLike | Sequence[PathLike],
    dst: PathLike,
    scale: int | None = None,
    model: ModelSpec = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    skip_existing: bool = False,
    files_in_flight: int = 1,
    report: PathLike | None = None,
    progress: ProgressCallback | None = None,
    on_result: Callable[[FileResult], None] | None = None,
    **options: Any,
) -> BatchSummary:
    """Super-resolve every raster of a folder (searched recursively; or of a list of files and folders) into ``dst``,
    keeping the layout below the inputs' common folder, as ``geosr upscale FOLDER -o DST`` does.

    A file that fails does not stop the batch: it is logged as a warning and recorded in the summary (its ``results``
    have status "failed" and the message); ``summary.count("failed")`` says how many. skip_existing: leave existing
    outputs alone (resumes an interrupted batch). files_in_flight: files processed at once, their tiles sharing the
    model's calls (``geosr.batch.upscale_batch``; for folders of small files on a GPU). report: write the JSON batch
    report there (geosr.report), also when the batch fails or is interrupted. on_result: called with each file's
    FileResult. Other arguments as for ``upscale``. Raises GeosrError before any file is done for missing inputs, a
    folder without rasters, a bad option or model; KeyboardInterrupt stops the batch (the file under way leaves
    nothing behind).
    """
    listed = isinstance(src, Sequence) and not isinstance(src, (str, bytes))
    inputs = [checked_path(p, "src") for p in (list(src) if listed else [src])]
    checked_path(dst, "dst")
    checked_flag(skip_existing, "skip_existing")
    job = BatchJob(
        resolve_inputs(inputs),
        Path(dst),
        file_options("upscale_folder", options),
        skip_existing,
        files_in_flight,
        Path(checked_path(report, "report")) if report is not None else None,
    )
    load = _model_loader(model, scale, device, precision)
    if job.single and not Path(dst).exists():  # dst is a folder here, also for one file (upscale takes a file name)
        Path(dst).mkdir(parents=True)

    def python(result: FileResult) -> FileResult:  # its message in keyword arguments, as the errors' (see above)
        return replace(result, message=python_words(result.message)) if result.message else result

    def each(result: FileResult) -> None:
        if result.status == "failed":
            log.warning("%s", python(result).message)
        if on_result is not None:
            on_result(python(result))

    summary = run_batch(job, load, progress=progress, on_result=each)
    summary.results = [python(r) for r in summary.results]
    return summary


# --- arrays ---------------------------------------------------------------------------------------------------------


@python_messages
def upscale_array(
    array: np.ndarray,
    scale: int | None = None,
    model: ModelSpec = None,
    nodata: float | None = None,
    value_range: tuple[float, float] | None = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    band_axis: int | None = None,
    **options: Any,
) -> np.ndarray:
    """Super-resolve a (bands, H, W) or (H, W) numpy array: the pixels ``geosr.upscale`` writes for a raster that
    holds ``array`` (with ``nodata``), returned as an array of the same dtype, (bands, s*H, s*W) or (s*H, s*W).

    band_axis: the axis of the bands of a 3-D array (-1: (H, W, bands), returned as (s*H, s*W, bands)); the other
    two are the rows and the columns, in that order. None takes the first axis but refuses, naming band_axis, an
    array that looks band-last (first axis over 16, last at most 4: an (H, W, 3) image); a 2-D array is one band.
    A numpy.ma.MaskedArray's masked pixels are invalid as nodata pixels are, and the result is a MaskedArray masked
    over each masked pixel's s x s block (its data there: ``nodata``, NaN for floats, 0 for integers).

    The same radiometry (uint8 0..255; other dtypes by global per-band percentiles or ``value_range``), tiling,
    blending, band groups (a 3-channel model runs 4 bands as (1, 2, 3), (4, pad, pad)), consistency correction and
    nodata handling: the ``nodata`` value, NaN, +-Inf and extreme float fills (magnitude 1e30 or more) are invalid,
    never reach valid pixels and stay nodata (NaN for floats without ``nodata``). Works by strips of tile rows: the
    extra memory is a few float32 copies of a strip, not of the array. options: tile_size, overlap, batch_size,
    bands, consistency, panel_width. Raises RasterError for an array geosr cannot super-resolve (shape, dtype, a
    band-last look), OptionError for a bad option value (a nodata value the dtype cannot hold, a band_axis that is
    no axis), ModelFileError for a bad model.
    """
    check_names(options, _ARRAY_OPTIONS, "upscale_array")
    layout = numpy_layout(np.shape(array), band_axis)
    opts = file_options("upscale_array", {**options, "value_range": value_range})
    predictor = _model_loader(model, scale, device, precision)()
    return upscale_in_layout(array, layout, predictor, opts, nodata=nodata)


@python_messages
def upscale_dataarray(
    da: Any,
    scale: int | None = None,
    model: ModelSpec = None,
    nodata: float | None = None,
    value_range: tuple[float, float] | None = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    **options: Any,
) -> Any:
    """Super-resolve an xarray DataArray of dims (band, y, x) or (y, x), in any order; returns a DataArray of the
    same dims (in the same order), dtype, name, attributes and non-spatial coordinates. Its attributes drop
    the input's STATISTICS_* and GEOSR_* and add the run's GEOSR_* provenance (geosr.provenance) and
    GEOSR_RADIOMETRY; its encoding keeps only ``grid_mapping`` (the source file's dtype, scale_factor, _FillValue
    and chunks do not describe the result).

    A Dask-backed DataArray (``rioxarray.open_rasterio(path, chunks=...)``) gives a Dask-backed result that has
    computed no pixel (geosr.lazy): its blocks run where Dask runs them, threads or the workers of a
    dask.distributed cluster, which load the model from its file (a bundled name, a model file, or a loaded model's
    file, at the same path on every worker), and give the in-memory result's pixels within 1 grey level. The
    radiometry is fixed once for the whole array, from a decimated sample computed here.

    Dims are told by name (geosr.arraylayout.dataarray_layout): band, bands, channel(s), spectral or wavelength; y,
    lat, latitude or row; x, lon, longitude or col (or CF axis attributes). The x and y coordinates must be a
    regular grid (evenly spaced within 1e-6 of a step, no repeats) and become the centres of the new pixels
    (``scale`` times as many, over the same extent); a single coordinate takes its pixel size from the stored
    transform (rioxarray's ``spatial_ref`` GeoTransform or a ``transform`` attribute). The new transform is written
    to the GeoTransform (and ``transform`` attribute) there, so with rioxarray installed ``result.rio.transform()``
    is the input's times ``Affine.scale(1/s)`` and ``result.rio.crs`` the input's. Coordinates that vary in both y
    and x (2-D lat/lon) are dropped. nodata: None takes rioxarray's ``da.rio.nodata`` when installed, else the
    ``_FillValue`` or ``nodata`` attribute. Otherwise as ``upscale_array``. Needs xarray (``pip install
    geosr[xarray]``); raises ImportError without it, RasterError, naming the dimension and the remedy, for dims it
    cannot tell apart, x/y coordinates that are not a regular grid (irregular, repeated) or a single coordinate
    without a stored transform.
    """
    try:
        import xarray as xr
    except ImportError:
        raise ImportError("geosr.upscale_dataarray needs xarray: pip install geosr[xarray]") from None
    if not isinstance(da, xr.DataArray):
        raise TypeError(f"upscale_dataarray() takes an xarray.DataArray, got {type(da).__name__}")
    check_names(options, _ARRAY_OPTIONS, "upscale_dataarray")
    layout = dataarray_layout(da)  # RasterError for dims it cannot tell apart
    grid = dataarray_grid(da, layout)  # RasterError for x/y coordinates that are not a regular grid
    opts = file_options("upscale_dataarray", {**options, "value_range": value_range})
    if nodata is None:
        nodata = _dataarray_nodata(da)
    predictor = _model_loader(model, scale, device, precision)()
    s = predictor.scale
    data = da.data if is_dask_array(da.data) else np.asarray(da.values)
    radiometry = fixed_radiometry(layout.bands_first(data), opts, nodata)  # once for the whole array
    if is_dask_array(data):
        ref = model_ref(predictor, device, precision, loaded=isinstance(model, Predictor))
        values = upscale_lazy(data, layout, predictor, opts, nodata=nodata, radiometry=radiometry, model=ref)
    else:
        values = upscale_in_layout(data, layout, predictor, opts, nodata=nodata, radiometry=radiometry)
    coords = upscaled_coords(da, layout, grid, s, opts.bands)
    result = xr.DataArray(
        values, dims=da.dims, coords=coords, attrs=_dataarray_attrs(da, predictor, nodata, options), name=da.name
    )
    result.attrs["GEOSR_RADIOMETRY"] = radiometry.describe()
    # the input's encoding says how its source file stored it (dtype, scale_factor, _FillValue, chunk sizes, ...),
    # not how the new pixels are stored: only the link to the grid mapping is kept
    result.encoding = {k: v for k, v in da.encoding.items() if k in KEPT_ENCODING}
    if grid.transform is not None:
        new = grid.transform @ Affine.scale(1 / s)
        for coord in result.coords.values():
            if "GeoTransform" in coord.attrs:
                coord.attrs["GeoTransform"] = " ".join(str(v) for v in new.to_gdal())
        if "transform" in result.attrs:
            result.attrs["transform"] = tuple(new)[:6]
    return result


KEPT_ENCODING = ("grid_mapping",)  # the one entry of a DataArray's encoding that its result keeps


def _dataarray_attrs(da: Any, predictor: Predictor, nodata: float | None, options: dict[str, Any]) -> dict[str, Any]:
    """The result's attributes: the input's but its STATISTICS_* and GEOSR_* (geosr.raster.carried_tags), the run's
    GEOSR_* provenance (geosr.provenance), and ``nodata`` as ``_FillValue`` where the input declared its nodata
    value in its encoding only (rioxarray's masked reads), which the result does not keep."""
    attrs = carried_tags(da.attrs)
    if nodata is not None and "_FillValue" in da.encoding and not {"_FillValue", "nodata"} & set(attrs):
        attrs["_FillValue"] = nodata
    opts = file_options("upscale_dataarray", options)
    tile, overlap = card_tiling(predictor.card, predictor.source, opts.tile_size, opts.overlap)
    attrs.update(provenance_tags(predictor, tile=tile, overlap=overlap, consistency=opts.consistency))
    return attrs


def _dataarray_nodata(da: Any) -> float | None:
    try:
        import rioxarray  # noqa: F401  (registers the .rio accessor)

        value = da.rio.nodata
    except ImportError:
        value = da.attrs.get("_FillValue", da.attrs.get("nodata"))
    if value is None:
        return None
    value = float(np.asarray(value).item())
    if math.isnan(value) and da.dtype.kind != "f":
        return None
    return value
