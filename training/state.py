"""The run folder: the full training state (for --resume), random-number states, and the CSV log.

    RUN_DIR/config.toml            the resolved configuration
    RUN_DIR/log.csv                one row per logged step (kind=train: losses, learning rates, throughput) and per
                                   validation (kind=val: PSNR/SSIM of the model and of bicubic)
    RUN_DIR/checkpoints/state.pt   the latest full state: both nets, optimisers, schedulers, EMA, gradient scaler,
                                   step, epoch, best metric, and every process's RNG states
    RUN_DIR/best.safetensors       the best generator by val PSNR, a model file for geosr upscale / evaluate
    RUN_DIR/last.safetensors       the generator at the end of the run

Every file is written to a temporary file in the same folder, flushed to disk and renamed over the old one, so a
kill during a write leaves the previous version intact. The state is read back with ``weights_only=True``.
"""

from __future__ import annotations

import csv
import io
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geosr.errors import GeosrError, WriteError

STATE_FORMAT = 1
LOG_COLUMNS = (
    "kind", "step", "epoch", "elapsed_s", "lr_g", "lr_d", "g_total", "mse", "perceptual", "adversarial",
    "feature_matching", "d_total", "d_real", "d_fake", "patches_per_s", "val_psnr", "val_ssim", "val_psnr_bicubic",
    "val_ssim_bicubic", "val_images",
)


class ResumeError(GeosrError):
    """A run folder that cannot be resumed."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename (never a half-written ``path``).

    Raises WriteError (the disk is full, no permission, ...) after removing the temporary file; ``path`` keeps its
    previous content.
    """
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        kept = "its previous version is kept" if path.exists() else "nothing was written"
        raise WriteError(
            f"{path}: cannot write ({exc.strerror or exc}); {kept}; free some space (or fix the permissions) and "
            "resume the run with --resume"
        ) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files atomic_write_bytes leaves beside ``path`` when its process is killed mid-write."""
    stale = sorted(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save_state(path: Path, state: dict[str, Any]) -> None:
    """torch.save ``state`` to ``path`` atomically."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path: Path) -> dict[str, Any]:
    """The training state saved at ``path`` (read with weights_only=True: tensors and plain data, never code).

    Temporary files of a write that was killed are removed; ``path`` itself is always a complete earlier state.
    Raises ResumeError for a missing or unreadable state.
    """
    remove_stale_temporaries(path)
    if not path.is_file():
        raise ResumeError(f"{path}: no training state to resume from (the run saved none yet?)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ResumeError(
            f"{path}: unreadable training state ({' '.join(str(exc).split())[:200]}); start a new run with another "
            "--out"
        ) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ResumeError(f"{path}: not a geosr training state of format {STATE_FORMAT}")
    return state


def capture_rng() -> dict[str, Any]:
    """This process's random-number states (torch CPU and CUDA, numpy's global, Python's)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class CsvLog:
    """log.csv with a fixed header (LOG_COLUMNS); rows are appended and flushed at once."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        if resume_step is not None and path.is_file():
            self._truncate(resume_step)
        new = not path.is_file()
        self.file = path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        if new:
            self.writer.writeheader()
            self.file.flush()

    def _truncate(self, step: int) -> None:
        """Drop rows logged after ``step`` (a resumed run repeats those steps, so the curve has no duplicates)."""
        with self.path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        atomic_write_bytes(self.path, buf.getvalue().encode())

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow({k: (_fmt(v) if v is not None else "") for k, v in row.items()})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def read_log(path: Path) -> list[dict[str, str]]:
    """The rows of a run's log.csv (for plots and tests)."""
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))
