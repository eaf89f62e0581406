"""A web server for the tests of remote inputs: serves a folder on 127.0.0.1, honours HTTP Range requests (what
GDAL's /vsicurl/ sends) and counts the bytes of the files it served.

``python rangeserver.py FOLDER`` prints its port and serves until killed. GET /__served__ answers the bytes served
so far, GET /__requests__ the requests so far, one "METHOD /path" a line (neither is counted). A path under
/stall/ is the folder's file as well, but a range that reaches past its first STALL_FROM bytes is never answered: the
connection stays open and silent (a server that hangs after a file's header was read). With the environment
variable RANGESERVER_AUTH set, a path under /auth/ (the folder's file) needs that Authorization header, else 401.
It runs in a process of its own: rasterio calls some GDAL functions holding Python's GIL (a VRT's overviews, which
open its sources), so a server thread in the tests' process would never answer them.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import sys
import threading

STALL_FROM = 1 << 16
SERVED = 0
REQUESTS: list[str] = []
_LOCK = threading.Lock()


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Files of the folder, whole (200) or one byte range of them (206); 404 for anything else."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/__served__":
            self._send(200, str(SERVED).encode(), {})
            return
        if self.path == "/__requests__":
            self._send(200, "\n".join(REQUESTS).encode(), {})
            return
        self._file(body=True)

    def do_HEAD(self) -> None:
        self._file(body=False)

    def _file(self, body: bool) -> None:
        global SERVED
        with _LOCK:
            REQUESTS.append(f"{self.command} {self.path}")
        stall = self.path.startswith("/stall/")
        if self.path.startswith("/auth/") and self.headers.get("Authorization") != os.environ.get("RANGESERVER_AUTH"):
            self.send_error(401)
            return
        path = self.translate_path(self.path.split("?")[0].removeprefix("/stall").removeprefix("/auth"))
        if not os.path.isfile(path):
            self.send_error(404)
            return
        size = os.path.getsize(path)
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        first, last, status = 0, size - 1, 200
        if m:
            first, last, status = int(m[1]), min(int(m[2]) if m[2] else size - 1, size - 1), 206
        if stall and m and last >= STALL_FROM:
            threading.Event().wait()  # hold the connection, say nothing
        with open(path, "rb") as f:
            f.seek(first)
            data = f.read(last - first + 1)
        headers = {"Accept-Ranges": "bytes", "Content-Length": str(len(data) if body or m else size)}
        if m:
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        self._send(status, data if body else b"", headers)
        if body:
            with _LOCK:
                SERVED += len(data)

    def _send(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        headers.setdefault("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RangeHandler, directory=sys.argv[1]))
    print(server.server_address[1], flush=True)
    server.serve_forever()
