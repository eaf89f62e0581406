"""STAC items as inputs: assets chosen by key, read as the bands of one raster.

``resolve_inputs(specs, assets)`` turns the inputs of a run into what geosr reads (``geosr.sources.input_spec``);
with ``assets``, each input is a STAC item (a JSON file or an http(s) URL) and becomes one RemoteSource: a VRT,
kept as GDAL's XML in memory, whose bands are the bands of the assets in the order given (``gdalbuildvrt
-separate``), on the first asset's grid, so the output has the first asset's georeferencing. Each asset's ``href``
is resolved against the item's location and may be any input of ``geosr.sources`` (a URL, s3://, a /vsi path, a
local path). The item is read as plain JSON: only ``assets`` and their ``href`` are used.
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
from urllib.parse import urljoin

from affine import Affine

from geosr.errors import GeosrError, OptionError, RasterError
from geosr.raster import RASTER_SUFFIXES, open_raster
from geosr.sources import RemoteSource, input_spec, is_remote, redact

MAX_ITEM_BYTES = 16 << 20  # a STAC item is a few kB; more is not one
FETCH_TIMEOUT = 60  # seconds to fetch an item over http(s)
GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "uint64": "UInt64",
    "int64": "Int64",
    "float32": "Float32",
    "float64": "Float64",
}


def resolve_inputs(
    specs: Sequence[str | os.PathLike | RemoteSource], assets: Sequence[str] | None = None
) -> tuple[Path | RemoteSource, ...]:
    """The inputs of a run as geosr reads them; with ``assets`` (keys), every input is a STAC item read as one raster
    of those assets' bands (``item_source``).

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


def _try_item(source: Path | RemoteSource) -> dict[str, Any] | None:
    """The item at ``source`` if it is one that can be read, else None (GDAL says what it is when it opens it)."""
    try:
        return read_item(source)
    except GeosrError:
        return None


def item_source(spec: str | os.PathLike | RemoteSource, assets: Sequence[str]) -> RemoteSource:
    """The STAC item at ``spec`` as one raster: the bands of ``assets`` (keys, in order) on the first asset's grid.

    Every asset is opened here (GDAL reads their headers). Raises OptionError naming --assets for no keys, a key the
    item lacks (listing its keys) or an input that is no STAC item; RasterError naming the item and the asset for an
    asset that cannot be read or lies on another grid (size, transform or CRS) than the first.
    """
    source = input_spec(spec)
    if not assets:
        raise OptionError(
            "--assets: give the keys of the assets to read, e.g. --assets red,green,blue", option="--assets"
        )
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
    missing = [k for k in assets if k not in item["assets"]]
    if missing:
        raise OptionError(
            f"{source}: no asset {', '.join(map(repr, missing))}; its assets: {', '.join(item['assets'])} (--assets)",
            option="--assets",
        )
    grids = [_asset_grid(source, key, asset_href(source, item["assets"][key])) for key in assets]
    for grid in grids[1:]:
        if not grid.same_grid(grids[0]):
            raise RasterError(
                f"{source}: asset {grid.key} ({grid.describe()}) is on another grid than {grids[0].key} "
                f"({grids[0].describe()}); choose assets of the same resolution with --assets"
            )
    local = tuple(Path(g.gdal) for g in grids if not is_remote(g.gdal))
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
            with urllib.request.urlopen(source.spec, timeout=FETCH_TIMEOUT) as response:  # noqa: S310 (http(s) only)
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


def asset_href(item: Path | RemoteSource, asset: Any) -> str:
    """An asset's href as an input of geosr.sources: absolute as it is, relative against the item's location."""
    href = asset.get("href") if isinstance(asset, dict) else None
    if not isinstance(href, str) or not href:
        raise RasterError(f"{item}: an asset without an href")
    if is_remote(href) or href.lower().startswith("file://") or os.path.isabs(href):
        return href
    if isinstance(item, RemoteSource):
        return urljoin(item.spec, href)
    return str(item.absolute().parent / href)


@dataclass(frozen=True)
class _Grid:
    """What the VRT needs of one asset: its grid, and per band its dtype, nodata and block shape."""

    key: str
    gdal: str
    width: int
    height: int
    transform: Affine
    crs: Any
    dtypes: tuple[str, ...]
    nodata: tuple[float | None, ...]
    blocks: tuple[tuple[int, int], ...]

    def same_grid(self, other: _Grid) -> bool:
        return (
            (self.width, self.height) == (other.width, other.height)
            and self.crs == other.crs
            and self.transform.almost_equals(other.transform)
        )

    def describe(self) -> str:
        crs = self.crs.to_string() if self.crs else "no CRS"
        return f"{self.width} x {self.height} pixels of {abs(self.transform.a):g} x {abs(self.transform.e):g}, {crs}"


def _asset_grid(item: Path | RemoteSource, key: str, href: str) -> _Grid:
    source = input_spec(href)
    try:
        with open_raster(source) as ds:
            return _Grid(
                key,
                source.gdal if isinstance(source, RemoteSource) else str(source.absolute()),
                ds.width,
                ds.height,
                ds.transform,
                ds.crs,
                tuple(ds.dtypes),
                tuple(ds.nodatavals),
                tuple(ds.block_shapes),
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
    n = 0
    for grid in grids:
        for b, (dtype, nodata, (block_y, block_x)) in enumerate(zip(grid.dtypes, grid.nodata, grid.blocks), 1):
            if dtype not in GDAL_TYPES:
                raise RasterError(f"{grid.key}: dtype {dtype} is not supported; geosr upscales real-valued rasters")
            n += 1
            band = ET.SubElement(root, "VRTRasterBand", dataType=GDAL_TYPES[dtype], band=str(n))
            ET.SubElement(band, "Description").text = grid.key if len(grid.dtypes) == 1 else f"{grid.key} {b}"
            if nodata is not None:
                ET.SubElement(band, "NoDataValue").text = repr(float(nodata))
            simple = ET.SubElement(band, "SimpleSource")
            ET.SubElement(simple, "SourceFilename", relativeToVRT="0").text = grid.gdal
            ET.SubElement(simple, "SourceBand").text = str(b)
            ET.SubElement(
                simple,
                "SourceProperties",
                RasterXSize=str(grid.width),
                RasterYSize=str(grid.height),
                DataType=GDAL_TYPES[dtype],
                BlockXSize=str(block_x),
                BlockYSize=str(block_y),
            )
            rect = {"xOff": "0", "yOff": "0", "xSize": str(grid.width), "ySize": str(grid.height)}
            ET.SubElement(simple, "SrcRect", rect)
            ET.SubElement(simple, "DstRect", rect)
    return ET.tostring(root, encoding="unicode")
