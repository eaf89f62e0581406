"""Machine-readable batch reports: one JSON file per run that a script or a scheduler reads instead of the terminal.

``BatchReport(path)`` is filled as a batch goes (``plan``, ``use_model``, ``running``, ``add`` for every file) and
written with ``geosr.fileio.atomic_write``, so whoever reads it sees either the previous complete version or the new
one (its path is checked first by ``geosr.fileio.check_target``: never an input or output of the run, an existing
file only when it is an earlier report or with --overwrite; a device or pipe gets the final version, written into
it): when the files are known (state "running", every file "pending"), at most every ``interval`` seconds while
they run, and once at the end, also when the batch fails or is interrupted (used as a context manager, the
exception that stops the batch is recorded and passed on). Only a SIGKILL or a power cut leaves the last
intermediate version. The document (``FORMAT`` 1)::

    {"format": 1, "geosr_version": "0.1.0", "command": ["geosr", "upscale", ...] or null,
     "started": "2025-06-01T10:00:00Z", "updated": "...",          # UTC
     "state": "running" | "finished" | "failed" | "interrupted",
     "exit_code": 0 | 1 | 2 | 130 | 143 | null,                    # null while running
     "error": null or the one-line message of what stopped the batch as a whole,
     "model": {"file": ..., "name": ..., "scale": 4, "device": "cpu", "precision": "bf16"} or null,
     "settings": {"tile_size": 16, "overlap": 4, ...},              # the values in force (the model card's filled in)
     "summary": {"files": 3, "done": 2, "skipped": 0, "failed": 1, "interrupted": 0, "pending": 0,
                 "seconds": 12.5, "output_pixels": 123456, "megapixels_per_second": 0.01},
     "files": [{"input": "/abs/a.tif", "output": "/abs/out/a.tif", "status": "done", "message": "",
                "seconds": 6.1, "output_pixels": 61728, "tiles": 120, "model": "degan-x4.safetensors (...)",
                "settings": {...}}, ...]}

File statuses: "done", "skipped" (an existing output with skip-existing, an AOI that misses the file), "failed" (the
message says why), "interrupted" (the file under way when Ctrl-C or SIGTERM came: nothing of it was written), and
"pending" (not started). Paths are absolute. "exit_code" is the one ``geosr upscale`` exits with: 0 when no file
failed, 1 when one did or the batch failed, 2 for a usage error, 130 after Ctrl-C, 143 after SIGTERM.
``report_schema()`` returns the document's JSON Schema (geosr/schemas/batch_report.schema.json).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch

from geosr.errors import GeosrError, OptionError, WriteError, one_line
from geosr.fileio import Target, check_target, write_target
from geosr.options import UpscaleOptions
from geosr.pipeline import FileResult
from geosr.plan import card_tiling
from geosr.predictor import Predictor
from geosr.raster import RASTER_SUFFIXES
from geosr.sources import RemoteSource, input_spec, is_remote, local_files, redact
from geosr.version import __version__

log = logging.getLogger("geosr.report")

FORMAT = 1
SCHEMA_FILE = "batch_report.schema.json"  # in geosr/schemas: the JSON Schema of the document (``report_schema``)
STATUSES = ("done", "skipped", "failed", "interrupted", "pending")
INTERRUPT_EXIT = 130  # Ctrl-C; an interrupt that carries ``exit_code`` (SIGTERM: 143) gives its own


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _path(p: str | os.PathLike) -> str:
    return redact(p) if is_remote(p) else str(Path(p).absolute())


def settings_of(options: UpscaleOptions, predictor: Predictor | None = None, **extra: Any) -> dict[str, Any]:
    """The settings of a run as JSON values: ``options`` (the model card's tile size and overlap filled in when the
    predictor is known and they fit), the predictor's device and precision, the CPU threads PyTorch uses
    ("threads"), and ``extra`` (e.g. skip_existing)."""
    tile, overlap = options.tile_size, options.overlap
    if predictor is not None:
        # a tiling that does not fit the card: every file fails with that message; the values given stay
        with contextlib.suppress(GeosrError):
            tile, overlap = card_tiling(predictor.card, predictor.source, tile, overlap)
    settings: dict[str, Any] = {
        "tile_size": tile,
        "overlap": overlap,
        "batch_size": options.batch_size,
        "bands": None if options.bands is None else list(options.bands),
        "aoi": None if options.aoi is None else options.aoi.source,
        "aoi_crs": None if options.aoi is None else options.aoi.crs,
        "value_range": None if options.value_range is None else list(options.value_range),
        "consistency": options.consistency,
        "cog": options.cog,
        "compress": options.compress,
        "overwrite": options.overwrite,
    }
    if predictor is not None:
        settings["device"] = str(predictor.device)
        settings["precision"] = predictor.precision
        settings["self_ensemble"] = predictor.self_ensemble
        settings["threads"] = torch.get_num_threads()  # --threads, or PyTorch's default
    settings.update(extra)
    return settings


def report_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the document, shipped in the package as
    ``geosr/schemas/batch_report.schema.json``."""
    return json.loads(files("geosr").joinpath("schemas", SCHEMA_FILE).read_text(encoding="utf-8"))


class BatchReport:
    """The report of one batch, written to ``path`` as it goes (see the module docstring for the document).

    command: the command line to record (None from Python); settings: as ``settings_of`` gives them; interval:
    the least time in seconds between two intermediate writes. Use it as a context manager: on leaving it the final
    version is written, with the exception that ended the batch, if any, recorded (and passed on).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        command: Sequence[str] | None = None,
        settings: dict[str, Any] | None = None,
        interval: float = 5.0,
        overwrite: bool = False,
        inputs: Sequence[str | os.PathLike | RemoteSource] = (),
    ) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.inputs = [f for p in inputs for f in local_files(p)]  # a URL: none
        self.target: Target | None = self._check(())
        self.command = None if command is None else [redact(a) for a in command]  # no credentials of addresses
        self.settings: dict[str, Any] = dict(settings or {})
        self.interval = interval
        self.model: dict[str, Any] | None = None
        self.model_label = ""
        self.pairs: list[tuple[Path | RemoteSource, Path]] = []
        self.results: list[FileResult] = []
        self.state = "running"
        self.exit_code: int | None = None
        self.error: str | None = None
        self.started = _now()
        self._t0 = time.perf_counter()
        self._running = False  # files are being processed: an exception now concerns the next pending one
        self._stopped: tuple[str, str] | None = None  # (status, message) of the file under way when the batch ended
        self._written = float("-inf")

    # --- filling it in ----------------------------------------------------------------------------------------------

    def _check(self, pairs: Sequence[tuple[Path, Path]]) -> Target:
        """The report's path checked against the run's inputs and outputs (geosr.fileio.check_target); an earlier
        geosr report is replaced without --overwrite, a device or a pipe (/dev/stdout, a FIFO) is written into."""
        # a raster-named report inside an input folder would be read as an input: one, before the folder is searched
        inside = [
            self.path
            for d in self.inputs
            if d.is_dir()
            and self.path.suffix.lower() in RASTER_SUFFIXES
            and d.resolve() in self.path.absolute().resolve().parents
        ]
        try:
            return check_target(
                self.path,
                what="the batch report",
                option="--report",
                overwrite=self.overwrite,
                inputs=self.inputs + inside + [f for a, _ in pairs for f in local_files(a)],
                outputs=[("an output raster", b) for _, b in pairs],
                replaceable=is_report,
                stream_ok=True,
            )
        except GeosrError:
            self.target = None  # never written: it would replace a file of the run or of the user
            raise

    def plan(self, pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike]]) -> None:
        """The (input, output) pairs of the batch, in the order they run; raises OptionError (and the report is
        never written) when the report's path is one of their files."""
        self.pairs = [(input_spec(a), Path(b)) for a, b in pairs]
        self.target = self._check(self.pairs)

    def use_model(self, predictor: Predictor, settings: dict[str, Any] | None = None) -> None:
        """The model the files run through; ``settings`` (as ``settings_of`` gives them) replace the ones so far."""
        card = predictor.card
        self.model = {
            "file": predictor.source,
            "name": card.name,
            "scale": card.scale,
            "channels": predictor.channels,
            "device": str(predictor.device),
            "precision": predictor.precision,
            "path": predictor.path,
            "sha256": predictor.model_sha256,
        }
        self.model_label = f"{predictor.source} ({card.name}, x{card.scale})"
        if settings is not None:
            self.settings = dict(settings)

    def running(self) -> None:
        """The files start now; writes the report (every file pending; a pipe or device gets the final version
        only). Raises WriteError if it cannot be written."""
        self._running = True
        if self.target is not None and not self.target.stream:
            self.write()

    def add(self, result: FileResult) -> None:
        """The outcome of the next file; the report is rewritten if ``interval`` seconds passed since the last write
        (a failure to write it then is logged, not raised: the batch goes on)."""
        self.results.append(result)
        streamed = self.target is not None and self.target.stream  # a pipe or device gets the final version only
        if not streamed and time.perf_counter() - self._written >= self.interval:
            try:
                self.write()
            except WriteError as exc:
                log.warning("%s", exc)

    def finish(self, exc: BaseException | None = None) -> None:
        """Record how the batch ended (``exc``: the exception that ended it, None when it ran to its end) and write
        the final version. Raises WriteError when that write fails and the batch itself ended without one."""
        if exc is None:
            self.state = "finished"
            self.exit_code = 1 if any(r.status == "failed" for r in self.results) else 0
        elif isinstance(exc, KeyboardInterrupt):
            self.state = "interrupted"
            self.exit_code = int(getattr(exc, "exit_code", INTERRUPT_EXIT))
            self.error = "interrupted by SIGTERM" if self.exit_code == 143 else "interrupted (Ctrl-C)"
            self._stopped = (
                "interrupted",
                "interrupted; nothing of this file was written (run again with --skip-existing to finish the batch)",
            )
        else:
            self.state = "failed"
            self.exit_code = 2 if isinstance(exc, OptionError) else 1
            message = (
                one_line(exc)
                if isinstance(exc, GeosrError)
                else f"unexpected error: {type(exc).__name__}: {one_line(exc)}"
            )
            self.error = message
            self._stopped = ("failed", message)
        try:
            self.write()
        except WriteError as write_error:
            if exc is None:
                raise
            if not isinstance(exc, WriteError):  # else it is this very error, reported by whoever catches it
                log.error("%s", write_error)

    def __enter__(self) -> BatchReport:
        return self

    def __exit__(self, typ, exc, tb) -> None:
        self.finish(exc)  # and the exception, if any, goes on

    # --- the document -----------------------------------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        """One record per file: the results so far (in the order they came), then the files under way (if the batch
        stopped in them: the first ``files_in_flight`` of those left) and the pending ones."""
        out = [self._record(r.src, r.dst, r.status, r.message, r.seconds, r.pixels, r.tiles) for r in self.results]
        ended = {(r.src, r.dst) for r in self.results}
        rest = [pair for pair in self.pairs if pair not in ended]
        under_way = self.settings.get("files_in_flight") or 1  # the first ones left were running when it stopped
        for i, (src, dst) in enumerate(rest):
            status, message = ("pending", "not started")
            if i < under_way and self._running and self._stopped is not None:
                status, message = self._stopped
            out.append(self._record(src, dst, status, message, 0.0, 0, 0))
        return out

    def _record(self, src, dst, status, message, seconds, pixels, tiles) -> dict[str, Any]:
        return {
            "input": _path(src),
            "output": _path(dst),
            "status": status,
            "message": message,
            "seconds": round(float(seconds), 3),
            "output_pixels": int(pixels),
            "tiles": int(tiles),
            "model": self.model_label,
            "settings": self.settings,
        }

    def to_dict(self) -> dict[str, Any]:
        records = self.records()
        seconds = time.perf_counter() - self._t0
        pixels = sum(r["output_pixels"] for r in records if r["status"] == "done")
        summary: dict[str, Any] = {"files": len(records)}
        summary.update({s: sum(r["status"] == s for r in records) for s in STATUSES})
        summary.update(
            {
                "seconds": round(seconds, 3),
                "output_pixels": pixels,
                "megapixels_per_second": round(pixels / 1e6 / seconds, 4) if seconds > 0 else 0.0,
            }
        )
        return {
            "format": FORMAT,
            "geosr_version": __version__,
            "command": self.command,
            "started": self.started,
            "updated": _now(),
            "state": self.state,
            "exit_code": self.exit_code,
            "error": self.error,
            "model": self.model,
            "settings": self.settings,
            "summary": summary,
            "files": records,
        }

    def write(self) -> Path:
        """Write the report now (atomically; into a device or pipe at once); raises WriteError naming the file when
        it cannot be written. Nothing is written when the path failed its check."""
        if self.target is None:
            return self.path
        data = json.dumps(self.to_dict(), indent=1).encode() + b"\n"
        write_target(self.target, data, what="the batch report", remedy="choose another --report")
        self._written = time.perf_counter()
        return self.path


def is_report(path: Path) -> bool:
    """Whether ``path`` holds a batch report of geosr (which a new batch may replace without --overwrite)."""
    try:
        if path.stat().st_size > (64 << 20):
            return False
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and {"format", "geosr_version", "files", "summary"} <= doc.keys()


def rank_path(path: str | os.PathLike, rank: int, world_size: int) -> Path:
    """The report path of one process under torchrun: ``report.json`` -> ``report.rank1.json`` (unchanged for a
    single process), so that the processes of one run never write the same file."""
    path = Path(path)
    if world_size <= 1:
        return path
    if path.exists() and not path.is_file() and not path.is_dir():  # /dev/stdout, a FIFO: the processes would mix
        raise OptionError(
            f"--report {path}: under torchrun each process writes a report of its own; give a file path (each "
            "process adds .rankN to it)",
            option="--report",
        )
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")
