"""The set-up of ``fit`` (geosr.training.loop) around its data and networks; the phases return frozen values:

    run_paths    the files of a run folder by role
    StopRequest  SIGINT/SIGTERM ask the run to stop after the current step and save its state
    setup_run    the precisions, the run folder and its refusals, determinism, the VGG19 weights (before any data is
                 decoded), the seeds -> RunSetup
    restore      where the loop starts: fresh, or from the run folder's state (state.py: resume_run); config.toml
                 written and log.csv opened on rank 0 -> Start
    Clock        the run's wall time, earlier invocations of a resumed run included

The data and the networks are built by build.py (``build_data``, ``build_networks``), between setup_run and restore.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geosr.checkpoint import read_card
from geosr.device import resolve_precision
from geosr.errors import GeosrError
from geosr.fileio import remove_stale_temporaries
from geosr.training import distributed
from geosr.training.config import ConfigError, TrainConfig
from geosr.training.configfile import VALIDATION, check_state_config, same_setting
from geosr.training.state import Checkpointed, CsvLog, atomic_write_bytes, resume_run, seed_all
from geosr.training.vgg import VGGFeatures, VGGWeightsError, load_vgg19_weights

__all__ = [
    "Clock",
    "RunSetup",
    "Start",
    "StopRequest",
    "hold_run_dir",
    "release_run_dir",
    "restore",
    "run_paths",
    "setup_run",
]

log = logging.getLogger("geosr.training")


def run_paths(run_dir: str | Path) -> dict[str, Path]:
    """The files of a run folder by role: config, log, state, best, last (see geosr.training.state)."""
    run_dir = Path(run_dir)
    return {
        "config": run_dir / "config.toml",
        "log": run_dir / "log.csv",
        "state": run_dir / "checkpoints" / "state.pt",
        "best": run_dir / "best.safetensors",
        "last": run_dir / "last.safetensors",
    }


class StopRequest:
    """SIGINT (Ctrl-C) and SIGTERM ask the run to stop after the current step, save its state and export
    last.safetensors; a second signal stops at once (KeyboardInterrupt). Installed only in the main thread."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        how = "press Ctrl-C again" if signum == signal.SIGINT else "signal again"
        log.warning("stopping after this step and saving the state (%s to stop at once, unsaved)", how)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass(frozen=True)
class RunSetup:
    """What is settled before the data is read: the precisions, the run folder, the perceptual loss's features."""

    precision: str  # of training: 'fp32', 'bf16' or 'fp16'
    val_precision: str  # of validation
    run_dir: Path
    paths: dict[str, Path]  # run_paths(run_dir)
    vgg: nn.Module | None  # the feature network of the perceptual loss; None without one


def setup_run(cfg: TrainConfig, ctx: distributed.DistContext, resume: bool, vgg: nn.Module | None) -> RunSetup:
    """Check what can be checked before the data (precisions, the run folder, the batch split among processes), set
    determinism, load the VGG19 weights unless ``vgg`` is given, and seed every generator with ``cfg.seed``.

    Raises ConfigError (a run folder that holds a run without ``resume``, an unusable precision or batch size) and
    VGGWeightsError.
    """
    try:
        precision = resolve_precision(cfg.precision, ctx.device)
        val_precision = resolve_precision(cfg.val_precision, ctx.device)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    run_dir = Path(cfg.out)
    paths = run_paths(run_dir)
    if ctx.is_main and run_dir.is_dir():
        hold_run_dir(run_dir)  # before its files are judged: another process may be writing them
    if not resume:
        _check_new_run_dir(cfg, run_dir, paths)
    if cfg.batch_size % ctx.world_size:
        raise ConfigError(
            f"batch_size {cfg.batch_size} does not split evenly among {ctx.world_size} processes; use a multiple"
        )
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
    if cfg.perceptual_weight > 0 and vgg is None:
        vgg = _load_vgg(cfg, ctx)  # first: without weights, fail before the data is decoded
    seed_all(cfg.seed)  # the same initial weights in every process
    return RunSetup(precision, val_precision, run_dir, paths, vgg if cfg.perceptual_weight > 0 else None)


_HELD: dict[Path, Any] = {}  # the run folders this process trains in, with their open lock files


def hold_run_dir(run_dir: Path) -> None:
    """Lock ``run_dir`` for this process until ``release_run_dir`` (the run's end) or the process's end, whichever
    comes first (an exclusive flock on RUN/.geosr-train.lock, which the system lets go however the process ends);
    ConfigError when another process holds it: two runs in one folder (a --resume given twice) would each write the
    state, the models and the log over the other's."""
    key = run_dir.resolve()
    if key in _HELD:
        return
    try:
        import fcntl
    except ImportError:  # Windows has no flock: no lock there
        return
    lock = open(run_dir / ".geosr-train.lock", "a+")  # noqa: SIM115 - held open while the run lasts
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise ConfigError(
            f"{run_dir}: another geosr train is running in this folder; wait for it to end (or stop it), or choose "
            "another -o/--output"
        ) from None
    _HELD[key] = lock


def release_run_dir(run_dir: Path) -> None:
    """Let go of ``run_dir``'s lock (hold_run_dir), if this process holds it: the run has ended."""
    lock = _HELD.pop(run_dir.resolve(), None)
    if lock is not None:
        lock.close()  # closing the file lets go of its flock


def _check_new_run_dir(cfg: TrainConfig, run_dir: Path, paths: dict[str, Path]) -> None:
    """Raise ConfigError where a new run would write over another run's files (its state, models, log or config:
    an earlier run whose checkpoints were removed, or a user's files of those names) or into a data folder."""
    if paths["state"].exists():
        raise ConfigError(
            f"{run_dir} already holds a training run; continue it with --resume {run_dir}, or choose another "
            "-o/--output"
        )
    there = [p.name for role, p in paths.items() if role != "state" and p.exists()]
    if there and _stopped_before_its_first_checkpoint(paths):
        log.warning("%s: the run there stopped before its first checkpoint; this run starts anew over it", run_dir)
    elif there:
        raise ConfigError(
            f"{run_dir} already holds {', '.join(there)} (an earlier run's, without its checkpoints/state.pt to "
            "resume); a new run would replace them: choose another -o/--output, or move them away"
        )
    out = run_dir.resolve()
    folders = [("--data", cfg.data), ("--val-data", cfg.val_data), *[("--extra-data", e) for e in cfg.extra_data]]
    for option, folder in folders:
        if folder is not None and out.is_relative_to(Path(folder).resolve()):
            raise ConfigError(
                f"-o/--output {run_dir} lies in the {option} folder {folder}: the run's files would mix with the "
                "images; choose an output folder outside it"
            )


def _stopped_before_its_first_checkpoint(paths: dict[str, Path]) -> bool:
    """Whether a run folder holds only what a run writes before its first checkpoint, geosr's own config.toml and
    log.csv (a run killed in its first steps: nothing to resume, nothing of value to keep)."""
    from geosr.training.configfile import read_toml

    if any(paths[role].exists() for role in ("state", "best", "last")):
        return False
    try:
        if paths["config"].exists():
            read_toml(paths["config"])
        if paths["log"].exists():
            with open(paths["log"], "rb") as f:
                if not f.read(10).startswith(b"kind,step,"):
                    return False
    except (ConfigError, OSError):
        return False
    return True


def _load_vgg(cfg: TrainConfig, ctx: distributed.DistContext) -> VGGFeatures:
    """Rank 0 fetches the weights into torch hub's cache first; then every process loads them."""
    error = None
    if ctx.is_main:
        try:
            weights = load_vgg19_weights(cfg.vgg_weights)
        except VGGWeightsError as exc:
            error = str(exc)
    error = distributed.broadcast_object(error, ctx)
    if error:
        raise VGGWeightsError(error)
    if not ctx.is_main:
        weights = load_vgg19_weights(cfg.vgg_weights, download=False)
    return VGGFeatures(weights, cfg.vgg_layer)


@dataclass(frozen=True)
class Start:
    """Where the loop starts: its step, the wall time of earlier invocations (seconds), the best validation so far
    ({"val_psnr", "step"}), the last validation's metrics and the step of the state on disk (None: none yet)."""

    step: int
    elapsed_s: float
    best: dict[str, Any]
    last_val: dict[str, Any] | None
    saved_step: int | None
    csv_log: CsvLog | None  # log.csv, open on rank 0; None elsewhere


def restore(cfg: TrainConfig, ctx: distributed.DistContext, run: RunSetup, parts: Checkpointed, resume: bool) -> Start:
    """With ``resume``, restore ``parts`` and the random-number states from the run folder; else start at step 0,
    each process with its own random-number stream. Rank 0 writes config.toml and opens log.csv (dropping the rows
    after the resumed step). Raises ResumeError."""
    step, elapsed_s, best, last_val = 0, 0.0, {"val_psnr": None, "step": None}, None
    saved_step = None
    if resume:
        step, elapsed_s, best, last_val, saved = resume_run(
            run.paths["state"],
            parts,
            seed=cfg.seed,
            rank=ctx.rank,
            world_size=ctx.world_size,
            check=lambda saved: check_state_config(saved, cfg, run.paths["config"]),
        )
        saved_step = step
        changed = [k for k in VALIDATION if k in saved and not same_setting(k, getattr(cfg, k), saved[k])]
        if changed:
            if ctx.is_main:
                log.warning(
                    "%s: %s changed since the run chose its best model on other validation images: the best is "
                    "chosen anew on these, and the first validation replaces best.safetensors",
                    run.run_dir,
                    ", ".join(changed),
                )
            best = {"val_psnr": None, "step": None}
        else:
            best = _best_exported_later(run.paths["best"], step, best)
        log.info("resumed %s at step %d", run.run_dir, step)
    elif ctx.rank:
        seed_all(cfg.seed + 7919 * ctx.rank)  # each process its own noise (the weights are already equal)
    csv_log = None
    if ctx.is_main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        hold_run_dir(run.run_dir)
        for role in ("best", "last", "config"):  # what a killed write left (state.pt's: resume_run)
            remove_stale_temporaries(run.paths[role])
        atomic_write_bytes(run.paths["config"], cfg.to_toml().encode())
        csv_log = CsvLog(run.paths["log"], resume_step=step if resume else None)
    return Start(step, elapsed_s, best, last_val, saved_step, csv_log)


def _best_exported_later(path: Path, step: int, best: dict[str, Any]) -> dict[str, Any]:
    """The best validation a resumed run must beat: its state's, or that of a best.safetensors exported after the
    state's step (the run was killed between a new best and its next saved state) when that one is better, so that
    the steps run again do not replace a better model with a worse one."""
    if not path.exists():
        return best
    try:
        card = read_card(path)
    except GeosrError:  # damaged by a kill during its write: the next best replaces it
        return best
    psnr, exported = card.metrics.get("val_psnr"), card.training.get("steps")
    if not isinstance(psnr, (int, float)) or not isinstance(exported, int) or exported <= step:
        return best
    if best["val_psnr"] is not None and psnr <= best["val_psnr"]:
        return best
    log.info(
        "%s: exported at step %d (val PSNR %.3f dB), after the state of step %d: it stays the best until a later "
        "validation beats it",
        path,
        exported,
        psnr,
        step,
    )
    return {"val_psnr": float(psnr), "step": exported}


@dataclass(frozen=True)
class Clock:
    """Wall time from its creation (time.monotonic), plus ``before_s`` seconds of a resumed run's earlier
    invocations."""

    before_s: float = 0.0
    t0: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        """Training wall time in seconds, earlier invocations of a resumed run included."""
        return self.before_s + time.monotonic() - self.t0

    def minutes(self) -> float:
        """Minutes of this invocation alone (what --max-minutes limits)."""
        return (time.monotonic() - self.t0) / 60
