"""The one command on the GPU machine: stage the carried bundle part, install, measure, train, export, evaluate.

    bash benchmarks/gpu/run.sh [--out DIR] [--device cuda] [--budget-s 420] [--smoke] [--steps measure,train,evaluate]
                               [--scales 4,2 | --scale N] [--shares 0.6,0.4] [--extra-repeat N]

Run from the repository root of the tree the device tool copied, with one part of the bundle carried
(``benchmarks/gpu/bundle/partN``, built by prepare.sh). Each call:

1. **stages** the carried part into ``--stage`` (default /tmp/geosr-gpu; it survives between the calls of one warm
   machine) and assembles and unpacks every unit that is complete (bundle.py);
2. **installs**, once the wheels are there: a venv with --system-site-packages in the stage folder (PyTorch comes
   from the machine's Python, also when that Python is itself a venv, through a .pth file), the wheels with
   ``pip install --no-index --find-links``, and geosr from this call's working tree;
3. **measures** the GPU path (measure.py: CUDA against the CPU, output Mpx/s per tile and precision, peak GPU memory,
   a 10980 x 10980 uint16 raster at x4) within --measure-s;
4. **trains** each of ``--scales`` in turn (x4, then x2; ``--scale N``: that one alone) once the images are there:
   ``geosr train`` on the UC Merced train split at 256-px patches (``--patch``), batch 16, content loss only, from
   the shipped degan-x4 or degan-x2 (--init-from), bf16, lr 1e-4 with a 50-step warm-up and a cosine decay to 0.02
   of it at the last step, checkpointing, each in its own run folder (``STAGE/work/run-xN``). The training time the
   budget leaves is shared by ``--shares`` (60 % x4, 40 % x2), and each schedule's length is the steps its minutes
   hold at the rate measured over the run's first 20 steps (plan.py). A run cut short in an earlier call is resumed;
5. **exports** each trained model in fp16 right after its training, with where, how long and how it trained in its
   card. With a bundle of ``prepare.py --evaluate here`` (the default) that is all: the model comes back in $OUT and
   ``benchmarks/gpu/finish.py`` measures it on the development machine. With ``--evaluate there`` it also
   **evaluates** it on the whole val split (and the shipped model it started from on the same images, same GPU),
   puts the val metrics into its card, then both models on the cross-sensor val set (``STAGE/data/xsensor-val``:
   82 HR crops of 7 real sensors, Wald's protocol, bf16), whose mean PSNR/SSIM and gain over bicubic go into the
   summary.

``--extra-repeat N`` (GEOSR_GPU_EXTRA_REPEAT; default 0, off) adds the cross-sensor training crops
(``STAGE/data/xsensor-train``) to x4's training, each listed N times (``geosr train --extra-data``).

Steps done in an earlier call are not repeated (``--fresh`` forgets them and starts the training over). The budget
(7 minutes by default) counts this script's wall time over all calls. Every step logs to a file; a failing step
does not lose what the others did. ``--out`` (default $OUT, as the device tool sets it) receives at most 7 files,
none over 16 MiB (the tool brings back 8): summary.txt, summary.json, measure.json, logs.tar.gz (every log,
measure.txt, the manifests and, per scale in ``xN/``, the run's config.toml, log.csv, the evaluations of the trained
and the shipped model and the card) and each scale's model file; with one scale also train_log.csv and
eval_val.json, as before.

Standard library only: this runs before anything is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bundle  # noqa: E402
import plan  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def shipped(scale: int) -> Path:
    """The bundled model that training starts from and the trained model is compared with."""
    return REPO / "geosr" / "weights" / f"degan-x{scale}.safetensors"


def model_name(scale: int) -> str:
    return f"degan-x{scale}-gpu.safetensors"


SOURCE = ["geosr", "cli", "training", "setup.cfg", "pyproject.toml", "README.md", "LICENSE"]
STEPS = ("measure", "train", "evaluate")


class Run:
    """The state of the staged machine across calls (stage/state.json) and this call's clock, logs and output."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.monotonic()
        self.stage = Path(args.stage).resolve()
        self.out = Path(args.out).resolve()
        self.logs = self.stage / "logs"
        self.work = self.stage / "work"
        self.venv = self.stage / "venv"
        self.data = self.stage / "data" / "ucmerced"
        self.xsensor_val = self.stage / "data" / "xsensor-val"
        self.xsensor_train = self.stage / "data" / "xsensor-train"
        for d in (self.stage, self.logs, self.work, self.out):
            d.mkdir(parents=True, exist_ok=True)
        self.state_file = self.stage / "state.json"
        fresh = {"calls": 0, "spent_s": 0.0, "unpacked": [], "steps": {}, "plans": {}}
        self.state = {**fresh, **json.loads(self.state_file.read_text())} if self.state_file.is_file() else fresh
        if args.fresh:
            self.state.update(spent_s=0.0, steps={}, plans={})
        self.timing = plan.Timing.for_run(smoke=args.smoke, after_s=args.after_train_s)
        self.state["calls"] += 1
        self.call = self.state["calls"]
        self.spent_before = self.state["spent_s"]
        self.results: dict[str, dict] = {}  # this call's step results, in order

    # time
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        """Seconds of the budget left, earlier calls counted."""
        return self.args.budget_s - self.spent_before - self.elapsed()

    # state and output
    def save(self) -> None:
        self.state["spent_s"] = self.spent_before + self.elapsed()
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2) + "\n")
        tmp.replace(self.state_file)
        self.write_out()

    def record(self, step: str, status: str, seconds: float, **facts) -> dict:
        result = {"status": status, "seconds": round(seconds, 1), "call": self.call, **facts}
        self.results[step] = result
        if status in ("ok", "failed"):
            self.state["steps"][step] = result
        self.say(f"{step}: {status} ({seconds:.0f} s)" + (f" - {facts['note']}" if facts.get("note") else ""))
        self.save()
        return result

    def done(self, step: str) -> bool:
        return self.state["steps"].get(step, {}).get("status") == "ok"

    def say(self, msg: str) -> None:
        line = f"[run {self.elapsed():6.1f}s] {msg}"
        print(line, flush=True)
        with open(self.logs / "run.log", "a") as f:
            f.write(line + "\n")

    def write_out(self) -> None:
        """$OUT: the summary, the small result files, each scale's model and every log in one archive (at most 7
        files for two scales; one scale also gets its train_log.csv and eval_val.json, as before)."""
        summary = self.summary()
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (self.out / "summary.txt").write_text("\n".join(summary_lines(summary)) + "\n")
        scales = self.args.scales
        copies = [(self.work / "measure" / "measure.json", "measure.json")]
        copies += [(self.work / model_name(s), model_name(s)) for s in scales]
        if len(scales) == 1:
            copies += [
                (self.run_dir(scales[0]) / "log.csv", "train_log.csv"),
                (self.work / f"eval_val_x{scales[0]}.json", "eval_val.json"),
            ]
        for src, name in copies:
            if src.is_file():
                shutil.copyfile(src, self.out / name)
        members = [
            (self.work / "measure" / "measure.txt", "measure.txt"),
            (self.stage / bundle.MANIFEST, bundle.MANIFEST),
            (self.state_file, self.state_file.name),
        ]
        for s in scales:
            members += [
                (self.run_dir(s) / "config.toml", f"x{s}/config.toml"),
                (self.run_dir(s) / "log.csv", f"x{s}/train_log.csv"),
                (self.work / f"eval_val_x{s}.json", f"x{s}/eval_val.json"),
                (self.work / f"eval_shipped_x{s}.json", f"x{s}/eval_shipped.json"),
                (self.work / f"card_x{s}.txt", f"x{s}/card.txt"),
                (self.work / f"eval_xsensor_x{s}.json", f"x{s}/eval_xsensor.json"),
                (self.work / f"eval_xsensor_shipped_x{s}.json", f"x{s}/eval_xsensor_shipped.json"),
            ]
        tmp = self.out / "logs.tar.gz.tmp"
        with tarfile.open(tmp, "w:gz") as tar:
            for p in sorted(self.logs.glob("*.log")):
                tar.add(p, arcname=f"logs/{p.name}")
            for p, name in members:
                if p.is_file():
                    tar.add(p, arcname=name)
        tmp.replace(self.out / "logs.tar.gz")

    def run_dir(self, scale: int) -> Path:
        """The training run folder of one scale (resumed by a later call while the machine is warm)."""
        return self.work / f"run-x{scale}"

    def summary(self) -> dict:
        manifest = bundle.staged_manifest(self.stage) or {}
        return {
            "call": self.call,
            "device": self.args.device,
            "smoke": self.args.smoke,
            "budget_s": self.args.budget_s,
            "spent_s": round(self.spent_before + self.elapsed(), 1),
            "scales": self.args.scales,
            "shares": self.args.shares,
            "this_call": self.results,
            "steps": self.state["steps"],
            "plans": self.state["plans"],
            "bundle": {
                "created": manifest.get("created"),
                "parts": len(manifest.get("parts", [])),
                "data": manifest.get("data", {}),
                "git": manifest.get("git"),
            },
            "missing_parts": self.state.get("missing_parts", []),
        }

    # subprocesses
    def env(self) -> dict:
        env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_DISABLE="1")
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    def run(
        self, name: str, cmd: list[str], timeout: float, tail: int = 12, watch: Callable[[], bool] | None = None
    ) -> int:
        """Run ``cmd`` from the repository root with its output appended to logs/<name>.log; on timeout SIGTERM its
        process group (geosr train then saves its state), SIGKILL 30 s later. ``watch``, when given, is called about
        four times a second while the command runs: once it returns True, the command's own process (not its
        workers) gets a SIGTERM and is waited for. Returns the exit status (124 for a timeout)."""
        log = self.logs / f"{name}.log"
        deadline = time.monotonic() + max(1.0, timeout)
        offset = log.stat().st_size if log.is_file() else 0
        with open(log, "a") as f:
            f.write(f"\n[call {self.call}] $ {shlex.join(cmd)}\n")
            f.flush()
            p = subprocess.Popen(
                cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=self.env(), start_new_session=True
            )
            rc = None
            while rc is None:
                try:
                    rc = p.wait(timeout=max(0.0, min(deadline - time.monotonic(), 0.25 if watch else 1e9)))
                except subprocess.TimeoutExpired:
                    if time.monotonic() < deadline:
                        if watch is not None and watch():
                            p.send_signal(signal.SIGTERM)
                            watch = None
                        continue
                    os.killpg(p.pid, signal.SIGTERM)
                    try:
                        p.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        os.killpg(p.pid, signal.SIGKILL)
                        p.wait()
                    rc = 124
                    f.write(f"[run.py] stopped after {timeout:.0f} s\n")
        with open(log, "rb") as f:  # what this command wrote
            f.seek(offset)
            lines = f.read().decode(errors="replace").splitlines()[-tail:] if tail else []
        for line in lines:
            print(f"    {name}| {line}", flush=True)
        return rc

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    @property
    def geosr(self) -> list[str]:
        """The installed command (not ``python -m``, which from the repository root would import the tree's
        geosr/ folder, where cli/ and training/ are not mapped in)."""
        return [str(self.venv / "bin" / "geosr")]


# --- 1. stage ---------------------------------------------------------------------------------------------------------


def step_stage(r: Run) -> bool:
    t = time.monotonic()
    try:
        report = bundle.stage(Path(r.args.bundle), r.stage)
    except (bundle.BundleError, OSError, ValueError) as exc:
        r.record("stage", "failed", time.monotonic() - t, note=str(exc))
        return False
    for name in report.complete:
        if name in r.state["unpacked"]:
            continue
        unit = r.stage / "units" / name
        if name.endswith(".tar.xz"):
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            with tarfile.open(unit) as tar:
                tar.extractall(r.stage / "wheels", **safe)
        elif name.endswith(".zip"):
            with zipfile.ZipFile(unit) as zf:
                zf.extractall(r.stage / "data")
        r.state["unpacked"].append(name)
    missing = sorted({p for parts in report.missing.values() for p in parts})
    r.state["missing_parts"] = [f"part{p}" for p in missing]
    note = f"took {len(report.staged_now)} chunks; complete: {', '.join(report.complete) or 'nothing'}"
    if missing:
        note += f"; still to carry: {', '.join(f'part{p}' for p in missing)}"
    r.record("stage", "ok", time.monotonic() - t, note=note, complete=report.complete, missing=report.missing)
    return True


# --- 2. install -------------------------------------------------------------------------------------------------------


def source_hash() -> str:
    h = hashlib.sha256()
    for top in SOURCE:
        p = REPO / top
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        for f in files:
            if f.is_file() and "__pycache__" not in f.parts:
                h.update(f.relative_to(REPO).as_posix().encode())
                h.update(f.read_bytes())
    return h.hexdigest()


VERIFY = """
import json, sys, warnings
import numpy, torch, rasterio, shapely, geosr
from geosr.device import describe_hardware, resolve_device
warnings.simplefilter("ignore")
with rasterio.open(sys.argv[1]) as src:
    src.read(1, window=((0, 8), (0, 8)))
dev = resolve_device(sys.argv[2])
print(json.dumps({"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
                  "numpy": numpy.__version__, "rasterio": rasterio.__version__, "gdal": rasterio.__gdal_version__,
                  "shapely": shapely.__version__, "geosr": geosr.__version__, "geosr_at": geosr.__file__,
                  "hardware": describe_hardware(dev),
                  "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None}))
"""


def step_install(r: Run) -> bool:
    if "deps.tar.xz" not in r.state["unpacked"]:
        r.record("install", "waiting", 0, note="the wheels (deps.tar.xz) are not all staged yet")
        return False
    t = time.monotonic()
    digest = source_hash()
    if r.done("install") and r.state["steps"]["install"].get("source") == digest and Path(r.python).exists():
        r.results["install"] = r.state["steps"]["install"]
        r.say("install: done in an earlier call, same source")
        return True
    base = r.args.python
    wheels = str(r.stage / "wheels")
    want = (bundle.staged_manifest(r.stage) or {}).get("python_version")
    probe = subprocess.run(
        [base, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True
    )
    have = probe.stdout.strip() or f"not runnable ({probe.stderr.strip()[-200:]})"
    if want and have != want:
        r.record(
            "install",
            "failed",
            time.monotonic() - t,
            note=f"the bundle's wheels are for CPython {want}, "
            f"{base} is {have}: build the bundle with prepare.sh --python-version {have}",
        )
        return False
    if not Path(r.python).exists():
        rc = r.run("install", [base, "-m", "venv", "--system-site-packages", "--without-pip", str(r.venv)], 120)
        if rc:
            r.record("install", "failed", time.monotonic() - t, note=f"{base} -m venv failed (rc {rc})")
            return False
    # The machine's Python may itself be a venv (PyTorch images often are): its site-packages are not the "system"
    # ones of a venv made from it, so they are added by a .pth file.
    probe = subprocess.run(
        [base, "-c", "import json, site; print(json.dumps(site.getsitepackages()))"], capture_output=True, text=True
    )
    site_dirs = json.loads(probe.stdout) if probe.returncode == 0 else []
    venv_site = subprocess.run(
        [r.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(venv_site, "_geosr_gpu_base.pth").write_text("".join(f"{d}\n" for d in site_dirs))
    pip = [
        r.python,
        "-m",
        "pip",
        "--disable-pip-version-check",
        "install",
        "--no-index",
        "--find-links",
        wheels,
        "--no-warn-script-location",
    ]
    have_setuptools = (
        subprocess.run(
            [r.python, "-c", "import setuptools, sys; sys.exit(int(setuptools.__version__.split('.')[0]) < 64)"],
            capture_output=True,
        ).returncode
        == 0
    )
    if not have_setuptools:
        rc = r.run("install", pip + ["setuptools>=64"], 300)
        if rc:
            return install_failed(r, t, "setuptools>=64 (to build geosr) is neither installed nor staged")
    src = r.stage / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir()
    for top in SOURCE:
        p = REPO / top
        if p.is_dir():
            shutil.copytree(p, src / top, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif p.is_file():
            shutil.copyfile(p, src / top)
    # pip always reinstalls a local folder: geosr from this call's tree, and the dependencies the machine lacks
    rc = r.run("install", pip + ["--no-build-isolation", str(src)], 300)
    if rc:
        return install_failed(r, t, f"pip install failed (rc {rc})")
    verify = subprocess.run(
        [r.python, "-c", VERIFY, str(REPO / "examples" / "data" / "RGB.byte.tif"), r.args.device],
        capture_output=True,
        text=True,
        cwd="/",
        env=r.env(),
    )
    with open(r.logs / "install.log", "a") as f:
        f.write(verify.stdout + verify.stderr)
    if verify.returncode:
        tail = (verify.stderr.strip().splitlines() or ["?"])[-1]
        return install_failed(r, t, f"the installed geosr does not import or see {r.args.device}: {tail}")
    facts = json.loads(verify.stdout.strip().splitlines()[-1])
    if shutil.which("nvidia-smi"):
        r.run("nvidia-smi", ["nvidia-smi"], 60, tail=0)
    r.record(
        "install",
        "ok",
        time.monotonic() - t,
        note=f"{facts['hardware']}; torch {facts['torch']}, rasterio {facts['rasterio']} (GDAL {facts['gdal']})",
        source=digest,
        versions=facts,
    )
    return True


def install_failed(r: Run, t: float, note: str) -> bool:
    if "extras.tar.xz" not in r.state["unpacked"]:
        r.record(
            "install",
            "waiting",
            time.monotonic() - t,
            note=f"{note}; retried once extras.tar.xz is staged (see logs/install.log)",
        )
    else:
        r.record("install", "failed", time.monotonic() - t, note=f"{note} (see logs/install.log)")
    return False


# --- 3. measure -------------------------------------------------------------------------------------------------------


def step_measure(r: Run) -> None:
    if "measure" not in r.args.steps or r.done("measure"):
        return
    budget = min(r.args.measure_s, r.left() - 10)
    if budget < 20:
        r.record("measure", "skipped", 0, note=f"{r.left():.0f} s of the budget left")
        return
    t = time.monotonic()
    cmd = [
        r.python,
        "benchmarks/gpu/measure.py",
        "--device",
        r.args.device,
        "--out",
        str(r.work / "measure"),
        "--budget-s",
        f"{budget:.0f}",
    ] + (["--smoke"] if r.args.smoke else [])
    rc = r.run("measure", cmd, budget + 180, tail=25)
    result = r.work / "measure" / "measure.json"
    ok = rc == 0 and result.is_file()
    facts = measure_facts(json.loads(result.read_text())) if ok else {}
    note = f"rc {rc} (see logs/measure.log)"
    if ok:
        dev = r.args.device
        checked = {True: f"{dev} vs CPU passed", False: f"{dev} vs CPU FAILED"}.get(
            facts.get("consistency_passed"), f"{dev} vs CPU not measured"
        )
        note = f"{checked}; {len(facts['speed'])} speed cases" + (
            f"; {facts['big']['size']}^2 x4 {facts['big']['seconds']:.0f} s"
            if facts.get("big", {}).get("seconds")
            else ""
        )
    r.record("measure", "ok" if ok else "failed", time.monotonic() - t, note=note, **facts)


def measure_facts(m: dict) -> dict:
    facts = {"hardware": m.get("hardware")}
    c = m.get("consistency", {})
    if "cases" in c:
        facts["consistency_passed"] = c["passed"]
        facts["consistency"] = {
            k: {"mean": round(v["mean"], 4), "p999": v["p999"], "max": v["max"]} for k, v in c["cases"].items()
        }
    rows = m.get("speed", {}).get("rows", [])
    facts["speed"] = [
        {
            k: (round(v, 3) if isinstance(v, float) else v)
            for k, v in row.items()
            if k
            in (
                "tile",
                "batch",
                "precision",
                "model_only_mpx_s",
                "end_to_end_mpx_s",
                "end_to_end_over_model_only",
                "peak_gpu_memory_gib",
            )
        }
        for row in rows
    ]
    big = m.get("big", {})
    if "label" in big:
        facts["big"] = {"size": big["size"], "seconds": big.get("seconds"), "label": big["label"]}
    return facts


# --- 4. train ---------------------------------------------------------------------------------------------------------


def extra_repeat(r: Run, scale: int) -> int:
    """Times each cross-sensor training crop is listed in ``scale``'s training: --extra-repeat at x4, else 0."""
    return max(0, getattr(r.args, "extra_repeat", 0) or 0) if scale == 4 else 0


def data_units(r: Run, scale: int) -> set[str]:
    """The units ``scale``'s training needs staged (the cross-sensor crops only when they are trained on)."""
    return {"train.zip", "val.zip"} | ({"xsensor.zip"} if extra_repeat(r, scale) else set())


def evaluate_there(r: Run) -> bool:
    """Whether the bundle carries the whole val split and the cross-sensor sets (prepare.py --evaluate there) and the
    models are measured on this machine; else (--evaluate here) each model is exported with its card's notes and
    measured where the files come back (benchmarks/gpu/finish.py), and this machine's time goes to training."""
    return (bundle.staged_manifest(r.stage) or {}).get("evaluate", "there") == "there"


def bundle_units(r: Run) -> set[str]:
    return {u["name"] for u in (bundle.staged_manifest(r.stage) or {}).get("units", [])}


def data_ready(r: Run, scale: int) -> bool:
    return data_units(r, scale) <= set(r.state["unpacked"])


def patch_and_batch(r: Run) -> tuple[int, int]:
    """HR patch side and patches per step."""
    return (64, 2) if r.args.smoke else (r.args.patch, 16)


def step_train(r: Run, scale: int, pending: list[int]) -> None:
    """Train ``scale`` for its share of what the budget leaves; ``pending``: the scales still to train, this first."""
    key = f"train_x{scale}"
    if "train" not in r.args.steps or r.done(key):
        return
    carried = bundle_units(r)
    missing = data_units(r, scale) - carried if carried else set()
    if missing:
        r.record(
            key,
            "failed",
            0,
            note=f"the bundle has no {', '.join(sorted(missing))} (GEOSR_GPU_EXTRA_REPEAT trains on the cross-sensor "
            "crops: build the bundle with prepare.sh --evaluate there)",
        )
        return
    if not data_ready(r, scale):
        r.record(
            key, "waiting", 0, note=f"the images ({', '.join(sorted(data_units(r, scale)))}) are not all staged yet"
        )
        return
    timing = r.timing
    split = plan.split_training(
        r.left(), pending, r.args.shares, timing, "evaluate" in r.args.steps and evaluate_there(r)
    )
    seconds = split.get(scale, 0.0)
    if seconds < timing.min_train_s:
        r.record(
            key,
            "skipped",
            0,
            note=f"{r.left():.0f} s of the budget left: {seconds:.0f} s of training for "
            f"x{scale}, under the {timing.min_train_s:.0f} s a scale needs",
        )
        return
    r.say(
        f"{key}: {seconds:.0f} s of training ("
        + ", ".join(f"x{s} {v:.0f} s" for s, v in split.items())
        + f" of {r.left():.0f} s left)"
    )
    t = time.monotonic()
    run_dir = r.run_dir(scale)
    if r.args.fresh or not (run_dir / "checkpoints" / "state.pt").is_file():
        shutil.rmtree(run_dir, ignore_errors=True)
        r.state["plans"].pop(str(scale), None)
    rc = train_run(r, scale, run_dir, seconds)
    facts = train_facts(run_dir)
    patch, batch = patch_and_batch(r)
    manifest = bundle.staged_manifest(r.stage) or {}
    hardware = r.state["steps"].get("install", {}).get("versions", {}).get("hardware", r.args.device)
    facts.update(
        scale=scale,
        hardware=hardware,
        train_s=round(seconds),
        plan=r.state["plans"].get(str(scale)),
        patch_size=patch,
        batch_size=batch,
        lr=r.args.lr,
        lr_min_factor=r.args.lr_min_factor,
        warmup_steps=r.args.warmup_steps,
        data=manifest.get("data", {}).get("train", {}),
        extra_repeat=extra_repeat(r, scale),
        extra_crops=manifest.get("data", {}).get("xsensor", {}).get("train", {}).get("crops")
        if extra_repeat(r, scale)
        else None,
        date=time.strftime("%Y-%m-%d", time.gmtime()),
    )
    ok = rc in (0, 130) and (run_dir / "last.safetensors").is_file()
    r.record(
        key,
        "ok" if ok else "failed",
        time.monotonic() - t,
        note=(f"{facts.get('steps', 0)} steps" if ok else f"rc {rc} (see logs/{key}.log)"),
        **facts,
    )


def train_run(r: Run, scale: int, run_dir: Path, seconds: float) -> int:
    """geosr train for ``seconds`` of training: a new run or the one in ``run_dir``, its schedule as long as the
    rate allows (a recorded rate first; the measured one after a restart if they differ). Returns the exit status."""
    timing, launch = r.timing, time.monotonic()
    rows = plan.log_rows(run_dir / "log.csv")
    start, before = (rows[-1].step, rows[-1].elapsed_s) if rows else (0, 0.0)
    p = r.state["plans"].get(str(scale))
    if p is None:  # the length from the recorded rate, until the run's own is measured
        rate = plan.RECORDED_STEPS_PER_S[scale]
        p = {
            "max_steps": plan.planned_steps(start, rate, seconds - timing.first_steps_s, timing),
            "recorded_steps_per_s": rate,
            "measured_steps_per_s": None,
            "restarts": 0,
        }
        r.state["plans"][str(scale)] = p
        r.save()
    resume = (run_dir / "checkpoints" / "state.pt").is_file()
    watch = None
    if not p["measured_steps_per_s"]:
        watch = RateWatch(
            run_dir / "log.csv", start, before, seconds, p["max_steps"], patch_and_batch(r)[1], timing, launch
        )
    name = f"train_x{scale}"
    rc = r.run(
        name,
        train_command(r, scale, run_dir, p["max_steps"], seconds, resume=resume),
        seconds + timing.setup_s + 120,
        tail=15,
        watch=watch,
    )
    if watch is None or watch.probe is None:
        return rc
    p.update(measured_steps_per_s=round(watch.probe.steps_per_s, 3))
    if watch.stopped and rc in (0, 130):
        left = seconds - (time.monotonic() - launch)
        stop = max([row.step for row in plan.log_rows(run_dir / "log.csv")] + [watch.probe.step])
        was = p["max_steps"]
        p.update(
            max_steps=plan.planned_steps(stop, watch.probe.steps_per_s, left - watch.probe.first_steps_s, timing),
            restarts=p["restarts"] + 1,
        )
        r.say(
            f"{name}: {watch.probe.steps_per_s:.1f} steps/s measured; the schedule set for {was} steps is "
            f"resumed at step {stop} for {p['max_steps']}"
        )
        r.save()
        rc = r.run(
            name,
            train_command(r, scale, run_dir, p["max_steps"], left, resume=True),
            left + timing.setup_s + 120,
            tail=15,
        )
    r.save()
    return rc


class RateWatch:
    """Polled while geosr train runs (launched at ``launch``, time.monotonic, for ``seconds`` of training): once its
    first steps are logged (plan.probe), whether to restart it for another length (plan.restart). ``probe`` and
    ``stopped`` say what it found; True asks for the run to be stopped."""

    def __init__(
        self,
        log: Path,
        start: int,
        before_s: float,
        seconds: float,
        planned: int,
        batch: int,
        timing: plan.Timing,
        launch: float,
    ) -> None:
        self.log, self.start, self.before_s, self.seconds = log, start, before_s, seconds
        self.planned, self.batch, self.timing, self.launch = planned, batch, timing, launch
        self.probe: plan.Probe | None = None
        self.stopped = False

    def __call__(self) -> bool:
        if self.probe is not None:
            return False
        self.probe = plan.probe(plan.log_rows(self.log), self.start, self.before_s, self.batch, self.timing.probe_steps)
        if self.probe is None:
            return False
        found, timing = self.probe, self.timing
        kept = plan.planned_steps(found.step, found.steps_per_s, self.seconds - found.clock_s, timing)
        left = self.seconds - (time.monotonic() - self.launch) - found.first_steps_s  # as train_run resumes it
        restarted = plan.planned_steps(found.step, found.steps_per_s, left, timing)
        self.stopped = plan.restart(self.planned, kept, restarted, timing)
        return self.stopped


def train_command(r: Run, scale: int, run_dir: Path, max_steps: int, seconds: float, *, resume: bool) -> list[str]:
    """geosr train for at most ``seconds`` of training, its cosine schedule ending at step ``max_steps``."""
    limits = [
        "--max-steps",
        str(max_steps),
        "--max-minutes",
        f"{max(seconds, 6.0) / 60:.2f}",
        "--val-every-steps",
        str(plan.val_every(max_steps)),
    ]
    if resume:
        return r.geosr + ["train", "--resume", str(run_dir)] + limits
    patch, batch = patch_and_batch(r)
    cmd = r.geosr + [
        "train",
        "--data",
        str(r.data),
        "--out",
        str(run_dir),
        "--scale",
        str(scale),
        "--global-skip",
        "--res-scale",
        "0.1",
        "--no-diffusion",
        "--mse-weight",
        "1",
        "--perceptual-weight",
        "0",
        "--adversarial-weight",
        "0",
        "--feature-matching-weight",
        "0",
        "--init-from",
        str(shipped(scale)),
        "--lr-g",
        str(r.args.lr),
        "--lr-schedule",
        "cosine",
        "--lr-min-factor",
        str(r.args.lr_min_factor),
        "--lr-warmup-steps",
        str(r.args.warmup_steps),
        "--lr-decay-epochs",
        "",
        "--epochs",
        "1000",
        "--val-every",
        "0",
        "--device",
        r.args.device,
        "--precision",
        "bf16",
        "--name",
        f"degan-x{scale}",
        "--seed",
        "0",
        "--patch-size",
        str(patch),
        "--batch-size",
        str(batch),
        "--log-every",
        str(r.timing.log_every),
    ]
    if r.args.smoke:
        cmd += ["--val-images", "2", "--checkpoint-every-steps", "1", "--num-workers", "0"]
    else:
        cmd += ["--val-images", "21", "--checkpoint-every-steps", "200"]
    repeat = extra_repeat(r, scale)
    if repeat > 0:  # a resumed run keeps them: config.toml holds extra_data and extra_repeat
        cmd += ["--extra-data", str(r.xsensor_train), "--extra-repeat", str(repeat)]
    return cmd + limits


def train_facts(run_dir: Path) -> dict:
    """Steps, patches per second and the validations of a run folder's log.csv."""
    log = run_dir / "log.csv"
    if not log.is_file():
        return {}
    import csv

    rows = list(csv.DictReader(log.open()))
    train = [x for x in rows if x.get("kind") == "train"]
    val = [x for x in rows if x.get("kind") == "val"]
    rates = sorted(float(x["patches_per_s"]) for x in train[len(train) // 4 :] if x.get("patches_per_s"))
    facts = {
        "steps": int(float(train[-1]["step"])) if train else 0,
        "elapsed_s": float(train[-1]["elapsed_s"]) if train else 0.0,
        "patches_per_s_median": rates[len(rates) // 2] if rates else None,
        "val": [
            {
                "step": int(float(x["step"])),
                "psnr": float(x["val_psnr"]),
                "ssim": float(x["val_ssim"]),
                "psnr_bicubic": float(x["val_psnr_bicubic"]),
            }
            for x in val
        ],
    }
    return facts


# --- 5. export and evaluate -------------------------------------------------------------------------------------------


def step_evaluate(r: Run, scale: int) -> None:
    """Export the trained model (fp16, its card's notes) and, when the bundle carries the data (--evaluate there),
    measure it and the shipped model on the whole val split and the cross-sensor set and put the metrics in its
    card; with --evaluate here the export alone, the measurement is finish.py's on the development machine."""
    key = f"evaluate_x{scale}"
    there = "evaluate" in r.args.steps and evaluate_there(r)
    if r.done(key) or not r.done(f"train_x{scale}") or not (there or "train" in r.args.steps):
        return
    t = time.monotonic()
    run_dir = r.run_dir(scale)
    source = run_dir / "best.safetensors"
    if not source.is_file():
        source = run_dir / "last.safetensors"
    model = r.work / model_name(scale)
    geosr = r.geosr
    export, evaluate_log = f"export_x{scale}", f"evaluate_x{scale}"
    notes = card_notes(r.state["steps"][f"train_x{scale}"])
    rc = r.run(
        export,
        geosr
        + ["export", str(source), "-o", str(model), "--name", f"degan-x{scale}", "--dtype", "fp16", "--overwrite"]
        + [a for n in notes for a in ("--note", n)],
        300,
    )
    if rc:
        r.record(key, "failed", time.monotonic() - t, note=f"export rc {rc} (see logs/{export}.log)")
        return
    if not there:
        r.run(f"card_x{scale}", geosr + ["info", str(model)], 120, tail=0)
        shutil.copyfile(r.logs / f"card_x{scale}.log", r.work / f"card_x{scale}.txt")
        r.record(
            key,
            "ok",
            time.monotonic() - t,
            note=f"exported ({model.name}); measured where the files come back: python benchmarks/gpu/finish.py",
            scale=scale,
            where="here",
        )
        return
    limit = ["--max-images", "2"] if r.args.smoke else []
    evaluate = [
        "evaluate",
        "-d",
        str(r.data),
        "--split",
        "val",
        "--scale",
        str(scale),
        "--device",
        r.args.device,
        "--precision",
        "fp32",
    ] + limit
    report = r.work / f"eval_val_x{scale}.json"
    rc = r.run(evaluate_log, geosr + evaluate + ["-m", str(model), "-o", str(report)], max(120, r.left()))
    if rc or not report.is_file():
        r.record(key, "failed", time.monotonic() - t, note=f"evaluate rc {rc} (see logs/{evaluate_log}.log)")
        return
    baseline = r.work / f"eval_shipped_x{scale}.json"
    if r.left() > 30:
        r.run(evaluate_log, geosr + evaluate + ["-m", str(shipped(scale)), "-o", str(baseline)], max(60, r.left()))
    measured = model.with_name(model.stem + "-measured.safetensors")  # geosr export never rewrites its input
    rc = r.run(
        export,
        geosr + ["export", str(model), "-o", str(measured), "--metrics", str(report), "--overwrite"],
        300,
    )
    if rc == 0 and measured.is_file():
        os.replace(measured, model)
    r.run(f"card_x{scale}", geosr + ["info", str(model)], 120, tail=0)
    shutil.copyfile(r.logs / f"card_x{scale}.log", r.work / f"card_x{scale}.txt")
    facts = {"model": evaluation_means(report)}
    if baseline.is_file():
        facts["shipped"] = evaluation_means(baseline)
    facts["scale"] = scale
    facts["xsensor"] = evaluate_xsensor(r, scale, model)
    r.record(
        key,
        "ok" if rc == 0 else "failed",
        time.monotonic() - t,
        note=_eval_note(facts) if rc == 0 else f"export --metrics rc {rc}",
        **facts,
    )


def evaluate_xsensor(r: Run, scale: int, model: Path) -> dict:
    """The trained and the shipped model on the cross-sensor val set (Wald's protocol on each sensor's own bands,
    bf16 as benchmarks/results/cross_sensor/ was measured): each one's mean, or why it was not run."""
    if "xsensor.zip" not in r.state["unpacked"] or not r.xsensor_val.is_dir():
        return {"status": "skipped", "note": "the cross-sensor set (xsensor.zip) is not staged"}
    if r.left() < 20:
        return {"status": "skipped", "note": f"{r.left():.0f} s of the budget left"}
    limit = ["--max-images", "2"] if r.args.smoke else []
    cmd = (
        r.geosr
        + [
            "evaluate",
            "-d",
            str(r.xsensor_val),
            "--split",
            "all",
            "--scale",
            str(scale),
            "--device",
            r.args.device,
            "--precision",
            "bf16",
        ]
        + limit
    )
    out: dict = {"status": "ok"}
    for who, path, report in (
        ("model", model, r.work / f"eval_xsensor_x{scale}.json"),
        ("shipped", shipped(scale), r.work / f"eval_xsensor_shipped_x{scale}.json"),
    ):
        rc = r.run(f"evaluate_xsensor_x{scale}", cmd + ["-m", str(path), "-o", str(report)], max(60, r.left()))
        if rc or not report.is_file():
            return {**out, "status": "failed", "note": f"{who}: rc {rc} (see logs/evaluate_xsensor_x{scale}.log)"}
        out[who] = evaluation_means(report)
    return out


def card_notes(train: dict) -> list[str]:
    """The card's notes on where, when, how long and how the model trained (``train``: its train step's facts)."""
    scale, p = train["scale"], train.get("plan") or {}
    measured, recorded = p.get("measured_steps_per_s"), p.get("recorded_steps_per_s", float("nan"))
    if measured and p.get("restarts"):
        rate = f"the {measured:.1f} steps/s measured over its first steps (restarted in its warm-up to fit them)"
    elif measured:
        rate = f"the {recorded:.1f} steps/s planned with (plan.py), {measured:.1f} measured over its first steps"
    else:
        rate = f"the {recorded:.1f} steps/s planned with (plan.py; not measured)"
    data = train.get("data", {})
    return [
        f"trained on {train.get('hardware')} by benchmarks/gpu/run.sh on {train.get('date')}: {train.get('steps')} "
        f"steps in {train.get('elapsed_s', 0) / 60:.1f} min of a {train.get('train_s', 0) / 60:.1f}-min share of "
        f"the device call, from the shipped degan-x{scale} (--init-from), HR patches {train.get('patch_size')} px, "
        f"batch {train.get('batch_size')}, bf16, content loss (MSE)",
        f"lr {train.get('lr')} after a {train.get('warmup_steps')}-step linear warm-up, cosine decay to "
        f"{train.get('lr_min_factor')} of it at step {p.get('max_steps')}: the steps the share holds at {rate}",
        f"train images: UC Merced 00-49 as {data.get('codec', '?')} copies (mean PSNR "
        f"{data.get('psnr_vs_original_db', float('nan')):.2f} dB against the originals: the 64 MiB a device call "
        f"may carry); val images lossless"
        + (
            f"; plus the {train.get('extra_crops') or '?'} cross-sensor training crops of benchmarks/cross_sensor.py "
            f"(--extra-data, each listed {train['extra_repeat']} times)"
            if train.get("extra_repeat")
            else ""
        ),
    ]


def evaluation_means(path: Path) -> dict:
    mean = json.loads(path.read_text())["summary"]["mean"]
    keys = ("psnr", "ssim", "psnr_bicubic", "ssim_bicubic", "images")
    return {k: mean[k] for k in keys if k in mean}


def _eval_note(facts: dict) -> str:
    m = facts["model"]
    note = f"val {m.get('psnr', float('nan')):.3f} dB / {m.get('ssim', float('nan')):.4f}"
    if "shipped" in facts:
        s = facts["shipped"]
        note += (
            f" (shipped degan-x{facts.get('scale', 4)} {s.get('psnr', float('nan')):.3f} / "
            f"{s.get('ssim', float('nan')):.4f})"
        )
    return note


# --- the summary ------------------------------------------------------------------------------------------------------


def summary_lines(s: dict) -> list[str]:
    lines = [
        f"geosr GPU run, call {s['call']} on {s['device']}{' (smoke)' if s['smoke'] else ''}: "
        f"{s['spent_s']:.0f} s of the {s['budget_s']:.0f} s budget spent over the calls"
    ]
    for step, res in s["steps"].items():
        lines.append(
            f"  {step:<11} {res['status']:<8} call {res['call']}, {res['seconds']:.0f} s  {res.get('note', '')}"
        )
    for step, res in s["this_call"].items():
        if step not in s["steps"]:
            lines.append(f"  {step:<11} {res['status']:<8} {res.get('note', '')}")
    steps = s["steps"]
    m = steps.get("measure", {})
    if "consistency" in m:
        lines.append(
            f"{s['device']} vs CPU fp32: {'passed' if m['consistency_passed'] else 'FAILED'} "
            + ", ".join(f"{k} mean {v['mean']:.3f} / p99.9 {v['p999']:.0f} levels" for k, v in m["consistency"].items())
        )
    for row in m.get("speed", []):
        peak = row.get("peak_gpu_memory_gib")
        lines.append(
            f"  tile {row['tile']:>4} batch {row['batch']:>4} {row['precision']}: model "
            f"{row['model_only_mpx_s']:.3g} Mpx/s, end-to-end {row['end_to_end_mpx_s']:.3g} Mpx/s "
            f"({row['end_to_end_over_model_only']:.0%})" + (f", peak {peak:.2f} GiB" if peak else "")
        )
    if "big" in m:
        b = m["big"]
        t = f"{b['seconds']:.1f} s" if b.get("seconds") else "unknown"
        lines.append(f"  {b['size']} x {b['size']} uint16 at x4: {t} ({b['label']})")
    for scale in s["scales"]:
        lines += _scale_lines(scale, steps.get(f"train_x{scale}", {}), steps.get(f"evaluate_x{scale}", {}))
    if s.get("missing_parts"):
        lines.append(f"still to carry: {', '.join(s['missing_parts'])} (one per call, same command)")
    return lines


def _scale_lines(scale: int, t: dict, e: dict) -> list[str]:
    """Where, how long and how one scale trained, its validations, and its evaluation."""
    lines = []
    if t.get("steps"):
        rate, p = t.get("patches_per_s_median"), t.get("plan") or {}
        measured = p.get("measured_steps_per_s")
        sized = (
            f"recorded {p.get('recorded_steps_per_s', float('nan')):.1f} steps/s"
            + (f", measured {measured:.1f}" if measured else ", not measured")
            + (f", {p['restarts']} restart" + ("s" if p["restarts"] > 1 else "") if p.get("restarts") else "")
        )
        lines.append(
            f"train x{scale}: {t['steps']} steps in {t.get('elapsed_s', 0):.0f} s on {t.get('hardware')}"
            + (f", {rate:.1f} HR patches/s" if rate else "")
            + f"; cosine to {t.get('lr_min_factor')} x lr {t.get('lr')} at step {p.get('max_steps')} "
            f"({sized})"
        )
        for v in t.get("val", []):
            lines.append(
                f"  step {v['step']:>5}: val PSNR {v['psnr']:.3f} dB, SSIM {v['ssim']:.4f} "
                f"(bicubic {v['psnr_bicubic']:.3f})"
            )
    if "model" in e:
        lines.append(f"evaluate x{scale} (val split): {_eval_note(e)}")
    elif e.get("where") == "here":
        lines.append(
            f"evaluate x{scale}: exported; measure it where the files come back: python benchmarks/gpu/finish.py "
            "FILES (the whole val split and the cross-sensor set, the cards' protocol)"
        )
    if e.get("xsensor"):
        lines.append(f"cross-sensor x{scale}: {xsensor_note(e['xsensor'])}")
    return lines


def xsensor_note(x: dict) -> str:
    """Each model's mean PSNR/SSIM on the cross-sensor val set and its gain over bicubic there."""
    if x.get("status") != "ok":
        return f"{x.get('status')}: {x.get('note', '')}"

    def one(m: dict) -> str:
        psnr, ssim = m.get("psnr", float("nan")), m.get("ssim", float("nan"))
        gain = psnr - m.get("psnr_bicubic", float("nan"))
        return f"{psnr:.3f} dB / {ssim:.4f} ({gain:+.3f} dB over bicubic)"

    images = x["model"].get("images", "?")
    note = f"{images} crops, bf16: trained {one(x['model'])}"
    if "shipped" in x:
        note += f"; shipped {one(x['shipped'])}"
    return note


def main() -> int:
    smoke_env = os.environ.get("GEOSR_GPU_SMOKE", "") not in ("", "0")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--bundle",
        default=str(REPO / "benchmarks" / "gpu" / "bundle"),
        help="where the carried parts are (default benchmarks/gpu/bundle)",
    )
    p.add_argument(
        "--stage",
        default=os.environ.get("GEOSR_GPU_STAGE", "/tmp/geosr-gpu"),
        help="staging folder kept between the calls of one machine (GEOSR_GPU_STAGE)",
    )
    p.add_argument(
        "--out",
        default=os.environ.get("OUT") or None,
        help="output folder (default $OUT, as the device tool sets it, else STAGE/out)",
    )
    p.add_argument("--device", default=os.environ.get("GEOSR_GPU_DEVICE", "cuda"))
    p.add_argument(
        "--python",
        default=os.environ.get("GEOSR_GPU_PYTHON", sys.executable),
        help="the Python that has PyTorch (default: the one running this)",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=float(os.environ.get("GEOSR_GPU_BUDGET_S", 0) or 0) or None,
        help="wall-clock budget of all calls together (default 420: with the machine's start, 9 minutes of device "
        "time; smoke 240)",
    )
    p.add_argument(
        "--measure-s",
        type=float,
        default=float(os.environ.get("GEOSR_GPU_MEASURE_S", 0) or 0) or None,
        help="budget of the measurement (default 210; smoke 40)",
    )
    p.add_argument(
        "--after-train-s",
        type=float,
        default=None,
        help="time kept for export and evaluation (val split and cross-sensor set) after each scale's training, "
        "when the bundle has the data for them (prepare.py --evaluate there; default 150; smoke 60)",
    )
    p.add_argument(
        "--steps",
        default=os.environ.get("GEOSR_GPU_STEPS", ",".join(STEPS)),
        help="which of measure,train,evaluate to run (GEOSR_GPU_STEPS)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=float(os.environ.get("GEOSR_GPU_LR", "1e-4")),
        help="the generator's learning rate after the warm-up (GEOSR_GPU_LR; default 1e-4)",
    )
    p.add_argument(
        "--lr-min-factor",
        type=float,
        default=float(os.environ.get("GEOSR_GPU_LR_MIN_FACTOR", "0.02")),
        help="where the cosine decay ends, as a factor on --lr (GEOSR_GPU_LR_MIN_FACTOR; default 0.02)",
    )
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=int(os.environ.get("GEOSR_GPU_WARMUP_STEPS", 0) or 0) or None,
        help="linear warm-up steps, longer than the 20 steps the rate is measured over "
        "(GEOSR_GPU_WARMUP_STEPS; default 50; smoke 3)",
    )
    p.add_argument(
        "--scales",
        default=None,
        help="the models to train, in order, each from the shipped degan-xN (GEOSR_GPU_SCALES; default 4,2)",
    )
    p.add_argument(
        "--scale",
        type=int,
        choices=(2, 4),
        default=None,
        help="train this one model only, as --scales N (GEOSR_GPU_SCALE)",
    )
    p.add_argument(
        "--shares",
        default=os.environ.get("GEOSR_GPU_SHARES"),
        help="each scale's share of the training time, in the order of --scales (GEOSR_GPU_SHARES; default 0.6,0.4)",
    )
    p.add_argument(
        "--patch",
        type=int,
        default=int(os.environ.get("GEOSR_GPU_PATCH", "256")),
        help="HR training patch side; the card's tile is patch / scale (GEOSR_GPU_PATCH; default 256, the "
        "paper's; 128 keeps degan-x2's 64-px tiles)",
    )
    p.add_argument(
        "--extra-repeat",
        type=int,
        default=int(os.environ.get("GEOSR_GPU_EXTRA_REPEAT", "0") or 0),
        help="x4 only: also train on the cross-sensor training crops (STAGE/data/xsensor-train), each listed N "
        "times (geosr train --extra-data); 0 leaves them out (GEOSR_GPU_EXTRA_REPEAT; default 0)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        default=smoke_env,
        help="tiny sizes, a few steps, 2 val images (GEOSR_GPU_SMOKE=1); use with --device cpu to test",
    )
    p.add_argument(
        "--fresh", action="store_true", help="forget the steps done in earlier calls and start the training over"
    )
    args = p.parse_args()
    if args.scale is None and args.scales is None:  # the command line's choice first, then the environment's
        args.scale, args.scales = os.environ.get("GEOSR_GPU_SCALE") or None, os.environ.get("GEOSR_GPU_SCALES")
    try:
        args.scales = plan.parse_scales(args.scales, args.scale)
        args.shares = plan.parse_shares(args.shares, args.scales)
    except ValueError as exc:
        p.error(str(exc))
    if args.extra_repeat < 0:
        p.error(f"--extra-repeat: {args.extra_repeat} is below 0")
    args.warmup_steps = args.warmup_steps or (3 if args.smoke else 50)
    args.out = args.out or str(Path(args.stage) / "out")
    args.budget_s = args.budget_s or (240.0 if args.smoke else 420.0)
    args.measure_s = args.measure_s or (40.0 if args.smoke else 210.0)
    args.after_train_s = args.after_train_s if args.after_train_s is not None else (60.0 if args.smoke else 150.0)
    args.steps = {s.strip() for s in args.steps.split(",") if s.strip()}
    unknown = args.steps - set(STEPS)
    if unknown:
        p.error(f"--steps: {', '.join(sorted(unknown))} not among {', '.join(STEPS)}")

    r = Run(args)
    r.say(
        f"call {r.call}: stage {r.stage}, out {r.out}, device {args.device}, "
        f"{r.left():.0f} s of the {args.budget_s:.0f} s budget left"
    )
    if step_stage(r) and step_install(r):
        step_measure(r)
        # a model left behind by a light checkout (benchmarks/gpu/travel.py) leaves its time to the others
        scales = [s for s in args.scales if shipped(s).is_file()]
        for i, scale in enumerate(scales):  # each model trained, then exported and evaluated
            step_train(r, scale, [s for s in scales[i:] if not r.done(f"train_x{s}")])
            step_evaluate(r, scale)
        for scale in args.scales:
            if scale not in scales and "train" in args.steps and not r.done(f"train_x{scale}"):
                r.record(
                    f"train_x{scale}",
                    "skipped",
                    0,
                    note=f"{shipped(scale).relative_to(REPO)} did not travel: the checkout was made light without it "
                    f"(benchmarks/gpu/travel.py light --scales {scale} before a call that trains it)",
                )
    r.save()
    print()
    print("\n".join(summary_lines(r.summary())), flush=True)
    failed = [k for k, v in r.results.items() if v["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
