"""``fit``: the training loop of DEGAN, from a TrainConfig to a run folder with model files.

    set up (torchrun or one process; device; precision; seeds)
    data: train split -> PatchDataset -> DataLoader (DistributedSampler); val split (or --val-data), --val-images
    nets: G (+ D unless content-only) (+ EMA of G); Adam for each; MultiStepLR (decay epochs -> steps); GradScaler
    resume: both nets, optimisers, schedulers, EMA, scaler, step, best metric, RNG states of every process
    loop over steps:
        G step (content loss alone during warm-up or without D), D step; EMA update; scheduler steps
        one all-reduce: the loss terms (mean over processes) and the time-limit flag; NaN/Inf -> stop, no save
        log.csv row; progress callback; validation (PSNR/SSIM of the model and of bicubic) and checkpoint when due
    end: final validation, state, last.safetensors (and best.safetensors whenever validation improved)

Steps count generator updates; an epoch is len(train split) * dataset_repeat // batch_size steps. The learning-rate
decay epochs become steps, so a resumed run continues the same schedule. Rank 0 alone writes files.
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
import statistics
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from geosr import __version__
from geosr.checkpoint import DEFAULT_RADIOMETRY, ModelCard, init_from_model, save_generator
from geosr.datasets import default_bands, find_images, split_rule, spread
from geosr.device import describe_hardware, resolve_precision
from geosr.errors import DataError, GeosrError
from geosr.evaluation import evaluate_images
from geosr.models import Discriminator, Generator
from geosr.training import distributed
from geosr.training.config import ConfigError, TrainConfig
from geosr.training.data import PatchDataset, make_loader, resolve_workers
from geosr.training.ema import EMA
from geosr.training.gan import Amp, LossWeights, discriminator_step, generator_step
from geosr.training.losses import ContentLoss
from geosr.training.state import (
    STATE_FORMAT,
    CsvLog,
    ResumeError,
    atomic_write_bytes,
    capture_rng,
    load_state,
    restore_rng,
    save_state,
)
from geosr.training.vgg import VGGFeatures, VGGWeightsError, load_vgg19_weights

log = logging.getLogger("geosr.training")

TERMS = ("g_total", "mse", "perceptual", "adversarial", "feature_matching", "d_total", "d_real", "d_fake")
Progress = Callable[[str, dict[str, Any]], None]


class TrainingDiverged(GeosrError):
    """A loss became NaN or infinite, or the MSE exploded; the run stopped without saving over its last good
    checkpoint."""


GUARD_HISTORY, GUARD_WARMUP, GUARD_PATIENCE = 200, 50, 10


class DivergenceGuard:
    """Watches the MSE for a generator that exploded or collapsed while every loss stays finite.

    A step is a spike when its MSE exceeds ``factor`` times the median MSE of the last GUARD_HISTORY normal steps
    (once GUARD_WARMUP of them are known); GUARD_PATIENCE spikes in a row mean divergence. Spikes are not added to
    the history, and no checkpoint is written during one, so the last state on disk is from before it.
    """

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.recent: deque[float] = deque(maxlen=GUARD_HISTORY)
        self.spikes = 0

    @property
    def median(self) -> float:
        return statistics.median(self.recent) if self.recent else math.nan

    def update(self, mse: float) -> bool:
        """Record one step's MSE; True if it is a spike."""
        if self.factor > 0 and len(self.recent) >= GUARD_WARMUP and mse > self.factor * self.median:
            self.spikes += 1
            return True
        self.spikes = 0
        self.recent.append(mse)
        return False

    @property
    def diverged(self) -> bool:
        return self.spikes >= GUARD_PATIENCE

    def state_dict(self) -> dict[str, Any]:
        return {"recent": list(self.recent), "spikes": self.spikes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recent.extend(state["recent"])
        self.spikes = int(state["spikes"])


@dataclass
class FitResult:
    """Where a finished run left its files, and how it ended."""

    run_dir: Path
    steps: int
    stopped: str  # 'epochs', 'max_steps', 'max_minutes' or 'interrupted' (SIGINT/SIGTERM; the state is saved)
    last_model: Path | None
    best_model: Path | None
    best_psnr: float | None
    rank: int = 0

    @property
    def model(self) -> Path | None:
        """The model file to use: the best by validation when there was one, else the last."""
        return self.best_model or self.last_model


def run_paths(run_dir: str | Path) -> dict[str, Path]:
    run_dir = Path(run_dir)
    return {
        "config": run_dir / "config.toml",
        "log": run_dir / "log.csv",
        "state": run_dir / "checkpoints" / "state.pt",
        "best": run_dir / "best.safetensors",
        "last": run_dir / "last.safetensors",
    }


def fit(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    vgg: nn.Module | None = None,
    progress: Progress | None = None,
) -> FitResult:
    """Train as ``cfg`` says, into the run folder ``cfg.out``; with ``resume``, continue the run saved there.

    vgg: a ready feature network for the perceptual loss instead of torchvision's VGG19 (tests pass
        ``VGGFeatures.random_for_tests()``); None loads the ImageNet weights (see ``geosr.training.vgg``).
    progress: called as progress(kind, info) with kind 'start', 'step', 'val' or 'end' (on rank 0 only).
    Raises ConfigError, DataError, VGGWeightsError, ResumeError, TrainingDiverged (all GeosrError).
    """
    ctx = distributed.setup(cfg.device)
    try:
        with StopRequest() as stop:
            return _fit(cfg, ctx, resume, vgg, progress if ctx.is_main and progress else (lambda kind, info: None),
                        stop)
    finally:
        distributed.cleanup(ctx)


class StopRequest:
    """SIGINT (Ctrl-C) and SIGTERM ask the run to stop after the current step, save its state and export
    last.safetensors; a second signal stops at once (KeyboardInterrupt). Installed only in the main thread."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stopping after this step and saving the state (press Ctrl-C again to stop at once, unsaved)")

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def _validate(
    model: nn.Module, items: list, cfg: TrainConfig, bands: list[int], ctx: distributed.DistContext, precision: str
) -> dict[str, float]:
    """Mean PSNR/SSIM of ``model`` and of bicubic on ``items``, the images shared out among the processes."""
    share = items[ctx.rank :: ctx.world_size]
    results = evaluate_images(share, cfg.scale, model, bands=bands, device=ctx.device, precision=precision)
    sums = torch.tensor(
        [
            sum(r.psnr for r in results),
            sum(r.ssim for r in results),
            sum(r.psnr_bicubic for r in results),
            sum(r.ssim_bicubic for r in results),
            len(results),
        ],
        dtype=torch.float64,
    )
    if ctx.backend == "nccl":
        sums = sums.to(ctx.device)
    sums = distributed.all_reduce_sum(sums, ctx).cpu()
    n = sums[4].item()
    return {
        "val_psnr": sums[0].item() / n,
        "val_ssim": sums[1].item() / n,
        "val_psnr_bicubic": sums[2].item() / n,
        "val_ssim_bicubic": sums[3].item() / n,
        "val_images": int(n),
    }


def _set_schedule(
    opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.MultiStepLR, lr: float, milestones: list[int],
    gamma: float, step: int,
) -> None:
    """Make a restored optimiser and MultiStepLR follow ``lr`` decayed by ``gamma`` at ``milestones`` from ``step``."""
    factor = gamma ** sum(1 for m in milestones if m <= step)
    for group in opt.param_groups:
        group["initial_lr"] = lr
        group["lr"] = lr * factor
    sched.base_lrs = [lr] * len(opt.param_groups)
    sched.milestones = Counter(milestones)
    sched.gamma = gamma
    sched._last_lr = [group["lr"] for group in opt.param_groups]


def _fit(
    cfg: TrainConfig, ctx: distributed.DistContext, resume: bool, vgg: nn.Module | None, progress: Progress,
    stop: StopRequest | None = None,
) -> FitResult:
    device = ctx.device
    try:
        precision = resolve_precision(cfg.precision, device)
        val_precision = resolve_precision(cfg.val_precision, device)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    paths = run_paths(cfg.out)
    run_dir = Path(cfg.out)
    if not resume and paths["state"].exists():
        raise ConfigError(
            f"{run_dir} already holds a training run; continue it with --resume {run_dir}, or choose another --out"
        )
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
    _seed(cfg.seed)  # the same initial weights in every process

    # --- data ---------------------------------------------------------------------------------------------------
    train_set = find_images(cfg.data, "train")
    if not len(train_set):
        raise DataError(f"{cfg.data}: the train split is empty (split rule: {split_rule(train_set.layout)})")
    if cfg.val_data:
        val_set = find_images(cfg.val_data, "all")
    else:
        val_set = find_images(cfg.data, "val")
    val_items = spread(val_set.items, cfg.val_images)
    if not val_items:
        log.warning("%s has no validation images: no validation, no best model (last.safetensors is exported)",
                    val_set.root)
    bands = list(cfg.bands) if cfg.bands else default_bands(train_set.items[0].path, 3)
    dataset = PatchDataset(
        train_set.items, scale=cfg.scale, patch_size=cfg.patch_size, bands=bands, seed=cfg.seed,
        cache_mb=cfg.cache_mb, repeat=cfg.dataset_repeat,
    )
    batch = cfg.batch_size // ctx.world_size
    workers = resolve_workers(cfg.num_workers, device, dataset.cached, ctx.local_world_size)
    loader, sampler = make_loader(
        dataset, batch_size=batch, workers=workers, device=device, num_replicas=ctx.world_size, rank=ctx.rank,
        seed=cfg.seed,
    )
    steps_per_epoch = sampler.num_samples // batch
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)

    # --- networks, losses, optimisers ---------------------------------------------------------------------------
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    gcfg = cfg.generator_config()
    g = Generator(gcfg)
    init_report = None
    if cfg.init_from and not resume:
        init_report = init_from_model(g, cfg.init_from)
        log.info("initialised %d of %d tensors from %s", init_report["copied"], init_report["total"], cfg.init_from)
    g = g.to(device, memory_format=memory_format)
    d = None
    if cfg.uses_discriminator:
        d = Discriminator(in_channels=gcfg.out_channels, base=cfg.d_base, n_blocks=cfg.d_blocks)
        d = d.to(device, memory_format=memory_format)
    ema = EMA(g, cfg.ema_decay) if cfg.ema else None
    if cfg.perceptual_weight > 0:
        vgg = vgg.to(device, memory_format=memory_format)
    content = ContentLoss(vgg if cfg.perceptual_weight > 0 else None, cfg.charbonnier_eps)
    betas = (cfg.betas[0], cfg.betas[1])
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=betas) if d is not None else None
    milestones = sorted({e * steps_per_epoch for e in cfg.lr_decay_epochs} | set(cfg.lr_decay_steps))
    sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, milestones, cfg.lr_gamma)
    sched_d = torch.optim.lr_scheduler.MultiStepLR(opt_d, milestones, cfg.lr_gamma) if opt_d else None
    amp = Amp.create(device, precision)
    g_train: nn.Module = g
    d_train: nn.Module | None = d
    if ctx.distributed:
        ids = [device.index] if device.type == "cuda" else None
        g_train = DDP(g, device_ids=ids)
        d_train = DDP(d, device_ids=ids) if d is not None else None
    weights = LossWeights(cfg.mse_weight, cfg.perceptual_weight, cfg.adversarial_weight, cfg.feature_matching_weight)

    # --- state ----------------------------------------------------------------------------------------------------
    step, elapsed_before, saved_step = 0, 0.0, None
    best: dict[str, Any] = {"val_psnr": None, "step": None}
    last_val: dict[str, Any] | None = None
    guard = DivergenceGuard(cfg.divergence_factor)
    if resume:
        st = load_state(paths["state"])
        if (d is None) != (st["d"] is None):
            raise ResumeError(f"{paths['state']}: saved with a different discriminator setting")
        g.load_state_dict(st["g"])
        opt_g.load_state_dict(st["opt_g"])
        sched_g.load_state_dict(st["sched_g"])
        if d is not None:
            d.load_state_dict(st["d"])
            opt_d.load_state_dict(st["opt_d"])
            sched_d.load_state_dict(st["sched_d"])
        if ema is not None and st["ema"] is not None:
            ema.load_state_dict(st["ema"])
        amp.scaler.load_state_dict(st["scaler"])
        # The optimiser and scheduler states carry the learning rates and milestones they were saved with; the
        # resumed config's (which --lr-g/--lr-d/--lr-decay-* may change) take over from here.
        _set_schedule(opt_g, sched_g, cfg.lr_g, milestones, cfg.lr_gamma, st["step"])
        if opt_d is not None:
            _set_schedule(opt_d, sched_d, cfg.lr_d, milestones, cfg.lr_gamma, st["step"])
        step, elapsed_before, saved_step = st["step"], st["elapsed_s"], st["step"]
        best, last_val = st["best"], st.get("last_val")
        guard.load_state_dict(st.get("guard") or {"recent": [], "spikes": 0})
        rngs = st["rng"]
        if len(rngs) == ctx.world_size:
            restore_rng(rngs[ctx.rank])
        else:  # another number of processes: a fresh, still reproducible stream per process
            _seed(cfg.seed + 7919 * ctx.rank + step)
        log.info("resumed %s at step %d", run_dir, step)
    elif ctx.rank:
        _seed(cfg.seed + 7919 * ctx.rank)  # each process its own noise (the weights are already equal)

    csv_log = None
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(paths["config"], cfg.to_toml().encode())
        csv_log = CsvLog(paths["log"], resume_step=step if resume else None)
    hardware = describe_hardware(device)

    t0 = time.monotonic()

    def elapsed() -> float:
        return elapsed_before + time.monotonic() - t0

    def training_info() -> dict[str, Any]:
        return {
            "data": str(train_set.root),
            "layout": train_set.layout,
            "split": "train",
            "split_rule": split_rule(train_set.layout),
            "train_images": len(train_set),
            "val_data": str(val_set.root),
            "val_images": len(val_items),
            "scale": cfg.scale,
            "patch_size": cfg.patch_size,
            "batch_size": cfg.batch_size,
            "steps": step,
            "epochs": round(step / steps_per_epoch, 3),
            "steps_per_epoch": steps_per_epoch,
            "hardware": hardware,
            "device": str(device),
            "processes": ctx.world_size,
            "precision": precision,
            "wall_time_s": round(elapsed(), 1),
            "losses": {
                "mse": cfg.mse_weight,
                "perceptual": cfg.perceptual_weight,
                "perceptual_layer": cfg.vgg_layer if cfg.perceptual_weight > 0 else None,
                "adversarial": cfg.adversarial_weight,
                "feature_matching": cfg.feature_matching_weight,
            },
            "diffusion": {"train_noise": cfg.diffusion, "t_max": cfg.diffusion_t_max, "inference_t": 0.0},
            "optimizer": {
                "adam_betas": list(betas), "lr_g": cfg.lr_g, "lr_d": cfg.lr_d if d is not None else None,
                "lr_decay_steps": milestones, "lr_gamma": cfg.lr_gamma, "pretrain_epochs": cfg.pretrain_epochs,
            },
            "weights": "ema" if ema is not None else "generator",
            "ema_decay": cfg.ema_decay if ema is not None else None,
            "initialised_from": init_report,
            "seed": cfg.seed,
            "run_dir": str(run_dir.resolve()),
            "geosr_version": __version__,
        }

    def export(path: Path, metrics: dict[str, Any] | None) -> Path:
        model = ema.model if ema is not None else g
        radiometry = dict(DEFAULT_RADIOMETRY)
        dtypes = sorted({s.dtype for s in dataset.sources})
        if dtypes != ["uint8"]:
            radiometry["training_data"] = (
                f"{', '.join(dtypes)}: per image and band, percentiles 0.05..99.95 of a decimated read map to -1..1"
            )
        m = {}
        if metrics:
            m = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}
            m["protocol"] = "geosr evaluate (UC Merced SR literature), val split"
        card = ModelCard(
            config=gcfg, name=cfg.model_name, description=cfg.description or "", bands=cfg.resolved_band_names(),
            radiometry=radiometry, tile_size=cfg.card_tile_size, overlap=cfg.card_overlap, training=training_info(),
            metrics=m,
        )
        return save_generator(path, model, card)

    def checkpoint() -> None:
        nonlocal saved_step
        rngs = distributed.all_gather_object(capture_rng(), ctx)
        if ctx.is_main:
            save_state(
                paths["state"],
                {
                    "format": STATE_FORMAT,
                    "step": step,
                    "elapsed_s": elapsed(),
                    "g": g.state_dict(),
                    "d": d.state_dict() if d is not None else None,
                    "ema": ema.state_dict() if ema is not None else None,
                    "opt_g": opt_g.state_dict(),
                    "opt_d": opt_d.state_dict() if opt_d is not None else None,
                    "sched_g": sched_g.state_dict(),
                    "sched_d": sched_d.state_dict() if sched_d is not None else None,
                    "scaler": amp.scaler.state_dict(),
                    "best": best,
                    "last_val": last_val,
                    "guard": guard.state_dict(),
                    "rng": rngs,
                    "config": cfg.to_dict(),
                },
            )
        saved_step = step

    def validate() -> None:
        nonlocal last_val
        model = ema.model if ema is not None else g
        model.eval()
        metrics = _validate(model, val_items, cfg, bands, ctx, val_precision)
        model.train(ema is None)
        metrics["step"] = step
        last_val = metrics
        improved = best["val_psnr"] is None or metrics["val_psnr"] > best["val_psnr"]
        if improved:
            best.update(val_psnr=metrics["val_psnr"], step=step)
        if ctx.is_main:
            csv_log.write({"kind": "val", "step": step, "epoch": round(step / steps_per_epoch, 4),
                           "elapsed_s": round(elapsed(), 2), **metrics})
            if improved:
                export(paths["best"], metrics)
            log.info("step %d: val PSNR %.3f dB, SSIM %.4f (bicubic %.3f / %.4f)%s", step, metrics["val_psnr"],
                     metrics["val_ssim"], metrics["val_psnr_bicubic"], metrics["val_ssim_bicubic"],
                     " - best so far" if improved else "")
        progress("val", {**metrics, "best": improved})

    progress("start", {"step": step, "total": total_steps, "steps_per_epoch": steps_per_epoch,
                       "workers": workers, "precision": precision, "device": str(device), "cached": dataset.cached,
                       "discriminator": d is not None, "processes": ctx.world_size})
    stopped = "max_steps" if cfg.max_steps and total_steps == cfg.max_steps else "epochs"
    window_t, window_steps = time.monotonic(), 0
    g_train.train()
    if d_train is not None:
        d_train.train()
    done = step >= total_steps
    while not done:
        epoch = step // steps_per_epoch
        sampler.set_epoch(epoch)
        sampler.set_start((step % steps_per_epoch) * batch)
        for hr, lr in loader:
            hr = hr.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            lr = lr.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            adversarial = d is not None and epoch >= cfg.pretrain_epochs
            sr, terms = generator_step(
                g_train, lr, hr, opt=opt_g, content=content, weights=weights, amp=amp,
                d=d if adversarial else None, diffusion=cfg.diffusion, t_max=cfg.diffusion_t_max,
                grad_clip=cfg.grad_clip,
            )
            if adversarial:
                terms.update(discriminator_step(d_train, hr, sr, opt=opt_d, amp=amp, grad_clip=cfg.grad_clip))
            amp.scaler.update()
            step += 1
            window_steps += 1
            if ema is not None:
                ema.update(g)
            sched_g.step()
            if sched_d is not None:
                sched_d.step()

            # One collective per step: the loss terms (mean over processes), the time-limit and stop flags.
            out_of_time = cfg.max_minutes is not None and (time.monotonic() - t0) / 60 >= cfg.max_minutes
            interrupted = stop is not None and stop.requested
            names = [k for k in TERMS if k in terms]
            packed = torch.stack([terms[k].float() / ctx.world_size for k in names] +
                                 [torch.tensor(float(out_of_time), device=device),
                                  torch.tensor(float(interrupted), device=device)])
            values = distributed.all_reduce_sum(packed, ctx).tolist()
            losses = dict(zip(names, values[:-2]))
            bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
            spiking = not bad and guard.update(losses["mse"])
            if bad or guard.diverged:
                where = (f"the last good checkpoint is {paths['state']} (step {saved_step}); resume it with "
                         "a lower --lr-g/--lr-d, --grad-clip or --precision fp32") if saved_step is not None else \
                    ("no checkpoint was saved yet; start again with a lower --lr-g/--lr-d, --grad-clip or "
                     "--precision fp32")
                what = (f"loss {', '.join(f'{k} = {v}' for k, v in bad.items())}" if bad else
                        f"the MSE ({losses['mse']:.3g}) has stayed above {cfg.divergence_factor:g} x its recent "
                        f"median ({guard.median:.3g}) for {GUARD_PATIENCE} steps: the generator diverged")
                raise TrainingDiverged(f"step {step}: {what}; training stopped without saving; {where}")
            if ctx.is_main and (step % cfg.log_every == 0 or step == total_steps):
                now = time.monotonic()
                rate = window_steps * cfg.batch_size / max(now - window_t, 1e-9)
                window_t, window_steps = now, 0
                csv_log.write({
                    "kind": "train", "step": step, "epoch": round(step / steps_per_epoch, 4),
                    "elapsed_s": round(elapsed(), 2), "lr_g": opt_g.param_groups[0]["lr"],
                    "lr_d": opt_d.param_groups[0]["lr"] if opt_d is not None else None,
                    "patches_per_s": rate, **losses,
                })
            progress("step", {"step": step, "total": total_steps, "epoch": step / steps_per_epoch, "losses": losses})

            val_due = bool(val_items) and (
                (cfg.val_every and step % (cfg.val_every * steps_per_epoch) == 0)
                or (cfg.val_every_steps and step % cfg.val_every_steps == 0)
            )
            if val_due:
                validate()
                if not spiking:
                    checkpoint()
                window_t, window_steps = time.monotonic(), 0
            elif cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0 and not spiking:
                checkpoint()
            if step >= total_steps:
                done = True
                break
            if values[-1] > 0:  # any process was asked to stop
                stopped, done = "interrupted", True
                break
            if values[-2] > 0:
                stopped, done = "max_minutes", True
                break

    # --- the end: a final validation if the last step had none, the state, the model files -----------------------
    if val_items and stopped != "interrupted" and (last_val is None or last_val["step"] != step):
        validate()
    if saved_step != step:
        if guard.spikes:
            log.warning("step %d: the MSE is spiking; the saved state is the one from before the spike", step)
        else:
            checkpoint()
    last_model = export(paths["last"], last_val) if ctx.is_main else paths["last"]
    distributed.barrier(ctx)
    if csv_log is not None:
        csv_log.close()
    result = FitResult(
        run_dir=run_dir, steps=step, stopped=stopped, last_model=last_model,
        best_model=paths["best"] if best["val_psnr"] is not None else None, best_psnr=best["val_psnr"],
        rank=ctx.rank,
    )
    progress("end", {"step": step, "stopped": stopped, "best_psnr": best["val_psnr"], "best_step": best["step"],
                     "model": str(result.model), "wall_time_s": elapsed()})
    return result
