"""The run folder's files and the training state: what a checkpoint holds and how --resume restores it.

    RUN_DIR/config.toml            the resolved configuration
    RUN_DIR/log.csv                one row per logged step (kind=train: losses, the discriminator's mean logits,
                                   learning rates, throughput) and per validation (kind=val: PSNR/SSIM of the model
                                   and of bicubic); LOG_COLUMNS
    RUN_DIR/checkpoints/state.pt   the latest full state (``training_state``): both nets, optimisers, EMA,
                                   gradient scaler, divergence guard, step, wall time, best and last validation, the
                                   configuration, and every process's RNG states
    RUN_DIR/best.safetensors       the best generator by val PSNR, a model file for geosr upscale / evaluate
    RUN_DIR/last.safetensors       the generator at the end of the run

``Checkpointed`` gathers the objects whose state a checkpoint carries; ``resume_run`` restores them and the counters
from a saved state, with the learning rates and milestones of the resumed config. Every file is written atomically
(``geosr.fileio``: a temporary file in the same folder, flushed to disk and renamed over the old one), so a kill
during a write leaves the previous version intact; the state is read back with ``weights_only=True``. A state of
format STATE_FORMAT written by any earlier geosr resumes: keys added since (``guard``, ``last_val``) are optional.
"""

from __future__ import annotations

import csv
import io
import logging
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from geosr.errors import GeosrError, one_line
from geosr.fileio import atomic_write, remove_stale_temporaries
from geosr.training.ema import EMA
from geosr.training.guard import DivergenceGuard

log = logging.getLogger("geosr.training")

STATE_FORMAT = 1
LOG_COLUMNS = (
    "kind",
    "step",
    "epoch",
    "elapsed_s",
    "lr_g",
    "lr_d",
    "g_total",
    "mse",
    "l1",
    "perceptual",
    "adversarial",
    "feature_matching",
    "d_total",
    "d_real",
    "d_fake",
    "d_logit_real",
    "d_logit_fake",
    "patches_per_s",
    "val_psnr",
    "val_ssim",
    "val_psnr_bicubic",
    "val_ssim_bicubic",
    "val_images",
)
RESUME_REMEDY = "free some space (or fix the permissions) and resume the run with --resume"


class ResumeError(GeosrError):
    """A run folder that cannot be resumed."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a run-folder file ``data`` to ``path`` atomically (geosr.fileio.atomic_write).

    Raises WriteError (the disk is full, no permission, ...) after removing the temporary file; ``path`` keeps its
    previous content, and the message says to resume the run.
    """
    atomic_write(path, data, remedy=RESUME_REMEDY)


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
        raise ResumeError(
            f"{path}: no training state to resume from (the run was stopped before its first checkpoint?); start "
            f"the run again without --resume (with -o {path.parent.parent})"
        )
    try:
        with warnings.catch_warnings():  # PyTorch's advice on a legacy pickle file: the error below says it all
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ResumeError(
            f"{path}: unreadable training state ({_load_problem(exc)}); start a new run with another -o/--output"
        ) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ResumeError(f"{path}: not a geosr training state of format {STATE_FORMAT}")
    return state


def _load_problem(exc: BaseException) -> str:
    """What torch.load found wrong, on one line, in whole sentences: for a file it refuses to unpickle, the paragraph
    that names what the file holds (not PyTorch's advice to load it unsafely)."""
    text = str(exc)
    if isinstance(exc, EOFError) or "failed finding central directory" in text or "Unsupported operand" in text:
        return "the file is cut short, damaged or no PyTorch file"
    if text.startswith("Weights only load failed"):
        paragraphs = [p for p in text.split("\n\n")[1:] if p.strip() and "documentation" not in p]
        if paragraphs:
            return one_line(ValueError(f"it holds objects other than tensors and plain data: {paragraphs[0]}"), 240)
    return one_line(exc, 240)


@dataclass
class Checkpointed:
    """The objects whose state a checkpoint carries. Without a discriminator d and opt_d are None; without --ema,
    ema is None. The learning rate is a function of the step (schedule.py) and needs no state of its own."""

    g: nn.Module
    opt_g: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    guard: DivergenceGuard
    d: nn.Module | None = None
    opt_d: torch.optim.Optimizer | None = None
    ema: EMA | None = None

    def state_dict(self) -> dict[str, Any]:
        def state(obj: Any) -> Any:
            return obj.state_dict() if obj is not None else None

        return {
            "g": self.g.state_dict(),
            "d": state(self.d),
            "ema": state(self.ema),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": state(self.opt_d),
            "scaler": self.scaler.state_dict(),
            "guard": self.guard.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], source: Path) -> None:
        """Restore from a saved training state; raises ResumeError when it was saved with(out) a discriminator
        that this run has not (has)."""
        if (self.d is None) != (state["d"] is None):
            raise ResumeError(f"{source}: saved with a different discriminator setting")
        self.g.load_state_dict(state["g"])
        self.opt_g.load_state_dict(state["opt_g"])
        if self.d is not None:
            self.d.load_state_dict(state["d"])
            self.opt_d.load_state_dict(state["opt_d"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.scaler.load_state_dict(state["scaler"])
        self.guard.load_state_dict(state.get("guard") or {"recent": [], "spikes": 0})


def training_state(
    parts: Checkpointed,
    *,
    step: int,
    elapsed_s: float,
    best: dict[str, Any],
    last_val: dict[str, Any] | None,
    rngs: list[dict[str, Any]],
    config: dict[str, Any],
) -> dict[str, Any]:
    """The checkpoint at generator step ``step``: the format, the counters, every state of ``parts``, the RNG states
    of every process (``rngs``, by rank) and the configuration."""
    return {
        "format": STATE_FORMAT,
        "step": step,
        "elapsed_s": elapsed_s,
        **parts.state_dict(),
        "best": best,
        "last_val": last_val,
        "rng": rngs,
        "config": config,
    }


class Resumed(NamedTuple):
    """Where a resumed run stands: its step, the wall time of its earlier invocations (seconds), the best
    validation so far ({"val_psnr", "step"}), the last validation's metrics (None when there was none) and the
    config the state was saved with."""

    step: int
    elapsed_s: float
    best: dict[str, Any]
    last_val: dict[str, Any] | None
    config: dict[str, Any]


def resume_run(
    path: Path,
    parts: Checkpointed,
    *,
    seed: int,
    rank: int,
    world_size: int,
    check: Callable[[dict[str, Any]], None] | None = None,
) -> Resumed:
    """Restore ``parts`` and this process's random-number states from the training state at ``path``.

    The loop sets the learning rates of the resumed config from the saved step (schedule.py), so a resumed run may
    change them. Saved with another number of processes, each process gets a fresh stream seeded from
    (seed, rank, step). check: called with the state's config before anything is restored (it raises for a config
    the state cannot serve). Raises ResumeError for a missing, unreadable or mismatched state.
    """
    state = load_state(path)
    if check is not None:
        check(state.get("config") or {})
    parts.load_state_dict(state, path)
    step = state["step"]
    rngs = state["rng"]
    if len(rngs) == world_size:
        restore_rng(rngs[rank])
    else:
        seed_all(seed + 7919 * rank + step)
        if rank == 0:
            log.warning(
                "%s: saved by %d process(es), resumed by %d: the random streams (patches, augmentations) start "
                "afresh, so the run goes on differently from one that kept %d",
                path,
                len(rngs),
                world_size,
                len(rngs),
            )
    return Resumed(step, state["elapsed_s"], state["best"], state.get("last_val"), state.get("config") or {})


def seed_all(seed: int) -> None:
    """Seed Python's, numpy's and torch's global random-number generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
    """Set Python's, numpy's and torch's random-number states (and CUDA's, on as many devices) from ``state``."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class CsvLog:
    """log.csv with a fixed header (LOG_COLUMNS); rows are appended and flushed at once.

    resume_step: drop the rows logged after that step (a resumed run repeats those steps, so the curve has no
    duplicates). A log written with other columns (an earlier geosr) is rewritten with LOG_COLUMNS first; its rows
    keep their values and leave the new columns empty.
    """

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        if path.is_file() and (resume_step is not None or self._header() != list(LOG_COLUMNS)):
            self._rewrite(resume_step)
        new = not path.is_file()
        self.file = path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        if new:
            self.writer.writeheader()
            self.file.flush()

    def _header(self) -> list[str] | None:
        with self.path.open(newline="") as f:
            return next(csv.reader(f), None)

    def _rewrite(self, last_step: int | None) -> None:
        """Rewrite the log with LOG_COLUMNS, keeping the rows up to ``last_step`` (all of them for None)."""
        with self.path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if last_step is None or int(r["step"]) <= last_step]
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
