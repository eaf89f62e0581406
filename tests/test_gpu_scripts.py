"""benchmarks/gpu: the bundle's parts and their staging, and the one-command GPU run in smoke mode on the CPU.

The bundle logic (cutting units into parts that fit a device call, staging them in any order over several calls,
checksums) is tested on small files. The end-to-end smoke run needs a bundle built for this machine's Python
(``bash benchmarks/gpu/prepare.sh --smoke --python-version 3.11 --out benchmarks/gpu/bundle-smoke --part-mb 12``);
it is skipped with that command as its reason when the bundle is absent.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GPU = REPO / "benchmarks" / "gpu"
SMOKE_BUNDLE = Path(os.environ.get("GEOSR_GPU_SMOKE_BUNDLE", GPU / "bundle-smoke"))


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"geosr_gpu_{name}", GPU / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bundle = _module("bundle")


# --- cutting units into parts -----------------------------------------------------------------------------------------


def test_plan_chunks_fills_each_part_to_the_cap_and_keeps_unit_order():
    plans = bundle.plan_chunks([("a", 7), ("b", 3), ("c", 12)], cap=10)
    assert plans == [[(1, 0, 7)], [(1, 0, 3)], [(2, 0, 10), (3, 10, 2)]]
    for chunks, (_, size) in zip(plans, [("a", 7), ("b", 3), ("c", 12)]):
        assert sum(n for _, _, n in chunks) == size
    per_part = {}
    for chunks in plans:
        for part, _, n in chunks:
            per_part[part] = per_part.get(part, 0) + n
    assert max(per_part.values()) <= 10


def test_plan_chunks_refuses_a_cap_that_holds_nothing():
    with pytest.raises(ValueError, match="no room"):
        bundle.plan_chunks([("a", 5)], cap=0)


def _units(tmp_path: Path, sizes: dict[str, int]) -> list[Path]:
    out = []
    for i, (name, size) in enumerate(sizes.items()):
        p = tmp_path / "units" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(size) if i % 2 else bytes([i + 1]) * size)
        out.append(p)
    return out


def _carry(bundle_dir: Path, part: Path) -> Path:
    """What one device call brings: a bundle folder holding only this part."""
    shutil.rmtree(bundle_dir, ignore_errors=True)
    bundle_dir.mkdir(parents=True)
    shutil.copytree(part, bundle_dir / part.name)
    return bundle_dir


def test_parts_staged_one_per_call_in_any_order_give_back_the_units(tmp_path):
    units = _units(tmp_path, {"deps.tar.xz": 2500, "val.zip": 900, "train.zip": 1600})
    manifest = bundle.write_parts(units, tmp_path / "bundle", cap=1000, info={"created": "2026-01-01T00:00:00"})
    parts = sorted((tmp_path / "bundle").glob("part*"))
    assert len(parts) == len(manifest["parts"]) == 5
    for part in parts:  # each part within the cap (its manifest aside)
        assert sum(f.stat().st_size for f in part.iterdir() if f.name != bundle.MANIFEST) <= 1000
    stage = tmp_path / "stage"
    order = [parts[3], parts[0], parts[4], parts[2], parts[1]]
    for k, part in enumerate(order):
        report = bundle.stage(_carry(tmp_path / "call", part), stage)
        if k < len(order) - 1:
            assert report.missing, "a unit was reported complete before all its parts came"
    assert report.missing == {}
    assert sorted(report.complete) == sorted(u.name for u in units)
    for u in units:
        assert (stage / "units" / u.name).read_bytes() == u.read_bytes()


def test_missing_parts_are_named(tmp_path):
    units = _units(tmp_path, {"deps.tar.xz": 1500, "train.zip": 1200})
    bundle.write_parts(units, tmp_path / "bundle", cap=1000, info={"created": "2026-01-01T00:00:00"})
    report = bundle.stage(_carry(tmp_path / "call", tmp_path / "bundle" / "part1"), tmp_path / "stage")
    assert report.complete == []
    assert report.missing == {"deps.tar.xz": [2], "train.zip": [2, 3]}
    report = bundle.stage(_carry(tmp_path / "call", tmp_path / "bundle" / "part2"), tmp_path / "stage")
    assert report.complete == ["deps.tar.xz"] and report.missing == {"train.zip": [3]}


def test_a_damaged_chunk_is_refused(tmp_path):
    units = _units(tmp_path, {"deps.tar.xz": 800})
    bundle.write_parts(units, tmp_path / "bundle", cap=1000, info={"created": "2026-01-01T00:00:00"})
    part = tmp_path / "bundle" / "part1"
    data = bytearray((part / "deps.tar.xz").read_bytes())
    data[100] ^= 0xFF
    (part / "deps.tar.xz").write_bytes(bytes(data))
    with pytest.raises(bundle.BundleError, match="SHA-256"):
        bundle.stage(part.parent, tmp_path / "stage")
    assert not (tmp_path / "stage" / "units" / "deps.tar.xz").exists()


def test_a_new_bundle_restarts_the_staging_and_an_older_one_is_refused(tmp_path):
    units = _units(tmp_path, {"deps.tar.xz": 1500})
    stage = tmp_path / "stage"
    bundle.write_parts(units, tmp_path / "old", cap=1000, info={"created": "2026-01-01T00:00:00"})
    bundle.stage(_carry(tmp_path / "call", tmp_path / "old" / "part1"), stage)
    bundle.write_parts(units, tmp_path / "new", cap=1000, info={"created": "2026-02-01T00:00:00"})
    report = bundle.stage(_carry(tmp_path / "call", tmp_path / "new" / "part2"), stage)
    assert report.missing == {"deps.tar.xz": [1]}  # the old bundle's part 1 no longer counts
    with pytest.raises(bundle.BundleError, match="older bundle"):
        bundle.stage(_carry(tmp_path / "call", tmp_path / "old" / "part1"), stage)


def test_nothing_carried_and_nothing_staged_names_the_part_to_carry(tmp_path):
    with pytest.raises(bundle.BundleError, match="part1"):
        bundle.stage(tmp_path / "empty", tmp_path / "stage")


def test_tree_bytes_counts_tracked_and_untracked_files_but_not_ignored_ones(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("bundle/\n")
    (repo / "tracked.bin").write_bytes(b"x" * 1000)
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    (repo / "untracked.bin").write_bytes(b"y" * 300)
    (repo / "bundle").mkdir()
    (repo / "bundle" / "part1.bin").write_bytes(b"z" * 5000)
    assert bundle.tree_bytes(repo) == 1000 + 300 + len("bundle/\n")


# --- run.sh's first steps on a small bundle: staging over calls, what it waits for, what it refuses --------------


def _wheel_bundle(tmp_path: Path, python_version: str) -> Path:
    """A two-part bundle whose deps.tar.xz (holding no wheel) spans both parts."""
    deps = tmp_path / "units" / "deps.tar.xz"
    deps.parent.mkdir(parents=True)
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(3000))
    with tarfile.open(deps, "w:xz") as tar:
        tar.add(payload, arcname="payload.bin")
    cap = deps.stat().st_size // 2 + 1
    bundle.write_parts([deps], tmp_path / "bundle", cap=cap,
                       info={"created": "2026-01-01T00:00:00", "python_version": python_version})
    return tmp_path / "bundle"


def _run_sh(call: Path, stage: Path, out: Path) -> tuple[int, dict]:
    proc = subprocess.run(["bash", str(GPU / "run.sh"), "--device", "cpu", "--bundle", str(call), "--stage",
                           str(stage), "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, GEOSR_GPU_PYTHON=sys.executable))
    return proc.returncode, json.loads((out / "summary.json").read_text())


def test_run_waits_for_the_missing_part_then_refuses_wheels_for_another_python(tmp_path):
    parts = _wheel_bundle(tmp_path, python_version="2.7")
    stage, out = tmp_path / "stage", tmp_path / "out"
    rc, summary = _run_sh(_carry(tmp_path / "call", parts / "part1"), stage, out)
    assert rc == 0
    assert summary["this_call"]["install"]["status"] == "waiting"
    assert summary["missing_parts"] == ["part2"]
    assert "still to carry: part2" in (out / "summary.txt").read_text()

    rc, summary = _run_sh(_carry(tmp_path / "call", parts / "part2"), stage, out)
    assert rc == 1
    assert summary["call"] == 2 and summary["missing_parts"] == []
    assert summary["steps"]["install"]["status"] == "failed"
    assert "CPython 2.7" in summary["steps"]["install"]["note"]
    assert (stage / "wheels" / "payload.bin").is_file()  # the unit was assembled and unpacked
    assert sorted(p.name for p in out.iterdir()) == ["logs.tar.gz", "summary.json", "summary.txt"]


# --- the smoke run: prepare's bundle -> a venv with only PyTorch -> measure, train, export, evaluate ----------------


def _smoke_bundle_or_skip() -> dict:
    manifest = SMOKE_BUNDLE / bundle.MANIFEST
    if not manifest.is_file():
        pytest.skip(f"no smoke bundle in {SMOKE_BUNDLE}: build it with `bash benchmarks/gpu/prepare.sh --smoke "
                    f"--python-version {sys.version_info.major}.{sys.version_info.minor} --out {SMOKE_BUNDLE} "
                    f"--part-mb 12`")
    data = json.loads(manifest.read_text())
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if data["python_version"] != here:
        pytest.skip(f"{SMOKE_BUNDLE} holds wheels for Python {data['python_version']}, this is {here}")
    return data


@pytest.mark.slow
def test_smoke_run_over_the_calls_of_a_multi_part_bundle(tmp_path):
    manifest = _smoke_bundle_or_skip()
    parts = sorted(SMOKE_BUNDLE.glob("part*"), key=lambda p: int(p.name[4:]))
    assert len(parts) == len(manifest["parts"]) >= 2, "build the smoke bundle with --part-mb 12 to test staging"
    # the Python with PyTorch: by default this one (a venv without geosr's other packages tests more:
    # GEOSR_GPU_TEST_PYTHON=/path/to/venv/bin/python)
    base = os.environ.get("GEOSR_GPU_TEST_PYTHON", sys.executable)
    stage, out = tmp_path / "stage", tmp_path / "out"
    env = dict(os.environ, GEOSR_GPU_PYTHON=base, GEOSR_GPU_SMOKE="1", OUT=str(out))
    for k, part in enumerate(parts, start=1):
        call = _carry(tmp_path / "call", part)
        shutil.rmtree(out, ignore_errors=True)
        proc = subprocess.run(["bash", str(GPU / "run.sh"), "--device", "cpu", "--bundle", str(call),
                               "--stage", str(stage), "--budget-s", "900"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        summary = json.loads((out / "summary.json").read_text())
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert summary["call"] == k
        if k < len(parts):
            assert summary["missing_parts"], f"call {k}: nothing left to carry before the last part"
    steps = summary["steps"]
    assert {s: steps[s]["status"] for s in ("stage", "install", "measure", "train", "evaluate")} == dict.fromkeys(
        ("stage", "install", "measure", "train", "evaluate"), "ok")
    assert summary["missing_parts"] == []

    # what comes back: at most 8 files, none over 16 MiB, no sub-folders
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all(p.is_file() and p.stat().st_size <= 16 * 2**20 for p in out.iterdir())
    assert {"summary.txt", "summary.json", "measure.json", "train_log.csv", "eval_val.json",
            "degan-x4-gpu.safetensors", "logs.tar.gz"} <= set(files)

    measure = json.loads((out / "measure.json").read_text())
    assert measure["consistency"]["cases"]["fp32"]["max"] == 0  # the CPU against itself
    assert measure["speed"]["rows"] and measure["speed"]["rows"][0]["model_only_mpx_s"] > 0
    folder = measure["folder"]
    assert [row["files_in_flight"] for row in folder["rows"]] == [1, 4]
    assert all(row["model_tiles"] == 3 and 0 < row["share"] <= 1 for row in folder["rows"])
    big = measure["big"]
    assert big["size"] == 512 and big["seconds"] > 0
    assert big["complete"] or "extrapolated" in big["label"]

    assert steps["train"]["steps"] == 2
    evaluation = json.loads((out / "eval_val.json").read_text())["summary"]["mean"]
    assert evaluation["images"] == 2 and evaluation["psnr"] > evaluation["psnr_bicubic"]
    assert steps["evaluate"]["shipped"]["images"] == 2 and steps["evaluate"]["scale"] == 4

    # the exported model carries the val metrics and says where it trained
    info = subprocess.run([sys.executable, "-m", "geosr.cli.main", "info", str(out / "degan-x4-gpu.safetensors")],
                          capture_output=True, text=True, cwd=REPO)
    assert info.returncode == 0, info.stderr
    assert "benchmarks/gpu/run.sh" in info.stdout and "val_psnr" in info.stdout
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"logs/install.log", "logs/measure.log", "logs/train.log", "logs/evaluate.log", "config.toml",
            "eval_shipped.json"} <= names

    # a further call with nothing carried repeats nothing
    call = tmp_path / "empty-call"
    call.mkdir()
    proc = subprocess.run(["bash", str(GPU / "run.sh"), "--device", "cpu", "--bundle", str(call), "--stage",
                           str(stage), "--budget-s", "900"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    again = json.loads((out / "summary.json").read_text())
    assert set(again["this_call"]) <= {"stage", "install"}
