"""Start-up cost of geosr, each figure from a fresh Python process: source trees compared in interleaved rounds.

    python benchmarks/startup.py --tree before=/tmp/geosr-before --tree after=. [--rounds 5]
    python benchmarks/startup.py --profile [--tree before=/tmp/geosr-before --tree after=.] [--rounds 5]

Each measure starts a new process (``python benchmarks/startup.py --child ...``) that imports geosr from the named
tree only (the tree first on sys.path, and ``geosr.cli`` / ``geosr.training`` mapped to its ``cli/`` and
``training/`` folders as setup.cfg maps them; a module from anywhere else stops the run). The parent passes its
``time.time()`` at spawn, so "since start" figures include the interpreter's own start-up.

    import       ``import geosr.cli.main``: what every ``geosr`` command pays before it parses an option
    load NAME    ``load_generator(NAME)`` for each bundled model, after ``import geosr.checkpoint``
    first tile   process start to the first progress report of an upscale (its first batch of tiles done) of a
                 64 x 64 3-band uint8 GeoTIFF (a UC Merced-size tile) at x4, as ``geosr upscale`` runs it with its
                 defaults: ``import geosr.cli.main``, ``load_predictor()``, ``upscale_raster(..., progress=...)``
    cli          the whole ``geosr upscale IN -o OUT -q`` on that raster, process start to exit
    version      ``geosr --version``, process start to exit: a command that needs neither PyTorch nor a raster
    help         ``geosr --help``, process start to exit
    upscale-help ``geosr upscale --help``, process start to exit

Rounds alternate the trees (and which goes first) so that drift in the machine's load falls on all of them; medians
go to benchmarks/results/startup.json with every raw figure and the load average seen at each round. Timings are
noisy on a shared machine: compare medians of several rounds, never one run.

``--profile`` runs ``import geosr.cli.main`` from each tree under ``python -X importtime`` and reports the largest
imports by cumulative time, and for each heavy third-party package the geosr module whose import first pulls it in
(the candidates for a lazy import); then it times the commands that should not need PyTorch (``geosr --help``,
``geosr upscale --help``, ``geosr --version``) in interleaved rounds, with the heavy packages each one loaded. Both go
to benchmarks/results/startup_imports.json. (The child processes run this script, whose own imports are few: json,
pathlib and importlib's finders; they add the same few milliseconds to every tree.)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

# argparse, platform, statistics, subprocess and tempfile are imported where the parent uses them: the child processes,
# whose start-up is measured, import only what they need.

REPO = Path(__file__).resolve().parents[1]
BUNDLED = ("degan-x2", "degan-x4", "degan-x4-gan")
HEAVY = ("torch", "rasterio", "numpy", "shapely", "safetensors", "click", "tqdm", "affine", "pyproj", "scipy")
NO_TORCH = ("version", "help", "upscale-help")  # commands that need neither PyTorch nor a raster
ARGS = {"version": ["--version"], "help": ["--help"], "upscale-help": ["upscale", "--help"]}


# --- the child: one measure in a fresh process --------------------------------------------------------------------


def _use_tree(root: Path) -> None:
    """Import geosr, geosr.cli and geosr.training from ``root`` only, as setup.cfg's package_dir maps them."""
    import importlib.abc
    import importlib.util

    sys.path.insert(0, str(root))
    mapped = {"geosr.cli": root / "cli", "geosr.training": root / "training"}

    class TreeFinder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            folder = mapped.get(fullname)
            if folder is None:
                return None
            return importlib.util.spec_from_file_location(
                fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
            )

    sys.meta_path.insert(0, TreeFinder())  # before an editable install's finder, which maps them to its own tree


def _foreign_modules(root: Path) -> list[str]:
    """geosr modules loaded from outside ``root`` (must be none)."""
    out = []
    for name, module in list(sys.modules.items()):
        if name == "geosr" or name.startswith("geosr."):
            origin = getattr(module, "__file__", None)
            if origin and not Path(origin).resolve().is_relative_to(root):
                out.append(f"{name} from {origin}")
    return out


def child(kind: str, root: Path, t0: float, args: list[str]) -> dict:
    result = {"kind": kind, "ready_s": time.time() - t0}
    _use_tree(root)
    if kind == "import":
        t = time.perf_counter()
        import geosr.cli.main  # noqa: F401

        result["import_s"] = time.perf_counter() - t
    elif kind.startswith("load:"):
        t = time.perf_counter()
        from geosr.checkpoint import load_generator

        result["import_s"] = time.perf_counter() - t
        t = time.perf_counter()
        load_generator(kind.split(":", 1)[1])
        result["load_s"] = time.perf_counter() - t
    elif kind == "first-tile":
        src, dst = args
        import geosr.cli.main  # noqa: F401  (what `geosr upscale` imports before it runs)

        result["imported_s"] = time.time() - t0
        from geosr.inference import load_predictor, upscale_raster

        predictor = load_predictor()
        result["loaded_s"] = time.time() - t0
        result["precision"] = predictor.precision
        stamps: list[float] = []

        def progress(p) -> None:
            if not stamps and p.tiles_done > 0:
                stamps.append(time.time() - t0)

        upscale_raster(src, dst, predictor, progress=progress)
        result["first_tile_s"] = stamps[0]
        result["done_s"] = time.time() - t0
    elif kind == "cli" or kind in NO_TORCH:
        import geosr.cli.main

        sys.argv = ["geosr", *args]
        try:
            geosr.cli.main.main()
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise RuntimeError(f"geosr {' '.join(args)} exited with {exc.code}") from None
        result["done_s"] = time.time() - t0
    else:
        raise ValueError(f"unknown measure {kind!r}")
    result["loaded"] = [name for name in HEAVY if name in sys.modules]
    torch = sys.modules.get("torch")  # never imported here: a command that needs no torch is timed without it
    result["torch_threads"] = torch.get_num_threads() if torch is not None else None
    result["foreign"] = _foreign_modules(root)
    return result


# --- the parent: rounds over trees ----------------------------------------------------------------------------------


def run_child(kind: str, root: Path, args: list[str] = ()) -> dict:
    import subprocess

    script = str(Path(__file__).resolve())
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, script, "--child", kind, str(root), repr(t0), *args], capture_output=True, text=True
    )
    wall = time.time() - t0
    if proc.returncode:
        raise RuntimeError(f"{kind} in {root} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["foreign"]:
        raise RuntimeError(f"{kind} in {root} imported geosr from elsewhere: {result['foreign'][:3]}")
    result["process_s"] = wall
    return result


def make_raster(path: Path, size: int = 64) -> Path:
    """A size x size 3-band uint8 GeoTIFF with a UTM CRS and smooth, seeded content."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    bands = [127 + 60 * np.sin(xx / (5 + b)) * np.cos(yy / (7 + b)) + rng.normal(0, 8, (size, size)) for b in range(3)]
    data = np.clip(np.stack(bands), 0, 255).astype("uint8")
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=from_origin(500000, 4200000, 10, 10),
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def tree_info(root: Path) -> dict:
    import subprocess

    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True).stdout.strip()

    return {
        "root": str(root),
        "commit": git("rev-parse", "HEAD"),
        "subject": git("log", "-1", "--format=%s")[:100],
        "uncommitted_files": len(git("status", "--porcelain", "--untracked-files=no").splitlines()),
    }


def measures(models: tuple[str, ...]) -> list[str]:
    return ["import", *NO_TORCH, *(f"load:{m}" for m in models), "first-tile", "cli"]


def headline(kind: str, r: dict) -> dict[str, float]:
    """The figures of one child result worth a median."""
    if kind == "import":
        return {"import geosr.cli.main": r["import_s"], "process start to imported": r["ready_s"] + r["import_s"]}
    if kind.startswith("load:"):
        return {f"load_generator({kind[5:]})": r["load_s"]}
    if kind == "first-tile":
        return {
            "start to CLI imported": r["imported_s"],
            "start to model loaded": r["loaded_s"],
            "start to first tiles": r["first_tile_s"],
            "start to output written": r["done_s"],
        }
    if kind in NO_TORCH:
        return {f"geosr {' '.join(ARGS[kind])}, start to exit": r["process_s"]}
    return {"geosr upscale, start to exit": r["process_s"]}


def _rounds(trees: dict[str, Path], rounds: int, kinds: list[str], work: Path):
    """Every measure of every tree, ``rounds`` times: (raw figures, load average per round, torch threads)."""
    src = make_raster(work / "tile.tif") if {"first-tile", "cli"} & set(kinds) else None
    raw: list[dict] = []
    loads: list[list[float]] = []
    threads = None
    labels = list(trees)
    for rnd in range(rounds):
        order = labels[rnd % len(labels) :] + labels[: rnd % len(labels)]  # who goes first alternates
        load = os.getloadavg()
        loads.append([round(x, 2) for x in load])
        for kind in kinds:
            for label in order:
                args: list[str] = []
                dst = work / f"{label}-{rnd}-{kind}.tif"
                if kind == "first-tile":
                    args = [str(src), str(dst)]
                elif kind == "cli":
                    args = ["upscale", str(src), "-o", str(dst), "-q"]
                elif kind in NO_TORCH:
                    args = ARGS[kind]
                r = run_child(kind, trees[label], args)
                for name, value in headline(kind, r).items():
                    raw.append({"round": rnd, "tree": label, "measure": name, "seconds": round(value, 4)})
                if kind == "first-tile":
                    raw.append({"round": rnd, "tree": label, "measure": "precision", "value": r["precision"]})
                if kind in NO_TORCH:
                    raw.append(
                        {
                            "round": rnd,
                            "tree": label,
                            "measure": f"loaded by geosr {' '.join(ARGS[kind])}",
                            "value": r["loaded"],
                        }
                    )
                threads = r["torch_threads"] if r["torch_threads"] is not None else threads
        print(f"round {rnd + 1}/{rounds} done, load average {load[0]:.2f}", file=sys.stderr, flush=True)
    return raw, loads, threads


def _timed(trees: dict[str, Path], rounds: int, kinds: list[str]) -> dict:
    """The measures ``kinds`` of every tree in interleaved rounds: medians, spreads, paired differences, raw figures."""
    import platform
    import statistics
    import tempfile

    with tempfile.TemporaryDirectory(prefix="geosr-startup-") as work:
        raw, loads, threads = _rounds(trees, rounds, kinds, Path(work))
    labels = list(trees)
    names = list(dict.fromkeys(x["measure"] for x in raw if "seconds" in x))
    medians = {
        name: {
            label: statistics.median(x["seconds"] for x in raw if x["measure"] == name and x["tree"] == label)
            for label in labels
        }
        for name in names
    }
    spread = {
        name: {
            label: [min(v), max(v)]
            for label in labels
            for v in [[x["seconds"] for x in raw if x["measure"] == name and x["tree"] == label]]
        }
        for name in names
    }
    paired = {}
    if len(labels) == 2:  # the same round's figures side by side: drift in the machine's load cancels out
        first, last = labels
        by = {(x["measure"], x["tree"], x["round"]): x["seconds"] for x in raw if "seconds" in x}
        paired = {
            name: statistics.median(by[name, first, r] - by[name, last, r] for r in range(rounds)) for name in names
        }
    loaded = {}  # the heavy packages each command loaded, per tree (the same in every round, or each round's)
    for x in raw:
        if x["measure"].startswith("loaded by "):
            seen = loaded.setdefault(x["measure"][len("loaded by ") :], {}).setdefault(x["tree"], [])
            if x["value"] not in seen:
                seen.append(x["value"])
    return {
        "machine": {
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch_threads": threads,
            "load_average_at_rounds": loads,
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
        },
        "trees": {label: tree_info(root) for label, root in trees.items()},
        "rounds": rounds,
        "medians": medians,
        "min_max": spread,
        "median_paired_difference": paired,
        "heavy_packages_loaded": {
            cmd: {label: v[0] if len(v) == 1 else v for label, v in by_tree.items()} for cmd, by_tree in loaded.items()
        },
        "raw": raw,
    }


def compare(trees: dict[str, Path], rounds: int, models: tuple[str, ...], out: Path) -> dict:
    timed = _timed(trees, rounds, measures(models))
    labels = list(trees)
    report = {
        "what": "seconds, medians over rounds, each figure from a fresh process; median_paired_difference: the "
        "first tree's figure minus the second's in the same round; see benchmarks/startup.py",
        "raster": "64 x 64, 3 bands, uint8, x4 with the bundled default model (CLI defaults)",
        **timed,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print_table(report, labels)
    return report


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor()


def print_table(report: dict, labels: list[str]) -> None:
    width = max(len(n) for n in report["medians"]) + 2
    head = "".join(f"{label:>12}" for label in labels)
    pair = len(labels) == 2
    extra = f"{labels[0] + '/' + labels[1]:>14}{'paired diff':>14}" if pair else ""
    print(f"{'median seconds':<{width}}{head}{extra}")
    for name, by_tree in report["medians"].items():
        row = "".join(f"{by_tree[label]:>12.3f}" for label in labels)
        if pair:
            row += f"{by_tree[labels[0]] / by_tree[labels[1]]:>13.1f}x{report['median_paired_difference'][name]:>14.3f}"
        print(f"{name:<{width}}{row}")
    loads = ", ".join(f"{x[0]:.1f}" for x in report["machine"]["load_average_at_rounds"])
    print(
        f"{report['machine']['cores']} cores, {report['machine']['torch_threads']} torch threads; load average "
        f"(1 min) at each round: {loads}"
    )


# --- where the import time goes --------------------------------------------------------------------------------------


def profile(root: Path, top: int = 25) -> dict:
    """Parse ``-X importtime`` of ``import geosr.cli.main`` run in ``root``: the biggest imports and who pulls each
    heavy package in."""
    import subprocess

    cmd = [
        sys.executable,
        "-X",
        "importtime",
        str(Path(__file__).resolve()),
        "--child",
        "import",
        str(root),
        repr(time.time()),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    rows = []  # (depth, name, self_us, cumulative_us) in completion order
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        parts = line[len("import time:") :].split("|")
        self_us, cum_us, label = int(parts[0]), int(parts[1]), parts[2]
        depth = (len(label) - len(label.lstrip(" "))) // 2
        rows.append((depth, label.strip(), self_us, cum_us))
    # parent of a row: the next row (in completion order) of smaller depth
    parents: list[int | None] = [None] * len(rows)
    stack: list[int] = []
    for i in range(len(rows) - 1, -1, -1):
        depth = rows[i][0]
        while stack and rows[stack[-1]][0] >= depth:
            stack.pop()
        parents[i] = stack[-1] if stack else None
        stack.append(i)

    def geosr_chain(i: int) -> list[str]:
        chain = []
        j = parents[i]
        while j is not None:
            if rows[j][1] == "geosr" or rows[j][1].startswith("geosr."):
                chain.append(rows[j][1])
            j = parents[j]
        return chain

    total = sum(r[3] for r in rows if r[0] == 1 and (r[1] == "geosr" or r[1].startswith("geosr.")))
    pulled = {}
    for i, (_depth, name, _, cum) in enumerate(rows):
        if name in HEAVY and name not in pulled:
            chain = geosr_chain(i)
            pulled[name] = {"seconds": round(cum / 1e6, 3), "first_importer_chain": chain[::-1]}
    geosr_rows = sorted(
        ((name, cum, self_us) for _, name, self_us, cum in rows if name == "geosr" or name.startswith("geosr.")),
        key=lambda r: -r[1],
    )
    biggest = sorted(((name, cum) for _, name, _, cum in rows), key=lambda r: -r[1])[:top]
    return {
        "tree": tree_info(root),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "total_seconds": round(total / 1e6, 3),
        "heavy_packages": dict(sorted(pulled.items(), key=lambda kv: -kv[1]["seconds"])),
        "geosr_modules": [
            {"module": n, "cumulative_s": round(c / 1e6, 3), "self_s": round(s / 1e6, 4)} for n, c, s in geosr_rows
        ],
        "biggest": [{"module": n, "cumulative_s": round(c / 1e6, 3)} for n, c in biggest],
    }


def print_profile(p: dict) -> None:
    print(
        f"import geosr.cli.main in {p['tree']['root']} ({p['tree']['commit'][:7]}): {p['total_seconds']:.2f} s "
        f"(-X importtime, cumulative; load average {p['load_average'][0]:.1f})"
    )
    if not p["heavy_packages"]:
        print("no heavy package is imported")
    print("heavy packages, cumulative seconds, and the geosr import chain that first pulls each in:")
    for name, info in p["heavy_packages"].items():
        chain = " -> ".join(info["first_importer_chain"]) or "(not via geosr)"
        print(f"  {name:<12}{info['seconds']:>7.2f}  {chain}")
    print("geosr modules by cumulative import time (their own code: self):")
    for row in p["geosr_modules"][:20]:
        print(f"  {row['module']:<32}{row['cumulative_s']:>7.2f} s   self {row['self_s'] * 1e3:>6.1f} ms")


# --- command line ----------------------------------------------------------------------------------------------------


def profile_and_help(trees: dict[str, Path], rounds: int, out: Path) -> dict:
    """``--profile``: the import profile of each tree, and the commands that need no torch timed in rounds."""
    profiles = {}
    for label, root in trees.items():
        profiles[label] = profile(root)
        print(f"[{label}] ", end="")
        print_profile(profiles[label])
    timed = _timed(trees, rounds, list(NO_TORCH))
    report = {
        "what": "profiles: -X importtime of `import geosr.cli.main` per tree (total_seconds: the geosr imports, "
        "cumulative); help: `geosr --help`, `geosr upscale --help` and `geosr --version`, process start to "
        "exit, seconds, medians over interleaved rounds, each from a fresh process, with the heavy packages "
        "each one loaded; see benchmarks/startup.py",
        "command": "python benchmarks/startup.py --profile "
        + " ".join(f"--tree {k}={v}" for k, v in trees.items())
        + f" --rounds {rounds}",
        "profiles": profiles,
        "help": timed,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print_table(timed, list(trees))
    for cmd, by_tree in timed["heavy_packages_loaded"].items():
        print(f"loaded by {cmd}: " + "; ".join(f"{label}: {', '.join(v) or 'none'}" for label, v in by_tree.items()))
    return report


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, root, t0, *rest = sys.argv[2:]
        print(json.dumps(child(kind, Path(root).resolve(), float(t0), rest)))
        return
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--tree",
        action="append",
        metavar="LABEL=PATH",
        help="a source tree to measure (repeatable); default: this checkout as 'here'",
    )
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--models", default=",".join(BUNDLED), help="bundled models to time load_generator on")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "startup.json")
    p.add_argument(
        "--profile",
        action="store_true",
        help="where the import time goes, in each tree, and the times of --help and --version",
    )
    args = p.parse_args()
    trees = {}
    for spec in args.tree or [f"here={REPO}"]:
        label, sep, path = spec.partition("=")
        if not sep or not Path(path, "geosr", "__init__.py").is_file():
            p.error(f"--tree {spec!r}: expected LABEL=PATH to a geosr source tree")
        trees[label] = Path(path).resolve()
    if args.profile:
        out = args.out.with_name("startup_imports.json") if args.out.name == "startup.json" else args.out
        profile_and_help(trees, args.rounds, out)
        return
    compare(trees, args.rounds, tuple(m for m in args.models.split(",") if m), args.out)


if __name__ == "__main__":
    main()
