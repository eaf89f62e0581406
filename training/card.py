"""The model card of a training run's model files (best.safetensors, last.safetensors).

``RunFacts`` holds what the cards say about how the run was made and is fixed when it starts (data, split, hardware,
precision, processes, schedule, warm start); ``model_card`` adds what changes as it runs (steps, epochs, wall time,
the validation metrics of the exported weights) and the settings of the config (architecture, bands, tile size and
overlap in LR pixels, loss weights, optimiser, EMA). A card carries everything needed to rebuild the model from the
file alone, and enough provenance to repeat the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from geosr.checkpoint import DEFAULT_RADIOMETRY, ModelCard
from geosr.training.config import TrainConfig
from geosr.version import __version__

METRICS_PROTOCOL = "geosr evaluate (UC Merced SR literature), val split"


@dataclass(frozen=True)
class RunFacts:
    """What a run's model cards record about its data and set-up (rank 0 builds the cards)."""

    data: str  # the training data folder
    layout: str  # its layout (geosr.datasets): 'ucmerced', 'folders', 'paired', ...
    split_rule: str  # how its train split was chosen, in words
    train_images: int
    val_data: str
    val_images: int  # the images validation actually uses (--val-images of the val split)
    steps_per_epoch: int
    hardware: str
    device: str
    processes: int
    precision: str  # the resolved training precision: 'fp32', 'bf16' or 'fp16'
    lr_decay_steps: list[int]  # the schedule's milestones in steps (decay epochs converted)
    discriminator: bool
    ema: bool
    initialised_from: dict[str, Any] | None  # init_from_model's report for --init-from, else None
    run_dir: str
    source_dtypes: list[str]  # the dtypes of the training images, sorted
    extra_data: list[dict[str, Any]]  # the --extra-data folders: data, layout, images, repeat (DataSetup)


def radiometry(source_dtypes: list[str]) -> dict[str, Any]:
    """The card's radiometric convention: geosr's default, plus how non-uint8 training data was mapped."""
    card = dict(DEFAULT_RADIOMETRY)
    if source_dtypes != ["uint8"]:
        card["training_data"] = (
            f"{', '.join(source_dtypes)}: per image and band, percentiles 0.05..99.95 of a decimated read map to -1..1"
        )
    return card


def training_info(cfg: TrainConfig, facts: RunFacts, *, step: int, wall_time_s: float) -> dict[str, Any]:
    """The card's ``training`` section at generator step ``step`` after ``wall_time_s`` seconds of training."""
    return {
        "data": facts.data,
        "layout": facts.layout,
        "split": "train",
        "split_rule": facts.split_rule,
        "train_images": facts.train_images,
        "extra_data": facts.extra_data,
        "val_data": facts.val_data,
        "val_images": facts.val_images,
        "scale": cfg.scale,
        "patch_size": cfg.patch_size,
        "batch_size": cfg.batch_size,
        "steps": step,
        "epochs": round(step / facts.steps_per_epoch, 3),
        "steps_per_epoch": facts.steps_per_epoch,
        "hardware": facts.hardware,
        "device": facts.device,
        "processes": facts.processes,
        "precision": facts.precision,
        "wall_time_s": round(wall_time_s, 1),
        "losses": {
            "mse": cfg.mse_weight,
            "l1": cfg.l1_weight,
            "perceptual": cfg.perceptual_weight,
            "perceptual_layer": cfg.vgg_layer if cfg.perceptual_weight > 0 else None,
            "adversarial": cfg.adversarial_weight,
            "feature_matching": cfg.feature_matching_weight,
        },
        "attention_dropout": cfg.attention_dropout,
        "diffusion": {"train_noise": cfg.diffusion, "t_max": cfg.diffusion_t_max, "inference_t": 0.0},
        "optimizer": {
            "adam_betas": [cfg.betas[0], cfg.betas[1]],
            "lr_g": cfg.lr_g,
            "lr_d": cfg.lr_d if facts.discriminator else None,
            "lr_decay_steps": list(facts.lr_decay_steps),
            "lr_gamma": cfg.lr_gamma,
            "lr_schedule": cfg.lr_schedule,
            "lr_min_factor": cfg.lr_min_factor if cfg.lr_schedule == "cosine" else None,
            "lr_warmup_steps": cfg.lr_warmup_steps,
            "pretrain_epochs": cfg.pretrain_epochs,
        },
        "weights": "ema" if facts.ema else "generator",
        "ema_decay": cfg.ema_decay if facts.ema else None,
        "initialised_from": facts.initialised_from,
        "seed": cfg.seed,
        "run_dir": facts.run_dir,
        "geosr_version": __version__,
    }


def model_card(
    cfg: TrainConfig, facts: RunFacts, *, step: int, wall_time_s: float, metrics: dict[str, Any] | None
) -> ModelCard:
    """The card of the generator exported at ``step``; ``metrics`` are its validation results (None: none yet)."""
    measured: dict[str, Any] = {}
    if metrics:
        measured = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}
        measured["protocol"] = METRICS_PROTOCOL
    return ModelCard(
        config=cfg.generator_config(),
        name=cfg.model_name,
        description=cfg.description or "",
        bands=cfg.resolved_band_names(),
        radiometry=radiometry(facts.source_dtypes),
        tile_size=cfg.card_tile_size,
        overlap=cfg.card_overlap,
        training=training_info(cfg, facts, step=step, wall_time_s=wall_time_s),
        metrics=measured,
    )
