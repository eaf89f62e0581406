"""``fit``: the training loop of DEGAN, from a TrainConfig to a run folder with model files.

``_fit`` reads top-down, in the manner of BasicSR's train.py (named set-up phases, each returning a frozen value)
and nanoGPT's (one visible loop):

    fit: processes (torchrun or one) and their devices (distributed.py); Ctrl-C/SIGTERM caught (StopRequest)
    setup_run (setup.py): precisions, run-folder refusals, determinism; the VGG19 weights first (fail before the
        data); seeds
    _data: train split -> PatchDataset -> DataLoader (resumable DistributedSampler); val split (or --val-data); steps
    _networks: G (+ D unless content-only) (+ EMA of G); the content loss; Adam for each; the learning-rate schedule
        (schedule.py); GradScaler; DDP; the divergence guard
    restore (setup.py): fresh, or restored from the run folder (state.py: resume_run); config.toml; log.csv opened
    Records (records.py): what the loop writes and where, the model cards' facts (card.py), the run's clock
    loop:
        validate when due and once at the end (PSNR/SSIM of the model and of bicubic; a new best -> best.safetensors)
        checkpoint when due and at the end (state.py: training_state), never during an MSE spike
        stop: at the step limit, after --max-minutes, or on Ctrl-C/SIGTERM (StopRequest; the state is saved)
        _train_step: G step (content loss alone during warm-up or without D), D step, at the step's learning rates;
            EMA update
        _all_reduce: one all-reduce: the logged values (means over processes) and the stop flags
        divergence guard (guard.py): a NaN/Inf value or an exploding MSE stops the run, without saving
        log.csv row; progress callback
    end: last.safetensors (its card, like best's); log.csv closed

Steps count generator updates; an epoch is len(train split) * dataset_repeat // batch_size steps. The learning rate
is a function of the step (decay epochs become steps), so a resumed run continues the same schedule. Rank 0 alone
writes files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from geosr.checkpoint import init_from_model
from geosr.datasets import ImageItem, ImageSet, default_bands, find_images, split_rule, spread
from geosr.device import describe_hardware
from geosr.errors import DataError
from geosr.models import Discriminator, Generator
from geosr.models.refiner import set_attention_dropout
from geosr.training import distributed
from geosr.training.card import RunFacts
from geosr.training.config import TrainConfig
from geosr.training.data import PatchDataset, make_loader, resolve_workers
from geosr.training.ema import EMA
from geosr.training.gan import Amp, LossWeights, discriminator_step, generator_step
from geosr.training.guard import DivergenceGuard, TrainingDiverged
from geosr.training.losses import ContentLoss
from geosr.training.records import Records
from geosr.training.schedule import LrSchedule, ScheduledOptimiser
from geosr.training.setup import Clock, RunSetup, StopRequest, restore, run_paths, setup_run
from geosr.training.state import Checkpointed

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


@dataclass(frozen=True)
class DataSetup:
    """The training data of this process and the validation images; steps count generator updates."""

    train_set: ImageSet
    val_set: ImageSet
    val_items: list[ImageItem]  # the images validation uses (--val-images of the val split); may be empty
    bands: list[int]  # 1-based
    dataset: PatchDataset
    batch: int  # patches per step in this process (batch_size / processes)
    workers: int
    loader: Any  # a DataLoader of (HR, LR) batches
    sampler: Any  # its ResumableSampler
    steps_per_epoch: int
    total_steps: int  # the run's last step: epochs, or --max-steps when fewer


def _data(cfg: TrainConfig, ctx: distributed.DistContext) -> DataSetup:
    """Find the splits, build the patch data set and this process's loader. Raises DataError (an empty train split,
    fewer patches than a batch)."""
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
    workers = resolve_workers(cfg.num_workers, ctx.device, dataset.cached, ctx.local_world_size)
    loader, sampler = make_loader(
        dataset, batch_size=batch, workers=workers, device=ctx.device, num_replicas=ctx.world_size, rank=ctx.rank,
        seed=cfg.seed,
    )
    steps_per_epoch = sampler.num_samples // batch
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    return DataSetup(train_set, val_set, val_items, bands, dataset, batch, workers, loader, sampler, steps_per_epoch,
                     total_steps)


@dataclass(frozen=True)
class Networks:
    """The networks, their losses and optimisers, and what a checkpoint carries of them (``parts``)."""

    g: nn.Module
    d: nn.Module | None  # None in content-only mode
    ema: EMA | None
    eval_model: nn.Module  # what is validated and exported: the EMA of G when there is one, else G
    g_train: nn.Module  # G, wrapped in DDP when distributed
    d_train: nn.Module | None
    memory_format: torch.memory_format
    content: ContentLoss
    weights: LossWeights
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None
    rates: list[ScheduledOptimiser]  # the learning rates of opt_g (and opt_d) as functions of the step
    milestones: list[int]  # the schedule's decay steps
    amp: Amp
    guard: DivergenceGuard
    parts: Checkpointed
    init_report: dict[str, Any] | None  # init_from_model's report for --init-from, else None


def _networks(cfg: TrainConfig, ctx: distributed.DistContext, run: RunSetup, data: DataSetup, resume: bool
              ) -> Networks:
    """Build G (initialised from --init-from unless resuming), D unless content-only, the EMA, the content loss on
    ``run.vgg``, Adam for each network on the step's learning rates, the gradient scaler. Raises ModelFileError."""
    device = ctx.device
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
    vgg = run.vgg.to(device, memory_format=memory_format) if run.vgg is not None else None
    content = ContentLoss(vgg, cfg.charbonnier_eps, l1=cfg.l1_weight > 0)
    betas = (cfg.betas[0], cfg.betas[1])
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=betas) if d is not None else None
    milestones = sorted({e * data.steps_per_epoch for e in cfg.lr_decay_epochs} | set(cfg.lr_decay_steps))
    schedule = LrSchedule(cfg.lr_schedule, tuple(milestones), cfg.lr_gamma, data.total_steps, cfg.lr_warmup_steps,
                          cfg.lr_min_factor)
    rates = [ScheduledOptimiser(opt_g, cfg.lr_g, schedule)]
    if opt_d is not None:
        rates.append(ScheduledOptimiser(opt_d, cfg.lr_d, schedule))
    amp = Amp.create(device, run.precision)
    g_train: nn.Module = g
    d_train: nn.Module | None = d
    if ctx.distributed:
        ids = [device.index] if device.type == "cuda" else None
        g_train = DDP(g, device_ids=ids)
        d_train = DDP(d, device_ids=ids) if d is not None else None
    weights = LossWeights(cfg.mse_weight, cfg.perceptual_weight, cfg.adversarial_weight, cfg.feature_matching_weight,
                          cfg.l1_weight)
    guard = DivergenceGuard(cfg.divergence_factor)
    parts = Checkpointed(g=g, opt_g=opt_g, scaler=amp.scaler, guard=guard, d=d, opt_d=opt_d, ema=ema)
    return Networks(g, d, ema, ema.model if ema is not None else g, g_train, d_train, memory_format, content, weights,
                    opt_g, opt_d, rates, milestones, amp, guard, parts, init_report)


def _facts(cfg: TrainConfig, ctx: distributed.DistContext, run: RunSetup, data: DataSetup, nets: Networks
           ) -> RunFacts:
    """What the run's model cards record about its data and set-up (card.py)."""
    return RunFacts(
        data=str(data.train_set.root), layout=data.train_set.layout, split_rule=split_rule(data.train_set.layout),
        train_images=len(data.train_set), val_data=str(data.val_set.root), val_images=len(data.val_items),
        steps_per_epoch=data.steps_per_epoch, hardware=describe_hardware(ctx.device), device=str(ctx.device),
        processes=ctx.world_size, precision=run.precision, lr_decay_steps=nets.milestones,
        discriminator=nets.d is not None, ema=nets.ema is not None, initialised_from=nets.init_report,
        run_dir=str(run.run_dir.resolve()), source_dtypes=sorted({s.dtype for s in data.dataset.sources}),
    )


def _every(step: int, period: int) -> bool:
    return period > 0 and step % period == 0


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


def _train_step(cfg: TrainConfig, device: torch.device, nets: Networks, batches: Iterator[Any], step: int,
                steps_per_epoch: int) -> dict[str, torch.Tensor]:
    """One training step at ``step``'s learning rates: G (D frozen), then D once the pre-training epochs are over;
    the EMA. Returns the loss terms by name (this process's)."""
    for rate in nets.rates:
        rate.apply(step)
    epoch = step // steps_per_epoch
    hr, lr = next(batches)
    hr = hr.to(device, non_blocking=True).contiguous(memory_format=nets.memory_format)
    lr = lr.to(device, non_blocking=True).contiguous(memory_format=nets.memory_format)
    adversarial = nets.d is not None and epoch >= cfg.pretrain_epochs
    sr, terms = generator_step(
        nets.g_train, lr, hr, opt=nets.opt_g, content=nets.content, weights=nets.weights, amp=nets.amp,
        d=nets.d if adversarial else None, diffusion=cfg.diffusion, t_max=cfg.diffusion_t_max,
        grad_clip=cfg.grad_clip,
    )
    if adversarial:
        terms.update(discriminator_step(nets.d_train, hr, sr, opt=nets.opt_d, amp=nets.amp, grad_clip=cfg.grad_clip))
    nets.amp.scaler.update()
    if nets.ema is not None:
        nets.ema.update(nets.g)
    return terms


def _all_reduce(terms: dict[str, torch.Tensor], ctx: distributed.DistContext, *, interrupted: bool,
                out_of_time: bool) -> tuple[dict[str, float], str | None]:
    """One collective per step: the logged values (means over processes), and a stop that any process asked for
    ('interrupted', before 'max_minutes'; None when none did). Returns (logged, that stop)."""
    names = [k for k in LOGGED if k in terms]
    packed = torch.stack([terms[k].float() / ctx.world_size for k in names] +
                         [torch.tensor(float(out_of_time), device=ctx.device),
                          torch.tensor(float(interrupted), device=ctx.device)])
    values = distributed.all_reduce_sum(packed, ctx).tolist()
    request = "interrupted" if values[-1] > 0 else "max_minutes" if values[-2] > 0 else None
    return dict(zip(names, values[:-2])), request


def _fit(
    cfg: TrainConfig, ctx: distributed.DistContext, resume: bool, vgg: nn.Module | None, progress: Progress,
    stop: StopRequest | None = None,
) -> FitResult:
    run = setup_run(cfg, ctx, resume, vgg)  # refusals and the VGG19 weights before any data is decoded
    data = _data(cfg, ctx)
    nets = _networks(cfg, ctx, run, data, resume)
    start = restore(cfg, ctx, run, nets.parts, resume)
    rec = Records(cfg, ctx, run.paths, start.csv_log, _facts(cfg, ctx, run, data, nets), Clock(start.elapsed_s),
                  data.steps_per_epoch)
    progress("start", {"step": start.step, "total": data.total_steps, "steps_per_epoch": data.steps_per_epoch,
                       "workers": data.workers, "precision": run.precision, "device": str(ctx.device),
                       "cached": data.dataset.cached, "discriminator": nets.d is not None,
                       "processes": ctx.world_size})

    # --- the loop -----------------------------------------------------------------------------------------------
    step, best, last_val, saved_step = start.step, start.best, start.last_val, start.saved_step
    limit = "max_steps" if cfg.max_steps and data.total_steps == cfg.max_steps else "epochs"
    stopped = limit if step >= data.total_steps else None  # why the run stops: set after the last step
    first_step = step
    batches = _batches(data.loader, data.sampler, step, data.steps_per_epoch, data.batch)
    window_t, window_steps = time.monotonic(), 0
    nets.g_train.train()
    if nets.d_train is not None:
        nets.d_train.train()
    while True:
        # Validate when due, and once at the end of a run that was not interrupted (unless this step had one).
        finishing = stopped is not None and stopped != "interrupted"
        val_due = bool(data.val_items) and (
            (step > first_step and (_every(step, cfg.val_every * data.steps_per_epoch)
                                    or _every(step, cfg.val_every_steps)))
            or (finishing and (last_val is None or last_val["step"] != step))
        )
        if val_due:
            last_val, best, improved = rec.validation(nets.eval_model, data.val_items, data.bands, run.val_precision,
                                                      train_after=nets.ema is None, step=step, best=best)
            progress("val", {**last_val, "best": improved})
            window_t, window_steps = time.monotonic(), 0

        # Save the state with each validation, every --checkpoint-every-steps and at the end; never during a spike.
        save_due = step != saved_step and (val_due or stopped is not None
                                           or (step > first_step and _every(step, cfg.checkpoint_every_steps)))
        if save_due and rec.checkpoint(nets.parts, nets.guard, step=step, best=best, last_val=last_val,
                                       final=stopped is not None):
            saved_step = step
        if stopped is not None:
            break

        # One training step at this step's learning rates, then one collective: the logged values and stop flags.
        terms = _train_step(cfg, ctx.device, nets, batches, step, data.steps_per_epoch)
        step += 1
        window_steps += 1
        out_of_time = cfg.max_minutes is not None and rec.clock.minutes() >= cfg.max_minutes
        logged, request = _all_reduce(terms, ctx, interrupted=stop is not None and stop.requested,
                                      out_of_time=out_of_time)
        nets.guard.check(step, logged, (run.paths["state"], saved_step) if saved_step is not None else None)
        if ctx.is_main and (step % cfg.log_every == 0 or step == data.total_steps):
            now = time.monotonic()
            rate = window_steps * cfg.batch_size / max(now - window_t, 1e-9)
            window_t, window_steps = now, 0
            rec.train_row(step, {"lr_g": nets.opt_g.param_groups[0]["lr"],
                                 "lr_d": nets.opt_d.param_groups[0]["lr"] if nets.opt_d is not None else None,
                                 "patches_per_s": rate, **logged})
        losses = {k: v for k, v in logged.items() if k in TERMS}
        progress("step", {"step": step, "total": data.total_steps, "epoch": step / data.steps_per_epoch,
                          "losses": losses})
        stopped = limit if step >= data.total_steps else request
    batches.close()  # type: ignore[attr-defined]  # a generator

    # --- the end: last.safetensors (the validation and the state of the last step are done above) -----------------
    last_model = rec.finish(nets.eval_model, step=step, last_val=last_val)
    result = FitResult(
        run_dir=run.run_dir, steps=step, stopped=stopped, last_model=last_model,
        best_model=run.paths["best"] if best["val_psnr"] is not None else None, best_psnr=best["val_psnr"],
        rank=ctx.rank,
    )
    progress("end", {"step": step, "stopped": stopped, "best_psnr": best["val_psnr"], "best_step": best["step"],
                     "model": str(result.model), "wall_time_s": rec.clock.elapsed()})
    return result
