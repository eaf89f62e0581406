"""Many files: a batch run with one loaded predictor.

``upscale_batch(pairs, predictor, options)`` runs the (input, output) pairs that ``geosr.raster.plan_outputs`` made,
one after the other or several in flight, their tiles sharing the model's calls (``geosr.sharedmodel``): a file that
fails is reported and the rest go on.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from geosr.aoi import AOIMissError, aoi_files
from geosr.device import sum_over_ranks, use_intra_op_threads
from geosr.errors import OUT_OF_MEMORY, GeosrError, OptionError, OutputExistsError, one_line
from geosr.options import UpscaleOptions, check_exclusions
from geosr.pipeline import FileResult, ProgressCallback, upscale_raster
from geosr.plan import card_tiling
from geosr.predictor import Predictor
from geosr.raster import (
    check_output_file,
    check_output_location,
    check_output_name,
    damaged_output,
    output_scale,
    plan_outputs,
    remove_stale_outputs,
)
from geosr.report import BatchReport, rank_path, settings_of
from geosr.sharedmodel import Cancelled, SharedModel
from geosr.sources import RemoteSource, is_remote
from geosr.uncertainty import kept_output_problem

__all__ = [  # SharedModel and Cancelled (geosr.sharedmodel) too, where they have always been imported from
    "BatchJob",
    "BatchSummary",
    "Cancelled",
    "SharedModel",
    "check_files_in_flight",
    "run_batch",
    "upscale_batch",
]

log = logging.getLogger("geosr.batch")


@dataclass
class BatchSummary:
    """What a batch did."""

    results: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def megapixels_per_second(self) -> float:
        mp = sum(r.pixels for r in self.results if r.status == "done") / 1e6
        return mp / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"{self.count('done')} done, {self.count('skipped')} skipped, {self.count('failed')} failed in "
            f"{self.seconds:.1f} s ({self.megapixels_per_second:.2f} output megapixels/s)"
        )


@dataclass(frozen=True)
class BatchJob:
    """One run of ``geosr upscale INPUT... -o OUTPUT``: what ``run_batch`` needs besides the model.

    inputs: local paths, and remote inputs (geosr.sources: URLs, /vsi paths, STAC items) as RemoteSource or text;
    report: the JSON batch report's path (geosr.report; under torchrun one per process); command: the command line
    it records; rank, world_size: this process's share of the files under torchrun (every world_size-th file).
    """

    inputs: tuple[Path | RemoteSource, ...]
    output: Path | str  # a str ending with a slash names a folder (geosr.raster.plan_outputs)
    options: UpscaleOptions = UpscaleOptions()
    skip_existing: bool = False
    files_in_flight: int = 1
    report: Path | None = None
    command: tuple[str, ...] | None = None
    rank: int = 0
    world_size: int = 1

    def run_settings(self) -> dict:
        """What the report's settings hold of the job besides its options: this process's share under torchrun."""
        share = {"rank": self.rank, "processes": self.world_size}
        return {"skip_existing": self.skip_existing, "files_in_flight": self.files_in_flight, **share}

    @property
    def single(self) -> bool:
        """One input file (its errors are raised, as one file's are) rather than a batch (recorded, never raised)."""
        return len(self.inputs) == 1 and (is_remote(self.inputs[0]) or Path(self.inputs[0]).is_file())


def run_batch(
    job: BatchJob,
    load: Callable[[], Predictor],
    *,
    progress: ProgressCallback | None = None,
    on_result: Callable[[FileResult], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
) -> BatchSummary:
    """The whole flow of an upscale run, for the command line and the Python API alike.

    Pairs the inputs with their outputs and checks every output path and the report's (before any work), keeps
    this process's share, loads the model with ``load`` (only when there is a file to do), runs the files (one input
    file: its errors raised; a batch: ``upscale_batch``), fills the report however the run ends, and raises
    AOIMissError when the area of interest meets none of the files. ``on_plan`` hears how many files this process
    will do, ``on_result`` of every file's result.
    """
    check_exclusions(overwrite=job.options.overwrite, skip_existing=job.skip_existing)
    check_files_in_flight(job.files_in_flight)
    if job.options.uncertainty is not None and not job.single:
        raise OptionError(
            f"{job.options.uncertainty}: --uncertainty writes the error map of one input file; give "
            "one file, or run one command per file",
            option="--uncertainty",
        )
    book = None
    if job.report is not None:
        book = BatchReport(
            rank_path(job.report, job.rank, job.world_size),
            command=job.command,
            settings=settings_of(job.options, **job.run_settings()),
            overwrite=job.options.overwrite,
            inputs=[*job.inputs, *aoi_files(job.options.aoi)],
        )
    with book if book is not None else contextlib.nullcontext():  # the report is written however the run ends
        summary = _run(job, load, book, progress, on_result, on_plan)
        missed = [r for r in summary.results if r.reason == "aoi"]
        # under torchrun, once every process has ended its files: one's failed file stops no other's work
        missed_all, files_all = sum_over_ranks(job.world_size, len(missed), len(summary.results))
        if missed_all and missed_all == files_all and not job.single:  # inside: the report records the error
            raise AOIMissError(
                f"the area of interest ({job.options.aoi.source}) meets none of the {missed_all} input "
                f"files ({missed[0].message if missed else 'nor those of the other processes'}); check the area and "
                "its CRS (--aoi-crs)",
                option=job.options.aoi.option,
            )
    if missed:
        names = ", ".join(r.src.name for r in missed[:3]) + (", ..." if len(missed) > 3 else "")
        log.warning("%d file(s) skipped: the area of interest does not meet them (%s)", len(missed), names)
    return summary


def _run(
    job: BatchJob,
    load: Callable[[], Predictor],
    book: BatchReport | None,
    progress: ProgressCallback | None,
    on_result: Callable[[FileResult], None] | None,
    on_plan: Callable[[int], None] | None,
) -> BatchSummary:
    pairs = plan_outputs(job.inputs, job.output)
    check_output_location(job.output)
    if job.single:  # a batch removes them folder by folder (upscale_batch)
        remove_stale_outputs(pairs[0][1].parent, pairs[0][1].name)
    if job.options.uncertainty is not None:
        remove_stale_outputs(Path(job.options.uncertainty).parent, Path(job.options.uncertainty).name)
    for src, dst in pairs:  # a suffix geosr does not write, --cog with a .png: usage errors, from the names
        check_output_name(dst, job.options.cog)
        if job.single and not job.skip_existing:
            check_output_file(
                dst, overwrite=job.options.overwrite, source=src, keep_hint=" (or --skip-existing to keep it)"
            )
    mine = pairs[job.rank :: job.world_size]
    if book is not None:
        book.plan(mine)
    if on_plan is not None:
        on_plan(len(mine))
    if not mine:
        log.info("no files for this process (rank %d of %d)", job.rank, job.world_size)
        return BatchSummary()
    predictor = load()
    card_tiling(predictor.card, predictor.source, job.options.tile_size, job.options.overlap)  # one usage error
    if book is not None:
        book.use_model(
            predictor,
            settings_of(job.options, predictor, **job.run_settings()),
        )
        book.running()

    def each(result: FileResult) -> None:
        if book is not None:
            book.add(result)
        if on_result is not None:
            on_result(result)

    if not job.single:
        return upscale_batch(
            mine,
            predictor,
            job.options,
            skip_existing=job.skip_existing,
            progress=progress,
            on_result=each,
            files_in_flight=job.files_in_flight,
        )
    t0 = time.perf_counter()
    [(src, dst)] = mine
    if job.skip_existing and dst.exists():
        result = existing_result(src, dst, job.options.uncertainty, predictor.scale)
    else:
        result = upscale_raster(src, dst, predictor, job.options, progress)
    each(result)
    return BatchSummary([result], time.perf_counter() - t0)


def existing_result(src, dst: Path, error_map: Path | None = None, scale: int | None = None) -> FileResult:
    """--skip-existing's result for an output that exists: skipped, or failed (neither redone nor replaced without
    --overwrite) when its headers show it damaged (cut short, not a raster), when an ``error_map`` asked for is
    missing or damaged (geosr.uncertainty.kept_output_problem), and with the run's ``scale`` when geosr made it at
    another scale (its GEOSR_SCALE) or did not make it (a file copied there, a PNG or JPEG without its .aux.xml)."""
    problem = damaged_output(dst)
    made = None if problem else output_scale(dst)
    if problem:
        message = f"{dst}: exists but is damaged ({problem}); delete it to redo it, or pass --overwrite"
    elif scale is not None and made is None:
        message = (
            f"{dst}: exists but geosr did not write it (no GEOSR_SCALE tag; a PNG or JPEG output keeps its tags and "
            "georeferencing in its .aux.xml); move it away, or pass --overwrite to replace it"
        )
    elif scale is not None and made != scale:
        message = (
            f"{dst}: exists, made at x{made} (its GEOSR_SCALE), and this run upscales x{scale}; give -o another "
            "folder, or pass --overwrite"
        )
    else:
        message = None if error_map is None else kept_output_problem(error_map, src, dst)
    if message:
        return FileResult(src, dst, "failed", message)
    return FileResult(src, dst, "skipped", f"{dst}: exists (--skip-existing)", reason="exists")


def check_files_in_flight(n: int) -> int:
    """``n`` if it is an integer of at least 1, else OptionError."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise OptionError(f"files in flight {n!r}: must be an integer of at least 1", option="--files-in-flight")
    return n


def upscale_batch(
    pairs: Sequence[tuple[Path, Path]],
    predictor: Predictor,
    options: UpscaleOptions = UpscaleOptions(),
    *,
    skip_existing: bool = False,
    progress: ProgressCallback | None = None,
    on_result: Callable[[FileResult], None] | None = None,
    files_in_flight: int = 1,
) -> BatchSummary:
    """Upscale every (input, output) pair with one predictor; failures are recorded, never raised.

    skip_existing: leave outputs that exist alone (resumes an interrupted batch); their results say reason
    "exists". An AOI that misses a file skips it (reason "aoi"). Temporary files that killed runs left in the output
    folders are removed first. KeyboardInterrupt stops the batch (the file in progress leaves nothing behind).

    files_in_flight: files processed at once, each on its own thread, their tiles sharing the model's calls
    (``SharedModel``): for folders of small files on a GPU, where one file's reading, planning and writing would leave
    the device idle. With 1 (the default) the files run one after the other on this thread. Either way the results
    are in the order of ``pairs``; ``on_result`` hears of each file as it ends (on this thread), ``progress`` from
    the file's thread (one call at a time).
    """
    check_files_in_flight(files_in_flight)
    summary = BatchSummary()
    t0 = time.perf_counter()
    for folder in sorted({dst.parent for _, dst in pairs}):
        remove_stale_outputs(folder)  # what killed runs left, also beside outputs that --skip-existing keeps

    place: dict[int, int] = {}  # id of each result -> its pair's index in ``pairs``

    def finished(i: int, result: FileResult) -> None:
        place[id(result)] = i
        summary.results.append(result)
        summary.seconds = time.perf_counter() - t0
        if on_result is not None:
            on_result(result)

    if files_in_flight == 1 or len(pairs) < 2:
        for i, (src, dst) in enumerate(pairs):
            finished(i, _upscale_file(src, dst, predictor, options, progress, skip_existing))
    else:
        _in_flight(pairs, predictor, options, progress, skip_existing, files_in_flight, finished)
        summary.results.sort(key=lambda r: place[id(r)])
    summary.seconds = time.perf_counter() - t0
    return summary


def _upscale_file(
    src: Path,
    dst: Path,
    predictor: Predictor,
    options: UpscaleOptions,
    progress: ProgressCallback | None,
    skip_existing: bool,
) -> FileResult:
    """One file of a batch: its result, whatever went wrong with it (KeyboardInterrupt and the like pass)."""
    if skip_existing and dst.exists():
        return existing_result(src, dst, scale=predictor.scale)
    t1 = time.perf_counter()
    try:
        return upscale_raster(src, dst, predictor, options, progress)
    except AOIMissError as exc:
        return FileResult(src, dst, "skipped", str(exc), time.perf_counter() - t1, reason="aoi")
    except OutputExistsError as exc:  # another process finished this output meanwhile
        status = "skipped" if skip_existing else "failed"
        return FileResult(
            src, dst, status, str(exc), time.perf_counter() - t1, reason="exists" if skip_existing else ""
        )
    except GeosrError as exc:
        return FileResult(src, dst, "failed", str(exc), time.perf_counter() - t1)
    except MemoryError:  # numpy's; the model's is a GeosrError (geosr.predictor)
        log.debug("%s failed", src, exc_info=True)
        return FileResult(src, dst, "failed", f"{src}: {OUT_OF_MEMORY}", time.perf_counter() - t1)
    except Exception as exc:  # an unexpected failure in one file must not stop the batch; its traceback with -v
        log.info("%s failed", src, exc_info=True)
        why = f"{src}: unexpected error: {type(exc).__name__}: {one_line(exc)} (-v shows where; please report it)"
        return FileResult(src, dst, "failed", why, time.perf_counter() - t1)


def _in_flight(
    pairs,
    predictor: Predictor,
    options: UpscaleOptions,
    progress: ProgressCallback | None,
    skip_existing: bool,
    n: int,
    finished: Callable[[int, FileResult], None],
) -> None:
    """Run the pairs ``n`` at a time on worker threads sharing the model; ``finished`` each result on this thread,
    with its pair's index.

    Anything that stops the batch here (KeyboardInterrupt, or an exception out of ``finished`` or ``progress``)
    cancels the model calls still waiting, lets the files under way end (each removes its temporary file) and is
    raised once they have.
    """
    shared = SharedModel(predictor, options.batch_size)
    lock = threading.Lock()

    def report(p) -> None:
        assert progress is not None  # passed on only when there is one
        with lock:
            progress(p)

    todo = iter(enumerate(pairs))
    running: dict[Future, int] = {}  # each file's place in pairs: the files that end together finish in that order
    # each file's thread runs the model on this thread's intra-op threads, set explicitly: a thread's first PyTorch
    # call would otherwise take the process's latest setting, which the strip loops change while they run
    import torch

    threads = torch.get_num_threads()
    with ThreadPoolExecutor(
        n, thread_name_prefix="geosr-file", initializer=use_intra_op_threads, initargs=(threads,)
    ) as pool:

        def start_next() -> None:
            for i, (src, dst) in todo:
                running[
                    pool.submit(_upscale_file, src, dst, shared, options, report if progress else None, skip_existing)
                ] = i
                return

        try:
            for _ in range(n):
                start_next()
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: running[f]):
                    finished(running.pop(future), future.result())
                    start_next()
        except BaseException:
            shared.cancel()
            wait(running)
            for future, i in sorted(running.items(), key=lambda item: item[1]):  # ended whole meanwhile: done
                if not future.cancelled() and future.exception() is None and future.result().status == "done":
                    with contextlib.suppress(Exception):  # what stopped the batch may be ``finished`` itself
                        finished(i, future.result())
            raise
