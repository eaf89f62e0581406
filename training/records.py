"""What the training loop (geosr.training.loop) records into its run folder as it goes.

    validate              mean PSNR/SSIM of a model and of bicubic on the validation images, shared out among the
                          processes, run as ``geosr upscale`` runs the exported model
    Records.validation    validate at a step: its log.csv row, best.safetensors on a new best, a log line
    Records.train_row     a log.csv row of training losses and learning rates
    Records.checkpoint    the training state (state.pt, state.py: training_state), never during an MSE spike
    Records.finish        last.safetensors with its model card (card.py); log.csv closed

Rank 0 alone writes files; every process takes part in validation and in gathering the random-number states.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geosr.checkpoint import save_generator
from geosr.evaluation import evaluate_images
from geosr.training import distributed
from geosr.training.card import RunFacts, model_card
from geosr.training.config import TrainConfig
from geosr.training.guard import DivergenceGuard
from geosr.training.setup import Clock
from geosr.training.state import Checkpointed, CsvLog, capture_rng, save_state, training_state

__all__ = ["Records", "validate"]

log = logging.getLogger("geosr.training")


def validate(
    model: nn.Module,
    items: list,
    cfg: TrainConfig,
    bands: list[int],
    ctx: distributed.DistContext,
    precision: str,
    *,
    train_after: bool,
) -> dict[str, float]:
    """Mean PSNR/SSIM of ``model`` and of bicubic on ``items``, the images shared out among the processes.

    The model runs in eval mode and is left in train mode when ``train_after`` (the generator itself, not its EMA).
    It runs as the exported model will run in ``geosr upscale``: in the card's tiles, corrected for consistency.
    """
    model.eval()
    share = items[ctx.rank :: ctx.world_size]
    results = evaluate_images(
        share,
        cfg.scale,
        model,
        bands=bands,
        device=ctx.device,
        precision=precision,
        tile_size=cfg.card_tile_size,
        overlap=cfg.card_overlap,
    )
    model.train(train_after)
    sums = torch.tensor(
        [
            sum(r.psnr for r in results),
            sum(r.ssim for r in results),
            sum(r.psnr_bicubic for r in results),
            sum(r.ssim_bicubic for r in results),
            len(results),
        ],
        dtype=torch.float64,
    )
    if ctx.backend == "nccl":
        sums = sums.to(ctx.device)
    sums = distributed.all_reduce_sum(sums, ctx).cpu()
    n = sums[4].item()
    return {
        "val_psnr": sums[0].item() / n,
        "val_ssim": sums[1].item() / n,
        "val_psnr_bicubic": sums[2].item() / n,
        "val_ssim_bicubic": sums[3].item() / n,
        "val_images": int(n),
    }


@dataclass(frozen=True)
class Records:
    """Where and with what the loop records: the run folder's files (run_paths), log.csv (open on rank 0, None
    elsewhere), the facts for model cards and the run's clock. Steps become epochs with ``steps_per_epoch``."""

    cfg: TrainConfig
    ctx: distributed.DistContext
    paths: dict[str, Path]
    csv_log: CsvLog | None
    facts: RunFacts
    clock: Clock
    steps_per_epoch: int

    def _row(self, kind: str, step: int, values: dict[str, Any]) -> None:
        self.csv_log.write(
            {
                "kind": kind,
                "step": step,
                "epoch": round(step / self.steps_per_epoch, 4),
                "elapsed_s": round(self.clock.elapsed(), 2),
                **values,
            }
        )

    def validation(
        self,
        model: nn.Module,
        items: list,
        bands: list[int],
        precision: str,
        *,
        train_after: bool,
        step: int,
        best: dict[str, Any],
    ) -> tuple[dict[str, Any], dict[str, Any], bool]:
        """Validate ``model`` at ``step`` (see ``validate``); rank 0 writes its log.csv row, and best.safetensors
        when it beats ``best`` ({"val_psnr", "step"}). Returns the metrics (with their step), the best validation so
        far and whether this one is it."""
        last_val = validate(model, items, self.cfg, bands, self.ctx, precision, train_after=train_after)
        last_val["step"] = step
        improved = best["val_psnr"] is None or last_val["val_psnr"] > best["val_psnr"]
        if improved:
            best = {"val_psnr": last_val["val_psnr"], "step": step}
        if self.ctx.is_main:
            self._row("val", step, last_val)
            if improved:
                card = model_card(self.cfg, self.facts, step=step, wall_time_s=self.clock.elapsed(), metrics=last_val)
                save_generator(self.paths["best"], model, card)
            log.info(
                "step %d: val PSNR %.3f dB, SSIM %.4f (bicubic %.3f / %.4f)%s",
                step,
                last_val["val_psnr"],
                last_val["val_ssim"],
                last_val["val_psnr_bicubic"],
                last_val["val_ssim_bicubic"],
                " - best so far" if improved else "",
            )
        return last_val, best, improved

    def train_row(self, step: int, values: dict[str, Any]) -> None:
        """log.csv's row of a training step (rank 0 only): ``values`` are the learning rates, the throughput and the
        logged losses."""
        self._row("train", step, values)

    def checkpoint(
        self,
        parts: Checkpointed,
        guard: DivergenceGuard,
        *,
        step: int,
        best: dict[str, Any],
        last_val: dict[str, Any] | None,
        final: bool,
    ) -> bool:
        """Save the training state at ``step`` with every process's random-number states (rank 0 writes), unless the
        MSE is spiking. ``final``: the run ends here (a spike is then worth a warning). Returns whether it saved."""
        if guard.spiking:
            if final:
                log.warning("step %d: the MSE is spiking; the saved state is the one from before the spike", step)
            return False
        rngs = distributed.all_gather_object(capture_rng(), self.ctx)
        if self.ctx.is_main:
            save_state(
                self.paths["state"],
                training_state(
                    parts,
                    step=step,
                    elapsed_s=self.clock.elapsed(),
                    best=best,
                    last_val=last_val,
                    rngs=rngs,
                    config=self.cfg.to_dict(),
                ),
            )
        return True

    def finish(self, model: nn.Module, *, step: int, last_val: dict[str, Any] | None) -> Path:
        """The run's last record: last.safetensors with the card of ``step`` (rank 0 writes it); once every process
        is there, log.csv is closed. Returns the path of last.safetensors."""
        if self.ctx.is_main:
            card = model_card(self.cfg, self.facts, step=step, wall_time_s=self.clock.elapsed(), metrics=last_val)
            last_model = save_generator(self.paths["last"], model, card)
        else:
            last_model = self.paths["last"]
        distributed.barrier(self.ctx)
        if self.csv_log is not None:
            self.csv_log.close()
        return last_model
