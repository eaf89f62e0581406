"""Build the GPU bundle here, for a GPU machine that has PyTorch and nothing else of geosr and no network.

    bash benchmarks/gpu/prepare.sh [--out benchmarks/gpu/bundle] [--python-version 3.12] [--max-parts 1]
                                   [--travel light|full] [--scales 4] [--train-quality auto|95|90|...]
                                   [--margin-mb 0.5] [--smoke] [--part-mb MB] [--geotiffs ../shared/data/geotiff]
                                   [--evaluate here|there]

First (``--travel light``, the default except with --smoke) the checkout is made light: the tracked files the GPU
run does not need stay here (benchmarks/gpu/travel.py; ``travel.py restore`` after the call), so that the code, the
model of ``--scales`` and the bundle travel in one device call.

What it builds (units; sizes as measured for Python 3.12 and the UC Merced copy in ../shared/data):

- ``deps.tar.xz`` (17.5 MB): wheels of geosr's dependencies that PyTorch images lack: rasterio (1.4.3, whose
  extension modules are stripped, unlike 1.4.4's 36 MB wheel), shapely, affine, cligj, click-plugins. The wheels are
  re-stored without compression inside the xz archive, which compresses them a fifth better than their own zip.
- ``extras.tar.xz`` (0.8 MB): click, tqdm, safetensors, attrs, certifi, pyparsing, installed on the GPU
  machine only where its Python lacks them. setuptools (to build geosr from the tree) is not carried: PyTorch's
  wheels require it on Python 3.12 and later.
- ``val.zip``: val images (UC Merced 50-59 of each class) as lossless WebP, checked pixel for pixel against the
  originals. With ``--evaluate here`` (the default) only the 21 that ``geosr train --val-images 21`` validates on
  during the run (about 2 MB): the trained models come back in the device call's files and are measured on the
  whole val split and the cross-sensor set on this machine (``benchmarks/gpu/finish.py``), the cards' own protocol
  (bf16 on the development CPU), so the GPU's minutes go to training and the bundle takes fewer calls. With
  ``--evaluate there`` all 210 (19.4 MB), and ``geosr evaluate`` runs on the GPU machine as before.
- ``xsensor.zip`` (3.7 MB, LZMA; ``--evaluate there`` only): the cross-sensor sets of ``benchmarks/cross_sensor.py``'s
  ``make`` from the real rasters of ../shared/data/geotiff, as GeoTIFFs: ``xsensor-val/`` (82 HR crops of 7 sensors,
  the right or bottom half of each raster; run.py evaluates every trained model and its shipped one on it) and
  ``xsensor-train/`` (20 crops of 192 px of 4 sensors from the other halves; trained on only with
  ``GEOSR_GPU_EXTRA_REPEAT`` > 0).
- ``train.zip``: the 1050 train images (00-49) as lossy WebP of the highest quality that lets the whole bundle fit
  in --max-parts device calls: quality 94 in one call beside the light checkout (27.6 MB, a mean 40.7 dB PSNR
  against the originals); beside the whole checkout 97 in 4 calls (33.0 MB, 42.0 dB), 84 in 3 (15.9 MB, 36.7 dB);
  lossless would be 91 MB. The quality and the mean PSNR of the copies are recorded in the
  manifest and go into the trained model's card.

The geosr code itself is not in the bundle: it travels with the working tree, and run.sh installs it from there.

Why parts: the device tool brings the working tree plus the carried paths, 64 MiB per call. The light checkout is
about 18 MB, which leaves 48.6 MB: one part. The whole checkout is about 54 MB (44 MB of it the shipped model
files), which leaves 13 MB per call, so the units are cut into parts of that size (bundle.py) and each call carries
one part. docs/gpu.md gives the calls; the sizes are printed per call.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import lzma
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.io import MemoryFile

from geosr.datasets import spread

sys.path.insert(0, str(Path(__file__).parent))
import travel  # noqa: E402
from bundle import DEVICE_LIMIT, MIB, tree_bytes, write_parts  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "ucmerced"
DEFAULT_OUT = REPO / "benchmarks" / "gpu" / "bundle"
DEFAULT_GEOTIFFS = REPO.parent / "shared" / "data" / "geotiff"
XSENSOR_TRAIN_SIDE = 192  # HR side of the cross-sensor training crops (cross_sensor.py make --split train --side)
RUN_VAL_IMAGES = 21  # run.py's geosr train --val-images: the run's own validation, the only val images --evaluate here
# carries (spread evenly over the split, as geosr.datasets.spread picks them)

# Pinned: the versions this project is tested with, except rasterio 1.4.3 (1.4.4's wheel ships its extension modules
# with debug information: 36 MB against 22 MB). Dependencies PyTorch images have come from the machine's own Python.
DEPS = ["rasterio==1.4.3", "shapely==2.2.0", "affine==3.0.1", "cligj==0.7.2", "click-plugins==1.1.1.2"]
EXTRAS = [
    "click==8.5.1",
    "tqdm==4.70.1",
    "safetensors==0.8.0",
    "attrs==26.1.0",
    "certifi==2026.10.19.post1",
    "pyparsing==3.3.3",
]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
QUALITIES = [97, 96, 95, 94, 93, 92, 90, 88, 86, 85, 84, 83, 82, 80, 75, 70]
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def log(msg: str) -> None:
    print(f"[prepare] {msg}", flush=True)


# --- wheels ---------------------------------------------------------------------------------------------------------


def download(specs: list[str], python_version: str, dest: Path) -> list[Path]:
    """Binary wheels of ``specs`` (no dependencies) for CPython ``python_version`` on Linux x86_64, into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        python_version,
        "-d",
        str(dest),
    ]
    for plat in PLATFORMS:
        cmd += ["--platform", plat]
    subprocess.run(cmd + specs, check=True)
    names = {s.split("==")[0].replace("-", "_").lower() for s in specs}
    return sorted(p for p in dest.glob("*.whl") if p.name.split("-")[0].lower() in names)


def stored_wheel(wheel: Path) -> bytes:
    """The wheel as an uncompressed zip (same members and RECORD): xz then compresses the whole far better."""
    buf = io.BytesIO()
    with zipfile.ZipFile(wheel) as zi, zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zo:
        for info in zi.infolist():
            data = zi.read(info)
            info.compress_type = zipfile.ZIP_STORED
            zo.writestr(info, data)
    return buf.getvalue()


def pack_wheels(wheels: list[Path], dest: Path) -> Path:
    """``dest`` (.tar.xz): the wheels, re-stored, in one xz stream at the strongest preset."""
    tmp = dest.with_name(dest.name + ".tmp")
    with tarfile.open(tmp, "w:xz", preset=9 | lzma.PRESET_EXTREME) as tar:
        for wheel in wheels:
            data = stored_wheel(wheel)
            info = tarfile.TarInfo(wheel.name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(dest)
    return dest


# --- images ---------------------------------------------------------------------------------------------------------


def ucmerced_images(root: Path, numbers: range, smoke: bool) -> list[Path]:
    """``<class>/<class>NN.*`` images of ``root`` whose number NN is in ``numbers`` (smoke: 2 classes, 2 each)."""
    if not root.is_dir():
        raise SystemExit(f"{root}: no such folder; give the UC Merced folder with --data")
    out = []
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    for cls in classes[:2] if smoke else classes:
        images = sorted(
            p
            for p in cls.iterdir()
            if p.stem.startswith(cls.name)
            and p.stem[len(cls.name) :].isdigit()
            and int(p.stem[len(cls.name) :]) in numbers
        )
        out += images[:2] if smoke else images
    if not out:
        raise SystemExit(f"{root}: no UC Merced images <class>/<class>NN.* numbered {numbers.start}-{numbers.stop - 1}")
    return out


def webp(pixels: np.ndarray, quality: int | None) -> bytes:
    """``pixels`` (3, H, W) uint8 as WebP: lossless when ``quality`` is None."""
    opts = {"LOSSLESS": True} if quality is None else {"QUALITY": quality}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with MemoryFile() as mem:
            with mem.open(
                driver="WEBP",
                width=pixels.shape[2],
                height=pixels.shape[1],
                count=pixels.shape[0],
                dtype="uint8",
                **opts,
            ) as dst:
                dst.write(pixels)
            return mem.read()


def decode(data: bytes) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with MemoryFile(data) as mem, mem.open() as src:
            return src.read()


def read_rgb(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            if src.count != 3 or src.dtypes[0] != "uint8":
                raise SystemExit(f"{path}: {src.count} bands of {src.dtypes[0]}; the bundle takes RGB uint8 images")
            return src.read()


def pack_images(paths: list[Path], root: Path, dest: Path, quality: int | None) -> dict:
    """``dest`` (.zip, stored): ``ucmerced/<class>/<name>.webp`` for every image. Lossless copies are checked pixel
    for pixel; for lossy ones the PSNR against the original is measured. Returns what was measured."""
    psnrs = []
    tmp = dest.with_name(dest.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for path in paths:
            pixels = read_rgb(path)
            data = webp(pixels, quality)
            back = decode(data)
            if quality is None:
                if not np.array_equal(back, pixels):
                    raise SystemExit(f"{path}: the lossless WebP copy differs from the original")
            else:
                mse = float(((back.astype(np.float64) - pixels) ** 2).mean())
                psnrs.append(10 * np.log10(255**2 / mse) if mse else 99.0)
            rel = path.relative_to(root).with_suffix(".webp").as_posix()
            zf.writestr(zipfile.ZipInfo(f"ucmerced/{rel}", date_time=ZIP_DATE), data)
    tmp.replace(dest)
    out = {
        "images": len(paths),
        "bytes": dest.stat().st_size,
        "codec": "WebP lossless" if quality is None else f"WebP quality {quality}",
    }
    if psnrs:
        out.update(quality=quality, psnr_vs_original_db=float(np.mean(psnrs)), psnr_min_db=float(np.min(psnrs)))
    return out


def pack_xsensor(geotiffs: Path, dest: Path) -> dict:
    """``dest`` (.zip, LZMA): ``xsensor-val/<sensor>/*.tif`` and ``xsensor-train/<sensor>/*.tif``, made by
    benchmarks/cross_sensor.py's ``make`` from the rasters in ``geotiffs``. Returns the crops per split."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import cross_sensor

    if not geotiffs.is_dir():
        raise SystemExit(f"{geotiffs}: no such folder; give the real rasters' folder with --geotiffs")
    counts = {}
    tmp = dest.with_name(dest.name + ".tmp")
    with tempfile.TemporaryDirectory() as work, zipfile.ZipFile(tmp, "w", zipfile.ZIP_LZMA) as zf:
        for split, name in (("val", "xsensor-val"), ("train", "xsensor-train")):
            root = Path(work) / name
            written = cross_sensor.make(root, geotiffs, split, XSENSOR_TRAIN_SIDE)
            for path in sorted(written):
                info = zipfile.ZipInfo(f"{name}/{path.relative_to(root).as_posix()}", date_time=ZIP_DATE)
                info.compress_type = zipfile.ZIP_LZMA
                zf.writestr(info, path.read_bytes())
            counts[split] = {
                "crops": len(written),
                "sensors": sorted({p.parent.name for p in written}),
            }
    tmp.replace(dest)
    return {"bytes": dest.stat().st_size, "train_side": XSENSOR_TRAIN_SIDE, **counts}


def estimate_train_bytes(paths: list[Path], quality: int, every: int = 10) -> int:
    sample = paths[::every]
    return int(sum(len(webp(read_rgb(p), quality)) + 120 for p in sample) * len(paths) / len(sample))


# --- the bundle -----------------------------------------------------------------------------------------------------


def git_facts() -> dict:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty_files": len(git("status", "--porcelain").splitlines())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(DEFAULT_OUT), help="bundle folder (gitignored)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the UC Merced folder (<class>/<class>NN.tif)")
    p.add_argument(
        "--geotiffs",
        default=str(DEFAULT_GEOTIFFS),
        help="the real rasters benchmarks/cross_sensor.py cuts the cross-sensor sets from",
    )
    p.add_argument(
        "--python-version",
        default="3.12",
        help="CPython of the GPU machine (3.12 there as read in the device tool's KINDS.md)",
    )
    p.add_argument(
        "--max-parts",
        type=int,
        default=1,
        help="device calls the bundle may take (with --train-quality auto: the train images' quality is chosen to "
        "fit; one call with a light checkout allows about 94, four with the whole checkout 96-97)",
    )
    p.add_argument(
        "--travel",
        choices=("light", "full"),
        default=None,
        help="light (the default, except with --smoke): the checkout's files the GPU run does not need stay here "
        "(benchmarks/gpu/travel.py light; travel.py restore after the calls); full: the whole checkout travels",
    )
    p.add_argument("--scales", default="4", help="with --travel light: the shipped models that travel (default 4)")
    p.add_argument("--train-quality", default="auto", help="WebP quality of the train images, or auto")
    p.add_argument("--margin-mb", type=float, default=0.5, help="room left in each call for the tree to grow (MiB)")
    p.add_argument("--part-mb", type=float, default=None, help="part size in MiB instead of what the tree leaves")
    p.add_argument("--smoke", action="store_true", help="2 classes x (2 train + 2 val) images, for CPU tests")
    p.add_argument(
        "--evaluate",
        choices=("here", "there"),
        default="here",
        help="where the trained models are measured on the whole val split and the cross-sensor set: here "
        "(benchmarks/gpu/finish.py on the returned files; the bundle carries only the 21 val images of the run's "
        "own validation) or there (on the GPU machine; the bundle carries all val images and the cross-sensor sets)",
    )
    args = p.parse_args()

    t0 = time.perf_counter()
    out = Path(args.out).resolve()
    cache = out / ".cache"
    units_dir = cache / "units"
    units_dir.mkdir(parents=True, exist_ok=True)
    data = Path(args.data).resolve()

    args.travel = args.travel or ("full" if args.smoke else "light")
    if args.travel == "light":
        try:
            scales = [int(x) for x in args.scales.split(",") if x.strip()]
        except ValueError:
            p.error(f"--scales: {args.scales!r} is not a list such as 4 or 4,2")
        try:
            left = travel.light(REPO, scales)
        except travel.TravelError as exc:
            raise SystemExit(f"prepare.py: {exc}") from None
        log(
            f"light checkout: {len(left)} tracked files the GPU run does not need stay here (on disk, out of git's "
            "index until: python benchmarks/gpu/travel.py restore)"
        )
    tree = tree_bytes(REPO)
    margin = int(args.margin_mb * MIB)
    cap = int(args.part_mb * MIB) if args.part_mb else DEVICE_LIMIT - tree - margin
    log(
        f"working tree {tree / 1e6:.2f} MB; each call may carry {cap / 1e6:.2f} MB "
        f"(64 MiB - tree - {args.margin_mb} MiB margin)"
        if not args.part_mb
        else f"parts of {cap / 1e6:.2f} MB"
    )

    # wheels, downloaded once per Python version into the cache
    wheel_dir = cache / f"wheels-cp{args.python_version.replace('.', '')}"
    deps = download(DEPS, args.python_version, wheel_dir)
    extras = download(EXTRAS, args.python_version, wheel_dir)
    units = []
    for name, wheels in (("deps.tar.xz", deps), ("extras.tar.xz", extras)):
        dest = units_dir / f"{args.python_version}-{name}"
        key = dest.with_name(dest.name + ".key")
        want = json.dumps(sorted(w.name for w in wheels))
        if not (dest.is_file() and key.is_file() and key.read_text() == want):
            log(f"packing {len(wheels)} wheels into {name} (xz -9e, a minute or two)")
            pack_wheels(wheels, dest)
            key.write_text(want)
        units.append((name, dest))
        log(f"{name}: {dest.stat().st_size / 1e6:.2f} MB ({', '.join(w.name.split('-')[0] for w in wheels)})")

    # images
    tag = "smoke" if args.smoke else "full"
    val_paths = ucmerced_images(data, range(50, 60), args.smoke)
    train_paths = ucmerced_images(data, range(0, 50), args.smoke)
    whole_val = len(val_paths)
    if args.evaluate == "here":
        val_paths = spread(val_paths, RUN_VAL_IMAGES)
        tag += f"-{len(val_paths)}"
    val_unit = units_dir / f"{tag}-val.zip"
    val_info_file = val_unit.with_suffix(".json")
    if not (val_unit.is_file() and val_info_file.is_file()):
        log(f"val: {len(val_paths)} images as lossless WebP")
        val_info_file.write_text(json.dumps(pack_images(val_paths, data, val_unit, None)))
    val_info = {**json.loads(val_info_file.read_text()), "of": whole_val}
    units.append(("val.zip", val_unit))
    log(
        f"val.zip: {val_unit.stat().st_size / 1e6:.2f} MB ({val_info['images']} of the {whole_val} val images, "
        "lossless, pixel-identical)"
    )

    xsensor_info = None
    if args.evaluate == "there":
        xsensor_unit = units_dir / "xsensor.zip"
        xsensor_info = pack_xsensor(Path(args.geotiffs).resolve(), xsensor_unit)
        units.append(("xsensor.zip", xsensor_unit))
        log(
            f"xsensor.zip: {xsensor_info['bytes'] / 1e6:.2f} MB (cross-sensor val: {xsensor_info['val']['crops']} "
            f"crops of {len(xsensor_info['val']['sensors'])} sensors; train: {xsensor_info['train']['crops']} crops "
            f"of {len(xsensor_info['train']['sensors'])})"
        )

    fixed = sum(path.stat().st_size for _, path in units)
    room = args.max_parts * cap - fixed
    qualities = QUALITIES if args.train_quality == "auto" else [int(args.train_quality)]
    train_unit = train_info = None
    for q in qualities:
        unit = units_dir / f"{tag}-train-q{q}.zip"
        info_file = unit.with_suffix(".json")
        if not (unit.is_file() and info_file.is_file()):
            if args.train_quality == "auto" and not args.smoke:
                guess = estimate_train_bytes(train_paths, q)
                if guess > room * 1.02:
                    log(
                        f"train at WebP quality {q}: about {guess / 1e6:.1f} MB, more than the {room / 1e6:.1f} MB "
                        f"left in {args.max_parts} calls"
                    )
                    continue
            log(f"train: {len(train_paths)} images as WebP quality {q}")
            info_file.write_text(json.dumps(pack_images(train_paths, data, unit, q)))
        size = unit.stat().st_size
        if size <= room or args.train_quality != "auto":
            train_unit, train_info = unit, json.loads(info_file.read_text())
            break
        log(f"train at WebP quality {q}: {size / 1e6:.2f} MB, more than the {room / 1e6:.2f} MB left")
    if train_unit is None:
        raise SystemExit(
            f"the train images do not fit in {args.max_parts} calls even at WebP quality "
            f"{qualities[-1]}; allow more calls with --max-parts {args.max_parts + 1}"
        )
    units.append(("train.zip", train_unit))
    log(
        f"train.zip: {train_unit.stat().st_size / 1e6:.2f} MB ({train_info['images']} images, {train_info['codec']}, "
        f"{train_info['psnr_vs_original_db']:.2f} dB PSNR against the originals)"
    )

    # cut into parts (the units get their plain names inside the parts)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        named = []
        for name, path in units:
            link = Path(tmp) / name
            link.symlink_to(path)
            named.append(link)
        info = {
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
            "python_version": args.python_version,
            "smoke": args.smoke,
            "git": git_facts(),
            "tree_bytes": tree,
            "margin_bytes": margin,
            "device_limit_bytes": DEVICE_LIMIT,
            "wheels": {"deps": [w.name for w in deps], "extras": [w.name for w in extras]},
            "data": {
                "source": str(data),
                "layout": "ucmerced",
                "train": train_info,
                "val": val_info,
                **({"xsensor": {"source": str(Path(args.geotiffs).resolve()), **xsensor_info}} if xsensor_info else {}),
            },
            "evaluate": args.evaluate,
        }
        for old in out.glob("part*"):
            if old.is_dir():
                for f in old.iterdir():
                    f.unlink()
                old.rmdir()
        manifest = write_parts(named, out, cap, info)

    print()
    print(
        f"bundle: {out} ({sum(u['bytes'] for u in manifest['units']) / 1e6:.2f} MB in "
        f"{len(manifest['parts'])} parts; built in {time.perf_counter() - t0:.0f} s)"
    )
    for part in manifest["parts"]:
        total = tree + part["bytes"]
        print(
            f"  call with {part['name']}: carries {part['bytes'] / 1e6:6.2f} MB ({', '.join(part['units'])}); "
            f"with the tree {total / 1e6:.2f} MB = {total / DEVICE_LIMIT:.1%} of 64 MiB"
        )
    rel = out.relative_to(REPO) if out.is_relative_to(REPO) else out
    if len(manifest["parts"]) == 1:
        print(f"the device call: command 'bash benchmarks/gpu/run.sh', carry [\"{rel}/part1\"] (docs/gpu.md)")
    else:
        print(f"device calls, in order, each with command 'bash benchmarks/gpu/run.sh' and carry [\"{rel}/partN\"]")
    if args.travel == "light":
        print("after the calls: python benchmarks/gpu/travel.py restore (commits are refused until then)")
    if args.evaluate == "here":
        print(
            "then here, on the files the last call brings back: python benchmarks/gpu/finish.py FILES_AT "
            "(the whole val split and the cross-sensor set, bf16 on this CPU)"
        )


if __name__ == "__main__":
    main()
