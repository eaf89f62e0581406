"""``fit``: the training loop of DEGAN, from a TrainConfig to a run folder with model files.

``_fit`` reads top-down, one visible loop in the manner of nanoGPT's train.py:

    set up: processes (torchrun or one), device, precision, seeds; the VGG19 weights first (fail before the data)
    data: train split -> PatchDataset -> DataLoader (resumable DistributedSampler); val split (or --val-data)
    nets: G (+ D unless content-only) (+ EMA of G); Adam for each; the learning-rate schedule (schedule.py); GradScaler
    state: fresh, or restored from the run folder (state.py: resume_run)
    loop:
        validate when due and once at the end (PSNR/SSIM of the model and of bicubic; a new best -> best.safetensors)
        checkpoint when due and at the end (state.py: training_state), never during an MSE spike
        stop: at the step limit, after --max-minutes, or on Ctrl-C/SIGTERM (StopRequest; the state is saved)
        G step (content loss alone during warm-up or without D), D step, at the step's learning rates; EMA update
        one all-reduce: the logged values (means over processes) and the stop flags
        divergence guard (guard.py): a NaN/Inf value or an exploding MSE stops the run, without saving
        log.csv row; progress callback
    end: last.safetensors (its card, like best's: card.py)

Steps count generator updates; an epoch is len(train split) * dataset_repeat // batch_size steps. The learning rate
is a function of the step (decay epochs become steps), so a resumed run continues the same schedule. Rank 0 alone
writes files.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from geosr.checkpoint import init_from_model, save_generator
from geosr.datasets import default_bands, find_images, split_rule, spread
from geosr.device import describe_hardware, resolve_precision
from geosr.errors import DataError
from geosr.evaluation import evaluate_images
from geosr.models import Discriminator, Generator
from geosr.models.refiner import set_attention_dropout
from geosr.training import distributed
from geosr.training.card import RunFacts, model_card
from geosr.training.config import ConfigError, TrainConfig
from geosr.training.data import PatchDataset, make_loader, resolve_workers
from geosr.training.ema import EMA
from geosr.training.gan import Amp, LossWeights, discriminator_step, generator_step
from geosr.training.guard import DivergenceGuard, TrainingDiverged
from geosr.training.losses import ContentLoss
from geosr.training.schedule import LrSchedule, ScheduledOptimiser
from geosr.training.state import (
    Checkpointed,
    CsvLog,
    atomic_write_bytes,
    capture_rng,
    resume_run,
    save_state,
    seed_all,
    training_state,
)
from geosr.training.vgg import VGGFeatures, VGGWeightsError, load_vgg19_weights

__all__ = ["FitResult", "StopRequest", "TrainingDiverged", "fit", "run_paths"]

log = logging.getLogger("geosr.training")

TERMS = ("g_total", "mse", "l1", "perceptual", "adversarial", "feature_matching", "d_total", "d_real", "d_fake")
LOGGED = TERMS + ("d_logit_real", "d_logit_fake")  # D's mean logits: in log.csv, not on the progress bar
Progress = Callable[[str, dict[str, Any]], None]


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
    """The files of a run folder by role: config, log, state, best, last (see geosr.training.state)."""
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
    Raises ConfigError, DataError, VGGWeightsError, ResumeError, TrainingDiverged, ModelFileError (--init-from),
    WriteError (a full disk: the last good state is kept); all GeosrError.
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
    model: nn.Module, items: list, cfg: TrainConfig, bands: list[int], ctx: distributed.DistContext, precision: str,
    *, train_after: bool,
) -> dict[str, float]:
    """Mean PSNR/SSIM of ``model`` and of bicubic on ``items``, the images shared out among the processes.

    The model runs in eval mode and is left in train mode when ``train_after`` (the generator itself, not its EMA).
    It runs as the exported model will run in ``geosr upscale``: in the card's tiles, corrected for consistency.
    """
    model.eval()
    share = items[ctx.rank :: ctx.world_size]
    results = evaluate_images(share, cfg.scale, model, bands=bands, device=ctx.device, precision=precision,
                              tile_size=cfg.card_tile_size, overlap=cfg.card_overlap)
    model.train(train_after)
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


def _batches(loader: Any, sampler: Any, step: int, steps_per_epoch: int, batch: int) -> Iterator[Any]:
    """The (HR, LR) batches of the steps from ``step`` on, epoch after epoch, without end.

    Each epoch starts the sampler's shuffle of that epoch where the step falls in it, so a resumed run draws the
    batches the uninterrupted run would have drawn (the loader drops the last incomplete batch of an epoch).
    """
    while True:
        sampler.set_epoch(step // steps_per_epoch)
        sampler.set_start((step % steps_per_epoch) * batch)
        for pair in loader:
            yield pair
            step += 1


def _every(step: int, period: int) -> bool:
    return period > 0 and step % period == 0


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
    run_dir = Path(cfg.out)
    paths = run_paths(run_dir)
    if not resume and paths["state"].exists():
        raise ConfigError(
            f"{run_dir} already holds a training run; continue it with --resume {run_dir}, or choose another -o/--output"
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
    seed_all(cfg.seed)  # the same initial weights in every process

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
    set_attention_dropout(g, cfg.attention_dropout)
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
    eval_model = ema.model if ema is not None else g  # what is validated and exported
    if cfg.perceptual_weight > 0:
        vgg = vgg.to(device, memory_format=memory_format)
    content = ContentLoss(vgg if cfg.perceptual_weight > 0 else None, cfg.charbonnier_eps, l1=cfg.l1_weight > 0)
    betas = (cfg.betas[0], cfg.betas[1])
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=betas) if d is not None else None
    milestones = sorted({e * steps_per_epoch for e in cfg.lr_decay_epochs} | set(cfg.lr_decay_steps))
    schedule = LrSchedule(cfg.lr_schedule, tuple(milestones), cfg.lr_gamma, total_steps, cfg.lr_warmup_steps,
                          cfg.lr_min_factor)
    rates = [ScheduledOptimiser(opt_g, cfg.lr_g, schedule)]
    if opt_d is not None:
        rates.append(ScheduledOptimiser(opt_d, cfg.lr_d, schedule))
    amp = Amp.create(device, precision)
    g_train: nn.Module = g
    d_train: nn.Module | None = d
    if ctx.distributed:
        ids = [device.index] if device.type == "cuda" else None
        g_train = DDP(g, device_ids=ids)
        d_train = DDP(d, device_ids=ids) if d is not None else None
    weights = LossWeights(cfg.mse_weight, cfg.perceptual_weight, cfg.adversarial_weight, cfg.feature_matching_weight,
                          cfg.l1_weight)
    guard = DivergenceGuard(cfg.divergence_factor)

    # --- state: fresh, or restored from the run folder ---------------------------------------------------------
    parts = Checkpointed(g=g, opt_g=opt_g, scaler=amp.scaler, guard=guard, d=d, opt_d=opt_d, ema=ema)
    step, elapsed_before, best, last_val = 0, 0.0, {"val_psnr": None, "step": None}, None
    saved_step = None  # the step of the last state on disk
    if resume:
        step, elapsed_before, best, last_val = resume_run(
            paths["state"], parts, seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size,
        )
        saved_step = step
        log.info("resumed %s at step %d", run_dir, step)
    elif ctx.rank:
        seed_all(cfg.seed + 7919 * ctx.rank)  # each process its own noise (the weights are already equal)
    csv_log = None
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(paths["config"], cfg.to_toml().encode())
        csv_log = CsvLog(paths["log"], resume_step=step if resume else None)
    facts = RunFacts(
        data=str(train_set.root), layout=train_set.layout, split_rule=split_rule(train_set.layout),
        train_images=len(train_set), val_data=str(val_set.root), val_images=len(val_items),
        steps_per_epoch=steps_per_epoch, hardware=describe_hardware(device), device=str(device),
        processes=ctx.world_size, precision=precision, lr_decay_steps=milestones, discriminator=d is not None,
        ema=ema is not None, initialised_from=init_report, run_dir=str(run_dir.resolve()),
        source_dtypes=sorted({s.dtype for s in dataset.sources}),
    )
    t0 = time.monotonic()

    def elapsed() -> float:
        """Training wall time in seconds, earlier invocations of a resumed run included."""
        return elapsed_before + time.monotonic() - t0

    # --- the loop -----------------------------------------------------------------------------------------------
    progress("start", {"step": step, "total": total_steps, "steps_per_epoch": steps_per_epoch,
                       "workers": workers, "precision": precision, "device": str(device), "cached": dataset.cached,
                       "discriminator": d is not None, "processes": ctx.world_size})
    limit = "max_steps" if cfg.max_steps and total_steps == cfg.max_steps else "epochs"
    stopped = limit if step >= total_steps else None  # why the run stops: set after the last step
    first_step = step
    batches = _batches(loader, sampler, step, steps_per_epoch, batch)
    window_t, window_steps = time.monotonic(), 0
    g_train.train()
    if d_train is not None:
        d_train.train()
    while True:
        # Validate when due, and once at the end of a run that was not interrupted (unless this step had one).
        finishing = stopped is not None and stopped != "interrupted"
        val_due = bool(val_items) and (
            (step > first_step and (_every(step, cfg.val_every * steps_per_epoch) or _every(step, cfg.val_every_steps)))
            or (finishing and (last_val is None or last_val["step"] != step))
        )
        if val_due:
            last_val = _validate(eval_model, val_items, cfg, bands, ctx, val_precision, train_after=ema is None)
            last_val["step"] = step
            improved = best["val_psnr"] is None or last_val["val_psnr"] > best["val_psnr"]
            if improved:
                best = {"val_psnr": last_val["val_psnr"], "step": step}
            if ctx.is_main:
                csv_log.write({"kind": "val", "step": step, "epoch": round(step / steps_per_epoch, 4),
                               "elapsed_s": round(elapsed(), 2), **last_val})
                if improved:
                    card = model_card(cfg, facts, step=step, wall_time_s=elapsed(), metrics=last_val)
                    save_generator(paths["best"], eval_model, card)
                log.info("step %d: val PSNR %.3f dB, SSIM %.4f (bicubic %.3f / %.4f)%s", step, last_val["val_psnr"],
                         last_val["val_ssim"], last_val["val_psnr_bicubic"], last_val["val_ssim_bicubic"],
                         " - best so far" if improved else "")
            progress("val", {**last_val, "best": improved})
            window_t, window_steps = time.monotonic(), 0

        # Save the state with each validation, every --checkpoint-every-steps and at the end; never during a spike.
        if step != saved_step and (val_due or stopped is not None
                                   or (step > first_step and _every(step, cfg.checkpoint_every_steps))):
            if guard.spiking:
                if stopped is not None:
                    log.warning("step %d: the MSE is spiking; the saved state is the one from before the spike", step)
            else:
                rngs = distributed.all_gather_object(capture_rng(), ctx)
                if ctx.is_main:
                    save_state(paths["state"], training_state(parts, step=step, elapsed_s=elapsed(), best=best,
                                                              last_val=last_val, rngs=rngs, config=cfg.to_dict()))
                saved_step = step
        if stopped is not None:
            break

        # One training step at this step's learning rates: G (D frozen), then D; the EMA.
        for rate in rates:
            rate.apply(step)
        epoch = step // steps_per_epoch
        hr, lr = next(batches)
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

        # One collective per step: the logged values (means over processes), the time-limit and stop flags.
        out_of_time = cfg.max_minutes is not None and (time.monotonic() - t0) / 60 >= cfg.max_minutes
        interrupted = stop is not None and stop.requested
        names = [k for k in LOGGED if k in terms]
        packed = torch.stack([terms[k].float() / ctx.world_size for k in names] +
                             [torch.tensor(float(out_of_time), device=device),
                              torch.tensor(float(interrupted), device=device)])
        values = distributed.all_reduce_sum(packed, ctx).tolist()
        logged = dict(zip(names, values[:-2]))
        guard.check(step, logged, (paths["state"], saved_step) if saved_step is not None else None)
        if ctx.is_main and (step % cfg.log_every == 0 or step == total_steps):
            now = time.monotonic()
            rate = window_steps * cfg.batch_size / max(now - window_t, 1e-9)
            window_t, window_steps = now, 0
            csv_log.write({
                "kind": "train", "step": step, "epoch": round(step / steps_per_epoch, 4),
                "elapsed_s": round(elapsed(), 2), "lr_g": opt_g.param_groups[0]["lr"],
                "lr_d": opt_d.param_groups[0]["lr"] if opt_d is not None else None,
                "patches_per_s": rate, **logged,
            })
        losses = {k: v for k, v in logged.items() if k in TERMS}
        progress("step", {"step": step, "total": total_steps, "epoch": step / steps_per_epoch, "losses": losses})
        if step >= total_steps:
            stopped = limit
        elif values[-1] > 0:  # any process was asked to stop
            stopped = "interrupted"
        elif values[-2] > 0:
            stopped = "max_minutes"
    batches.close()

    # --- the end: last.safetensors (the validation and the state of the last step are done above) -------------------
    if ctx.is_main:
        card = model_card(cfg, facts, step=step, wall_time_s=elapsed(), metrics=last_val)
        last_model = save_generator(paths["last"], eval_model, card)
    else:
        last_model = paths["last"]
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
