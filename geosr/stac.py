"""STAC items as inputs: assets chosen by key, read as the bands of one raster.

``resolve_inputs(specs, assets)`` turns the inputs of a run into what geosr reads (``geosr.sources.input_spec``);
with ``assets``, each input is a STAC item (a JSON file or an http(s) URL) and becomes one RemoteSource: a VRT,
kept as GDAL's XML in memory, whose bands are the bands of the assets in the order given (``gdalbuildvrt
-separate``), on the first asset's grid, so the output has the first asset's georeferencing (a transform and CRS,
or ground control points). Each asset's ``href`` is a URI reference (RFC 3986, as STAC has it): an absolute URL
(http(s)://, s3://, ..., file://) or a GDAL /vsi path is read as it is, a relative one is resolved against the
item's own address (its URL, or its file) and percent-decoded for a local file. The item is read as plain JSON:
only ``assets`` and their ``href`` are used.

The VRT keeps what each source band says of itself, so an item of one asset upscales as its file does: colour
interpretation (an alpha band stays one), nodata value, scale, offset, unit, metadata and mask. Where an asset has a
mask of all its bands (an internal mask; an alpha band beside other assets), the VRT's one per-dataset mask is the AND
of every asset's masks (``_dataset_mask``).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from affine import Affine
from rasterio.enums import MaskFlags

from geosr.errors import GeosrError, OptionError, RasterError
from geosr.raster import RASTER_SUFFIXES, georeferencing, open_raster
from geosr.sources import RemoteSource, http_request, input_spec, is_remote, local_files, redact

MAX_ITEM_BYTES = 16 << 20  # a STAC item is a few kB; more is not one
FETCH_TIMEOUT = 60  # seconds to fetch an item over http(s)
GDAL_TYPES = dict(  # numpy's dtype names -> GDAL's
    zip(
        ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float32", "float64"),
        ("Byte", "Int8", "UInt16", "Int16", "UInt32", "Int32", "UInt64", "Int64", "Float32", "Float64"),
    )
)
# rasterio's names of colour interpretations that GDAL spells otherwise (a VRT's <ColorInterp> takes GDAL's names, in
# any case: red, alpha, nir, ...)
GDAL_COLOR_NAMES = {"Y": "YCbCr_Y", "Cb": "YCbCr_Cb", "Cr": "YCbCr_Cr", "other_ir": "OtherIR"}


def resolve_inputs(
    specs: Sequence[str | os.PathLike | RemoteSource], assets: str | Sequence[str] | None = None
) -> tuple[Path | RemoteSource, ...]:
    """The inputs of a run as geosr reads them; with ``assets`` (keys: a sequence, or one str of comma-separated keys
    as --assets takes them), every input is a STAC item read as one raster of those assets' bands (``item_source``).

    Raises OptionError (a usage error naming --assets) for ``assets`` with an input that is no STAC item (a raster, a
    folder) and for a STAC item named ``.json`` without ``assets`` (listing its keys); the errors of ``item_source``.
    """
    inputs = tuple(input_spec(s) for s in specs)
    if assets is not None:
        return tuple(item_source(s, assets) for s in inputs)
    for source in inputs:
        if source.name.lower().endswith(".json") and (is_remote(source) or source.is_file()):
            item = _try_item(source)
            if item is not None:
                raise OptionError(
                    f"{source}: is a STAC item; choose the assets to read as bands with --assets "
                    f"(its assets: {', '.join(item['assets'])})",
                    option="--assets",
                )
    return inputs


def asset_keys(assets: str | Sequence[str]) -> list[str]:
    """The keys of ``assets``: one str of keys separated by commas ("red,green,blue", "rgba"; blanks around them
    dropped), or a sequence of keys taken as they are.

    Raises OptionError naming --assets for no key, or keys that are no strings (``assets=5`` is a TypeError).
    """
    keys = [k.strip() for k in assets.split(",") if k.strip()] if isinstance(assets, str) else list(assets)
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise OptionError(
            f"--assets={assets!r} does not name assets: give the keys (strings) of the assets to read as bands, "
            "e.g. red,green,blue",
            option="--assets",
        )
    return keys


def _try_item(source: Path | RemoteSource) -> dict[str, Any] | None:
    """The item at ``source`` if it is one that can be read, else None (GDAL says what it is when it opens it)."""
    try:
        return read_item(source)
    except GeosrError:
        return None


def item_source(spec: str | os.PathLike | RemoteSource, assets: str | Sequence[str]) -> RemoteSource:
    """The STAC item at ``spec`` as one raster: the bands of ``assets`` (keys in order, as ``asset_keys`` takes them)
    on the first asset's grid.

    Every asset is opened here (GDAL reads their headers). Raises OptionError naming --assets for no keys, a key the
    item lacks (listing its keys) or an input that is no STAC item; RasterError naming the item and the asset for an
    asset without an href, one that cannot be read, is georeferenced by RPCs only, or lies on another grid (size,
    transform, CRS or ground control points) than the first.
    """
    source = input_spec(spec)
    keys = asset_keys(assets)
    if not is_remote(source) and source.is_dir():
        raise OptionError(f"{source}: is a folder; --assets takes STAC items (JSON files or URLs)", option="--assets")
    if source.name.lower().endswith(RASTER_SUFFIXES):
        raise OptionError(
            f"{source}: is a raster; --assets takes a STAC item (a JSON file or URL): give the item, or drop --assets",
            option="--assets",
        )
    try:
        item = read_item(source)
    except NotAnItem as exc:
        raise OptionError(
            f"{exc}; --assets takes a STAC item: give the item, or drop --assets", option="--assets"
        ) from None
    missing = [k for k in keys if k not in item["assets"]]
    if missing:
        raise OptionError(
            f"{source}: no asset {', '.join(map(repr, missing))}; its assets: {', '.join(item['assets'])} (--assets)",
            option="--assets",
        )
    grids = [_asset_grid(source, key, asset_href(source, key, item["assets"][key])) for key in keys]
    for grid in grids[1:]:
        if not grid.same_grid(grids[0]):
            raise RasterError(
                f"{source}: asset {grid.key} ({grid.describe()}) is on another grid than {grids[0].key} "
                f"({grids[0].describe()}); choose assets of the same resolution with --assets"
            )
    # the files no output may replace: a local item itself, its local assets and the local archives they lie in
    files = [] if isinstance(source, RemoteSource) else [source]
    local = tuple(dict.fromkeys(files + [f for grid in grids for f in local_files(grid.gdal)]))
    return RemoteSource(source.spec if isinstance(source, RemoteSource) else str(source), _vrt(grids), local)


class NotAnItem(RasterError):
    """A file that was read but holds no STAC item (no JSON, or no assets)."""


def read_item(source: Path | RemoteSource) -> dict[str, Any]:
    """The STAC item (a dict with an ``assets`` dict) at a local path or an http(s) URL.

    Raises RasterError naming the item for one that cannot be read or fetched, and for an item at another kind of
    address (s3://, a /vsi path: download it and give the local file); NotAnItem for a file that is no JSON or has no
    assets.
    """
    try:
        if isinstance(source, RemoteSource):
            if not source.spec.lower().startswith(("http://", "https://")):
                raise RasterError(
                    f"{source}: geosr reads STAC items from local files and http(s) URLs; download the "
                    "item and give the local file (its assets may stay remote)"
                )
            request = http_request(source.spec)  # GDAL's credentials, as for the assets
            with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as response:  # noqa: S310 (http(s) only)
                raw = response.read(MAX_ITEM_BYTES + 1)
        else:
            with open(source, "rb") as f:
                raw = f.read(MAX_ITEM_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise RasterError(f"{source}: HTTP error {exc.code} ({exc.reason}); check the address") from None
    except urllib.error.URLError as exc:
        raise RasterError(
            f"{source}: cannot fetch it ({redact(exc.reason)}); check the address and the network"
        ) from None
    except OSError as exc:
        raise RasterError(f"{source}: cannot read it ({exc.strerror or exc})") from None
    if len(raw) > MAX_ITEM_BYTES:
        raise NotAnItem(f"{source}: over {MAX_ITEM_BYTES >> 20} MB, not a STAC item")
    try:
        item = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotAnItem(f"{source}: not a STAC item (not JSON: {exc})") from None
    if not isinstance(item, dict) or not isinstance(item.get("assets"), dict) or not item["assets"]:
        raise NotAnItem(f"{source}: not a STAC item (no assets)")
    return item


def asset_href(item: Path | RemoteSource, key: str, asset: Any) -> str:
    """The href of the asset ``key`` of the item at ``item``, as an input of geosr.sources.

    An absolute URL other than file:// or a GDAL /vsi path is returned as it is; any other href is a URI reference
    (RFC 3986) resolved against the item's URL (``/a.tif`` on the item's host) or its file's ``file://`` URI, and a
    file:// result is percent-decoded into a local path (``my%20scene.tif``: the file ``my scene.tif`` beside the
    item). Raises RasterError naming the item and the key for an asset without an href.
    """
    href = asset.get("href") if isinstance(asset, dict) else None
    if not isinstance(href, str) or not href.strip():
        raise RasterError(
            f"{item}: asset {key!r} has no href (the address of its file); fix the item, or choose other assets "
            "with --assets"
        )
    if is_remote(href) or Path(href).drive:  # a URL or /vsi path; a Windows path with a drive (C:\data\a.tif)
        return href
    url = urljoin(item.spec if isinstance(item, RemoteSource) else item.absolute().as_uri(), href)
    parts = urlsplit(url)
    return urllib.request.url2pathname(parts.path) if parts.scheme.lower() == "file" else url


@dataclass(frozen=True)
class _Band:
    """What the VRT carries of one band of an asset. mask: the kind of its GDAL mask, "all_valid", "nodata",
    "alpha" (its file's alpha band), "dataset" (its file's internal mask) or "band" (a mask of its own)."""

    index: int  # 1-based, in its file
    dtype: str
    nodata: float | None
    block: tuple[int, int]  # (rows, columns)
    colorinterp: str  # GDAL's name
    mask: str
    scale: float
    offset: float
    unit: str
    tags: dict[str, str]


def _mask_kind(flags: Sequence[MaskFlags]) -> str:
    if MaskFlags.per_dataset in flags:
        return "alpha" if MaskFlags.alpha in flags else "dataset"
    if MaskFlags.all_valid in flags:
        return "all_valid"
    return "nodata" if MaskFlags.nodata in flags else "band"


@dataclass(frozen=True)
class _Grid:
    """What the VRT needs of one asset: its grid (a transform and CRS, or GCPs), its metadata and its bands."""

    key: str
    gdal: str
    width: int
    height: int
    transform: Affine
    crs: Any
    gcps: tuple[Any, ...]  # rasterio GroundControlPoints, pixel (col, row) -> (x, y, z) in gcp_crs
    gcp_crs: Any
    tags: dict[str, str]
    bands: tuple[_Band, ...]

    def same_grid(self, other: _Grid) -> bool:
        return (
            (self.width, self.height) == (other.width, other.height)
            and self.crs == other.crs
            and self.transform.almost_equals(other.transform)
            and [(p.col, p.row, p.x, p.y, p.z) for p in self.gcps]
            == [(p.col, p.row, p.x, p.y, p.z) for p in other.gcps]
            and self.gcp_crs == other.gcp_crs
        )

    def describe(self) -> str:
        if self.gcps:
            crs = self.gcp_crs.to_string() if self.gcp_crs else "no CRS"
            return f"{self.width} x {self.height} pixels georeferenced by {len(self.gcps)} GCPs in {crs}"
        crs = self.crs.to_string() if self.crs else "no CRS"
        return f"{self.width} x {self.height} pixels of {abs(self.transform.a):g} x {abs(self.transform.e):g}, {crs}"


def _asset_grid(item: Path | RemoteSource, key: str, href: str) -> _Grid:
    source = input_spec(href)
    try:
        with open_raster(source) as ds:
            georeferencing(ds, source)  # an asset georeferenced by RPCs only is refused, as the file would be
            wrong = [t for t in ds.dtypes if t not in GDAL_TYPES]
            if wrong:
                raise RasterError(f"dtype {wrong[0]} is not supported; geosr upscales real-valued rasters (--assets)")
            gcps, gcp_crs = ds.gcps
            bands = tuple(
                _Band(
                    b,
                    ds.dtypes[b - 1],
                    ds.nodatavals[b - 1],
                    ds.block_shapes[b - 1],
                    GDAL_COLOR_NAMES.get(ds.colorinterp[b - 1].name, ds.colorinterp[b - 1].name),
                    _mask_kind(ds.mask_flag_enums[b - 1]),
                    ds.scales[b - 1],
                    ds.offsets[b - 1],
                    ds.units[b - 1] or "",
                    ds.tags(b),
                )
                for b in range(1, ds.count + 1)
            )
            return _Grid(
                key,
                source.gdal if isinstance(source, RemoteSource) else str(source.absolute()),
                ds.width,
                ds.height,
                ds.transform,
                ds.crs,
                tuple(gcps),
                gcp_crs,
                ds.tags(),
                bands,
            )
    except GeosrError as exc:
        raise type(exc)(f"{item}: asset {key}: {exc}", option=exc.option) from None


def _vrt(grids: Sequence[_Grid]) -> str:
    """The XML of a VRT of every band of ``grids``, in order, on the first one's grid (GDAL opens it as a path)."""
    first = grids[0]
    root = ET.Element("VRTDataset", rasterXSize=str(first.width), rasterYSize=str(first.height))
    if first.crs:
        ET.SubElement(root, "SRS").text = first.crs.to_wkt()
    if first.transform != Affine.identity():
        ET.SubElement(root, "GeoTransform").text = ", ".join(repr(float(v)) for v in first.transform.to_gdal())
    if first.gcps:
        gcps = ET.SubElement(root, "GCPList", Projection=first.gcp_crs.to_wkt() if first.gcp_crs else "")
        for p in first.gcps:
            point = {"Id": p.id or "", "Info": p.info or "", "Pixel": repr(p.col), "Line": repr(p.row)}
            ET.SubElement(gcps, "GCP", point, X=repr(p.x), Y=repr(p.y), Z=repr(p.z or 0.0))
    _metadata(root, first.tags)
    dataset_mask = _dataset_mask(grids)
    n = 0
    for grid in grids:
        for band in grid.bands:
            n += 1
            el = ET.SubElement(root, "VRTRasterBand", dataType=GDAL_TYPES[band.dtype], band=str(n))
            ET.SubElement(el, "Description").text = grid.key if len(grid.bands) == 1 else f"{grid.key} {band.index}"
            ET.SubElement(el, "ColorInterp").text = band.colorinterp
            if band.nodata is not None:
                ET.SubElement(el, "NoDataValue").text = repr(float(band.nodata))
            if band.unit:
                ET.SubElement(el, "UnitType").text = band.unit
            if band.offset != 0.0 or band.scale != 1.0:
                ET.SubElement(el, "Offset").text = repr(float(band.offset))
                ET.SubElement(el, "Scale").text = repr(float(band.scale))
            _metadata(el, band.tags)
            el.append(_source(grid, band, str(band.index)))
            if band.mask == "band" and not dataset_mask:
                mask = ET.SubElement(ET.SubElement(el, "MaskBand"), "VRTRasterBand", dataType="Byte")
                mask.append(_source(grid, band, f"mask,{band.index}"))
    if dataset_mask:
        mask = ET.SubElement(ET.SubElement(root, "MaskBand"), "VRTRasterBand", dataType="Byte")
        if len(dataset_mask) > 1:  # their AND: the product of masks (0 where one is 0), clamped to Byte's 255
            mask.set("subClass", "VRTDerivedRasterBand")
            ET.SubElement(mask, "PixelFunctionType").text = "mul"
            ET.SubElement(mask, "SourceTransferType").text = "Float64"
        for grid, band in dataset_mask:
            mask.append(_source(grid, band, f"mask,{band.index}"))
    return ET.tostring(root, encoding="unicode")


def _dataset_mask(grids: Sequence[_Grid]) -> list[tuple[_Grid, _Band]]:
    """The (asset, band) masks whose AND is the VRT's per-dataset mask, or none where each band's mask carries over
    by itself (a nodata value, a band's own mask, an alpha band in its own file of 2 or 4 bands, as GDAL reads it).

    One is needed where an asset has an internal mask, or an alpha band and others beside it: then it holds every
    mask of every asset (one band of an asset with a per-dataset mask, each band with a mask of its own).
    """
    kinds = {band.mask for grid in grids for band in grid.bands}
    if "dataset" not in kinds and not ("alpha" in kinds and len(grids) > 1):
        return []
    masks: list[tuple[_Grid, _Band]] = []
    for grid in grids:
        shared = [band for band in grid.bands if band.mask in ("alpha", "dataset")]
        masks += [(grid, band) for band in shared[:1] + [b for b in grid.bands if b.mask in ("nodata", "band")]]
    return masks


def _source(grid: _Grid, band: _Band, source_band: str) -> ET.Element:
    """A <SimpleSource> reading ``source_band`` (a band, or "mask,N") of ``grid``'s file, pixel for pixel."""
    simple = ET.Element("SimpleSource")
    ET.SubElement(simple, "SourceFilename", relativeToVRT="0").text = grid.gdal
    ET.SubElement(simple, "SourceBand").text = source_band
    if not source_band.startswith("mask"):
        ET.SubElement(
            simple,
            "SourceProperties",
            RasterXSize=str(grid.width),
            RasterYSize=str(grid.height),
            DataType=GDAL_TYPES[band.dtype],
            BlockXSize=str(band.block[1]),
            BlockYSize=str(band.block[0]),
        )
    rect = {"xOff": "0", "yOff": "0", "xSize": str(grid.width), "ySize": str(grid.height)}
    ET.SubElement(simple, "SrcRect", rect)
    ET.SubElement(simple, "DstRect", rect)
    return simple


def _metadata(parent: ET.Element, tags: dict[str, str]) -> None:
    """The default domain's metadata ``tags`` (a dataset's or a band's) as the <Metadata> of ``parent``."""
    if tags:
        metadata = ET.SubElement(parent, "Metadata")
        for k, v in tags.items():
            ET.SubElement(metadata, "MDI", key=k).text = v
