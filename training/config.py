"""The training configuration: one flat set of named settings, read from TOML and overridden on the command line.

A config file groups the settings in tables for the reader (``[data]``, ``[model]``, ``[loss]``, ``[optim]``,
``[run]``); the names are unique across tables, so ``geosr train --config FILE --n-blocks 8`` overrides ``n_blocks``
wherever the file puts it. ``base = "other.toml"`` at the top of a file starts from that file (a path relative to the
file), so an ablation config is its base plus the one value it changes. Precedence: defaults < base < file <
command line. Settings that are unset (None) are left out of the written file.

``geosr train --help`` lists every setting with its meaning; ``TrainConfig`` below is the single source of both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geosr.device import PRECISIONS, check_device_spec
from geosr.errors import GeosrError, OptionError
from geosr.limits import ATTENTIONS, REFINERS, default_overlap
from geosr.tiling import tiling_problem
from geosr.training.schedule import SCHEDULES

if TYPE_CHECKING:
    from geosr.models.generator import GeneratorConfig

GROUPS = ("data", "model", "loss", "optim", "run")
VGG_LAYERS = ("conv2_2", "conv3_4", "conv4_4", "conv5_4", "relu2_2", "relu3_4", "relu4_4", "relu5_4")


class ConfigError(GeosrError):
    """A training setting that is unknown, of the wrong type, out of range, or inconsistent with another."""


def _f(default: Any, group: str, help: str, default_factory: Any = None) -> Any:
    metadata = {"group": group, "help": help}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _list(default: list) -> Any:
    return lambda: list(default)


@dataclass
class TrainConfig:
    """Every setting of a training run (see the module docstring); units are HR pixels unless said otherwise."""

    # --- data
    data: str | None = _f(
        None,
        "data",
        "Training data folder: UC Merced, AID, any (class-)folder of images, HR/ + "
        "LR_xN/, or GeoTIFF tiles. Its train split is used.",
    )
    val_data: str | None = _f(None, "data", "Validation folder (all its images); default: the val split of --data.")
    extra_data: list[str] = _f(
        None,
        "data",
        "Another training folder (the option repeated for each), e.g. tiles of other sensors: all its images, in any "
        "layout --data takes, join the training images. Validation stays on --data's val split (or --val-data).",
        default_factory=_list([]),
    )
    extra_repeat: int = _f(
        1,
        "data",
        "Times each --extra-data image is listed among the training images: each listing gives one random "
        "patch per epoch (times dataset_repeat), which weighs the extra images against --data's.",
    )
    bands: list[int] | None = _f(None, "data", "1-based bands to train on, e.g. 1,2,3,4 (default: the first 3).")
    band_names: list[str] | None = _f(None, "data", "Names of those bands for the model card, e.g. red,green,blue,nir.")
    patch_size: int = _f(
        256,
        "data",
        "HR patch side in pixels (a multiple of the scale, at least 32). Smaller images are mirror-padded up to it.",
    )
    batch_size: int = _f(16, "data", "Patches per optimiser step over all processes (split evenly among them).")
    dataset_repeat: int = _f(1, "data", "Patches drawn from each training image per epoch.")
    degrade: float = _f(
        0.0, "data", "Share (0-1) of patches with a blurred, noisy or JPEG'd LR (training.degradation)."
    )
    num_workers: str = _f(
        "auto",
        "data",
        "DataLoader worker processes per training process, or 'auto' (none on "
        "a CPU with the images cached in memory, one on a CPU reading from disk, up to 8 on a GPU).",
    )
    cache_mb: int = _f(
        4096,
        "data",
        "Decode the training images into memory once when they fit in this many MB "
        "(per process); 0 reads every patch from disk.",
    )
    val_images: int = _f(0, "data", "Validate on this many images spread evenly over the val split (0: all).")
    # --- model
    scale: int = _f(4, "model", "Upscaling factor: 2, 3 or 4.")
    channels: int = _f(128, "model", "Trunk width of the generator (128 in the paper).")
    n_blocks: int = _f(14, "model", "Residual blocks (14 in the paper; Table 3 ablation).")
    attention: str = _f("cbam", "model", f"Attention block: {', '.join(ATTENTIONS)} (Table 4 ablation).")
    refiner: str = _f("unet-transformer", "model", f"Refiner: {', '.join(REFINERS)} (Table 5 ablation).")
    refiner_base: int = _f(64, "model", "C_base of the refiner U-Net (64 in the paper).")
    global_skip: bool = _f(
        False, "model", "Add bicubic(LR) to the output so the net learns the residual (off in the paper)."
    )
    res_scale: float = _f(
        1.0,
        "model",
        "Factor on each residual block's branch (1 in the paper; 0.1 as in EDSR "
        "keeps the deep stack from amplifying itself under Adam).",
    )
    attention_dropout: float = _f(
        0.1,
        "model",
        "Training dropout on the refiner's attention weights (0.1 in the "
        "paper). 0 lets a CPU use PyTorch's fused attention kernel: a bf16 step at "
        "256-px patches runs about 3 times as fast (1.5 at 128 px). GPUs fuse either.",
    )
    d_base: int = _f(64, "model", "Discriminator width of its first block (64).")
    d_blocks: int = _f(8, "model", "Discriminator conv blocks (an even number; 8).")
    init_from: str | None = _f(
        None,
        "model",
        "Start from the weights of this geosr model file: every tensor whose "
        "name and shape match is copied (e.g. an x2 model's trunk and refiner into an x4 "
        "model, as EDSR does); the others keep their initialisation. Used only by a new run.",
    )
    name: str | None = _f(None, "model", "Model name in the exported card (default degan-x<scale>).")
    description: str | None = _f(None, "model", "Description in the exported card.")
    tile_size: int | None = _f(
        None, "model", "Recommended inference tile in LR pixels for the card (default patch_size / scale)."
    )
    overlap: int | None = _f(None, "model", "Recommended tile overlap in LR pixels for the card (default tile/4).")
    # --- loss
    mse_weight: float = _f(0.5, "loss", "Weight of the pixel MSE.")
    l1_weight: float = _f(
        0.0,
        "loss",
        "Weight of the pixel L1 (mean absolute error), the content loss of EDSR and most PSNR-oriented SR models.",
    )
    perceptual_weight: float = _f(
        0.5, "loss", "Weight of the VGG19-feature Charbonnier loss; 0 needs no VGG weights at all."
    )
    adversarial_weight: float = _f(
        0.1, "loss", "Weight of the adversarial BCE loss (0, with --feature-matching-weight 0: no discriminator)."
    )
    feature_matching_weight: float = _f(
        0.0, "loss", "Weight of an L1 between the discriminator's SR and HR features (a VGG-free perceptual term)."
    )
    vgg_layer: str = _f("conv5_4", "loss", f"VGG19 feature layer: {', '.join(VGG_LAYERS)} (conv = before ReLU).")
    vgg_weights: str | None = _f(
        None,
        "loss",
        "Local VGG19 ImageNet weights (torchvision's vgg19-dcbb9e9d.pth); default: torch hub's cache, downloaded once.",
    )
    charbonnier_eps: float = _f(1e-3, "loss", "Epsilon of the Charbonnier loss sqrt(d^2 + eps^2).")
    diffusion: bool = _f(
        True,
        "loss",
        "The diffusion step: perturb the refiner's input with Gaussian noise of std "
        "t * std(features), t ~ U(0, diffusion_t_max), and pass t (inference uses t = 0).",
    )
    diffusion_t_max: float = _f(1.0, "loss", "Upper end of the noise level t during training.")
    # --- optim
    lr_g: float = _f(1e-4, "optim", "Adam learning rate of the generator.")
    lr_d: float = _f(1e-4, "optim", "Adam learning rate of the discriminator.")
    betas: list[float] = _f(None, "optim", "Adam betas.", default_factory=_list([0.9, 0.999]))
    lr_decay_epochs: list[int] = _f(
        None, "optim", "Epochs after which the learning rates are multiplied by lr_gamma.", default_factory=_list([50])
    )
    lr_decay_steps: list[int] = _f(
        None, "optim", "Steps after which they are (in addition to the epochs).", default_factory=_list([])
    )
    lr_gamma: float = _f(0.1, "optim", "Learning-rate factor at each decay.")
    lr_schedule: str = _f(
        "step",
        "optim",
        "Learning-rate shape: step (x lr_gamma at each decay epoch or step) or "
        "cosine (from the rate down to lr_min_factor times it at the run's last step).",
    )
    lr_min_factor: float = _f(0.01, "optim", "Where the cosine schedule ends, as a factor on the rate.")
    lr_warmup_steps: int = _f(
        0,
        "optim",
        "Linear warm-up of the learning rates over this many steps (of the run; "
        "a run started with --init-from benefits from a short one).",
    )
    epochs: int = _f(100, "optim", "Epochs to train (one epoch: every training image dataset_repeat times).")
    max_steps: int | None = _f(None, "optim", "Stop after this many steps in total (an optimiser step of G).")
    max_minutes: float | None = _f(
        None, "optim", "Stop after this many minutes of this invocation (then validate and save)."
    )
    pretrain_epochs: int = _f(0, "optim", "Warm-up epochs of the generator on the content loss alone.")
    grad_clip: float | None = _f(None, "optim", "Clip the gradient norm of each network to this value.")
    divergence_factor: float = _f(
        20.0,
        "optim",
        "Stop, without saving, when the MSE stays above this multiple of "
        "its median over the last 200 steps for 10 steps in a row (an exploded or "
        "collapsed generator); 0: only NaN/Inf stop a run.",
    )
    ema: bool = _f(True, "optim", "Keep an exponential moving average of the generator for validation and export.")
    ema_decay: float = _f(0.999, "optim", "EMA decay (warmed up as min(decay, (1 + n) / (10 + n)) over n updates).")
    # --- run
    out: str = _f("runs/degan", "run", "Run folder: config.toml, log.csv, checkpoints/, best.safetensors.")
    seed: int = _f(0, "run", "Seed of the weights, the data order, the crops and the noise.")
    device: str = _f("auto", "run", "auto, cpu, cuda or cuda:N (under torchrun: one GPU per local rank).")
    precision: str = _f(
        "auto",
        "run",
        f"{', '.join(PRECISIONS)}: bf16 autocast on CUDA and AMX CPUs, fp16 with a gradient scaler on CUDA, fp32.",
    )
    val_precision: str = _f("fp32", "run", "Precision of validation (fp32 measures exactly).")
    val_every: int = _f(1, "run", "Validate every this many epochs (0: never by epochs).")
    val_every_steps: int = _f(0, "run", "Validate every this many steps (0: never by steps).")
    checkpoint_every_steps: int = _f(
        0, "run", "Also save the training state every this many steps (0: only at validations and at the end)."
    )
    log_every: int = _f(1, "run", "Write a log.csv row every this many steps.")
    channels_last: bool = _f(True, "run", "Channels-last memory format (faster convolutions with AMX and on GPUs).")
    deterministic: bool = _f(False, "run", "Deterministic algorithms (slower; exact resume on GPUs).")

    # ------------------------------------------------------------------------------------------------------------
    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def generator_config(self) -> GeneratorConfig:
        from geosr.models.generator import GeneratorConfig  # here: settings and --help need no PyTorch

        c = self.in_channels
        return GeneratorConfig(
            scale=self.scale,
            in_channels=c,
            out_channels=c,
            channels=self.channels,
            n_blocks=self.n_blocks,
            attention=self.attention,
            refiner=self.refiner,
            refiner_base=self.refiner_base,
            global_skip=self.global_skip,
            res_scale=self.res_scale,
        )

    @property
    def in_channels(self) -> int:
        return len(self.bands) if self.bands else 3

    @property
    def uses_discriminator(self) -> bool:
        return self.adversarial_weight > 0 or self.feature_matching_weight > 0

    @property
    def model_name(self) -> str:
        return self.name or f"degan-x{self.scale}"

    @property
    def card_tile_size(self) -> int:
        return self.tile_size or max(8, self.patch_size // self.scale)

    @property
    def card_overlap(self) -> int:
        return self.overlap if self.overlap is not None else default_overlap(self.card_tile_size)

    def resolved_band_names(self) -> list[str]:
        if self.band_names:
            return list(self.band_names)
        if not self.bands or self.bands == [1, 2, 3]:
            return ["red", "green", "blue"][: self.in_channels]
        return [f"band{b}" for b in self.bands]

    def validate(self) -> TrainConfig:
        """Check ranges and combinations; raises ConfigError naming the setting, or OptionError (a usage error) for
        no data, a device that is no device name and band numbers that are not 1-based or repeat. Returns self."""

        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        if self.data is None:  # a usage error, as a missing --data is
            raise OptionError('no training data: give --data DIR (or data = "DIR" in the config file)', option="--data")
        self.device = check_device_spec(self.device)
        try:
            self.generator_config()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None  # "attention must be ...": named as the other settings are
        need(
            self.patch_size >= 32 and self.patch_size % self.scale == 0,
            f"patch_size must be a multiple of the scale ({self.scale}) and at least 32 (the discriminator's "
            f"minimum), got {self.patch_size}",
        )
        need(self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}")
        need(self.dataset_repeat >= 1, f"dataset_repeat must be at least 1, got {self.dataset_repeat}")
        need(self.extra_repeat >= 1, f"extra_repeat must be at least 1, got {self.extra_repeat}")
        need(0 <= self.degrade <= 1, f"degrade must be a share from 0 to 1, got {self.degrade}")
        self.extra_data = _extra_folders(self.extra_data, self.data, self.val_data)
        need(
            self.num_workers == "auto" or (self.num_workers.isdigit()),
            f"num_workers must be 'auto' or a number, got {self.num_workers!r}",
        )
        need(self.cache_mb >= 0, f"cache_mb must be >= 0, got {self.cache_mb}")
        need(self.val_images >= 0, f"val_images must be >= 0, got {self.val_images}")
        if self.bands is not None:
            from geosr.options import check_band_numbers  # here: it brings rasterio, which --help does not need

            self.bands = list(check_band_numbers(self.bands))
        if self.band_names is not None:
            need(
                len(self.band_names) == self.in_channels,
                f"{len(self.band_names)} band_names for {self.in_channels} bands",
            )
        need(self.d_blocks >= 2 and self.d_blocks % 2 == 0, f"d_blocks must be even and >= 2, got {self.d_blocks}")
        need(self.d_base >= 8, f"d_base must be at least 8, got {self.d_base}")
        weights = ("mse_weight", "l1_weight", "perceptual_weight", "adversarial_weight", "feature_matching_weight")
        for key in weights:
            need(getattr(self, key) >= 0, f"{key} must be >= 0, got {getattr(self, key)}")
        need(sum(getattr(self, key) for key in weights) > 0, "every loss weight is 0: nothing to train")
        need(self.vgg_layer in VGG_LAYERS, f"vgg_layer must be one of {', '.join(VGG_LAYERS)}, got {self.vgg_layer}")
        need(
            self.perceptual_weight == 0 or self.in_channels == 3,
            f"the VGG perceptual loss needs 3 (RGB) bands, this model has {self.in_channels}; use "
            "--perceptual-weight 0 (and, if you like, --feature-matching-weight)",
        )
        need(0 < self.diffusion_t_max <= 10, f"diffusion_t_max must be in (0, 10], got {self.diffusion_t_max}")
        need(self.lr_g > 0 and self.lr_d > 0, f"lr_g and lr_d must be positive, got {self.lr_g} and {self.lr_d}")
        need(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas must be two numbers in [0, 1)")
        need(self.lr_gamma > 0, f"lr_gamma must be positive, got {self.lr_gamma}")
        need(
            self.lr_schedule in SCHEDULES,
            f"lr_schedule must be one of {', '.join(SCHEDULES)}, got {self.lr_schedule!r}",
        )
        need(0 <= self.lr_min_factor <= 1, f"lr_min_factor must be in [0, 1], got {self.lr_min_factor}")
        need(self.lr_warmup_steps >= 0, f"lr_warmup_steps must be >= 0, got {self.lr_warmup_steps}")
        need(self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}")
        need(self.max_steps is None or self.max_steps >= 1, f"max_steps must be at least 1, got {self.max_steps}")
        need(self.max_minutes is None or self.max_minutes > 0, f"max_minutes must be positive, got {self.max_minutes}")
        need(self.pretrain_epochs >= 0, f"pretrain_epochs must be >= 0, got {self.pretrain_epochs}")
        need(self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be positive, got {self.grad_clip}")
        need(self.divergence_factor == 0 or self.divergence_factor > 1, "divergence_factor must be 0 (off) or > 1")
        need(0 <= self.attention_dropout < 1, f"attention_dropout must be in [0, 1), got {self.attention_dropout}")
        need(0 < self.ema_decay < 1, f"ema_decay must be in (0, 1), got {self.ema_decay}")
        need(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}")
        need(self.val_precision in PRECISIONS, f"val_precision must be one of {', '.join(PRECISIONS)}")
        need(
            self.val_every >= 0 and self.val_every_steps >= 0 and self.checkpoint_every_steps >= 0,
            "val_every, val_every_steps and checkpoint_every_steps must be >= 0",
        )
        need(self.log_every >= 1, f"log_every must be at least 1, got {self.log_every}")
        problem = tiling_problem(self.card_tile_size, self.card_overlap)
        need(problem is None, f"tile_size, overlap (the tiling the model card recommends, LR pixels): {problem}")
        return self

    # ------------------------------------------------------------------------------------------------------------
    def to_toml(self) -> str:
        """The settings as a TOML document, grouped in tables, unset (None) values left out."""
        lines = ["# geosr train: the resolved configuration of this run"]
        for group in GROUPS:
            lines.append(f"\n[{group}]")
            for f in fields(self):
                if f.metadata["group"] != group:
                    continue
                value = getattr(self, f.name)
                if value is not None:
                    lines.append(f"{f.name} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _extra_folders(extra: list[str], data: str, val_data: str | None) -> list[str]:
    """The --extra-data folders made absolute, as config.toml keeps them; ConfigError for one twice or overlapping."""
    out: list[str] = []
    for folder in extra:
        path = Path(folder).expanduser().resolve()
        if str(path) in out:
            raise ConfigError(f"extra_data: {folder} is given twice; give each folder once (see --extra-repeat)")
        for name, other in (("--data", data), ("--val-data", val_data)):
            held = Path(other).expanduser().resolve() if other else None
            if held is not None and (path.is_relative_to(held) or held.is_relative_to(path)):
                raise ConfigError(
                    f"extra_data: {folder} overlaps the {name} folder {other}: its validation images would be "
                    "trained on; leave it out of --extra-data"
                )
        out.append(str(path))
    return out


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string is JSON-compatible for these values
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")
