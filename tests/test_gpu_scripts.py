"""benchmarks/gpu: the bundle's parts and their staging, the training plan, and the one-command GPU run in smoke mode
on the CPU.

The bundle logic (cutting units into parts that fit a device call, staging them in any order over several calls,
checksums) is tested on small files, the training plan (the time split between the scales, each schedule's length
from a rate, the restart rule) on numbers. The end-to-end smoke run needs a bundle built for this machine's Python
(``bash benchmarks/gpu/prepare.sh --smoke --python-version 3.11 --out benchmarks/gpu/bundle-smoke --part-mb 12``);
it is skipped with that command as its reason when the bundle is absent.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from geosr.device import cpu_supports_bf16

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
plan = _module("plan")


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


# --- a light checkout: only what the GPU run needs travels ---------------------------------------------------------


travel = _module("travel")


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    ident = ["-c", "user.name=geosr", "-c", "user.email=geosr@example.org"]
    return subprocess.run(["git", *ident, "-C", str(repo), *args], capture_output=True, text=True)


def _checkout(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    repo = tmp_path / "repo"
    files = {
        "geosr/__init__.py": b"# code\n",
        "geosr/weights/degan-x4.safetensors": b"4" * 4000,
        "geosr/weights/degan-x2.safetensors": b"2" * 3000,
        "geosr/weights/degan-x4-gan.safetensors": b"g" * 5000,
        "cli/main.py": b"# cli\n",
        "training/train.py": b"# training\n",
        "benchmarks/bench.py": b"# bench\n",
        "benchmarks/gpu/run.py": b"# run\n",
        "benchmarks/results/speed.txt": b"r" * 700,
        "tests/test_a.py": b"# test\n",
        "docs/a #1 [draft]!.md": b"d" * 90,
        "examples/data/RGB.byte.tif": b"t" * 600,
        "examples/upscale.sh": b"# example\n",
        "setup.cfg": b"[metadata]\n",
        "pyproject.toml": b"[build-system]\n",
    }
    for name, data in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(data)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    assert _git(repo, "add", ".").returncode == 0 and _git(repo, "commit", "-qm", "first").returncode == 0
    return repo, files


def test_a_light_checkout_leaves_behind_what_the_gpu_run_does_not_need_and_restore_puts_it_back(tmp_path):
    repo, files = _checkout(tmp_path)
    exclude = repo / ".git" / "info" / "exclude"
    exclude_before = exclude.read_text() if exclude.is_file() else None
    full = bundle.tree_bytes(repo)
    assert full == sum(len(v) for v in files.values())

    assert travel.main(["light", "--repo", str(repo)]) == 0
    behind = {
        "geosr/weights/degan-x2.safetensors",
        "geosr/weights/degan-x4-gan.safetensors",
        "benchmarks/results/speed.txt",
        "tests/test_a.py",
        "docs/a #1 [draft]!.md",
        "examples/upscale.sh",
    }
    assert set(travel.left_behind(repo)) == behind
    # neither tracked nor untracked-and-not-ignored: what the device tool copies is the rest, and the files stay
    listed = _git(repo, "ls-files", "--cached", "--others", "--exclude-standard").stdout.split("\n")
    assert set(filter(None, listed)) == set(files) - behind
    assert bundle.tree_bytes(repo) == full - sum(len(files[n]) for n in behind)
    assert all((repo / n).read_bytes() == files[n] for n in files)

    # a commit now would delete the files from the repository: refused
    refused = _git(repo, "commit", "-qm", "oops")
    assert refused.returncode != 0 and "travel.py restore" in refused.stderr
    # light again with both models: the x2 model travels too
    assert travel.main(["light", "--scales", "4,2", "--repo", str(repo)]) == 0
    assert set(travel.left_behind(repo)) == behind - {"geosr/weights/degan-x2.safetensors"}

    assert travel.main(["restore", "--repo", str(repo)]) == 0
    assert _git(repo, "status", "--porcelain").stdout == "" and travel.left_behind(repo) == []
    assert (exclude.read_text() if exclude.is_file() else None) in (exclude_before, "")
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()
    assert bundle.tree_bytes(repo) == full
    assert travel.main(["restore", "--repo", str(repo)]) == 0  # not light: nothing to do


def test_light_refuses_a_file_with_staged_changes_and_changes_nothing(tmp_path, capsys):
    repo, _ = _checkout(tmp_path)
    (repo / "tests" / "test_a.py").write_text("# changed\n")
    assert _git(repo, "add", "tests/test_a.py").returncode == 0
    assert travel.main(["light", "--repo", str(repo)]) == 1
    err = capsys.readouterr().err
    assert "tests/test_a.py has changes staged" in err and "commit or unstage" in err
    assert travel.left_behind(repo) == [] and not (repo / ".git" / "hooks" / "pre-commit").exists()
    assert _git(repo, "status", "--porcelain").stdout == "M  tests/test_a.py\n"


def test_a_user_pre_commit_hook_is_left_alone(tmp_path):
    repo, _ = _checkout(tmp_path)
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\nexit 0\n")
    assert travel.main(["light", "--repo", str(repo)]) == 0
    assert travel.main(["restore", "--repo", str(repo)]) == 0
    assert hook.read_text() == "#!/bin/sh\nexit 0\n"


# --- the training plan: time per scale, schedule length, restart ---------------------------------------------------


GPU_TIMING = plan.Timing.for_run(smoke=False, after_s=100)  # 145 s kept per scale


def test_scales_and_shares_are_parsed_and_checked():
    assert plan.parse_scales(None, None) == [4, 2]
    assert plan.parse_scales("2", None) == [2] and plan.parse_scales(None, 2) == [2]
    assert plan.parse_scales(None, "4") == [4]  # GEOSR_GPU_SCALE, as the environment gives it
    for bad in ("3", "4,4", "", "4;2"):
        with pytest.raises(ValueError):
            plan.parse_scales(bad or ",", None)
    with pytest.raises(ValueError, match="both"):
        plan.parse_scales("4,2", 2)
    assert plan.parse_shares(None, [4, 2]) == {4: 0.6, 2: 0.4}
    assert plan.parse_shares(None, [2]) == {2: 1.0}
    assert plan.parse_shares("3,1", [4, 2]) == {4: 0.75, 2: 0.25}
    for bad in ("1", "1,0", "a,b"):
        with pytest.raises(ValueError, match="shares"):
            plan.parse_shares(bad, [4, 2])


def test_the_training_time_is_split_by_share_after_each_scale_keeps_its_setup_and_evaluation():
    shares = {4: 0.6, 2: 0.4}
    split = plan.split_training(500, [4, 2], shares, GPU_TIMING)  # 2 x (45 + 100) kept
    assert split == pytest.approx({4: 126, 2: 84})
    # x4 done, with time to spare: x2 gets all that is left after its own set-up and evaluation
    assert plan.split_training(300, [2], shares, GPU_TIMING) == pytest.approx({2: 155})
    # without the evaluation step only the set-up is kept
    # measured elsewhere (prepare.py --evaluate here): each keeps its 20-s export only
    assert plan.split_training(500, [4, 2], shares, GPU_TIMING, evaluate=False) == pytest.approx({4: 222, 2: 148})


def test_a_later_scale_that_would_get_too_little_leaves_its_time_to_the_earlier_ones():
    shares = {4: 0.6, 2: 0.4}
    assert plan.split_training(330, [4, 2], shares, GPU_TIMING) == pytest.approx({4: 185})  # x2 would get 16 s
    assert plan.split_training(100, [4], shares, GPU_TIMING) == {4: 0.0}  # too little for any: the caller skips


def test_smoke_runs_cap_each_scale_at_a_few_seconds():
    timing = plan.Timing.for_run(smoke=True, after_s=60)
    assert plan.split_training(900, [4, 2], {4: 0.6, 2: 0.4}, timing) == {4: 30, 2: 30}


def test_the_schedule_length_is_what_the_seconds_hold_at_the_rate():
    # the H200 run: 25 steps/s; 126 s of x4 less two validations inside the clock, at 92 % of the steady rate
    assert plan.planned_steps(0, 25.0, 126, GPU_TIMING) == int(0.92 * 25 * (126 - 12))
    assert plan.planned_steps(3000, 25.0, 0, GPU_TIMING) == 3001  # always past the current step
    assert plan.val_every(2622) == 874 and plan.val_every(2) == 1


def test_a_length_off_by_more_than_the_tolerance_is_corrected_where_the_restart_pays():
    restart = plan.restart
    assert not restart(1000, 1100, 5000, GPU_TIMING) and not restart(1000, 880, 870, GPU_TIMING)  # within 15 %
    # too short: time would be left; restarted only if the restarted run then trains longer
    assert restart(1000, 1400, 1200, GPU_TIMING) and not restart(1000, 1400, 1100, GPU_TIMING)
    # too long (--max-minutes cuts the cosine): restarted if it keeps 3/4 of the kept run's steps
    assert restart(1500, 1200, 950, GPU_TIMING) and not restart(1500, 1200, 850, GPU_TIMING)
    smoke = plan.Timing.for_run(smoke=True, after_s=60)
    assert restart(500, 20, 10, smoke)  # in smoke runs always, to exercise the restart


def _log(path: Path, rows: list[tuple[str, int, float, str]]) -> Path:
    lines = ["kind,step,elapsed_s,patches_per_s,val_psnr"] + [f"{k},{s},{e},{r}," for k, s, e, r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_rate_is_probed_after_the_first_row_of_an_invocation(tmp_path):
    log = tmp_path / "log.csv"
    rows = [("train", 10, 14.35, "11.2"), ("train", 20, 14.75, "400")]
    assert plan.probe(plan.log_rows(_log(log, rows[:1])), 0, 0.0, 16, 20) is None  # only the set-up's row yet
    found = plan.probe(plan.log_rows(_log(log, rows)), 0, 0.0, 16, 20)
    assert found.steps_per_s == 25.0 and found.step == 20 and found.clock_s == 14.75
    assert found.first_steps_s == pytest.approx(14.35 - 10 / 25)
    # a resumed invocation: its rows only, its clock from where the run's stood
    resumed = rows + [("val", 20, 20.0, ""), ("train", 30, 35.0, "200"), ("train", 35, 35.4, "200")]
    assert [r.kind for r in plan.log_rows(_log(log, resumed))] == ["train", "train", "val", "train", "train"]
    assert plan.probe(plan.log_rows(log), 20, 20.0, 16, 20) is None  # 20 steps past the start not reached
    resumed.append(("train", 40, 35.8, "200"))
    found = plan.probe(plan.log_rows(_log(log, resumed)), 20, 20.0, 16, 20)
    assert found.steps_per_s == 12.5 and found.step == 40 and found.clock_s == pytest.approx(15.8)


def test_a_row_being_written_is_not_read(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("kind,step,elapsed_s,patches_per_s\ntrain,10,1.0,100\ntrain,2")
    assert [(r.kind, r.step) for r in plan.log_rows(log)] == [("train", 10)]


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
    bundle.write_parts(
        [deps], tmp_path / "bundle", cap=cap, info={"created": "2026-01-01T00:00:00", "python_version": python_version}
    )
    return tmp_path / "bundle"


def _run_sh(
    call: Path, stage: Path, out: Path, env: dict[str, str] | None = None, timeout: int = 120, *more: str
) -> subprocess.CompletedProcess:
    """One call of run.sh on the CPU with ``call`` carried; its summary is in ``out``."""
    command = ["bash", str(GPU / "run.sh"), "--device", "cpu", "--bundle", str(call), "--stage", str(stage), *more]
    return subprocess.run(
        [*command, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or dict(os.environ, GEOSR_GPU_PYTHON=sys.executable),
    )


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_run_waits_for_the_missing_part_then_refuses_wheels_for_another_python(tmp_path):
    parts = _wheel_bundle(tmp_path, python_version="2.7")
    stage, out = tmp_path / "stage", tmp_path / "out"
    proc = _run_sh(_carry(tmp_path / "call", parts / "part1"), stage, out)
    summary = _summary(out)
    assert proc.returncode == 0
    assert summary["this_call"]["install"]["status"] == "waiting"
    assert summary["missing_parts"] == ["part2"]
    assert "still to carry: part2" in (out / "summary.txt").read_text()

    proc = _run_sh(_carry(tmp_path / "call", parts / "part2"), stage, out)
    summary = _summary(out)
    assert proc.returncode == 1
    assert summary["call"] == 2 and summary["missing_parts"] == []
    assert summary["steps"]["install"]["status"] == "failed"
    assert "CPython 2.7" in summary["steps"]["install"]["note"]
    assert (stage / "wheels" / "payload.bin").is_file()  # the unit was assembled and unpacked
    assert sorted(p.name for p in out.iterdir()) == ["logs.tar.gz", "summary.json", "summary.txt"]


def _run_with_results(tmp_path: Path, scales: list[int]):
    """A Run whose stage holds what training and evaluation leave for ``scales``, its $OUT written."""
    run = _module("run")
    args = argparse.Namespace(
        stage=str(tmp_path / "stage"),
        out=str(tmp_path / "out"),
        fresh=False,
        smoke=True,
        after_train_s=60.0,
        scales=scales,
        shares=plan.parse_shares(None, scales),
        budget_s=240.0,
        device="cpu",
    )
    r = run.Run(args)
    (r.work / "measure").mkdir(parents=True)
    (r.work / "measure" / "measure.json").write_text("{}")
    for s in scales:
        r.run_dir(s).mkdir(parents=True)
        (r.run_dir(s) / "log.csv").write_text("kind,step\n")
        (r.run_dir(s) / "config.toml").write_text("")
        for name in (f"eval_val_x{s}.json", f"eval_shipped_x{s}.json", f"card_x{s}.txt", run.model_name(s)):
            (r.work / name).write_text("{}")
    r.write_out()
    return r


def test_out_holds_one_scales_files_as_before_and_two_scales_in_six(tmp_path):
    r = _run_with_results(tmp_path / "one", [2])
    assert sorted(p.name for p in r.out.iterdir()) == sorted(
        [
            "summary.txt",
            "summary.json",
            "measure.json",
            "train_log.csv",
            "eval_val.json",
            "degan-x2-gpu.safetensors",
            "logs.tar.gz",
        ]
    )
    r = _run_with_results(tmp_path / "two", [4, 2])
    assert sorted(p.name for p in r.out.iterdir()) == sorted(
        [
            "summary.txt",
            "summary.json",
            "measure.json",
            "degan-x4-gpu.safetensors",
            "degan-x2-gpu.safetensors",
            "logs.tar.gz",
        ]
    )
    with tarfile.open(r.out / "logs.tar.gz") as tar:
        names = set(tar.getnames())
    assert {
        f"x{s}/{n}"
        for s in (4, 2)
        for n in ("config.toml", "train_log.csv", "eval_val.json", "eval_shipped.json", "card.txt")
    } <= names


def _train_run(tmp_path: Path, extra_repeat: int):
    run = _module("run")
    args = argparse.Namespace(
        stage=str(tmp_path / "stage"),
        out=str(tmp_path / "out"),
        fresh=False,
        smoke=False,
        after_train_s=150.0,
        scales=[4, 2],
        shares=plan.parse_shares(None, [4, 2]),
        budget_s=720.0,
        device="cuda",
        lr=1e-4,
        lr_min_factor=0.02,
        warmup_steps=50,
        patch=256,
        extra_repeat=extra_repeat,
    )
    return run, run.Run(args)


@pytest.mark.parametrize("repeat", [0, 3])
def test_the_cross_sensor_crops_join_x4s_training_only_when_the_setting_is_above_0(tmp_path, repeat):
    run, r = _train_run(tmp_path, repeat)
    for scale in (4, 2):
        cmd = run.train_command(r, scale, r.run_dir(scale), 1000, 120.0, resume=False)
        assert cmd[cmd.index("--data") + 1] == str(r.data)
        if scale == 4 and repeat > 0:
            assert cmd[cmd.index("--extra-data") + 1] == str(r.stage / "data" / "xsensor-train")
            assert cmd[cmd.index("--extra-repeat") + 1] == str(repeat)
            assert run.data_units(r, scale) == {"train.zip", "val.zip", "xsensor.zip"}
        else:
            assert "--extra-data" not in cmd and "--extra-repeat" not in cmd
            assert run.data_units(r, scale) == {"train.zip", "val.zip"}
        # a resumed run keeps what its config.toml holds
        resumed = run.train_command(r, scale, r.run_dir(scale), 1000, 60.0, resume=True)
        assert "--resume" in resumed and "--extra-data" not in resumed


def test_the_cross_sensor_line_gives_each_models_mean_and_gain_over_bicubic():
    run = _module("run")
    x = {
        "status": "ok",
        "model": {"psnr": 31.5, "ssim": 0.85, "psnr_bicubic": 30.0, "images": 82},
        "shipped": {"psnr": 31.25, "ssim": 0.84, "psnr_bicubic": 30.0, "images": 82},
    }
    assert run.xsensor_note(x) == (
        "82 crops, bf16: trained 31.500 dB / 0.8500 (+1.500 dB over bicubic); "
        "shipped 31.250 dB / 0.8400 (+1.250 dB over bicubic)"
    )
    lines = run._scale_lines(4, {}, {"model": x["model"], "scale": 4, "xsensor": x})
    assert lines[-1].startswith("cross-sensor x4: 82 crops")
    assert run.xsensor_note({"status": "skipped", "note": "not staged"}) == "skipped: not staged"


# --- measure.py: its sections in smoke mode on the CPU, its budget rules and its report ------------------------------


def test_the_stage_table_is_sized_to_its_seconds_from_the_measured_rate():
    measure = _module("measure")
    assert measure.stages_size(2048, None, 30, 4) == 2048  # no rate measured: the default
    assert measure.stages_size(2048, 40.0, 30, 4) == 2048  # a fast pipeline: the default fits
    # 1 output Mpx/s for 30 s, 30 % for the timers' synchronisations: 23 Mpx, 4804 px at x4, 1201 px of input
    assert measure.stages_size(2048, 1.0, 30, 4) == 1152
    assert measure.stages_size(2048, 0.01, 30, 4) == 256 and measure.stages_size(48, 1.0, 30, 4) == 48


def test_the_big_raster_goes_first_only_where_its_measured_rate_says_it_will_finish():
    measure = _module("measure")
    assert measure.big_expected_s(None, 10980, 4) is None and measure.big_expected_s({}, 10980, 4) is None
    # 1929 output Mpx at 30 Mpx/s with the 30 % margin, plus 0.72 GB of uint16 input at 16 s per GB
    expected = measure.big_expected_s({"end_to_end_mpx_s": 30.0}, 10980, 4)
    assert expected == pytest.approx(1928.9664 / 30 * 1.3 + 0.72340 * 16, rel=1e-4)
    assert 90 < expected < 96  # fits in the last ~100 s of the 210-s measurement; the first run's 3 Mpx/s did not
    assert measure.big_expected_s({"end_to_end_mpx_s": 3.0}, 10980, 4) > 800
    line = measure._big_lines(
        {"size": 64, "bands": 3, "dtype": "uint16", "scale": 4, "tile": 16, "batch": 4, "precision": "bf16",
         "complete": True, "seconds": 2.0, "output_mpx_s": 0.03, "order": "after the stage table: expected 3 s"}
    )  # fmt: skip
    assert line[0].endswith("run to the end in 2.0 s, 0.03 output Mpx/s")
    assert line[1] == "  ran after the stage table: expected 3 s"


def test_the_report_says_skipped_extrapolated_and_stopped():
    measure = _module("measure")
    big = {
        "size": 10980,
        "bands": 3,
        "dtype": "uint16",
        "scale": 4,
        "tile": 64,
        "batch": 16,
        "precision": "bf16",
        "complete": False,
        "seconds": 1099.2,
        "seconds_run": 88.4,
        "fraction_done": 0.08,
        "output_mpx_s": 1.75,
        "label": "extrapolated from 8.0% of the tiles done in 88.4 s",
        "peak_gpu_memory_gib": 0.83,
        "max_rss_before_gib": 2.0,
        "max_rss_after_gib": 5.5,
        "rss_at_start_gib": 1.1,
        "rss_peak_during_gib": 5.4,
    }
    compile_part = {
        "tile": 64,
        "batch": 16,
        "cap_s": 90,
        "stopped_at_cap": True,
        "rows": [
            {
                "precision": "bf16",
                "variant": "eager",
                "model_only_mpx_s": 56.3,
                "on_device_mpx_s": 70.0,
                "first_call_s": 1.2,
                "settle_s": 0.0,
                "speed_table_mpx_s": 56.1,
            },
            {
                "precision": "bf16",
                "variant": "compile",
                "model_only_mpx_s": 70.0,
                "on_device_mpx_s": 95.0,
                "first_call_s": 40.0,
                "settle_s": 0.0,
                "max_abs_diff": 0.004,
                "pays_after_output_mpx": 10640.0,
            },
            {"precision": "bf16", "variant": "compile reduce-overhead", "stopped": "at the section's cap of 90 s"},
            {"precision": "fp16", "variant": "eager", "skipped": "not started"},
        ],
    }
    lines = measure.summary_lines(
        {
            "hardware": "cuda: H100",
            "torch": "2",
            "python": "3",
            "model": "m",
            "stages": {"skipped": "120 s of the 210 s budget spent"},
            "compile": compile_part,
            "big": big,
        }
    )
    text = "\n".join(lines)
    assert "where the time goes: skipped (120 s of the 210 s budget spent)" in text
    assert "extrapolated to 1099.2 s" in text and "run to the end" not in text
    assert "GPU 0.83 GiB" in text and "host 5.40 GiB" in text and "ru_maxrss 5.50 GiB after it, 2.00 GiB before" in text
    assert "speed table 56.1" in text and "pays after 1.06e+04 output Mpx" in text
    assert "bf16  compile reduce-overhead  stopped: at the section's cap" in text
    assert "fp16  eager" in text and "skipped: not started" in text


@pytest.mark.slow
def test_measure_runs_every_section_in_smoke_mode_on_the_cpu(tmp_path):
    # bf16 as on a GPU where the CPU computes it natively; elsewhere its reference kernels took 315 of the run's 370 s
    # (AMD EPYC, Zen 3), so fp32 there: the same sections and code paths
    prec = "bf16" if cpu_supports_bf16() else "fp32"
    out = tmp_path / "measure"
    proc = subprocess.run(
        [
            sys.executable,
            str(GPU / "measure.py"),
            "--device",
            "cpu",
            "--smoke",
            "--out",
            str(out),
            "--budget-s",
            "600",
            "--tiles",
            "16",
            "--big",
            "128",
            "--folder-files",
            "2",
            "--precisions",
            prec,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = json.loads((out / "measure.json").read_text())
    text = (out / "measure.txt").read_text()
    for name in ("consistency", "speed", "stages", "compile", "pipeline", "folder", "big"):
        assert "error" not in m[name] and "skipped" not in m[name], (name, m[name])

    # where the time goes: the real model's run, every stage of the pipeline in the table
    stages = m["stages"]
    assert stages["size"] == 48 and stages["precision"] == prec and stages["consistency"]
    assert {"model", "blend", "consistency", "dtype mapping", "write"} <= {r["stage"] for r in stages["rows"]}
    assert f"where the time goes, 48^2 x 3 uint8 at x4 with the model ({prec}, tile 64, overlap 8" in text
    for label in (
        "read (GDAL",
        f"model (degan-x4.safetensors, {prec})",
        "blend (StripAccumulator)",
        "consistency correction",
        "device to host",
        "compression and write",
        "wall time of upscale_raster",
    ):
        assert label in text, label

    # the compile section: eager, torch.compile (measured, unavailable or stopped at its cap), no CUDA graphs here
    rows = {(r["precision"], r["variant"]): r for r in m["compile"]["rows"]}
    assert set(rows) == {(prec, "eager"), (prec, "compile"), (prec, "compile reduce-overhead")}
    assert sum(k in rows[(prec, "compile")] for k in ("model_only_mpx_s", "unavailable", "stopped", "skipped")) == 1
    eager = rows[(prec, "eager")]
    if "model_only_mpx_s" in eager:
        assert eager["model_only_mpx_s"] > 0 and eager["speed_table_mpx_s"] > 0
    assert "the model alone, eager and compiled (tile 16, batch 4" in text
    assert f"{prec}  eager" in text and f"{prec}  compile " in text
    assert f"{prec}  compile reduce-overhead  skipped: CUDA graphs: CUDA only" in text

    # the big raster: run to the end at this size, with the host's peak memory beside it
    big = m["big"]
    assert big["complete"] and "128 x 128 x 3 uint16 at x4" in text and "run to the end in" in text
    assert 0 < big["max_rss_before_gib"] <= big["max_rss_after_gib"] and big["rss_peak_during_gib"] > 0
    assert "peak memory of the run: host" in text and "ru_maxrss" in text and "before it" in text


# --- the smoke run: prepare's bundle -> a venv with only PyTorch -> measure, train, export, evaluate ----------------


def _smoke_bundle_or_skip() -> dict:
    manifest = SMOKE_BUNDLE / bundle.MANIFEST
    if not manifest.is_file():
        pytest.skip(
            f"no smoke bundle in {SMOKE_BUNDLE}: build it with `bash benchmarks/gpu/prepare.sh --smoke "
            f"--python-version {sys.version_info.major}.{sys.version_info.minor} --out {SMOKE_BUNDLE} "
            f"--part-mb 12`"
        )
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
        proc = _run_sh(call, stage, out, env, 900, "--budget-s", "900")
        summary = _summary(out)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert summary["call"] == k
        if k < len(parts):
            assert summary["missing_parts"], f"call {k}: nothing left to carry before the last part"
    steps = summary["steps"]
    names = ("stage", "install", "measure", "train_x4", "evaluate_x4", "train_x2", "evaluate_x2")
    assert list(steps) == list(names) and {s: steps[s]["status"] for s in names} == dict.fromkeys(names, "ok")
    assert summary["missing_parts"] == [] and summary["scales"] == [4, 2]
    here = manifest.get("evaluate", "there") == "here"  # prepare.py's default: the models are measured here

    # what comes back: at most 7 files (the tool takes 8), none over 16 MiB, no sub-folders; each scale's model
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 7 and all(p.is_file() and p.stat().st_size <= 16 * 2**20 for p in out.iterdir())
    assert set(files) == {
        "summary.txt",
        "summary.json",
        "measure.json",
        "logs.tar.gz",
        "degan-x4-gpu.safetensors",
        "degan-x2-gpu.safetensors",
    }

    measure = json.loads((out / "measure.json").read_text())
    assert measure["consistency"]["cases"]["fp32"]["max"] == 0  # the CPU against itself
    assert measure["speed"]["rows"] and measure["speed"]["rows"][0]["model_only_mpx_s"] > 0
    folder = measure["folder"]
    assert [row["files_in_flight"] for row in folder["rows"]] == [1, 4]
    assert all(row["model_tiles"] == 3 and 0 < row["share"] <= 1 for row in folder["rows"])
    big = measure["big"]
    assert big["size"] == 512 and big["seconds"] > 0
    assert big["complete"] or "extrapolated" in big["label"]

    with tarfile.open(out / "logs.tar.gz") as tar:
        names = set(tar.getnames())
        archived = {n: tar.extractfile(n).read().decode() for n in names if n.startswith(("x4/", "x2/"))}
    assert {"logs/install.log", "logs/measure.log", "logs/train_x4.log", "logs/train_x2.log"} <= names
    assert {f"logs/{'export' if here else 'evaluate'}_x{s}.log" for s in (4, 2)} <= names
    text = (out / "summary.txt").read_text()
    for scale in (4, 2):
        assert {f"x{scale}/{n}" for n in ("config.toml", "train_log.csv", "card.txt")} <= names
        train, plan_ = steps[f"train_x{scale}"], summary["plans"][str(scale)]
        # the length first estimated from the H200's rate is far off on a CPU: measured over the first 2 steps,
        # the run restarted (in its warm-up) with the length its 30 s hold
        assert plan_["restarts"] == 1 and 0 < plan_["measured_steps_per_s"] < plan_["recorded_steps_per_s"] / 5
        assert train["plan"] == plan_ and train["steps"] >= 2 and train["hardware"].startswith("cpu")
        config = archived[f"x{scale}/config.toml"]
        assert 'lr_schedule = "cosine"' in config and "lr_warmup_steps = 3" in config
        assert "lr_min_factor = 0.02" in config and f"max_steps = {plan_['max_steps']}" in config
        assert "--extra-data" not in config and "xsensor-train" not in config
        assert f"train x{scale}: {train['steps']} steps" in text

        # the exported model says where, how long and how it trained (and, measured there, its val metrics)
        model = out / f"degan-x{scale}-gpu.safetensors"
        info = subprocess.run(
            [sys.executable, "-m", "geosr.cli.main", "info", str(model)], capture_output=True, text=True, cwd=REPO
        )
        assert info.returncode == 0, info.stderr
        assert f"scale        x{scale}" in info.stdout
        assert "by benchmarks/gpu/run.sh on " in info.stdout and "cosine decay to 0.02" in info.stdout
        if here:
            assert steps[f"evaluate_x{scale}"]["where"] == "here" and f"x{scale}/eval_val.json" not in names
            assert f"evaluate x{scale}: exported; measure it where the files come back" in text
            continue
        assert "val_psnr" in info.stdout
        assert {f"x{scale}/{n}" for n in ("eval_val.json", "eval_shipped.json")} <= names
        evaluation = json.loads(archived[f"x{scale}/eval_val.json"])["summary"]["mean"]
        assert evaluation["images"] == 2 and evaluation["psnr"] > evaluation["psnr_bicubic"]
        assert steps[f"evaluate_x{scale}"]["shipped"]["images"] == 2 and steps[f"evaluate_x{scale}"]["scale"] == scale
        assert f"evaluate x{scale} (val split)" in text
        # the cross-sensor val set: both models, bf16, their gain over bicubic in the summary
        xsensor = steps[f"evaluate_x{scale}"]["xsensor"]
        assert xsensor["status"] == "ok" and xsensor["model"]["images"] == 2 and xsensor["shipped"]["images"] == 2
        assert f"cross-sensor x{scale}: 2 crops, bf16: trained " in text and "dB over bicubic); shipped " in text
        assert {f"x{scale}/eval_xsensor.json", f"x{scale}/eval_xsensor_shipped.json"} <= names

    if here:  # measured here, as the cards were: finish.py on the returned files (2 images each, for time)
        results, models = tmp_path / "results", tmp_path / "models"
        geotiffs = REPO.parent / "shared" / "data" / "geotiff"
        done = subprocess.run(
            [sys.executable, str(GPU / "finish.py"), str(out), "--out", str(results), "--models", str(models),
             "--data", manifest["data"]["source"], "--geotiffs", str(geotiffs) if geotiffs.is_dir() else "",
             "--max-images", "2", "--threads", "2"],
            capture_output=True, text=True, cwd=REPO,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        finished = json.loads((results / "finish.json").read_text())
        assert sorted(finished["scales"]) == ["2", "4"] and (results / "logs" / "x4" / "config.toml").is_file()
        text = (results / "finish.txt").read_text()
        for scale in (4, 2):
            entry = finished["scales"][str(scale)]
            assert entry["val"]["images"] == 2 and entry["shipped_card"]["val_psnr"] > 20
            assert f"x{scale}: whole val split (2 images, bf16, card tiles, consistency): " in text
            if geotiffs.is_dir():
                assert entry["cross_sensor"]["trained"]["images"] == entry["cross_sensor"]["shipped"]["images"] == 2
            info = subprocess.run(
                [sys.executable, "-m", "geosr.cli.main", "info", str(models / f"degan-x{scale}-gpu.safetensors")],
                capture_output=True, text=True, cwd=REPO,
            )  # fmt: skip
            assert info.returncode == 0 and "val_psnr" in info.stdout and "by benchmarks/gpu/run.sh on " in info.stdout

    # a further call with nothing carried repeats nothing
    call = tmp_path / "empty-call"
    call.mkdir()
    proc = _run_sh(call, stage, out, env, 300, "--budget-s", "900")
    assert proc.returncode == 0, proc.stdout[-3000:]
    again = _summary(out)
    assert set(again["this_call"]) <= {"stage", "install"}
