"""The report of an evaluation (``geosr.evaluation``): per-image results, per-class and overall means, the text
table, the report's file (JSON or CSV) and a model card's metrics read back from it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from geosr.errors import DataError
from geosr.fileio import atomic_write
from geosr.uncertainty import MEASURES, summarise_measures


@dataclass
class ImageResult:
    """The metrics of one image (model metrics are None when only bicubic was measured)."""

    name: str
    label: str
    path: str
    height: int
    width: int
    psnr_bicubic: float
    ssim_bicubic: float
    psnr: float | None = None
    ssim: float | None = None
    residual: float | None = None  # mean |LR - D(SR)| in the image's units: how far the output is from consistent
    uncertainty: dict[str, float] | None = None  # the error map's measures (geosr.uncertainty.measure), if asked


METRICS = ("psnr_bicubic", "ssim_bicubic", "psnr", "ssim", "residual")


def summarise(results: Sequence[ImageResult]) -> dict[str, dict[str, float | int | None]]:
    """Per-class and overall means: {label: {'images': n, 'psnr': ..., ...}, ..., 'mean': {...}} (mean over images)."""

    def mean_of(rs: Sequence[ImageResult]) -> dict[str, float | int | None]:
        out: dict[str, float | int | None] = {"images": len(rs)}
        for m in METRICS:
            vals = [getattr(r, m) for r in rs]
            out[m] = None if not vals or any(v is None for v in vals) else float(np.mean(vals))
        return out

    by_label: dict[str, list[ImageResult]] = {}
    for r in results:
        by_label.setdefault(r.label, []).append(r)
    table = {label: mean_of(rs) for label, rs in sorted(by_label.items())}
    table["mean"] = mean_of(results)
    return table


@dataclass
class Report:
    """A whole evaluation: settings, per-image results and the summary."""

    data: str
    layout: str
    split: str
    scale: int
    model: str | None
    results: list[ImageResult]
    protocol: str = field(
        default=(
            "PSNR: mean over channels of per-channel PSNR on 0..255; SSIM: Gaussian 11/1.5 window, valid, mean over "
            "channels; `scale` pixels cropped at each border; LR by MATLAB-style bicubic downsampling with "
            "antialiasing of the HR cropped to a multiple of the scale (paired layouts: their own LR); the model's "
            "output made in blended tiles as geosr upscale makes it, rounded to the image's integer grid; images "
            "other than 8-bit measured with each band's percentile range (the one the model sees) mapped linearly "
            "to 0..255, unclipped; images with nodata, transparent or masked pixels, or a flat band, left out"
        )
    )
    consistency: bool | None = None  # whether the model's output was corrected for consistency (None: no model)
    self_ensemble: bool | None = None  # whether each tile was the mean over its 8 flips and transposes (None: no model)
    model_sha256: str | None = None  # of the model file's bytes: what geosr export --metrics matches the report by
    tile_size: int | None = None  # the tiling the model ran in (LR pixels; None: no model, or a report without it)
    overlap: int | None = None
    precision: str | None = None  # of the model's forward pass: fp32, bf16 or fp16

    def summary(self) -> dict[str, dict[str, float | int | None]]:
        return summarise(self.results)

    def to_dict(self) -> dict:
        return {
            "data": self.data,
            "layout": self.layout,
            "split": self.split,
            "scale": self.scale,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "protocol": self.protocol,
            "consistency": self.consistency,
            "self_ensemble": self.self_ensemble,
            "tile_size": self.tile_size,
            "overlap": self.overlap,
            "precision": self.precision,
            "summary": self.summary(),
            "uncertainty": summarise_measures([r.uncertainty for r in self.results]),
            "images": [asdict(r) for r in self.results],
        }


def format_table(summary: dict[str, dict[str, float | int | None]], with_model: bool = True) -> str:
    """The summary as a fixed-width text table, one row per class and a mean row; ``residual`` is the mean absolute
    difference between the LR and the bicubic downsampling of the model's output, in the image's units."""

    def num(v, fmt):
        if v is None:
            return "-"
        return "inf" if isinstance(v, float) and math.isinf(v) else format(v, fmt)

    width = max([len("class")] + [len(k) for k in summary])
    head = f"{'class':<{width}}  {'images':>6}  {'bicubic PSNR':>12}  {'SSIM':>6}"
    if with_model:
        head += f"  {'model PSNR':>10}  {'SSIM':>6}  {'gain dB':>7}  {'residual':>8}"
    lines = [head, "-" * len(head)]
    for label, row in summary.items():
        if label == "mean":
            lines.append("-" * len(head))
        line = (
            f"{label or '(root)':<{width}}  {row['images']:>6}  {num(row['psnr_bicubic'], '.3f'):>12}  "
            f"{num(row['ssim_bicubic'], '.4f'):>6}"
        )
        if with_model:
            gain = None
            if row["psnr"] is not None and row["psnr_bicubic"] is not None:
                gain = row["psnr"] - row["psnr_bicubic"]
            line += (
                f"  {num(row['psnr'], '.3f'):>10}  {num(row['ssim'], '.4f'):>6}  {num(gain, '+.3f'):>7}"
                f"  {num(row.get('residual'), '.3f'):>8}"
            )
        lines.append(line)
    return "\n".join(lines)


# --- the report's file format (geosr evaluate -o FILE.json|.csv; read back by geosr export --metrics) -------------

CSV_COLUMNS = ("level", "class", "name", "images", "psnr", "ssim", "psnr_bicubic", "ssim_bicubic", "residual")
# with --uncertainty, after those: the error map's measures (geosr.uncertainty.measure) of the image, or their means
# over the class's or all images, and on those summary rows the shares a Laplace error would give, to compare
UNCERTAINTY_COLUMNS = tuple(f"uncertainty_{m}" for m in MEASURES) + (
    "uncertainty_laplace_within_1x",
    "uncertainty_laplace_within_2x",
)


def _finite(v):
    """JSON has no NaN or infinity: such values are written as the strings "nan", "inf", "-inf"."""
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def write_report(report: Report, path: Path) -> None:
    """JSON (settings, summary, per image) or CSV (one row per image, per class and the mean; with the error map's
    measures, UNCERTAINTY_COLUMNS too), by the suffix; written atomically (geosr.fileio): a failure leaves no partial
    report."""
    if path.suffix.lower() == ".json":
        atomic_write(path, (json.dumps(_finite(report.to_dict()), indent=2) + "\n").encode(), what="the report")
        return
    measured = any(r.uncertainty for r in report.results)
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS + (UNCERTAINTY_COLUMNS if measured else ()))
    w.writeheader()
    for r in report.results:
        w.writerow(
            {
                "level": "image",
                "class": r.label,
                "name": r.name,
                "images": 1,
                "psnr": r.psnr,
                "ssim": r.ssim,
                "psnr_bicubic": r.psnr_bicubic,
                "ssim_bicubic": r.ssim_bicubic,
                "residual": r.residual,
                **(_uncertainty_columns(r.uncertainty) if measured else {}),
            }
        )
    for label, row in report.summary().items():
        level = "mean" if label == "mean" else "class"
        extra = {}
        if measured:
            rows = [r.uncertainty for r in report.results if level == "mean" or r.label == label]
            extra = _uncertainty_columns(summarise_measures(rows))
        w.writerow({"level": level, "class": "" if level == "mean" else label, "name": "", **row, **extra})
    atomic_write(path, buf.getvalue().encode(), what="the report")


def _uncertainty_columns(measures) -> dict:
    """A row's UNCERTAINTY_COLUMNS from an image's measures or their summary (empty cells where there are none)."""
    return {f"uncertainty_{k}": v for k, v in (measures or {}).items() if f"uncertainty_{k}" in UNCERTAINTY_COLUMNS}


def is_evaluation_report(path: Path) -> bool:
    """Whether ``path`` holds a report of ``geosr evaluate`` (JSON or CSV, as ``write_report`` writes them), which a
    new evaluation may replace without --overwrite."""
    try:
        if path.stat().st_size > (256 << 20):
            return False
        if path.suffix.lower() == ".csv":
            with path.open(encoding="utf-8", newline="") as f:
                head = next(csv.reader(f), None)
            return head in (list(CSV_COLUMNS), list(CSV_COLUMNS + UNCERTAINTY_COLUMNS))
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError, UnicodeDecodeError, csv.Error):
        return False
    return isinstance(doc, dict) and {"protocol", "split", "scale", "summary", "images"} <= doc.keys()


def card_metrics(path: Path, scale: int, tiling: tuple[int, int] | None = None) -> dict:
    """A model card's metrics from a JSON report of a model of ``scale``; DataError (option --metrics) for a file
    that is none, of another scale, measured with the self-ensemble or in other tiles than the card's ``tiling``
    (tile size, overlap): the card describes upscale's default."""
    try:
        report = json.loads(path.read_text())
        mean = report["summary"]["mean"]
        data = {
            key: round(float(mean[field]), 4)
            for key, field in (
                ("val_psnr", "psnr"),
                ("val_ssim", "ssim"),
                ("val_psnr_bicubic", "psnr_bicubic"),
                ("val_ssim_bicubic", "ssim_bicubic"),
            )
        }
        data["val_images"] = int(mean["images"])
        if mean.get("residual") is not None:  # reports from before geosr measured it have none
            data["val_residual"] = round(float(mean["residual"]), 4)
        if report.get("consistency") is not None:
            data["consistency"] = bool(report["consistency"])
        self_ensemble, report_scale = report.get("self_ensemble"), int(report["scale"])
        measured_tiling = (report.get("tile_size"), report.get("overlap"))
    except FileNotFoundError:
        raise DataError(
            f"{path}: no such report; write one with geosr evaluate ... -o {path.name}", option="--metrics"
        ) from None
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(
            f"{path}: not a geosr evaluate JSON report with a model (write one with geosr evaluate -m "
            "MODEL ... -o FILE.json)",
            option="--metrics",
        ) from None
    if self_ensemble:
        raise DataError(
            f"{path}: measured with --self-ensemble; a card's metrics are of the model as upscale runs "
            "it by default: evaluate without --self-ensemble",
            option="--metrics",
        )
    if report_scale != scale:
        raise DataError(
            f"{path}: a x{report_scale} report for a x{scale} model; evaluate this model", option="--metrics"
        )
    if tiling is not None and None not in measured_tiling and tuple(measured_tiling) != tuple(tiling):
        t, o = measured_tiling
        raise DataError(
            f"{path}: measured in tiles of {t} with overlap {o}, the card's are {tiling[0]} and {tiling[1]} (what "
            f"upscale runs by default): evaluate with the card's tiling, or export with --tile-size {t} --overlap {o}",
            option="--metrics",
        )
    data.update(
        split=report.get("split"),
        data=report.get("data"),
        protocol=report.get("protocol"),
        report_model=report.get("model"),
    )
    for key in ("precision", "model_sha256"):  # reports of earlier versions have neither
        if report.get(key) is not None:
            data["report_" + key.removeprefix("model_")] = report[key]
    return data
