"""Training patches: random HR crops, flips and 90-degree rotations, and their LR made on the fly.

- Each training image gives ``dataset_repeat`` patches per epoch: one random crop per listing in ``items``, so an
  image listed n times (``--extra-repeat`` lists the extra images so) gives n times that, read and cached once. A patch
  is a random ``patch_size`` square crop of the HR image; an image smaller than the patch on a side is first
  mirror-padded (symmetric, edge pixel repeated) up to it, so the handful of 242..255-pixel UC Merced images keep
  their content and the batch keeps its shape.
- Random flips and rotations by multiples of 90 degrees (the 8 symmetries of the square, uniformly).
- LR = bicubic downsampling with antialiasing on the image's integer grid (``training.degradation``); in the paired
  layout the crop is aligned on the LR grid and the layout's own LR pixels are used instead. With ``degrade`` > 0 that
  share of the (unpaired) patches gets a blurred, noisy or JPEG-compressed LR instead (``degraded_lr``).
- Values map to [-1, 1] by each image's ``geosr.radiometry.Radiometry`` (``geosr.datasets.image_radiometry``: the
  mapping ``geosr upscale`` applies to the same file; uint8 0..255, other dtypes per-band percentiles of the valid
  pixels). Invalid pixels (nodata, alpha 0, masks, extreme float fills) take the mapping's fill values when the image
  is read, before the LR is made, so nodata never enters a patch and the LR stays on the image's grid.
- Every random choice of a patch comes from its own generator seeded by (seed, epoch, position in the epoch), so the
  data stream does not depend on worker processes and a resumed run draws exactly the patches it would have drawn.
- When the training images fit in ``cache_mb`` they are decoded once into memory (UC Merced: 1050 images, 206 MB),
  else every patch is a windowed read from the file (rasters of any size).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from geosr.datasets import ImageItem, check_bands, image_info, image_radiometry, read_image
from geosr.device import usable_cores
from geosr.errors import DataError
from geosr.radiometry import Radiometry
from geosr.training.degradation import bicubic_lr, degraded_lr

log = logging.getLogger("geosr.training")


@dataclass
class _Source:
    item: ImageItem
    dtype: str
    height: int
    width: int
    radiometry: Radiometry  # of the HR image; the paired layout's LR image is mapped with it too
    lr_path: object = None
    lr_height: int = 0
    lr_width: int = 0


def check_default_bands(path, count: int, bands: Sequence[int], what: str = "") -> None:
    """DataError where an image of ``count`` bands lacks one of the default ``bands`` (none were given): the message
    says which bands training takes, where check_bands would speak of a --bands the user never gave. what: how the
    image is named after its path, e.g. " (a validation image)"."""
    if max(bands) > count:
        raise DataError(
            f"{path}{what} has {count} band{'s' if count != 1 else ''}, training takes bands "
            f"{','.join(map(str, bands))} of each image: remove it from the data, or choose --bands"
        )


class PatchDataset(Dataset):
    """(HR, LR) training patches in [-1, 1] from ``items``; indexed by (image index, epoch, position) keys."""

    def __init__(
        self,
        items: Sequence[ImageItem],
        *,
        scale: int,
        patch_size: int,
        bands: Sequence[int],
        seed: int = 0,
        cache_mb: int = 4096,
        repeat: int = 1,
        degrade: float = 0.0,
        bands_given: bool = True,
    ) -> None:
        if not items:
            raise DataError("no training images")
        if patch_size % scale:
            raise DataError(f"patch size {patch_size} is not a multiple of the scale {scale}")
        self.scale, self.patch, self.bands = scale, patch_size, list(bands)
        self.seed, self.repeat, self.degrade = seed, repeat, degrade
        self.bands_given = bands_given  # False: the default bands, which the messages then say
        described: dict[ImageItem, _Source] = {}  # an item listed several times (--extra-repeat) is read once
        for item in items:
            if item not in described:
                described[item] = self._describe(item)
        self.sources = [described[item] for item in items]
        unique = list(described.values())
        nbytes = sum(
            len(self.bands) * (s.height * s.width + s.lr_height * s.lr_width) * np.dtype(s.dtype).itemsize
            for s in unique
        )
        self.cache: list[tuple[np.ndarray, np.ndarray | None]] | None = None
        self.padded = sum(1 for s in unique if min(s.height, s.width) < patch_size)
        if self.padded:
            log.info(
                "%d training images are smaller than the %d-px patch and are mirror-padded", self.padded, patch_size
            )
        if nbytes <= cache_mb * 2**20:
            t0 = time.monotonic()
            whole = {id(s): self._read_whole(s) for s in unique}
            self.cache = [whole[id(s)] for s in self.sources]
            log.info(
                "decoded %d training images (%.0f MB) into memory in %.1f s",
                len(unique),
                nbytes / 2**20,
                time.monotonic() - t0,
            )

    @property
    def cached(self) -> bool:
        return self.cache is not None

    def _describe(self, item: ImageItem) -> _Source:
        info = image_info(item.path)
        if not self.bands_given:
            check_default_bands(item.path, info.count, self.bands)
        check_bands(item.path, info.count, self.bands)
        src = _Source(item, info.dtype, info.height, info.width, image_radiometry(item.path, self.bands))
        lr_path = item.lr_path(self.scale)
        if lr_path is not None:
            lr_info = image_info(lr_path)
            check_bands(lr_path, lr_info.count, self.bands)
            if lr_info.height * self.scale > info.height or lr_info.width * self.scale > info.width:
                raise DataError(f"{lr_path}: too large to be the x{self.scale} LR of {item.path}")
            src.lr_path, src.lr_height, src.lr_width = lr_path, lr_info.height, lr_info.width
        return src

    def _read_whole(self, s: _Source) -> tuple[np.ndarray, np.ndarray | None]:
        lr = read_image(s.lr_path, self.bands, radiometry=s.radiometry) if s.lr_path is not None else None
        return read_image(s.item.path, self.bands, radiometry=s.radiometry), lr

    def __len__(self) -> int:
        return len(self.sources) * self.repeat

    # -- one patch -----------------------------------------------------------------------------------------------
    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, epoch, position = key
        s = self.sources[index % len(self.sources)]
        rng = np.random.default_rng([self.seed, epoch, position])
        if s.lr_path is not None:
            hr, lr = self._paired_crop(index % len(self.sources), s, rng)
        else:
            hr, lr = self._crop(index % len(self.sources), s, self.patch, s.height, s.width, rng), None
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        hr = _augment(hr, k, flip)
        if lr is None:
            hr_t = torch.from_numpy(hr.astype(np.float32))
            # No draw at all when degrade is 0: the patches of runs without it stay what they were.
            if self.degrade and rng.random() < self.degrade:
                span = [hi - lo for lo, hi in zip(s.radiometry.low, s.radiometry.high)]
                lr = degraded_lr(hr_t, self.scale, s.dtype, span, rng).numpy()
            else:
                lr = bicubic_lr(hr_t, self.scale, s.dtype).numpy()
        else:
            lr = _augment(lr, k, flip)
        return torch.from_numpy(s.radiometry.to_model(hr)), torch.from_numpy(s.radiometry.to_model(lr))

    def _crop(
        self,
        i: int,
        s: _Source,
        p: int,
        h: int,
        w: int,
        rng: np.random.Generator,
        lr: bool = False,
        at: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """A p x p crop (mirror-padded where the image is smaller), at ``at`` or at random."""
        top, left = (
            at if at is not None else (int(rng.integers(0, max(h - p, 0) + 1)), int(rng.integers(0, max(w - p, 0) + 1)))
        )
        ch, cw = min(p, h - top), min(p, w - left)
        if self.cache is not None:
            img = self.cache[i][1 if lr else 0]
            out = img[:, top : top + ch, left : left + cw]
        else:
            out = read_image(
                s.lr_path if lr else s.item.path, self.bands, window=(top, left, ch, cw), radiometry=s.radiometry
            )
        if ch < p or cw < p:
            out = np.pad(out, ((0, 0), (0, p - ch), (0, p - cw)), mode="symmetric")
        return np.ascontiguousarray(out)

    def _paired_crop(self, i: int, s: _Source, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        lp = self.patch // self.scale
        top = int(rng.integers(0, max(s.lr_height - lp, 0) + 1))
        left = int(rng.integers(0, max(s.lr_width - lp, 0) + 1))
        lr = self._crop(i, s, lp, s.lr_height, s.lr_width, rng, lr=True, at=(top, left))
        hr_h, hr_w = s.lr_height * self.scale, s.lr_width * self.scale  # the HR area the LR covers
        hr = self._crop(i, s, self.patch, hr_h, hr_w, rng, at=(top * self.scale, left * self.scale))
        return hr, lr


def _augment(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """One of the 8 symmetries of the square on (C, H, W)."""
    if flip:
        x = x[:, :, ::-1]
    return np.ascontiguousarray(np.rot90(x, k, axes=(1, 2)))


class ResumableSampler(DistributedSampler):
    """A DistributedSampler (a shuffled share of the data set per process, reshuffled by epoch) that yields
    (index, epoch, position) keys for ``PatchDataset`` and can start part-way into an epoch, for resuming."""

    def __init__(self, dataset: Dataset, *, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` samples of this process's share of the current epoch."""
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        indices = list(super().__iter__())
        for pos in range(self.start, len(indices)):
            yield indices[pos], self.epoch, pos * self.num_replicas + self.rank

    def __len__(self) -> int:
        return self.num_samples - self.start


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # the training process owns the cores; a worker decodes and crops on one


def resolve_workers(setting: str, device: torch.device, cached: bool, local_world: int = 1) -> int:
    """'auto': none on a CPU with the images in memory (a patch costs well under a millisecond there, and workers
    would compete with the training threads), one on a CPU reading from disk, up to 8 per GPU process on the cores
    available."""
    if setting != "auto":
        return int(setting)
    if device.type == "cpu":
        return 0 if cached else 1
    return max(1, min(8, usable_cores() // max(local_world, 1) - 1))


def make_loader(
    dataset: PatchDataset,
    *,
    batch_size: int,
    workers: int,
    device: torch.device,
    num_replicas: int = 1,
    rank: int = 0,
    seed: int = 0,
) -> tuple[DataLoader, ResumableSampler]:
    """A DataLoader of ``batch_size`` (per process) (HR, LR) batches, dropping the incomplete last batch."""
    sampler = ResumableSampler(dataset, num_replicas=num_replicas, rank=rank, seed=seed)
    if sampler.num_samples < batch_size:
        raise DataError(
            f"{len(dataset)} training patches per epoch ({sampler.num_samples} per process) are fewer than a batch "
            f"of {batch_size}; lower --batch-size or raise --dataset-repeat"
        )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        worker_init_fn=_worker_init if workers > 0 else None,
        # Its own generator: creating an iterator must not draw from the global RNG (exact resume).
        generator=torch.Generator().manual_seed(seed),
        prefetch_factor=4 if workers > 0 else None,
    )
    return loader, sampler
