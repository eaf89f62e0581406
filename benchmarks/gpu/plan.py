"""How run.py shares the training time between the scales and sizes each scale's learning-rate schedule.

Pure functions and small values, standard library only (run.py runs before anything is installed); tested in
tests/test_gpu_scripts.py.

**Time.** What the budget leaves after the measurement goes to the scales still to train, in their order (x4, then
x2). Each keeps ``setup_s`` (geosr train's start-up, its final validation and save) and ``after_s`` (export, the
evaluation of the trained and of the shipped model), or ``export_s`` alone when the models are measured where the
files come back (prepare.py --evaluate here); the rest, the training time, is split by the scales' shares
(60 % x4, 40 % x2 by default). The split is made again before each scale, so time a scale did not use (or an
evaluation that ran over) moves to the next one. A later scale whose share would be under ``min_train_s`` is left
out of the split and its reserve goes to the earlier ones; at its turn it still trains if the time is there.

**Steps.** The cosine schedule reaches its floor at --max-steps, so that has to be the number of steps the scale's
minutes hold (--max-minutes stays the hard stop). The first estimate comes from a recorded rate
(``RECORDED_STEPS_PER_S``); the run then measures its own rate over its first ``probe_steps`` steps. The warm-up is
longer than the probe and the cosine starts after it, so those first steps are the same whatever the length: a run
whose estimate was off by more than ``TOLERANCE`` can be stopped (SIGTERM: it saves its state) and resumed with the
measured length, the same run as if that length had been known from the start. The restart costs geosr train's
start-up and first steps once more (some 25 s on a GPU), so it is made only where it pays (``restart``): a length
too short by more than TOLERANCE is corrected when the restarted run still trains longer than the kept one would; a
length too long, which --max-minutes would cut before the cosine's end, when the restarted run keeps at least
``restart_min_share`` of the kept run's steps.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

SCALES = (2, 4)
DEFAULT_SCALES = "4,2"
DEFAULT_SHARES = {1: (1.0,), 2: (0.6, 0.4)}

# Steady training steps per second at batch 16, 256-px HR patches, bf16, content loss, on one GPU (the log's
# patches_per_s over 16). x4: NVIDIA H200, 2026-11-30 (benchmarks/results/gpu/train_log.csv: 400 patches/s; 5000
# steps in 5.9 min with 25 validations). x2: not yet run on a GPU; x4's rate over the cost of an x2 training step
# against an x4 one on the development CPU (1.8 times: the trunk runs on 4 times the LR pixels, the refiner and tail
# on the same HR ones). They size only the first estimate: every run measures its own rate.
RECORDED_STEPS_PER_S = {4: 25.0, 2: 13.5}
EFFICIENCY = 0.92  # the steady rate against the whole run's (epoch boundaries, checkpoints): 22.9 / 24.9 steps/s there
TOLERANCE = 0.15  # a first estimate this far off the measured length is corrected by a restart
VALIDATIONS = 3  # per run: at a third, two thirds and the end of its steps (the last one outside --max-minutes)


@dataclass(frozen=True)
class Timing:
    """The seconds run.py plans with, per scale (GPU or smoke sizes: ``for_run``)."""

    setup_s: float  # geosr train before its clock starts, its final validation and save
    after_s: float  # export, evaluation of the trained and the shipped model, the card
    export_s: float  # the export alone (the models measured elsewhere: prepare.py --evaluate here)
    min_train_s: float  # a scale trains only when it gets at least this
    first_steps_s: float  # the first steps' extra time inside the clock (CUDA set-up, cuDNN's search): 14 s on the H200
    val_s: float  # one validation of the run's val images
    probe_steps: int  # steps measured before the length is settled
    log_every: int  # steps per log.csv row
    max_train_s: float | None  # a cap on each scale's training time (smoke runs: a few steps on a CPU)
    restart_min_share: float  # a restart for a too long length must keep this share of the kept run's steps

    @classmethod
    def for_run(cls, *, smoke: bool, after_s: float) -> Timing:
        if smoke:  # restart_min_share 0: on a CPU the first length is always far too long, and the restart is tested
            return cls(
                setup_s=20,
                after_s=after_s,
                export_s=10,
                min_train_s=1,
                first_steps_s=2,
                val_s=2,
                probe_steps=2,
                log_every=1,
                max_train_s=30,
                restart_min_share=0.0,
            )
        return cls(
            setup_s=45,
            after_s=after_s,
            export_s=20,
            min_train_s=60,
            first_steps_s=15,
            val_s=6,
            probe_steps=20,
            log_every=10,
            max_train_s=None,
            restart_min_share=0.75,
        )


def parse_scales(scales: str | None, scale: int | str | None) -> list[int]:
    """The scales to train, in order: ``scale`` alone when given, else the comma-separated ``scales`` (default 4,2).

    Raises ValueError for an unknown or repeated scale, or both given."""
    if scale is not None:
        if scales:
            raise ValueError(
                f"scale {scale} and scales {scales} both given (--scale or GEOSR_GPU_SCALE, --scales or "
                "GEOSR_GPU_SCALES): give one"
            )
        scales = str(scale)
    items = [s.strip() for s in (scales or DEFAULT_SCALES).split(",") if s.strip()]
    if not items or any(s not in {str(x) for x in SCALES} for s in items):
        raise ValueError(f"scales {scales!r}: a comma-separated list of {' and '.join(map(str, SCALES))}")
    out = [int(s) for s in items]
    if len(set(out)) != len(out):
        raise ValueError(f"scales {scales!r}: each scale once")
    return out


def parse_shares(shares: str | None, scales: list[int]) -> dict[int, float]:
    """Each scale's share of the training time, normalised to 1 (default 0.6, 0.4 for two scales).

    Raises ValueError unless there is one positive number per scale."""
    if shares:
        try:
            values = tuple(float(s) for s in shares.split(","))
        except ValueError:
            raise ValueError(f"shares {shares!r}: comma-separated numbers, one per scale") from None
    else:
        values = DEFAULT_SHARES.get(len(scales), (1.0,) * len(scales))
    if len(values) != len(scales) or min(values) <= 0:
        raise ValueError(f"shares {shares!r}: one positive number per scale ({','.join(map(str, scales))})")
    return {s: v / sum(values) for s, v in zip(scales, values)}


def split_training(
    left_s: float, pending: list[int], shares: dict[int, float], timing: Timing, evaluate: bool = True
) -> dict[int, float]:
    """Training seconds for each scale of ``pending`` (the scales still to train, in order; the first trains now)
    out of ``left_s`` seconds of budget; later scales that would get under ``timing.min_train_s`` are left out."""
    pending = list(pending)
    cap = timing.max_train_s if timing.max_train_s is not None else math.inf
    reserve = timing.setup_s + (timing.after_s if evaluate else timing.export_s)
    while pending:
        avail = max(0.0, left_s - len(pending) * reserve)
        total = sum(shares[s] for s in pending)
        split = {s: min(cap, avail * shares[s] / total) for s in pending}
        if len(pending) == 1 or split[pending[-1]] >= timing.min_train_s:
            return split
        pending.pop()
    return {}


def planned_steps(step: int, steps_per_s: float, seconds: float, timing: Timing) -> int:
    """The step a schedule should end at: ``step`` plus what ``seconds`` of training hold at ``steps_per_s``
    (times EFFICIENCY), less the validations inside the run's clock (the last one comes after it)."""
    inside = (VALIDATIONS - 1) * timing.val_s
    return step + max(1, int(EFFICIENCY * steps_per_s * max(0.0, seconds - inside)))


def val_every(max_steps: int) -> int:
    """Validation interval giving VALIDATIONS validations over ``max_steps`` steps."""
    return max(1, math.ceil(max_steps / VALIDATIONS))


def restart(planned: int, kept: int, restarted: int, timing: Timing) -> bool:
    """Whether a run started for ``planned`` steps, which would reach step ``kept`` by its --max-minutes, should be
    stopped and resumed for ``restarted`` steps (what the time left holds once it has started up again)."""
    if kept > (1 + TOLERANCE) * planned:  # it would finish early, time unused
        return restarted > (1 + TOLERANCE) * planned
    if kept < (1 - TOLERANCE) * planned:  # --max-minutes would cut its cosine short
        return restarted >= timing.restart_min_share * kept
    return False


@dataclass(frozen=True)
class Row:
    """A row of a run's log.csv."""

    kind: str  # 'train' or 'val'
    step: int
    elapsed_s: float  # training clock, earlier invocations of a resumed run included
    patches_per_s: float | None


def log_rows(log: Path) -> list[Row]:
    """The rows of ``log`` (log.csv of a run folder) that are complete; [] before it exists."""
    if not log.is_file():
        return []
    rows = []
    with open(log, newline="") as f:
        for rec in csv.DictReader(f):
            try:
                rate = rec.get("patches_per_s")
                rows.append(
                    Row(rec["kind"], int(float(rec["step"])), float(rec["elapsed_s"]), float(rate) if rate else None)
                )
            except (TypeError, ValueError, KeyError):  # a row being written
                break
    return rows


@dataclass(frozen=True)
class Probe:
    """What the first steps of one geosr train invocation showed."""

    steps_per_s: float  # the median rate of its rows after the first
    step: int  # the last step logged
    clock_s: float  # seconds of its clock at that row
    first_steps_s: float  # the extra time of its first steps (set-up inside the clock)


def probe(rows: list[Row], start_step: int, before_s: float, batch: int, probe_steps: int) -> Probe | None:
    """The rate of an invocation that started at ``start_step`` with ``before_s`` seconds on the run's clock, once
    its rows reach ``probe_steps`` steps past the start (None before). The first row is left out: it holds the
    invocation's set-up."""
    mine = [r for r in rows if r.kind == "train" and r.step > start_step]
    rates = sorted(r.patches_per_s for r in mine[1:] if r.patches_per_s)
    if not rates or mine[-1].step < start_step + probe_steps:  # (rates: at least two rows)
        return None
    steps_per_s = rates[len(rates) // 2] / batch
    first = mine[0]
    first_s = max(0.0, (first.elapsed_s - before_s) - (first.step - start_step) / steps_per_s)
    return Probe(steps_per_s, mine[-1].step, mine[-1].elapsed_s - before_s, first_s)
