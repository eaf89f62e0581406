"""Image data sets for training and evaluation: the layouts geosr recognises, and their deterministic splits.

Layouts (``find_images`` detects them):

- ``ucmerced``: UC Merced Land Use, ``<class>/<class>NN.tif``. Split by the number in the file name, the project's
  standard split: train 00-49, val 50-59, test 60-99 (and above).
- ``folders``: any folder of images, flat or with class sub-folders at any depth (AID ``<Class>/<name>.jpg``,
  NEG-Scene, folders of GeoTIFF tiles of any size). Per class (the image's folder relative to the root), names sorted
  by plain string order: with n images and k = n // 10, the first n - 2k are train, the next k val, the last k test
  (80 / 10 / 10 %; a class of fewer than 10 images is all train).
- ``paired``: the SR literature's layout, ``HR/`` beside ``LR_x2/``, ``LR_x3/``, ``LR_x4/`` holding LR images of the
  same names (``0001.png`` or ``0001x4.png``). With ``train/``, ``val/`` and ``test/`` folders that each hold such a
  pair, the split is the folder; a single ``HR/`` + ``LR_xN/`` folder is split by the ``folders`` rule on its HR images.
  Evaluation uses the layout's own LR images; training takes HR patches and the aligned LR patches.

Split ``all`` is every image. Images (GeoTIFF, TIFF, PNG, JPEG, ...) are read through ``geosr.raster``'s readers, the
ones ``geosr upscale`` uses: damaged files (a truncated PNG or JPEG too) fail with a DataError naming them, plain
images without georeferencing raise no warnings. ``image_radiometry`` is an image's mapping to the model's range
(``geosr.radiometry``, the same as upscale's for that file), and ``read_image`` can replace the invalid pixels
(nodata, alpha 0, masks, extreme float fills) by its fill values. Raises DataError with a message naming the folder
or file and the remedy.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from geosr.errors import DataError
from geosr.radiometry import Radiometry, valid_mask
from geosr.raster import has_masks, open_raster, raster_radiometry, read_whole, read_window

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".webp", ".jp2")
SPLITS = ("train", "val", "test", "all")
UCMERCED_SPLIT = "train 00-49, val 50-59, test 60-99"


@dataclass(frozen=True)
class ImageItem:
    """One image of a data set: its path, its class ('' for a flat folder) and, in the paired layout, its LR files."""

    path: Path
    label: str = ""
    lr: tuple[tuple[int, Path], ...] = ()

    @property
    def name(self) -> str:
        return self.path.stem

    def lr_path(self, scale: int) -> Path | None:
        """The paired layout's LR image for ``scale``, or None (LR is then made by bicubic downsampling)."""
        return dict(self.lr).get(scale)


@dataclass(frozen=True)
class ImageSet:
    """The images of one split of a data set."""

    root: Path
    layout: str
    split: str
    items: tuple[ImageItem, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.items)

    @property
    def classes(self) -> list[str]:
        return sorted({item.label for item in self.items})

    def describe(self) -> str:
        n_classes = len(self.classes)
        return f"{self.root} ({self.layout} layout, split {self.split}: {len(self)} images, {n_classes} classes)"


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def _images_under(folder: Path) -> list[Path]:
    """Image files under ``folder``, sorted, skipping hidden files and folders below it (``folder`` itself may be
    reached through ``..`` or a hidden folder). Links to folders are followed (a data set's classes are often links
    into a larger archive), each real folder once: a link back to a folder already searched is not."""
    found, searched = [], set()
    for here, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(here)
        if real in searched:
            dirs.clear()
            continue
        searched.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [p for p in (Path(here) / name for name in files) if _is_image(p)]
    return sorted(found)


def _label(path: Path, root: Path) -> str:
    rel = path.parent.relative_to(root)
    return "" if rel == Path(".") else rel.as_posix()


def split_of_index(i: int, n: int) -> str:
    """The split of the i-th (0-based) of n sorted images of one class under the 80/10/10 folder rule."""
    k = n // 10
    return "train" if i < n - 2 * k else ("val" if i < n - k else "test")


def _ucmerced_number(path: Path, root: Path) -> int | None:
    if path.parent.parent != root:
        return None
    m = re.fullmatch(re.escape(path.parent.name) + r"(\d{2,})", path.stem)
    return int(m.group(1)) if m else None


def _ucmerced_split(number: int) -> str:
    return "train" if number < 50 else ("val" if number < 60 else "test")


def _folder_split(paths: list[Path], root: Path) -> dict[Path, str]:
    by_label: dict[str, list[Path]] = {}
    for p in paths:
        by_label.setdefault(_label(p, root), []).append(p)
    out = {}
    for members in by_label.values():
        members.sort(key=lambda p: p.name)
        for i, p in enumerate(members):
            out[p] = split_of_index(i, len(members))
    return out


def _lr_files(pair_root: Path, hr_root: Path, hr_paths: list[Path]) -> dict[Path, tuple[tuple[int, Path], ...]]:
    """For every HR image, the LR images of the same name (or name + 'x<scale>') in the LR_x<scale> folders."""
    found: dict[Path, list[tuple[int, Path]]] = {p: [] for p in hr_paths}
    for lr_dir in sorted(pair_root.glob("LR_x*")):
        m = re.fullmatch(r"LR_x(\d+)", lr_dir.name)
        if not (m and lr_dir.is_dir()):
            continue
        scale = int(m.group(1))
        index = {}
        for p in _images_under(lr_dir):
            index[(p.parent.relative_to(lr_dir).as_posix(), p.stem)] = p
        for hr in hr_paths:
            rel = hr.parent.relative_to(hr_root).as_posix()
            lr = index.get((rel, hr.stem)) or index.get((rel, f"{hr.stem}x{scale}"))
            if lr is not None:
                found[hr].append((scale, lr))
    return {k: tuple(v) for k, v in found.items()}


def detect_layout(root: Path) -> str:
    """'paired-splits', 'paired', 'ucmerced' or 'folders'; raises DataError for a missing or empty folder."""
    if not root.exists():
        raise DataError(
            f"{root}: no such data folder; give a folder of images (UC Merced, AID, HR/ + LR_xN/ or GeoTIFF tiles)"
        )
    if not root.is_dir():
        raise DataError(f"{root}: is a file; the data option takes a folder of images")
    if any((root / s / "HR").is_dir() for s in ("train", "val", "test")):
        return "paired-splits"
    if (root / "HR").is_dir():
        return "paired"
    paths = _images_under(root)
    if not paths:
        raise DataError(
            f"{root}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} in the folder and its sub-folders)"
        )
    named = [_ucmerced_number(p, root) is not None for p in paths]
    if all(named):
        return "ucmerced"
    if sum(named) >= 0.9 * len(paths) and root.resolve() not in _WARNED:
        _WARNED.add(root.resolve())
        stray = next(p for p, ok in zip(paths, named) if not ok)
        others = len(paths) - sum(named) - 1
        logging.getLogger("geosr").warning(
            "%s: %s not named as UC Merced names its images (<class>/<class>NN.tif), so the data set is split by "
            "the folder rule (%s), not UC Merced's standard split; rename or move %s to keep the standard split",
            root,
            f"{stray} and {others} other files are" if others else f"{stray} is",
            split_rule("folders"),
            "them" if others else "it",
        )
    return "folders"


_WARNED: set[Path] = set()  # data folders whose near-UC Merced naming was warned about (once per process)


def find_images(root: str | Path, split: str = "all") -> ImageSet:
    """The images of ``split`` ('train', 'val', 'test' or 'all') of the data set in ``root``, in a stable order.

    The layout is detected (see the module docstring for the layouts and their split rules). An empty split is not an
    error here (the caller knows whether it needs one); a missing folder or a folder without images is (DataError).
    """
    if split not in SPLITS:
        raise DataError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    root = Path(root)
    layout = detect_layout(root)
    items: list[ImageItem] = []
    if layout == "paired-splits":
        for s in ("train", "val", "test"):
            if split in (s, "all") and (root / s / "HR").is_dir():
                hr_root = root / s / "HR"
                hr = _images_under(hr_root)
                lr = _lr_files(root / s, hr_root, hr)
                items += [ImageItem(p, _label(p, hr_root), lr[p]) for p in hr]
        layout = "paired"
    elif layout == "paired":
        hr_root = root / "HR"
        hr = _images_under(hr_root)
        splits = _folder_split(hr, hr_root)
        lr = _lr_files(root, hr_root, hr)
        items = [ImageItem(p, _label(p, hr_root), lr[p]) for p in hr if split in (splits[p], "all")]
    elif layout == "ucmerced":
        for p in _images_under(root):
            if split in (_ucmerced_split(_ucmerced_number(p, root)), "all"):
                items.append(ImageItem(p, p.parent.name))
    else:
        paths = _images_under(root)
        splits = _folder_split(paths, root)
        items = [ImageItem(p, _label(p, root)) for p in paths if split in (splits[p], "all")]
    items.sort(key=lambda it: (it.label, it.path.name))
    return ImageSet(root=root, layout=layout, split=split, items=tuple(items))


_TOLD_NO_LR: set[tuple[Path, int]] = set()


def check_pairs(layout: str, items: Sequence[ImageItem], scale: int) -> None:
    """In the paired layout, every HR image of ``items`` needs its x``scale`` LR image when there is an LR_x<scale>
    folder: raises DataError naming the first without and what was looked for. Without that folder the LR images are
    made by bicubic downsampling of the HR images, with a warning."""
    if layout != "paired" or not items:
        return
    missing = [item for item in items if item.lr_path(scale) is None]
    if not missing:
        return
    first = missing[0].path
    hr_root = first.parents[len(Path(missing[0].label).parts) if missing[0].label else 0]
    lr_dir = hr_root.parent / f"LR_x{scale}"
    if not lr_dir.is_dir():
        if (lr_dir, scale) not in _TOLD_NO_LR:  # once per folder: training checks its train and val images apart
            _TOLD_NO_LR.add((lr_dir, scale))
            logging.getLogger("geosr").warning(
                "%s: no LR_x%d folder beside HR: the x%d LR images are made by bicubic downsampling of the HR images",
                hr_root.parent,
                scale,
                scale,
            )
        return
    raise DataError(
        f"{first}: no x{scale} LR image in {lr_dir} (looked for {first.stem}.* and {first.stem}x{scale}.* in the "
        f"same sub-folder); {len(missing)} of {len(items)} HR images lack one: name each LR image as its HR "
        "image, or remove the HR images without one"
    )


def spread(items: Sequence[ImageItem], limit: int) -> list[ImageItem]:
    """``limit`` items spread evenly over ``items`` (all when limit is 0 or larger), in order; deterministic."""
    n = len(items)
    if limit <= 0 or limit >= n:
        return list(items)
    idx = sorted({int(math.floor(i * n / limit)) for i in range(limit)})
    return [items[i] for i in idx]


def split_rule(layout: str) -> str:
    """The split rule of ``layout``, in words (for messages and model cards)."""
    return {
        "ucmerced": f"UC Merced by the number in the file name: {UCMERCED_SPLIT}",
        "paired": "the train/val/test folders, or per class 80/10/10 % of the sorted HR names",
        "folders": "per class, names sorted: first 80 % train, next 10 % val, last 10 % test",
    }.get(layout, layout)


# --- reading -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageInfo:
    """What the header of an image says: bands, size and dtype."""

    count: int
    height: int
    width: int
    dtype: str


# The most pixels (per band) read as one whole image: about 8k x 8k. Larger rasters are read by windows in training;
# evaluation, which measures whole images, refuses them.
MAX_WHOLE_PIXELS = 1 << 26

# What a data set's user can do about an image that cannot be read.
REMEDY = "; remove it from the data or replace it"


def image_info(path: str | Path) -> ImageInfo:
    """The header of an image; raises DataError naming a file that cannot be opened."""
    with open_raster(path, DataError, REMEDY) as src:
        return ImageInfo(src.count, src.height, src.width, src.dtypes[0])


def check_bands(path: str | Path, count: int, bands: Sequence[int]) -> None:
    """Raise DataError unless every 1-based index in ``bands`` exists in an image of ``count`` bands."""
    bad = [b for b in bands if not 1 <= b <= count]
    if bad:
        raise DataError(
            f"{path} has {count} band{'s' if count != 1 else ''}; --bands takes 1-based indices up to {count} "
            f"(got {', '.join(map(str, bad))})"
        )


def read_image(
    path: str | Path,
    bands: Sequence[int] | None = None,
    window: tuple[int, int, int, int] | None = None,
    radiometry: Radiometry | None = None,
) -> np.ndarray:
    """``read_image_valid``'s values alone."""
    return read_image_valid(path, bands, window, radiometry)[0]


def read_image_valid(
    path: str | Path,
    bands: Sequence[int] | None = None,
    window: tuple[int, int, int, int] | None = None,
    radiometry: Radiometry | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read ``bands`` (1-based; all when None) of an image as (C, H, W) in its own dtype.

    window: (row, col, height, width) to read only part of a large raster. radiometry: the image's mapping
    (``image_radiometry``); when given, invalid pixels (nodata, alpha 0, masks, extreme float fills) are replaced by
    its fill values, in raster units on the dtype's grid. Raises DataError for an unreadable or damaged file, a band
    index it does not have, NaN or infinite values, or a whole image over MAX_WHOLE_PIXELS. Returns the values and,
    with ``radiometry``, where they are valid ((C, H, W) bool; None without ``radiometry``).
    """
    path = Path(path)
    with open_raster(path, DataError, REMEDY) as src:
        idx = list(bands) if bands is not None else list(range(1, src.count + 1))
        check_bands(path, src.count, idx)
        masks = radiometry is not None and has_masks(src, idx)
        if window is None:
            if src.width * src.height > MAX_WHOLE_PIXELS:
                raise DataError(
                    f"{path}: {src.width} x {src.height} pixels is too large to read as one image (at most "
                    f"{MAX_WHOLE_PIXELS} pixels); cut it into tiles (e.g. gdal_retile.py) first"
                )
            data, m = read_whole(src, path, idx, masks, error=DataError, remedy=REMEDY)
        else:
            win = Window(window[1], window[0], window[3], window[2])
            data, m = read_window(src, path, win, idx, masks, error=DataError, remedy=REMEDY)
    check_finite(path, data)
    valid = None
    if radiometry is not None:
        valid = valid_mask(data, m)
        radiometry.fill_invalid(data, valid)
    return data, valid


def image_radiometry(path: str | Path, bands: Sequence[int]) -> Radiometry:
    """The mapping of ``bands`` (1-based) of an image to the model's range: ``geosr.raster.raster_radiometry``, the
    one ``geosr upscale`` computes for the same file (0..255 for uint8; else per-band percentiles of the valid pixels of
    a decimated read). Raises DataError naming an unreadable file or a missing band."""
    path = Path(path)
    with open_raster(path, DataError, REMEDY) as src:
        check_bands(path, src.count, bands)
        return raster_radiometry(src, path, list(bands), error=DataError, remedy=REMEDY)


def check_finite(path: str | Path, data: np.ndarray) -> None:
    """Raise DataError when float ``data`` read from ``path`` holds NaN or infinite values."""
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise DataError(
            f"{path}: holds NaN or infinite values; training and evaluation need finite pixels: fill them (e.g. "
            "gdal_fillnodata.py) or leave the image out"
        )


def default_bands(path: str | Path, channels: int, fewer: bool = False) -> list[int]:
    """Bands 1..channels, after checking that the image has them (e.g. RGB of an RGBA PNG); with ``fewer``, all the
    bands of an image that has fewer (evaluation runs them repeated, as geosr upscale does)."""
    info = image_info(path)
    if info.count < channels:
        if fewer:
            return list(range(1, info.count + 1))
        raise DataError(
            f"{path} has {info.count} band{'s' if info.count != 1 else ''} but the model takes {channels}, and "
            f"training takes {channels} bands of each image (geosr upscale and evaluate run fewer, repeated); "
            "leave out images with fewer bands, or train a model of as many bands"
        )
    return list(range(1, channels + 1))
