"""``fit``: the training loop of DEGAN, from a TrainConfig to a run folder with model files.

``_fit`` reads top-down, in the manner of BasicSR's train.py (named set-up phases, each returning a frozen value)
and nanoGPT's (one visible loop):

    fit: processes (torchrun or one) and their devices (distributed.py); Ctrl-C/SIGTERM caught (StopRequest)
    setup_run (setup.py): precisions, run-folder refusals, determinism; the VGG19 weights first (fail before the
        data); seeds
    build_data (build.py): train split -> PatchDataset -> DataLoader (resumable DistributedSampler); val split (or
        --val-data); steps
    build_networks (build.py): G (+ D unless content-only) (+ EMA of G); the content loss; Adam for each; the
        learning-rate schedule (schedule.py); GradScaler; DDP; the divergence guard
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

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geosr.datasets import split_rule
from geosr.device import describe_hardware
from geosr.training import distributed
from geosr.training.build import DataSetup, Networks, build_data, build_networks, warn_if_data_changed
from geosr.training.card import RunFacts
from geosr.training.config import TrainConfig
from geosr.training.gan import discriminator_step, generator_step
from geosr.training.guard import TrainingDiverged
from geosr.training.records import Records
from geosr.training.setup import (
    Clock,
    RunSetup,
    Start,
    StopRequest,
    release_run_dir,
    restore,
    run_paths,
    setup_run,
)

__all__ = ["FitResult", "StopRequest", "TrainingDiverged", "fit", "run_paths"]

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
            return _fit(
                cfg, ctx, resume, vgg, progress if ctx.is_main and progress else (lambda kind, info: None), stop
            )
    finally:
        release_run_dir(Path(cfg.out))
        distributed.cleanup(ctx)


def _facts(cfg: TrainConfig, ctx: distributed.DistContext, run: RunSetup, data: DataSetup, nets: Networks) -> RunFacts:
    """What the run's model cards record about its data and set-up (card.py)."""
    return RunFacts(
        data=str(data.train_set.root),
        layout=data.train_set.layout,
        split_rule=split_rule(data.train_set.layout),
        train_images=len(data.train_set),
        val_data=str(data.val_set.root),
        val_images=len(data.val_items),
        steps_per_epoch=data.steps_per_epoch,
        hardware=describe_hardware(ctx.device),
        device=str(ctx.device),
        processes=ctx.world_size,
        precision=run.precision,
        lr_decay_steps=nets.milestones,
        discriminator=nets.d is not None,
        ema=nets.ema is not None,
        initialised_from=nets.init_report,
        run_dir=str(run.run_dir.resolve()),
        source_dtypes=sorted({s.dtype for s in data.dataset.sources}),
        extra_data=data.extra_provenance(),
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


def _train_step(
    cfg: TrainConfig, device: torch.device, nets: Networks, batches: Iterator[Any], step: int, steps_per_epoch: int
) -> dict[str, torch.Tensor]:
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
        nets.g_train,
        lr,
        hr,
        opt=nets.opt_g,
        content=nets.content,
        weights=nets.weights,
        amp=nets.amp,
        d=nets.d if adversarial else None,
        diffusion=cfg.diffusion,
        t_max=cfg.diffusion_t_max,
        grad_clip=cfg.grad_clip,
    )
    if adversarial:
        terms.update(discriminator_step(nets.d_train, hr, sr, opt=nets.opt_d, amp=nets.amp, grad_clip=cfg.grad_clip))
    nets.amp.scaler.update()
    if nets.ema is not None:
        nets.ema.update(nets.g)
    return terms


def _all_reduce(
    terms: dict[str, torch.Tensor], ctx: distributed.DistContext, *, interrupted: bool, out_of_time: bool
) -> tuple[dict[str, float], str | None]:
    """One collective per step: the logged values (means over processes), and a stop that any process asked for
    ('interrupted', before 'max_minutes'; None when none did). Returns (logged, that stop)."""
    names = [k for k in LOGGED if k in terms]
    packed = torch.stack(
        [terms[k].float() / ctx.world_size for k in names]
        + [torch.tensor(float(out_of_time), device=ctx.device), torch.tensor(float(interrupted), device=ctx.device)]
    )
    values = distributed.all_reduce_sum(packed, ctx).tolist()
    request = "interrupted" if values[-1] > 0 else "max_minutes" if values[-2] > 0 else None
    return dict(zip(names, values[:-2])), request


def _fit(
    cfg: TrainConfig,
    ctx: distributed.DistContext,
    resume: bool,
    vgg: nn.Module | None,
    progress: Progress,
    stop: StopRequest | None = None,
) -> FitResult:
    run = setup_run(cfg, ctx, resume, vgg)  # refusals and the VGG19 weights before any data is decoded
    data = build_data(cfg, ctx)
    if resume and ctx.is_main:
        warn_if_data_changed(run.paths, data)
    nets = build_networks(cfg, ctx, run, data, resume)
    start = restore(cfg, ctx, run, nets.parts, resume)
    rec = Records(
        cfg,
        ctx,
        run.paths,
        start.csv_log,
        _facts(cfg, ctx, run, data, nets),
        Clock(start.elapsed_s),
        data.steps_per_epoch,
    )
    progress(
        "start",
        {
            "step": start.step,
            "total": data.total_steps,
            "steps_per_epoch": data.steps_per_epoch,
            "workers": data.workers,
            "precision": run.precision,
            "device": str(ctx.device),
            "cached": data.dataset.cached,
            "discriminator": nets.d is not None,
            "processes": ctx.world_size,
            "sources": [(str(data.train_set.root), len(data.train_set))]
            + [(str(s.root), len(s) * data.extra_repeat) for s in data.extra_sets],
        },
    )
    end = _loop(cfg, ctx, run, data, nets, start, rec, progress, stop)

    # --- the end: last.safetensors (the validation and the state of the last step are done in the loop) -----------
    last_model = rec.finish(nets.eval_model, step=end.step, last_val=end.last_val)
    result = FitResult(
        run_dir=run.run_dir,
        steps=end.step,
        stopped=end.stopped,
        last_model=last_model,
        best_model=run.paths["best"] if end.best["val_psnr"] is not None else None,
        best_psnr=end.best["val_psnr"],
        rank=ctx.rank,
    )
    progress(
        "end",
        {
            "step": end.step,
            "stopped": end.stopped,
            "best_psnr": end.best["val_psnr"],
            "best_step": end.best["step"],
            "model": str(result.model),
            "wall_time_s": rec.clock.elapsed(),
        },
    )
    return result


@dataclass(frozen=True)
class LoopEnd:
    """Where the loop left the run: its last step, why it stopped, the best validation so far and the last one."""

    step: int
    stopped: str
    best: dict[str, Any]
    last_val: dict[str, Any] | None


def _loop(
    cfg: TrainConfig,
    ctx: distributed.DistContext,
    run: RunSetup,
    data: DataSetup,
    nets: Networks,
    start: Start,
    rec: Records,
    progress: Progress,
    stop: StopRequest | None,
) -> LoopEnd:
    """Validate, save and train, step after step from ``start``, until the step limit, --max-minutes or a stop
    request (``stop``: SIGINT/SIGTERM in any process); the validation and the state of the last step included."""
    step, best, last_val, saved_step = start.step, start.best, start.last_val, start.saved_step
    limit = "max_steps" if cfg.max_steps and data.total_steps == cfg.max_steps else "epochs"
    stopped = limit if step >= data.total_steps else None  # why the run stops: set after the last step
    first_step = step
    batches = _batches(data.loader, data.sampler, step, data.steps_per_epoch, data.batch)
    window = _Window()
    nets.g_train.train()
    if nets.d_train is not None:
        nets.d_train.train()
    while True:
        val_due = _validation_due(cfg, data, step, first_step, stopped, last_val)
        if val_due:
            last_val, best, improved = rec.validation(
                nets.eval_model,
                data.val_items,
                data.bands,
                run.val_precision,
                train_after=nets.ema is None,
                step=step,
                best=best,
            )
            progress("val", {**last_val, "best": improved})
            window.reset()

        # Save the state with each validation, every --checkpoint-every-steps and at the end; never during a spike.
        save_due = step != saved_step and (
            val_due or stopped is not None or (step > first_step and _every(step, cfg.checkpoint_every_steps))
        )
        if save_due and rec.checkpoint(
            nets.parts, nets.guard, step=step, best=best, last_val=last_val, final=stopped is not None
        ):
            saved_step = step
        if stopped is not None:
            break

        # One training step at this step's learning rates, then one collective: the logged values and stop flags.
        terms = _train_step(cfg, ctx.device, nets, batches, step, data.steps_per_epoch)
        step += 1
        window.steps += 1
        out_of_time = cfg.max_minutes is not None and rec.clock.minutes() >= cfg.max_minutes
        logged, request = _all_reduce(
            terms, ctx, interrupted=stop is not None and stop.requested, out_of_time=out_of_time
        )
        nets.guard.check(step, logged, (run.paths["state"], saved_step) if saved_step is not None else None)
        if ctx.is_main and (step % cfg.log_every == 0 or step == data.total_steps):
            rec.train_row(
                step,
                {
                    "lr_g": nets.opt_g.param_groups[0]["lr"],
                    "lr_d": nets.opt_d.param_groups[0]["lr"] if nets.opt_d is not None else None,
                    "patches_per_s": window.rate(cfg.batch_size),
                    **logged,
                },
            )
        losses = {k: v for k, v in logged.items() if k in TERMS}
        progress(
            "step", {"step": step, "total": data.total_steps, "epoch": step / data.steps_per_epoch, "losses": losses}
        )
        stopped = limit if step >= data.total_steps else request
    batches.close()  # type: ignore[attr-defined]  # a generator
    return LoopEnd(step, stopped, best, last_val)


def _validation_due(
    cfg: TrainConfig, data: DataSetup, step: int, first_step: int, stopped: str | None, last_val: dict[str, Any] | None
) -> bool:
    """Validate when due, and once at the end of a run that was not interrupted (unless this step had one)."""
    finishing = stopped is not None and stopped != "interrupted"
    return bool(data.val_items) and (
        (
            step > first_step
            and (_every(step, cfg.val_every * data.steps_per_epoch) or _every(step, cfg.val_every_steps))
        )
        or (finishing and (last_val is None or last_val["step"] != step))
    )


class _Window:
    """The steps since the last log row or validation, and when they began: the patches per second of log.csv."""

    def __init__(self) -> None:
        self.reset()

    def reset(self, now: float | None = None) -> None:
        self.t = time.monotonic() if now is None else now
        self.steps = 0

    def rate(self, batch_size: int) -> float:
        """Patches per second over the window, which starts again now."""
        now = time.monotonic()
        rate = self.steps * batch_size / max(now - self.t, 1e-9)
        self.reset(now)
        return rate
