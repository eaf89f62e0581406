"""Where an input lives: a local file, or any path GDAL reads (a URL, a cloud object, a file inside an archive).

A local input is a ``Path``. Any other is a ``RemoteSource``, kept as the text the user gave (pathlib would collapse
the ``//`` of a URL) with the path GDAL opens:

    input                                       GDAL opens
    /vsicurl/..., /vsis3/..., /vsizip/..., ...  the same
    http(s)://host/a.tif                        /vsicurl/http(s)://host/a.tif
    s3://bucket/a.tif, gs://..., az://...       /vsis3/bucket/a.tif, /vsigs/..., /vsiaz/...
    zip://archive.zip!/a.tif                    /vsizip/{archive.zip}/a.tif (zip+https://..., zip+s3://...: a
                                                remote archive)
    file:///data/a.tif                          /data/a.tif (a local Path)

Credentials and network settings are GDAL's own (its environment variables or config options: AWS_*, GS_*,
AZURE_*, GDAL_HTTP_*); geosr adds none. Whether a remote input exists is GDAL's to say, when it opens it. A remote
input is always one file, shown (``str``) by ``redact``: without a user:password@ or a query string (signatures,
tokens), in messages, logs and reports alike.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from geosr.errors import OptionError

if TYPE_CHECKING:  # urllib.request takes 25 ms to import: only a STAC item over http(s) needs it
    import urllib.request

# scheme -> GDAL's virtual file system for it
SCHEMES = {
    "http": "/vsicurl/",
    "https": "/vsicurl/",
    "ftp": "/vsicurl/",
    "s3": "/vsis3/",
    "gs": "/vsigs/",
    "az": "/vsiaz/",
}
# GDAL file systems that go over the network (the ones whose folder listings cost a request)
NETWORK_FILE_SYSTEMS = (
    "/vsicurl",
    "/vsis3",
    "/vsigs",
    "/vsiaz",
    "/vsiadls",
    "/vsioss",
    "/vsiswift",
    "/vsiwebhdfs",
    "/vsihdfs",
)

# GDAL's limits on network transfers (network_timeouts), in seconds and bytes per second
NETWORK_LIMITS = {"GDAL_HTTP_CONNECTTIMEOUT": "60", "GDAL_HTTP_LOW_SPEED_TIME": "60", "GDAL_HTTP_LOW_SPEED_LIMIT": "1"}

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+)://")
_USERINFO = re.compile(r"(?<=://)[^/\s@?#]+@")
_QUERY = re.compile(r"((?:[A-Za-z][A-Za-z0-9+.-]+://|/vsi)[^\s?#'\"]*)[?#][^\s'\"]*?(?=[:,;.)]*(?:[\s'\"]|$))")
# the query string of a remote archive's address ends at the "!" before the member (zip+https://h/a.zip?sig=X!/b.tif)
_ARCHIVE_QUERY = re.compile(r"(zip\+[A-Za-z0-9+.-]+://[^\s?#'\"!]*)[?#][^\s'\"!]*(?=!)")


@dataclass(frozen=True)
class RemoteSource:
    """An input GDAL reads through its virtual file systems.

    spec: the input as given (a URL, a /vsi path, a STAC item); gdal: what GDAL opens (a /vsi path, or the XML of
    a VRT); local_files: the local files it reads, which no output may replace (a STAC item's local assets).
    Shown without credentials (``redact``); ``name`` is its file's base name.
    """

    spec: str
    gdal: str
    local_files: tuple[Path, ...] = field(default=(), compare=False)

    def __str__(self) -> str:
        return redact(self.spec)

    def __repr__(self) -> str:
        return f"RemoteSource({str(self)!r})"

    @property
    def name(self) -> str:
        """The base name of the file (no query string): the output's name when -o is a folder."""
        parts = [p for p in re.split(r"[/!{}]", _without_queries(self.spec)) if p and not p.endswith(":")]
        return unquote(parts[-1]) if parts else "remote"


def is_address(text: str) -> bool:
    """Whether ``text`` names a URL (of any scheme, file:// too) or a GDAL /vsi path rather than a plain local path:
    what geosr never writes to."""
    return text.startswith("/vsi") or re.match(r"[A-Za-z][A-Za-z0-9+.-]+:/", text) is not None


def is_remote(spec: object) -> bool:
    """Whether ``spec`` is an input GDAL reads through a virtual file system (a RemoteSource, a /vsi path, or a URL
    of any scheme but file://; ``gdal_path`` refuses those it does not know) rather than a local file."""
    if isinstance(spec, RemoteSource):
        return True
    if not isinstance(spec, (str, os.PathLike)):
        return False
    text = os.fsdecode(os.fspath(spec))
    m = _SCHEME.match(text)
    return text.startswith("/vsi") or (m is not None and m[1].lower() != "file")


def gdal_path(spec: str) -> str:
    """The path GDAL opens for the input ``spec`` (see the module docstring); a local path is returned as it is.

    Raises OptionError for a scheme geosr does not know.
    """
    m = _SCHEME.match(spec)
    if spec.startswith("/vsi") or m is None:
        return spec
    scheme, rest = m[1].lower(), spec[m.end() :]
    if scheme == "file":
        return unquote(urlsplit(spec).path)
    if scheme in SCHEMES:  # a URL goes to /vsicurl/ whole; a bucket's scheme is replaced
        return f"{SCHEMES[scheme]}{spec}" if SCHEMES[scheme] == "/vsicurl/" else f"{SCHEMES[scheme]}{rest}"
    if scheme == "zip" or scheme.startswith("zip+"):
        archive, _, member = rest.partition("!")
        if scheme != "zip":
            archive = gdal_path(f"{scheme[4:]}://{archive}")
        inner = f"/{member.lstrip('/')}" if member else ""
        return f"/vsizip/{{{archive}}}{inner}"
    raise OptionError(
        f"{redact(spec)}: geosr reads local files, http(s)://, s3://, gs://, az:// and zip:// "
        f"addresses and GDAL's /vsi paths, not {scheme}://; give one of those",
        option="INPUT",
    )


def input_spec(value: str | os.PathLike | RemoteSource) -> Path | RemoteSource:
    """An input as geosr keeps it: a RemoteSource for a remote spec (its GDAL path made here), a Path otherwise
    (``file://`` URLs included). Raises OptionError for a scheme geosr does not know."""
    if isinstance(value, RemoteSource):
        return value
    text = os.fsdecode(os.fspath(value))
    if is_remote(text):
        gdal = gdal_path(text)
        archive = local_archive(gdal)
        return RemoteSource(text, gdal, (archive,) if archive is not None else ())
    if text.lower().startswith("file://"):
        return Path(gdal_path(text))
    return Path(value)


def local_archive(gdal: str) -> Path | None:
    """The local archive a GDAL path reads a member of (``/vsizip/{/data/a.zip}/b.tif``, ``/vsizip//data/a.zip/b.tif``,
    /vsitar/, /vsigzip/, /vsi7z/, /vsirar/), or None: the archive is the first part of the path that is a file."""
    m = re.match(r"/vsi(?:zip|tar|gzip|7z|rar)/", gdal)
    if m is None:
        return None
    rest = gdal[m.end() :]
    if rest.startswith("{"):
        rest = rest[1 : rest.find("}")] if "}" in rest else rest[1:]
    if rest.startswith("/vsi"):
        return local_archive(rest)  # an archive inside an archive: the outer one is the file
    parts = Path(rest).parts
    for i in range(1, len(parts) + 1):
        candidate = Path(*parts[:i])
        if candidate.is_file():
            return candidate
    return None


def local_files(spec: str | os.PathLike | RemoteSource) -> list[Path]:
    """The local files an input reads, which no output of the run may replace: a local input itself, a remote one's
    ``local_files`` (none for a URL)."""
    source = input_spec(spec)
    return list(source.local_files) if isinstance(source, RemoteSource) else [source]


def is_network(gdal: str) -> bool:
    """Whether GDAL reads ``gdal`` (a GDAL path, or a VRT's XML) over the network."""
    return any(fs in gdal for fs in NETWORK_FILE_SYSTEMS)


def network_timeouts() -> dict[str, str]:
    """GDAL's HTTP limits for a run, each unless the environment sets it: a connection that takes over a minute to
    open, or a transfer that stalls (under 1 byte/s for a minute), fails with GDAL's error instead of waiting for
    ever; a stalled request blocks the thread inside libcurl, where neither Ctrl-C nor SIGTERM reaches it. libcurl's
    own defaults wait 300 s to connect and without limit for data."""
    return {key: value for key, value in NETWORK_LIMITS.items() if key not in os.environ}


def remote_options(gdal: str) -> dict[str, str]:
    """GDAL settings while ``gdal`` (a GDAL path) is open: over the network, its folder is not listed (a request, and
    one per sidecar name: .aux.xml, .ovr, .msk), unless the environment sets GDAL_DISABLE_READDIR_ON_OPEN, and
    stalled transfers fail (``network_timeouts``); none otherwise (a local archive's listing is cheap, and finds a
    world file beside the raster). rasterio sets them for the process from the main thread (where files run one at a
    time), for the thread only from others (files in flight)."""
    if not is_network(gdal):
        return {}
    options = network_timeouts()
    if "GDAL_DISABLE_READDIR_ON_OPEN" not in os.environ:
        options["GDAL_DISABLE_READDIR_ON_OPEN"] = "EMPTY_DIR"
    return options


def redact(text: object) -> str:
    """``text`` (a spec, or a message that names one) without what may be a secret: the user:password@ of URLs and
    the query strings of URLs and /vsi paths (``?X-Amz-Signature=...``, SAS tokens)."""
    return _without_queries(_USERINFO.sub("", str(text.spec if isinstance(text, RemoteSource) else text)))


def _without_queries(text: str) -> str:
    """``text`` with the query strings of the addresses in it left out."""
    return _QUERY.sub(r"\1", _ARCHIVE_QUERY.sub(r"\1", text))


def http_request(url: str) -> urllib.request.Request:
    """A request for ``url`` (http or https) with the credentials GDAL would send for it, for what geosr fetches
    itself (a STAC item): the URL's user:password@ or GDAL_HTTP_USERPWD as basic authentication, GDAL_HTTP_BEARER,
    the headers of GDAL_HTTP_HEADERS (lines "Name: value", or one line of them separated by commas) and of the file
    GDAL_HTTP_HEADER_FILE, and GDAL_HTTP_USERAGENT."""
    parts = urlsplit(url)
    headers: dict[str, str] = {}
    auth = None
    user = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}" if parts.username else None
    user = user or os.environ.get("GDAL_HTTP_USERPWD")
    if user:
        auth = "Basic " + base64.b64encode(user.encode()).decode()
    if os.environ.get("GDAL_HTTP_BEARER"):
        auth = f"Bearer {os.environ['GDAL_HTTP_BEARER']}"
    lines = os.environ.get("GDAL_HTTP_HEADERS", "").splitlines()
    if len(lines) == 1:
        lines = re.split(r",\s*(?=[A-Za-z0-9-]+:)", lines[0])
    header_file = os.environ.get("GDAL_HTTP_HEADER_FILE")
    if header_file:
        with open(header_file, encoding="utf-8") as f:
            lines += f.read().splitlines()
    for line in lines:
        name, colon, value = line.partition(":")
        if colon and name.strip():
            headers[name.strip()] = value.strip()
    if os.environ.get("GDAL_HTTP_USERAGENT"):
        headers["User-Agent"] = os.environ["GDAL_HTTP_USERAGENT"]
    import urllib.request

    bare = parts._replace(netloc=parts.netloc.rpartition("@")[2])  # urllib takes no user:password@
    request = urllib.request.Request(bare.geturl(), headers=headers)
    if auth is not None and "Authorization" not in headers:
        request.add_unredirected_header("Authorization", auth)  # not sent on to where a redirect points
    return request
