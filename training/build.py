"""The data and the networks of a training run (``fit``, geosr.training.loop), built from its TrainConfig between
setup_run and restore; each phase returns a frozen value:

    build_data      train split (+ every image of the --extra-data folders, each listed --extra-repeat times) ->
                    PatchDataset -> DataLoader (resumable DistributedSampler); val split (or --val-data); steps per
                    epoch and the run's last step -> DataSetup
    build_networks  G (+ D unless content-only) (+ EMA of G); the content loss; Adam for each; the learning-rate
                    schedule (schedule.py); GradScaler; DDP; the divergence guard -> Networks
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from geosr.checkpoint import init_from_model, read_card
from geosr.datasets import (
    ImageItem,
    ImageSet,
    check_pairs,
    default_bands,
    find_images,
    image_info,
    split_rule,
    spread,
)
from geosr.errors import DataError, GeosrError
from geosr.evaluation import bicubic, left_out, load_pair
from geosr.metrics import psnr
from geosr.models import Discriminator, Generator
from geosr.models.refiner import set_attention_dropout
from geosr.training import distributed
from geosr.training.config import TrainConfig
from geosr.training.data import PatchDataset, check_default_bands, make_loader, resolve_workers
from geosr.training.ema import EMA
from geosr.training.gan import Amp, LossWeights
from geosr.training.guard import DivergenceGuard
from geosr.training.losses import ContentLoss
from geosr.training.schedule import LrSchedule, ScheduledOptimiser
from geosr.training.setup import RunSetup
from geosr.training.state import Checkpointed

log = logging.getLogger("geosr.training")


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
    extra_sets: tuple[ImageSet, ...] = ()  # the --extra-data folders (all their images), in the order given
    extra_repeat: int = 1  # times each of their images is listed among the training items

    def extra_provenance(self) -> list[dict[str, Any]]:
        """What a model card records of the --extra-data folders: each one's path, layout, images and repeat."""
        return [
            {"data": str(s.root), "layout": s.layout, "images": len(s), "repeat": self.extra_repeat}
            for s in self.extra_sets
        ]


def warn_if_data_changed(paths: dict[str, Path], data: DataSetup) -> None:
    """On resume: warn when the data's image counts differ from those the run's newest model file records (its
    last.safetensors, else best.safetensors): the curve goes on over other images, its best compared across them."""
    saved = [paths[k] for k in ("last", "best") if paths[k].is_file()]
    if not saved:
        return
    newest = max(saved, key=lambda p: p.stat().st_mtime)
    try:
        training = read_card(newest).training
    except GeosrError:
        return
    then = (training.get("train_images"), training.get("val_images"))
    now = (len(data.train_set), len(data.val_items))
    if then != now:
        log.warning(
            "%s: %d training and %d validation images now, %s and %s when the run wrote %s: the resumed run goes on "
            "over other images (its best so far was measured on the validation images it had then)",
            data.train_set.root,
            *now,
            *then,
            newest.name,
        )


def _check_apart(val_data: str, data: str) -> None:
    """--val-data must share no image with --data: a folder inside the other, or the same, would validate on
    training images."""
    val, train = Path(val_data).expanduser().resolve(), Path(data).expanduser().resolve()
    if val.is_relative_to(train) or train.is_relative_to(val):
        raise DataError(
            f"--val-data {val_data} overlaps the --data folder {data}: the run would validate on images it trains "
            "on; give a folder of other images, or leave --val-data out to validate on the val split of --data"
        )


def _check_val_images(items: list[ImageItem], scale: int, bands: list[int], *, given: bool) -> list[ImageItem]:
    """Every validation image read and made into its LR pair now, before the first step: one that cannot be (damaged,
    too small, without a band trained on) would otherwise stop the run at its first validation. Returns those the
    protocol measures; the others (nodata pixels, a flat band: ``geosr.evaluation.left_out``) are named once here."""
    kept, dropped = [], []
    for item in items:
        if not given:
            check_default_bands(item.path, image_info(item.path).count, bands, " (a validation image)")
        try:
            pair = load_pair(item, scale, bands)
        except DataError as exc:  # training pads small images; validation measures whole ones
            raise DataError(f"{exc} (a validation image)") from None
        bic = pair.to_255(bicubic(pair, scale))
        why = left_out(pair, float(psnr(bic, pair.to_255(pair.hr), crop=scale)))
        if why is None:
            kept.append(item)
        else:
            dropped.append(f"{item.path}: {why}")
    if dropped:
        log.warning("%d of %d validation images left out; the first: %s", len(dropped), len(items), dropped[0])
    return kept


def _extra_set(folder: str, bands: list[int]) -> ImageSet:
    """Every image of an --extra-data folder. Raises DataError (one line) for a missing folder, one without images,
    or one whose first image lacks a band trained on (the header of one image: cheap, and tiles of a sensor agree)."""
    try:
        extra = find_images(folder, "all")
    except DataError as exc:
        raise DataError(f"--extra-data {exc}") from None
    if not extra.items:
        raise DataError(f"--extra-data {folder}: no images found; give a folder of GeoTIFF or PNG tiles")
    first = extra.items[0].path
    count = image_info(first).count
    if max(bands) > count:
        raise DataError(
            f"--extra-data {first} has {count} band{'s' if count != 1 else ''}, training takes bands "
            f"{','.join(map(str, bands))}: write {max(bands)}-band tiles, or choose --bands"
        )
    return extra


def build_data(cfg: TrainConfig, ctx: distributed.DistContext) -> DataSetup:
    """Find the splits and the extra folders, build the patch data set and this process's loader. Raises DataError
    (an empty train split, an unusable extra folder, fewer patches than a batch). Under torchrun every process
    raises it when one does, or when they do not see the same images (a folder each node has its own copy of)."""
    data: DataSetup | None = None
    try:
        data = _build_data(cfg, ctx)
        seen: Any = (len(data.dataset), [i.path.name for i in data.val_items])  # what each process compares
    except DataError as exc:
        if not ctx.distributed:
            raise
        seen = str(exc)
    views = distributed.all_gather_object(seen, ctx)
    for rank, view in enumerate(views):
        if isinstance(view, str):
            raise DataError(f"process {rank} of {ctx.world_size}: {view}" if rank != ctx.rank else view)
    if any(view != views[0] for view in views):
        counts = ", ".join(f"process {r}: {v[0]} training items, {len(v[1])} validation images" for r, v in
                           enumerate(views))  # fmt: skip
        raise DataError(
            f"{cfg.data}: the processes of this torchrun job do not see the same images ({counts}); give every "
            "process the same data (a shared folder, or identical copies)"
        )
    if data is None:  # unreachable: its process's error was raised above
        raise DataError(f"{cfg.data}: no training data")
    return data


def _build_data(cfg: TrainConfig, ctx: distributed.DistContext) -> DataSetup:
    train_set = find_images(cfg.data, "train")
    if not len(train_set):
        raise DataError(f"{cfg.data}: the train split is empty (split rule: {split_rule(train_set.layout)})")
    if cfg.val_data:
        _check_apart(cfg.val_data, cfg.data)
        val_set = find_images(cfg.val_data, "all")
    else:
        val_set = find_images(cfg.data, "val")
    val_items = spread(val_set.items, cfg.val_images)
    check_pairs(train_set.layout, train_set.items, cfg.scale)
    check_pairs(val_set.layout, val_items, cfg.scale)
    bands = list(cfg.bands) if cfg.bands else default_bands(train_set.items[0].path, 3)
    val_items = _check_val_images(val_items, cfg.scale, bands, given=bool(cfg.bands))
    if not val_items:
        log.warning(
            "%s has no validation images: no validation, no best model (last.safetensors is exported)", val_set.root
        )
    extra_sets = tuple(_extra_set(folder, bands) for folder in cfg.extra_data)
    items = list(train_set.items)
    for extra in extra_sets:
        items += [item for item in extra.items for _ in range(cfg.extra_repeat)]
    log.info(
        "training items: %s",
        "; ".join(
            [f"{len(train_set)} from {train_set.root} (train split)"]
            + [f"{len(s)} x {cfg.extra_repeat} = {len(s) * cfg.extra_repeat} from {s.root} (all)" for s in extra_sets]
        ),
    )
    if cfg.degrade:
        log.info("%.0f %% of the training patches get a blurred, noisy or JPEG-compressed LR", 100 * cfg.degrade)
    dataset = PatchDataset(
        items,
        scale=cfg.scale,
        patch_size=cfg.patch_size,
        bands=bands,
        seed=cfg.seed,
        cache_mb=cfg.cache_mb,
        repeat=cfg.dataset_repeat,
        degrade=cfg.degrade,
        bands_given=bool(cfg.bands),
    )
    batch = cfg.batch_size // ctx.world_size
    workers = resolve_workers(cfg.num_workers, ctx.device, dataset.cached, ctx.local_world_size)
    loader, sampler = make_loader(
        dataset,
        batch_size=batch,
        workers=workers,
        device=ctx.device,
        num_replicas=ctx.world_size,
        rank=ctx.rank,
        seed=cfg.seed,
    )
    steps_per_epoch = sampler.num_samples // batch
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    return DataSetup(
        train_set,
        val_set,
        val_items,
        bands,
        dataset,
        batch,
        workers,
        loader,
        sampler,
        steps_per_epoch,
        total_steps,
        extra_sets,
        cfg.extra_repeat,
    )


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


def build_networks(
    cfg: TrainConfig, ctx: distributed.DistContext, run: RunSetup, data: DataSetup, resume: bool
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
        copied, total = init_report["copied"], init_report["total"]
        if copied < total / 2 and ctx.is_main:  # another architecture: most of the model starts from scratch
            log.warning(
                "--init-from %s: only %d of this model's %d tensors match that model's names and shapes; the rest "
                "start from scratch (compare the architectures: geosr info %s)",
                cfg.init_from, copied, total, cfg.init_from,
            )  # fmt: skip
        else:
            log.info("initialised %d of %d tensors from %s", copied, total, cfg.init_from)
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
    schedule = LrSchedule(
        cfg.lr_schedule, tuple(milestones), cfg.lr_gamma, data.total_steps, cfg.lr_warmup_steps, cfg.lr_min_factor
    )
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
    weights = LossWeights(
        cfg.mse_weight, cfg.perceptual_weight, cfg.adversarial_weight, cfg.feature_matching_weight, cfg.l1_weight
    )
    guard = DivergenceGuard(cfg.divergence_factor)
    parts = Checkpointed(g=g, opt_g=opt_g, scaler=amp.scaler, guard=guard, d=d, opt_d=opt_d, ema=ema)
    return Networks(
        g,
        d,
        ema,
        ema.model if ema is not None else g,
        g_train,
        d_train,
        memory_format,
        content,
        weights,
        opt_g,
        opt_d,
        rates,
        milestones,
        amp,
        guard,
        parts,
        init_report,
    )
