"""Inputs where the data lives: URLs, cloud addresses, archives and /vsi paths (geosr.sources), and STAC items whose
assets are read as the bands of one raster (geosr.stac), against a web server on 127.0.0.1 (tests/rangeserver.py)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from rasterio.control import GroundControlPoint
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.rpc import RPC
from rasterio.windows import Window
from testdata import CRS, TRANSFORM, error_line, read_raster, smooth_image, write_geotiff

import geosr
import geosr.sources
from geosr.cli.main import cli
from geosr.errors import OptionError, RasterError
from geosr.raster import plan_outputs
from geosr.sources import RemoteSource, gdal_path, input_spec, is_remote, local_archive, redact
from geosr.stac import asset_href, resolve_inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Server:
    """tests/rangeserver.py serving ``root`` in its own process."""

    def __init__(self, root: Path, auth: str | None = None) -> None:
        self.root = root
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("rangeserver.py")), str(root)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "RANGESERVER_AUTH": auth} if auth else None,
        )
        self.port = int(self.process.stdout.readline())

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def served(self) -> int:
        """Bytes of files served so far."""
        with urllib.request.urlopen(self.url("__served__"), timeout=10) as response:
            return int(response.read())

    def requests(self) -> list[str]:
        """The requests so far: "GET /red.tif", ..."""
        with urllib.request.urlopen(self.url("__requests__"), timeout=10) as response:
            return response.read().decode().splitlines()


def _serving(tmp_path: Path, monkeypatch, auth: str | None = None):
    """A Server of the folder tmp_path/www, stopped when the test ends."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    root = tmp_path / "www"
    root.mkdir()
    s = Server(root, auth)
    yield s
    s.process.kill()
    s.process.wait()
    s.process.stdout.close()


@pytest.fixture
def server(tmp_path, monkeypatch):
    yield from _serving(tmp_path, monkeypatch)


@pytest.fixture
def auth_server(tmp_path, monkeypatch):
    """A server whose /auth/ paths need the basic authentication of user "bob", password "pw 1"."""
    yield from _serving(tmp_path, monkeypatch, "Basic " + base64.b64encode(b"bob:pw 1").decode())


def write_cog(path: Path, data: np.ndarray, **profile) -> Path:
    """(bands, h, w) ``data`` as a Cloud-Optimized GeoTIFF (512-pixel tiles, overviews where the image is larger),
    EPSG:32633 at 10 m."""
    bands, h, w = data.shape
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=w,
        height=h,
        count=bands,
        dtype=data.dtype,
        crs=CRS,
        transform=TRANSFORM,
        **profile,
    ) as d:
        d.write(data)
    return path


def run(*args):
    return CliRunner().invoke(cli, ["upscale", *map(str, args)], catch_exceptions=False)


def assert_same_raster(a: Path, b: Path) -> None:
    """The same pixels and georeferencing."""
    with rasterio.open(a) as da, rasterio.open(b) as db:
        assert (da.shape, da.count, da.crs, da.transform) == (db.shape, db.count, db.crs, db.transform)
        np.testing.assert_array_equal(da.read(), db.read())


# --- addresses --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "gdal"),
    [
        ("https://h.example/a/scene.tif", "/vsicurl/https://h.example/a/scene.tif"),
        ("s3://bucket/k/scene.tif", "/vsis3/bucket/k/scene.tif"),
        ("gs://bucket/scene.tif", "/vsigs/bucket/scene.tif"),
        ("az://container/scene.tif", "/vsiaz/container/scene.tif"),
        ("zip://data/a.zip!/sub/scene.tif", "/vsizip/{data/a.zip}/sub/scene.tif"),
        ("zip+https://h.example/a.zip!/scene.tif", "/vsizip/{/vsicurl/https://h.example/a.zip}/scene.tif"),
        ("/vsizip//vsicurl/https://h.example/a.zip/scene.tif", "/vsizip//vsicurl/https://h.example/a.zip/scene.tif"),
    ],
)
def test_remote_inputs_are_kept_as_text_and_mapped_to_gdal_paths(spec, gdal):
    source = input_spec(spec)
    assert is_remote(spec) and isinstance(source, RemoteSource)
    assert source.gdal == gdal == gdal_path(spec) and source.name == "scene.tif"


def test_local_paths_stay_paths_and_an_unknown_scheme_is_a_usage_error():
    assert input_spec("tiles/a.tif") == Path("tiles/a.tif") and not is_remote("tiles/a.tif")
    assert input_spec("file:///data/a%20b.tif") == Path("/data/a b.tif")
    with pytest.raises(OptionError, match=r"geosr reads local files, http\(s\)://.* not ftps://"):
        input_spec("ftps://h.example/a.tif")


def test_messages_show_an_address_without_credentials_or_query_string():
    spec = "https://user:secret@h.example/a/scene.tif?X-Amz-Signature=abc&X-Amz-Credential=key"
    assert str(input_spec(spec)) == redact(spec) == "https://h.example/a/scene.tif"
    assert repr(input_spec(spec)) == "RemoteSource('https://h.example/a/scene.tif')"
    assert redact(f"HTTP error on /vsicurl/{spec}: 403") == "HTTP error on /vsicurl/https://h.example/a/scene.tif: 403"
    # a remote archive's query string ends at the member: the member stays, and names the output
    archive = "zip+https://u:pw@h.example/a.zip?sig=abc!/sub/b c.tif"
    assert redact(f"{archive}: not found") == "zip+https://h.example/a.zip!/sub/b c.tif: not found"
    assert input_spec(archive).name == "b c.tif"


@pytest.mark.parametrize(
    "command",
    [
        ["upscale", "IN", "-o", "sr.tif", "--report", "http://h.example/r.json"],
        ["upscale", "IN", "-o", "sr.tif", "--uncertainty", "/vsimem/map.tif"],
        ["upscale", "IN", "-o", "sr.tif", "--preview", "s3://bucket/p.png"],
        ["evaluate", "-d", "DATA", "-o", "https://h.example/r.json"],
        ["evaluate", "-d", "DATA", "--save-images", "/vsis3/bucket/sr"],
        ["train", "--data", "DATA", "-o", "gs://bucket/run"],
        ["export", "MODEL", "-o", "/vsimem/m.safetensors"],
    ],
)
def test_what_a_command_writes_is_a_local_path_and_a_url_is_a_usage_error(command, tmp_path, tiny_model):
    scene = write_geotiff(tmp_path / "in.tif", smooth_image(3, 40, 40))
    words = {"IN": str(scene), "DATA": str(tmp_path), "MODEL": str(tiny_model)}
    result = CliRunner().invoke(cli, [words.get(w, w) for w in command], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "geosr writes to local files, not to URLs or GDAL's /vsi paths" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]  # no folder "http:" or "vsimem" made


def test_no_log_line_report_or_info_shows_an_addresss_credentials(server, tiny_model, tmp_path):
    write_cog(server.root / "scene.tif", smooth_image(3, 40, 60))
    secret = server.url("scene.tif").replace("://", "://alice:s3cr3t@") + "?token=SECRET"
    report = tmp_path / "report.json"
    geosr_cli = [sys.executable, "-m", "geosr.cli.main"]
    done = subprocess.run(
        [*geosr_cli, "upscale", secret, "-o", tmp_path / "sr.tif", "--model", tiny_model, "--report", report, "-vv"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "DEBUG" in done.stderr and server.url("scene.tif") in done.stderr  # rasterio's lines name the address
    missing = subprocess.run(
        [
            *geosr_cli,
            "upscale",
            secret.replace("scene", "missing"),
            "-o",
            tmp_path / "no.tif",
            "--model",
            tiny_model,
            "-v",
        ],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1 and "404" in missing.stderr  # GDAL's own message, logged at -v
    info = subprocess.run([*geosr_cli, "info", secret], capture_output=True, text=True)
    assert info.returncode == 0 and server.url("scene.tif") in info.stdout, info.stderr  # a remote raster's facts
    for text in (done.stderr, missing.stderr, report.read_text(), info.stdout + info.stderr):
        assert "s3cr3t" not in text and "SECRET" not in text and "alice" not in text


def test_a_remote_input_is_written_to_the_output_file_or_under_its_base_name_in_a_folder(tmp_path):
    url = "https://h.example/a/scene.jp2?token=abc"
    assert plan_outputs([url], tmp_path / "out.tif") == [(input_spec(url), tmp_path / "out.tif")]
    assert plan_outputs([url], tmp_path) == [(input_spec(url), tmp_path / "scene.tif")]


# --- reading over HTTP ------------------------------------------------------------------------------------------------


def test_a_url_upscales_as_the_local_file(server, tiny_model, tmp_path):
    write_cog(server.root / "scene.tif", smooth_image(3, 96, 128))
    remote = run(server.url("scene.tif"), "-o", tmp_path / "remote.tif", "--model", tiny_model, "-q")
    assert remote.exit_code == 0, remote.output
    local = run(server.root / "scene.tif", "-o", tmp_path / "local.tif", "--model", tiny_model, "-q")
    assert local.exit_code == 0, local.output
    assert_same_raster(tmp_path / "remote.tif", tmp_path / "local.tif")
    out = tmp_path / "sr"
    out.mkdir()
    assert run(server.url("scene.tif"), "-o", out, "--model", tiny_model, "-q").exit_code == 0
    assert_same_raster(out / "scene.tif", tmp_path / "local.tif")  # -o a folder: the file's base name
    assert set(server.requests()) == {"HEAD /scene.tif", "GET /scene.tif"}  # no folder listing, no sidecar probes


def test_urls_in_a_batch_are_named_by_their_files_and_recorded_without_their_query_strings(
    server, tiny_model, tmp_path
):
    for name in ("a.tif", "b.tif"):
        write_cog(server.root / name, smooth_image(3, 40, 60))
    local = write_geotiff(tmp_path / "c.tif", smooth_image(3, 40, 60))
    urls = [server.url(name) + "?sig=secret" for name in ("a.tif", "b.tif")]
    out, report = tmp_path / "sr", tmp_path / "report.json"
    result = run(*urls, local, "-o", out, "--model", tiny_model, "--files-in-flight", 2, "--report", report, "-q")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "b.tif", "c.tif"]
    records = json.loads(report.read_text())["files"]
    assert sorted(r["input"] for r in records) == sorted([server.url("a.tif"), server.url("b.tif"), str(local)])
    assert "secret" not in report.read_text()


def test_a_bbox_reads_a_small_part_of_a_remote_file(server, tiny_model, tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (1, 2048, 2048), dtype=np.uint8)  # ~5 MB, overviews included
    size = write_cog(server.root / "big.tif", noise, compress="deflate").stat().st_size
    # 48 x 48 pixels inside the third 512-pixel tile of the third row (cols and rows 1100..1148)
    x0, y1 = TRANSFORM @ (1100, 1100)
    bbox = f"{x0},{y1 - 480},{x0 + 480},{y1}"
    result = run(server.url("big.tif"), "-o", tmp_path / "part.tif", "--model", tiny_model, "--bbox", bbox, "-q")
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "part.tif") as d:
        assert d.shape == (96, 96)
    assert server.served() < size / 2, f"{server.served()} of {size} bytes fetched for a 48 x 48 pixel box"


def test_a_missing_url_is_one_line_naming_it_without_its_query_string(server, tiny_model, tmp_path):
    url = server.url("missing.tif") + "?X-Amz-Signature=secret"
    result = run(url, "-o", tmp_path / "out.tif", "--model", tiny_model)
    assert result.exit_code == 1
    line = error_line(result)
    assert server.url("missing.tif") in line and "404" in line and "secret" not in line and "?" not in line


def test_a_server_that_stops_answering_fails_the_file_instead_of_hanging(server, tiny_model, tmp_path, monkeypatch):
    # a stalled request blocks inside libcurl, out of reach of Ctrl-C: geosr sets GDAL's limits unless the
    # environment does (here shortened to 2 s; geosr's own are a minute)
    for key in geosr.sources.NETWORK_LIMITS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(
        geosr.sources, "NETWORK_LIMITS", {**geosr.sources.NETWORK_LIMITS, "GDAL_HTTP_LOW_SPEED_TIME": "2"}
    )
    noise = np.random.default_rng(0).integers(0, 256, (3, 512, 512), dtype=np.uint8)
    write_geotiff(server.root / "scene.tif", noise, tiled=True, blockxsize=64, blockysize=64)
    url = server.url("stall/scene.tif")  # its header is served, its pixels past the first 64 KiB never
    out = tmp_path / "sr"
    out.mkdir()
    result = run(url, "-o", out / "scene_x2.tif", "--model", tiny_model)
    assert result.exit_code == 1, result.output
    line = error_line(result)
    assert url in line and "network" in line, line
    assert list(out.iterdir()) == []  # nothing left behind


def test_zip_archives_read_through_zip_and_vsizip_equal_the_local_file(predictor, tmp_path):
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(3, 60, 80))
    with zipfile.ZipFile(tmp_path / "scenes.zip", "w") as z:
        z.write(scene, "sub/scene.tif")
    geosr.upscale(scene, tmp_path / "local.tif", model=predictor)
    geosr.upscale(f"zip://{tmp_path}/scenes.zip!/sub/scene.tif", tmp_path / "zip.tif", model=predictor)
    geosr.upscale(f"/vsizip/{tmp_path}/scenes.zip/sub/scene.tif", tmp_path / "vsizip.tif", model=predictor)
    assert_same_raster(tmp_path / "zip.tif", tmp_path / "local.tif")
    assert_same_raster(tmp_path / "vsizip.tif", tmp_path / "local.tif")


# --- STAC items -------------------------------------------------------------------------------------------------------


def write_item(path: Path, hrefs: dict[str, str]) -> Path:
    item = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": path.stem,
        "geometry": None,
        "properties": {},
        "links": [],
        "assets": {key: {"href": href, "type": "image/tiff"} for key, href in hrefs.items()},
    }
    path.write_text(json.dumps(item))
    return path


def test_a_stac_items_assets_upscale_as_the_bands_of_one_raster(server, tiny_model, tmp_path):
    rgb = smooth_image(3, 96, 128, seed=1)
    for key, band in zip(("red", "green", "blue"), rgb):
        write_cog(server.root / f"{key}.tif", band[None])
    write_geotiff(tmp_path / "stack.tif", rgb)
    item = write_item(tmp_path / "item.json", {k: server.url(f"{k}.tif") for k in ("blue", "green", "red", "nir")})
    result = run(item, "--assets", "red,green,blue", "-o", tmp_path / "stac.tif", "--model", tiny_model, "-q")
    assert result.exit_code == 0, result.output
    assert run(tmp_path / "stack.tif", "-o", tmp_path / "local.tif", "--model", tiny_model, "-q").exit_code == 0
    assert_same_raster(tmp_path / "stac.tif", tmp_path / "local.tif")
    assert {r.split()[1] for r in server.requests()} == {"/red.tif", "/green.tif", "/blue.tif"}  # nor the sources'
    # an item served over HTTP, its hrefs relative to it
    write_item(server.root / "item.json", {k: f"./{k}.tif" for k in ("red", "green", "blue")})
    result = run(server.url("item.json"), "--assets", "red,green,blue", "-o", tmp_path, "--model", tiny_model, "-q")
    assert result.exit_code == 0, result.output
    assert_same_raster(tmp_path / "item.tif", tmp_path / "local.tif")


def test_a_stac_item_is_fetched_with_the_credentials_gdal_reads_its_assets_with(
    auth_server, tiny_model, tmp_path, monkeypatch
):
    for key, band in zip(("red", "green", "blue"), smooth_image(3, 40, 60)):
        write_cog(auth_server.root / f"{key}.tif", band[None])
    write_item(auth_server.root / "item.json", {k: f"{k}.tif" for k in ("red", "green", "blue")})
    url = auth_server.url("auth/item.json")
    for key in ("GDAL_HTTP_USERPWD", "GDAL_HTTP_HEADERS", "GDAL_HTTP_HEADER_FILE", "GDAL_HTTP_BEARER"):
        monkeypatch.delenv(key, raising=False)
    args = ("--assets", "red,green,blue", "--model", tiny_model, "-q", "--overwrite")
    refused = run(url, "-o", tmp_path / "sr.tif", *args)
    assert refused.exit_code == 1 and "401" in error_line(refused)
    # the password in the address (percent-encoded), as GDAL takes it for the assets beside the item
    in_url = run(url.replace("://", "://bob:pw%201@"), "-o", tmp_path / "a.tif", *args)
    assert in_url.exit_code == 0, in_url.output
    monkeypatch.setenv("GDAL_HTTP_USERPWD", "bob:pw 1")  # GDAL's own setting
    assert run(url, "-o", tmp_path / "b.tif", *args).exit_code == 0
    monkeypatch.delenv("GDAL_HTTP_USERPWD")
    basic = "Basic " + base64.b64encode(b"bob:pw 1").decode()
    monkeypatch.setenv("GDAL_HTTP_HEADERS", f"X-Other: 1, Authorization: {basic}")
    assert run(url, "-o", tmp_path / "c.tif", *args).exit_code == 0
    for name in ("b.tif", "c.tif"):
        assert_same_raster(tmp_path / name, tmp_path / "a.tif")


def test_asset_hrefs_are_uri_references_resolved_against_the_items_location(tmp_path):
    local = input_spec(tmp_path / "items" / "item.json")
    assert asset_href(local, "red", {"href": "../data/red.tif"}) == str(tmp_path / "data" / "red.tif")
    assert asset_href(local, "red", {"href": "my%20red%231.tif"}) == str(tmp_path / "items" / "my red#1.tif")
    assert asset_href(local, "red", {"href": "s3://bucket/red.tif"}) == "s3://bucket/red.tif"
    remote = input_spec("https://h.example/items/item.json?token=abc")
    assert asset_href(remote, "red", {"href": "./red.tif"}) == "https://h.example/items/red.tif"
    assert asset_href(remote, "red", {"href": "/data/red.tif"}) == "https://h.example/data/red.tif"  # on its host
    assert asset_href(remote, "red", {"href": "my%20red.tif"}) == "https://h.example/items/my%20red.tif"
    with pytest.raises(RasterError, match=r"item.json: asset 'nir' has no href"):
        asset_href(local, "nir", {"type": "image/tiff"})


def test_stac_usage_errors_are_one_line_and_say_what_to_give(tmp_path, tiny_model):
    rgb = smooth_image(3, 40, 60)
    for key, band in zip(("red", "green", "blue"), rgb):
        write_geotiff(tmp_path / f"{key}.tif", band[None])
    write_geotiff(tmp_path / "nir20.tif", smooth_image(1, 20, 30), transform=TRANSFORM @ Affine.scale(2))
    item = write_item(tmp_path / "item.json", {k: f"{k}.tif" for k in ("red", "green", "blue", "nir20")})
    out = tmp_path / "out.tif"

    no_assets = run(item, "-o", out, "--model", tiny_model)
    assert no_assets.exit_code == 2 and "--assets" in no_assets.stderr and "red, green, blue, nir20" in no_assets.stderr
    missing = run(item, "--assets", "red,nir", "-o", out, "--model", tiny_model)
    assert missing.exit_code == 2 and "no asset 'nir'" in missing.stderr and "red, green, blue, nir20" in missing.stderr
    not_an_item = run(tmp_path / "red.tif", "--assets", "red", "-o", out, "--model", tiny_model)
    assert not_an_item.exit_code == 2 and "STAC item" in not_an_item.stderr
    other_grid = run(item, "--assets", "red,nir20", "-o", out, "--model", tiny_model)
    line = error_line(other_grid)
    assert other_grid.exit_code == 1 and "asset nir20" in line and "same resolution" in line
    assert not out.exists()


def test_a_stac_item_never_gets_an_output_over_one_of_its_local_assets(tmp_path, tiny_model):
    for key, band in zip(("red", "green", "blue"), smooth_image(3, 40, 60)):
        write_geotiff(tmp_path / f"{key}.tif", band[None])
    item = write_item(tmp_path / "item.json", {k: f"{k}.tif" for k in ("red", "green", "blue")})
    before = read_raster(tmp_path / "red.tif")
    result = run(item, "--assets", "red,green,blue", "-o", tmp_path / "red.tif", "--overwrite", "--model", tiny_model)
    assert result.exit_code != 0 and "input" in error_line(result)
    np.testing.assert_array_equal(read_raster(tmp_path / "red.tif"), before)


def test_no_output_or_report_replaces_an_item_or_an_archive_the_input_is_read_from(tmp_path, tiny_model):
    for key, band in zip(("red", "green", "blue"), smooth_image(3, 40, 60)):
        write_geotiff(tmp_path / f"{key}.tif", band[None])
    with zipfile.ZipFile(tmp_path / "bands.zip", "w") as z:  # the blue asset inside an archive
        z.write(tmp_path / "blue.tif", "blue.tif")
    item = write_item(
        tmp_path / "item.json",
        {"red": "red.tif", "green": "green.tif", "blue": f"zip://{tmp_path}/bands.zip!/blue.tif"},
    )
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(3, 40, 60))
    with zipfile.ZipFile(tmp_path / "scene.tif.zip", "w") as z:
        z.write(scene, "scene.tif")
    archive = tmp_path / "scene.tif.zip"
    kept = {p: p.read_bytes() for p in (item, archive, tmp_path / "bands.zip")}
    stac = (item, "--assets", "red,green,blue")
    for args in (
        (*stac, "-o", tmp_path / "sr.tif", "--report", item),  # the item itself as the report
        (*stac, "-o", tmp_path / "bands.zip"),  # an asset's archive as the output
        (f"zip://{archive}!/scene.tif", "-o", archive),
        (f"/vsizip/{archive}/scene.tif", "-o", archive),
        (f"/vsizip/{{{archive}}}/scene.tif", "-o", tmp_path / "sr.tif", "--report", archive),
    ):
        result = run(*args, "--overwrite", "--model", tiny_model)
        assert result.exit_code != 0 and "input" in error_line(result), (args, result.output)
    assert {p: p.read_bytes() for p in kept} == kept
    assert not (tmp_path / "sr.tif").exists()
    assert local_archive(f"/vsizip/{{{archive}}}/scene.tif") == archive
    assert local_archive(f"/vsitar/{tmp_path}/none.tar/a.tif") is None  # no such file
    assert local_archive("/vsizip/{/vsicurl/http://h.example/a.zip}/a.tif") is None  # a remote archive


def crop(src: Path, dst: Path, window: Window) -> Path:
    """``window`` of the raster ``src`` as a GeoTIFF of its own, as gdal_translate -srcwin cuts it: its bands, colour
    interpretation and nodata value, its transform moved to the window or its GCPs shifted into it."""
    with rasterio.open(src) as s:
        profile = {**s.profile, "width": window.width, "height": window.height, "blockxsize": 16, "blockysize": 16}
        profile["transform"] = None if s.gcps[0] else s.transform @ Affine.translation(window.col_off, window.row_off)
        points, crs = s.gcps
        with rasterio.open(dst, "w", **{k: v for k, v in profile.items() if v is not None}) as d:
            d.write(s.read(window=window))
            d.colorinterp = s.colorinterp
            if points:
                r, c = window.row_off, window.col_off
                d.gcps = ([GroundControlPoint(p.row - r, p.col - c, p.x, p.y, p.z, p.id, p.info) for p in points], crs)
    return dst


def assert_same_output(a: Path, b: Path) -> None:
    """The same pixels, masks, georeferencing (transform and CRS, or GCPs), colour interpretation, nodata value and
    tags (band descriptions aside: an item's bands are named after its assets)."""
    assert_same_raster(a, b)
    with rasterio.open(a) as da, rasterio.open(b) as db:
        assert (da.colorinterp, da.nodatavals, da.mask_flag_enums) == (
            db.colorinterp,
            db.nodatavals,
            db.mask_flag_enums,
        )
        np.testing.assert_array_equal(da.read_masks(), db.read_masks())
        assert [p.asdict() for p in da.gcps[0]] == [p.asdict() for p in db.gcps[0]] and da.gcps[1] == db.gcps[1]
        assert da.tags() == db.tags()


def upscale_both(item: Path, assets: str, raster: Path, model: Path) -> tuple[Path, Path]:
    """The outputs of ``geosr upscale ITEM --assets ASSETS`` and of ``geosr upscale RASTER``, beside the item."""
    outputs = item.with_name("stac.tif"), item.with_name("direct.tif")
    stac = run(item, "--assets", assets, "-o", outputs[0], "--model", model, "-q")
    assert stac.exit_code == 0, stac.output
    direct = run(raster, "-o", outputs[1], "--model", model, "-q")
    assert direct.exit_code == 0, direct.output
    return outputs


def test_an_asset_with_an_alpha_band_upscales_as_its_file(geotiff_dir, tiny_model, tmp_path):
    # rgba8.tif's columns 90..129 of rows 0..39: its first 10 columns transparent (alpha 0), their RGB not 0
    rgba = crop(geotiff_dir / "rio-color" / "rgba8.tif", tmp_path / "rgba.tif", Window(90, 0, 40, 40))
    item = write_item(tmp_path / "item.json", {"visual": "rgba.tif"})
    stac, direct = upscale_both(item, "visual", rgba, tiny_model)
    assert_same_output(stac, direct)
    with rasterio.open(stac) as d:
        assert d.colorinterp == (ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha)
        assert d.tags()["GEOSR_ALPHA"].startswith("bands [4] upscaled nearest")
        alpha = d.read(4)
        assert set(np.unique(alpha)) == {0, 255} and (alpha[:, :20] == 0).all()
        assert not d.read([1, 2, 3])[:, alpha == 0].any()  # transparent pixels are nodata, not upscaled colour


def test_an_assets_internal_mask_carries_over_and_masks_of_several_assets_combine(predictor, tmp_path):
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        rgb = write_geotiff(tmp_path / "rgb.tif", smooth_image(3, 40, 60, seed=2))
        with rasterio.open(rgb, "r+") as d:
            mask = np.full((40, 60), 255, np.uint8)
            mask[:10, :15] = 0
            d.write_mask(mask)
    nir = smooth_image(1, 40, 60, seed=3, lo=1)
    nir[0, 30:, 50:] = 0
    write_geotiff(tmp_path / "nir.tif", nir, nodata=0)
    item = write_item(tmp_path / "item.json", {"rgb": "rgb.tif", "nir": "nir.tif"})
    geosr.upscale(item, tmp_path / "stac.tif", model=predictor, assets="rgb")
    geosr.upscale(rgb, tmp_path / "direct.tif", model=predictor)
    assert_same_output(tmp_path / "stac.tif", tmp_path / "direct.tif")
    with rasterio.open(tmp_path / "stac.tif") as d:
        assert d.mask_flag_enums[0] == [MaskFlags.per_dataset] and not d.read_masks(1)[:20, :30].any()
    # the rgb asset's internal mask and the nir asset's nodata value: one mask of the VRT, their AND
    with rasterio.open(resolve_inputs([item], ["rgb", "nir"])[0].gdal) as d:
        assert d.mask_flag_enums == ([MaskFlags.per_dataset],) * 4 and d.nodatavals == (None,) * 3 + (0.0,)
        np.testing.assert_array_equal(d.read_masks(), np.broadcast_to((mask > 0) & (nir[0] > 0), (4, 40, 60)) * 255)


def test_an_asset_georeferenced_by_gcps_keeps_them_and_others_must_share_them(geotiff_dir, tiny_model, tmp_path):
    gcps = crop(geotiff_dir / "rio-tiler" / "cog_gcps.tif", tmp_path / "gcps.tif", Window(600, 400, 40, 40))
    crop(geotiff_dir / "rio-tiler" / "cog_gcps.tif", tmp_path / "other.tif", Window(0, 0, 40, 40))
    item = write_item(tmp_path / "item.json", {"pan": "gcps.tif", "other": "other.tif"})
    stac, direct = upscale_both(item, "pan", gcps, tiny_model)
    assert_same_output(stac, direct)
    with rasterio.open(gcps) as src, rasterio.open(stac) as out:
        points, crs = out.gcps
        assert len(points) == 210 and crs.to_epsg() == 4326 and out.transform == Affine.identity()
        assert [(p.row, p.col, p.x, p.y) for p in points] == [(2 * p.row, 2 * p.col, p.x, p.y) for p in src.gcps[0]]
    other = run(item, "--assets", "pan,other", "-o", tmp_path / "two.tif", "--model", tiny_model)
    line = error_line(other)
    assert other.exit_code == 1 and "asset other (40 x 40 pixels georeferenced by 210 GCPs in EPSG:4326)" in line


def test_an_asset_georeferenced_by_rpcs_only_is_refused_as_its_file_is(tiny_model, tmp_path):
    coeffs = {f"{a}_{b}_coeff": [1] + [0] * 19 for a in ("line", "samp") for b in ("num", "den")}
    rpc = RPC(height_off=0, height_scale=100, lat_off=10, lat_scale=0.1, long_off=20, long_scale=0.1, line_off=20,
              line_scale=20, samp_off=15, samp_scale=15, **coeffs)  # fmt: skip
    with rasterio.open(tmp_path / "rpc.tif", "w", driver="GTiff", width=30, height=40, count=1, dtype="uint8") as d:
        d.write(smooth_image(1, 40, 30))
        d.rpcs = rpc
    item = write_item(tmp_path / "item.json", {"pan": "rpc.tif"})
    result = run(item, "--assets", "pan", "-o", tmp_path / "out.tif", "--model", tiny_model)
    line = error_line(result)
    assert result.exit_code == 1 and "item.json: asset pan" in line and "RPCs only" in line
    assert not (tmp_path / "out.tif").exists()


def test_hrefs_are_percent_decoded_for_files_and_resolved_on_the_items_host(server, tiny_model, tmp_path):
    write_geotiff(tmp_path / "my scene.tif", smooth_image(3, 40, 60, seed=4))
    item = write_item(tmp_path / "item.json", {"visual": "my%20scene.tif"})
    assert_same_output(*upscale_both(item, "visual", tmp_path / "my scene.tif", tiny_model))
    # an item in a folder of the server, its href the path of a file at the server's root
    write_cog(server.root / "small.tif", smooth_image(3, 40, 60, seed=5))
    (server.root / "items").mkdir()
    write_item(server.root / "items" / "item.json", {"visual": "/small.tif"})
    out = tmp_path / "remote.tif"
    result = run(server.url("items/item.json"), "--assets", "visual", "-o", out, "--model", tiny_model, "-q")
    assert result.exit_code == 0, result.output
    assert "GET /small.tif" in server.requests()
    assert run(server.root / "small.tif", "-o", tmp_path / "local.tif", "--model", tiny_model, "-q").exit_code == 0
    assert_same_raster(out, tmp_path / "local.tif")


def test_python_takes_assets_as_one_string_of_keys_or_a_list(predictor, tmp_path):
    rgb = smooth_image(3, 40, 60, seed=6)
    write_geotiff(tmp_path / "rgb.tif", rgb)
    for key, band in zip(("red", "green", "blue"), rgb):
        write_geotiff(tmp_path / f"{key}.tif", band[None])
    item = write_item(tmp_path / "item.json", {k: f"{k}.tif" for k in ("red", "green", "blue", "rgb")})
    geosr.upscale(item, tmp_path / "list.tif", model=predictor, assets=["red", "green", "blue"])
    geosr.upscale(item, tmp_path / "keys.tif", model=predictor, assets="red, green,blue")
    geosr.upscale(item, tmp_path / "one.tif", model=predictor, assets="rgb")
    assert_same_raster(tmp_path / "keys.tif", tmp_path / "list.tif")
    assert_same_raster(tmp_path / "one.tif", tmp_path / "list.tif")
    for wrong in ([], "", " , "):
        with pytest.raises(OptionError, match=rf"assets={re.escape(repr(wrong))} does not name assets"):
            geosr.upscale(item, tmp_path / "none.tif", model=predictor, assets=wrong)
    assert not (tmp_path / "none.tif").exists()


def test_an_asset_without_an_href_is_named_by_its_key(tiny_model, tmp_path):
    write_geotiff(tmp_path / "red.tif", smooth_image(1, 40, 60))
    item = write_item(tmp_path / "item.json", {"red": "red.tif"})
    stac = json.loads(item.read_text())
    stac["assets"]["nir"] = {"type": "image/tiff; application=geotiff", "roles": ["data"]}
    item.write_text(json.dumps(stac))
    result = run(item, "--assets", "red,nir", "-o", tmp_path / "out.tif", "--model", tiny_model)
    line = error_line(result)
    assert result.exit_code == 1 and "item.json: asset 'nir' has no href" in line and "--assets" in line
