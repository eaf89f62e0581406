"""The GPU bundle: what travels to a GPU machine that has PyTorch and nothing else of geosr, in parts that fit.

The device tool that lends a GPU copies the working tree plus a few ignored 'carry' paths, 64 MiB in all per call,
and the tree alone is about 46 MiB (the shipped model files). The bundle (wheels of geosr's other dependencies and
the UC Merced images) is larger than what is left, so ``prepare.py`` lays its units (``deps.tar.xz``,
``extras.tar.xz``, ``val.tar``, ``train.tar``) end to end and cuts them into parts of at most ``cap`` bytes:
``bundle/part1``, ``bundle/part2``, ... Each device call carries one part; ``run.py`` stages what it finds into a
folder that survives between calls on the same (warm) machine, and a unit is used once all its chunks are there.

Every part holds a copy of ``bundle.json`` (the whole plan: units, their chunks, sizes and SHA-256), so any call
knows what is staged, what is missing and which part to carry next. This module uses the standard library only:
it runs on the GPU machine before anything is installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

FORMAT = 1
MANIFEST = "bundle.json"
MIB = 2**20
DEVICE_LIMIT = 64 * MIB  # what one device call may bring: the working tree plus its carried paths


def sha256(path: Path, block: int = 4 * MIB) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


# --- what travels anyway: the working tree ------------------------------------------------------------------------


def tree_bytes(repo: Path) -> int:
    """Bytes of what the device tool copies besides the carried paths: tracked files present on disk, untracked
    files git does not ignore, and a ``shared/`` folder inside the checkout if there is one.

    Raises subprocess.CalledProcessError when ``repo`` is not a git checkout.
    """
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                         check=True, capture_output=True).stdout
    names = {n for n in out.decode().split("\0") if n}
    total = 0
    for name in names:
        p = repo / name
        if p.is_symlink() or p.is_file():
            total += p.lstat().st_size
    shared = repo / "shared"
    if shared.is_dir() and not shared.is_symlink():
        for p in shared.rglob("*"):
            rel = p.relative_to(repo).as_posix()
            if rel not in names and (p.is_file() or p.is_symlink()):
                total += p.lstat().st_size
    return total


# --- the plan: units cut into chunks, chunks grouped into parts -------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    file: str  # the chunk's file name inside its part folder
    part: int  # 1-based
    offset: int  # where it starts in its unit
    bytes: int
    sha256: str


def plan_chunks(units: list[tuple[str, int]], cap: int) -> list[list[tuple[int, int, int]]]:
    """Lay units of the given sizes end to end and cut them into parts of at most ``cap`` bytes.

    Returns, for each unit in order, its chunks as (part, offset, length); a unit that does not fit in what is left
    of a part continues in the next one. Raises ValueError for a cap below 1 byte.
    """
    if cap < 1:
        raise ValueError(f"a part of {cap} bytes holds nothing: the working tree leaves no room under the limit")
    plans: list[list[tuple[int, int, int]]] = []
    part, room = 1, cap
    for name, size in units:
        if size < 1:
            raise ValueError(f"{name} is empty")
        chunks, offset = [], 0
        while offset < size:
            if room == 0:
                part, room = part + 1, cap
            n = min(room, size - offset)
            chunks.append((part, offset, n))
            offset += n
            room -= n
        plans.append(chunks)
    return plans


def write_parts(unit_paths: list[Path], out: Path, cap: int, info: dict) -> dict:
    """Cut the unit files into ``out/partN/`` folders of at most ``cap`` bytes each (plus the manifest) and write
    ``bundle.json`` into every part and into ``out``. Returns the manifest. ``info`` is stored in it as is.
    """
    units = [(p.name, p.stat().st_size) for p in unit_paths]
    plans = plan_chunks(units, cap)
    n_parts = max(part for chunks in plans for part, _, _ in chunks)
    for k in range(1, n_parts + 1):
        d = out / f"part{k}"
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    manifest_units = []
    for path, chunks in zip(unit_paths, plans):
        entries = []
        with open(path, "rb") as src:
            for i, (part, offset, n) in enumerate(chunks):
                name = path.name if len(chunks) == 1 else f"{path.name}.{i:03d}"
                dst = out / f"part{part}" / name
                src.seek(offset)
                with open(dst, "wb") as f:
                    left = n
                    while left:
                        block = src.read(min(left, 4 * MIB))
                        f.write(block)
                        left -= len(block)
                entries.append(Chunk(name, part, offset, n, sha256(dst)).__dict__)
        manifest_units.append({"name": path.name, "bytes": path.stat().st_size, "sha256": sha256(path),
                               "chunks": entries})
    parts = []
    for k in range(1, n_parts + 1):
        files = [c for u in manifest_units for c in u["chunks"] if c["part"] == k]
        parts.append({"name": f"part{k}", "bytes": sum(c["bytes"] for c in files),
                      "units": sorted({u["name"] for u in manifest_units for c in u["chunks"] if c["part"] == k})})
    manifest = {"format": FORMAT, **info, "cap_bytes": cap, "units": manifest_units, "parts": parts}
    text = json.dumps(manifest, indent=2) + "\n"
    for k in range(1, n_parts + 1):
        (out / f"part{k}" / MANIFEST).write_text(text)
    (out / MANIFEST).write_text(text)
    return manifest


# --- on the GPU machine: staging the parts that arrived ---------------------------------------------------------------


class BundleError(Exception):
    """A carried part that does not belong to the staged bundle, or a chunk or unit whose checksum is wrong."""


@dataclass
class StageReport:
    staged_now: list[str]  # chunk files taken from the carried parts in this call
    complete: list[str]  # units whose every chunk is staged (assembled in stage/units/)
    missing: dict[str, list[int]]  # unit -> the parts that still have to be carried


def carried_parts(bundle_dir: Path) -> list[Path]:
    """The part folders present in ``bundle_dir`` (those the device tool carried in this call)."""
    if not bundle_dir.is_dir():
        return []
    return sorted((p for p in bundle_dir.iterdir() if p.is_dir() and p.name.startswith("part")
                   and (p / MANIFEST).is_file()), key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else 0)


def stage(bundle_dir: Path, stage_dir: Path) -> StageReport:
    """Take the chunks of the parts carried into ``bundle_dir`` into ``stage_dir`` (verified by SHA-256), assemble
    every unit whose chunks are all there into ``stage_dir/units/``, and say what is still missing.

    A part from another bundle than the one already staged (a new ``prepare``) starts the staging afresh.
    Raises BundleError for a chunk whose checksum is wrong, and when nothing is staged and no part was carried.
    """
    chunks_dir, units_dir = stage_dir / "chunks", stage_dir / "units"
    staged_manifest = stage_dir / MANIFEST
    manifest = json.loads(staged_manifest.read_text()) if staged_manifest.is_file() else None
    staged_now = []
    for part in carried_parts(bundle_dir):
        carried = json.loads((part / MANIFEST).read_text())
        if manifest is not None and carried["created"] != manifest["created"]:
            if carried["created"] < manifest["created"]:
                raise BundleError(f"{part}: from an older bundle ({carried['created']}) than the one staged in "
                                  f"{stage_dir} ({manifest['created']}); carry the parts of one prepare")
            shutil.rmtree(chunks_dir, ignore_errors=True)
            shutil.rmtree(units_dir, ignore_errors=True)
            manifest = None
        if manifest is None:
            manifest = carried
            stage_dir.mkdir(parents=True, exist_ok=True)
            staged_manifest.write_text(json.dumps(manifest, indent=2) + "\n")
        chunks_dir.mkdir(parents=True, exist_ok=True)
        for unit in manifest["units"]:
            for c in unit["chunks"]:
                src = part / c["file"]
                if c["part"] != int(part.name[4:]) or not src.is_file():
                    continue
                if (units_dir / unit["name"]).is_file() or (chunks_dir / c["file"]).is_file():
                    continue
                if src.stat().st_size != c["bytes"] or sha256(src) != c["sha256"]:
                    raise BundleError(f"{src}: size or SHA-256 differs from {part / MANIFEST}; run prepare again")
                tmp = chunks_dir / (c["file"] + ".tmp")
                shutil.copyfile(src, tmp)
                os.replace(tmp, chunks_dir / c["file"])
                staged_now.append(c["file"])
    if manifest is None:
        raise BundleError(f"no bundle part in {bundle_dir} and nothing staged in {stage_dir}: carry "
                          f"benchmarks/gpu/bundle/part1 (built by benchmarks/gpu/prepare.sh)")
    complete, missing = [], {}
    for unit in manifest["units"]:
        target = units_dir / unit["name"]
        if not target.is_file():
            absent = [c for c in unit["chunks"] if not (chunks_dir / c["file"]).is_file()]
            if absent:
                missing[unit["name"]] = sorted({c["part"] for c in absent})
                continue
            units_dir.mkdir(parents=True, exist_ok=True)
            tmp = units_dir / (unit["name"] + ".tmp")
            with open(tmp, "wb") as out:
                for c in unit["chunks"]:
                    with open(chunks_dir / c["file"], "rb") as f:
                        shutil.copyfileobj(f, out, 4 * MIB)
            if sha256(tmp) != unit["sha256"]:
                tmp.unlink()
                raise BundleError(f"{unit['name']}: the assembled unit's SHA-256 differs from the manifest")
            os.replace(tmp, target)
            for c in unit["chunks"]:
                (chunks_dir / c["file"]).unlink(missing_ok=True)
        complete.append(unit["name"])
    return StageReport(staged_now, complete, missing)


def staged_manifest(stage_dir: Path) -> dict | None:
    p = stage_dir / MANIFEST
    return json.loads(p.read_text()) if p.is_file() else None
