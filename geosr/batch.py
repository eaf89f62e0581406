"""Many files: where each input's output goes, and a batch run with one loaded predictor.

``plan_outputs(inputs, output)`` pairs every input raster (files, or folders searched recursively) with its output
path, keeping the layout below the inputs' common folder; ``upscale_batch(pairs, predictor, options)`` runs them in
order: a file that fails is reported and the rest go on.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from geosr.aoi import AOIMissError
from geosr.errors import OUT_OF_MEMORY, GeosrError, OutputExistsError, RasterError, one_line
from geosr.options import UpscaleOptions
from geosr.pipeline import FileResult, ProgressCallback, upscale_raster
from geosr.predictor import Predictor
from geosr.raster import (
    OUTPUT_SUFFIXES,
    RASTER_SUFFIXES,
    check_not_input,
    check_regular_file,
    find_rasters,
    remove_stale_outputs,
    same_file,
)

log = logging.getLogger("geosr.batch")


def output_name(rel: Path) -> Path:
    """The output's relative path for an input's: the same, with a .tif suffix unless TIFF, PNG or JPEG."""
    return rel if rel.suffix.lower() in OUTPUT_SUFFIXES else rel.with_suffix(".tif")


def plan_outputs(inputs: Sequence[str | os.PathLike], output: str | os.PathLike) -> list[tuple[Path, Path]]:
    """(input, output) pairs, sorted by input.

    One input file: ``output`` is the output file (or a folder that exists, to hold it). Several inputs or a folder
    (searched recursively for rasters): ``output`` is a folder, and the inputs' layout below their common folder is
    kept. Raises GeosrError for missing inputs, no rasters found, an output that is an input or two inputs that would
    share an output.
    """
    paths = [Path(p) for p in inputs]
    out = Path(output)
    if not paths:
        raise GeosrError("no input given")
    for p in paths:
        if not p.exists():
            raise RasterError(f"{p}: no such file or folder")
        check_regular_file(p)
    if len(paths) == 1 and paths[0].is_file():
        target = out / output_name(Path(paths[0].name)) if out.is_dir() else out
        check_not_input(paths[0], target)
        return [(paths[0], target)]
    if out.exists() and not out.is_dir():
        raise GeosrError(f"{out}: is a file; with several inputs or a folder, -o names an output folder",
                         option="--output")
    for p in paths:
        if p.is_dir() and same_file(p, out):
            raise GeosrError(f"{out}: the output folder is the input folder; choose another output folder",
                             option="--output")
    if len(paths) == 1:
        base = paths[0].absolute()
    else:
        base = Path(os.path.commonpath([p.absolute().parent for p in paths]))
    pairs: dict[Path, Path] = {}
    for p in paths:
        files = find_rasters(p, exclude=[out]) if p.is_dir() else [p]
        if p.is_dir() and not files:
            log.warning("%s: no rasters found (%s)", p, ", ".join(RASTER_SUFFIXES))
        for f in files:
            target = out / output_name(f.absolute().relative_to(base))
            if target in pairs.values():
                other = next(k for k, v in pairs.items() if v == target)
                raise GeosrError(f"{f} and {other} would both be written to {target}; rename one of them")
            check_not_input(f, target)
            pairs[f] = target
    if not pairs:
        raise GeosrError(f"no rasters found in {', '.join(map(str, paths))}")
    return sorted(pairs.items())


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


def upscale_batch(
    pairs: Sequence[tuple[Path, Path]],
    predictor: Predictor,
    options: UpscaleOptions = UpscaleOptions(),
    *,
    skip_existing: bool = False,
    progress: ProgressCallback | None = None,
    on_result: Callable[[FileResult], None] | None = None,
) -> BatchSummary:
    """Upscale every (input, output) pair in order with one predictor; failures are recorded, never raised.

    skip_existing: leave outputs that exist alone (resumes an interrupted batch); their results say reason
    "exists". An AOI that misses a file skips it (reason "aoi"). Temporary files that killed runs left in the output
    folders are removed first. KeyboardInterrupt stops the batch (the file in progress leaves nothing behind).
    """
    summary = BatchSummary()
    t0 = time.perf_counter()
    for folder in sorted({dst.parent for _, dst in pairs}):
        remove_stale_outputs(folder)  # what killed runs left, also beside outputs that --skip-existing keeps
    for src, dst in pairs:
        if skip_existing and dst.exists():
            result = FileResult(src, dst, "skipped", f"{dst}: exists (--skip-existing)", reason="exists")
        else:
            t1 = time.perf_counter()
            try:
                result = upscale_raster(src, dst, predictor, options, progress)
            except AOIMissError as exc:
                result = FileResult(src, dst, "skipped", str(exc), time.perf_counter() - t1, reason="aoi")
            except OutputExistsError as exc:  # another process finished this output meanwhile
                status = "skipped" if skip_existing else "failed"
                result = FileResult(src, dst, status, str(exc), time.perf_counter() - t1,
                                    reason="exists" if skip_existing else "")
            except GeosrError as exc:
                result = FileResult(src, dst, "failed", str(exc), time.perf_counter() - t1)
            except MemoryError:  # numpy's; the model's is a GeosrError (geosr.predictor)
                log.debug("%s failed", src, exc_info=True)
                result = FileResult(src, dst, "failed", f"{src}: {OUT_OF_MEMORY}", time.perf_counter() - t1)
            except Exception as exc:  # an unexpected failure in one file must not stop the batch
                log.debug("%s failed", src, exc_info=True)
                result = FileResult(
                    src, dst, "failed", f"{src}: {type(exc).__name__}: {one_line(exc)}", time.perf_counter() - t1
                )
        summary.results.append(result)
        summary.seconds = time.perf_counter() - t0
        if on_result is not None:
            on_result(result)
    summary.seconds = time.perf_counter() - t0
    return summary
