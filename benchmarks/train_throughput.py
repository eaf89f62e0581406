"""Training throughput of geosr train's step (HR patches per second) on this machine.

    python benchmarks/train_throughput.py [--scale 4] [--patch 128] [--batch 8] [--steps 4] [--device cpu]
        [--attention-dropouts 0.1,0]

Measures, for the default DEGAN generator: the content-only step (MSE, diffusion noise on) and the full GAN step
(G: MSE + adversarial, D: real/fake), in each precision (bf16 autocast and fp32 on the CPU; bf16/fp16/fp32 on CUDA),
with the training code itself (geosr.training.gan), channels-last as geosr train uses by default. The cases are
timed in interleaved rounds (one step of each per round), so a machine shared with other work slows them alike;
the table gives the median and the best round. With --json FILE also writes it. Speed is measured here, never
asserted in a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from geosr.device import describe_hardware, resolve_device
from geosr.models import Discriminator, Generator, GeneratorConfig
from geosr.models.refiner import set_attention_dropout
from geosr.training.gan import Amp, LossWeights, discriminator_step, generator_step
from geosr.training.losses import ContentLoss


def setup(mode: str, precision: str, dropout: float, args, device: torch.device):
    """A callable that runs one training step of ``mode`` in ``precision`` with attention dropout ``dropout``."""
    torch.manual_seed(0)
    cl = torch.channels_last
    g = Generator(GeneratorConfig(scale=args.scale)).to(device, memory_format=cl)
    set_attention_dropout(g, dropout)
    d = Discriminator(in_channels=3).to(device, memory_format=cl) if mode == "gan" else None
    opt_g = torch.optim.Adam(g.parameters(), 1e-4)
    opt_d = torch.optim.Adam(d.parameters(), 1e-4) if d is not None else None
    amp = Amp.create(device, precision)
    weights = LossWeights(0.5, 0.0, 0.1 if d is not None else 0.0, 0.0)
    content = ContentLoss()
    hr = (torch.rand(args.batch, 3, args.patch, args.patch, device=device) * 2 - 1).contiguous(memory_format=cl)
    lr = torch.nn.functional.avg_pool2d(hr, args.scale).contiguous(memory_format=cl)

    def step():
        sr, _ = generator_step(g, lr, hr, opt=opt_g, content=content, weights=weights, amp=amp, d=d)
        if d is not None:
            discriminator_step(d, hr, sr, opt=opt_d, amp=amp)
        amp.scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--patch", type=int, default=128, help="HR patch side")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=4, help="timed rounds (one step of every case per round)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precisions", default=None, help="comma list; default bf16,fp32 (CPU) or bf16,fp16,fp32")
    p.add_argument("--modes", default="content,gan")
    p.add_argument(
        "--attention-dropouts",
        default="0.1",
        help="comma list of the refiner's training attention dropout (0.1: the paper's; 0: fused kernel)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    device = resolve_device(args.device)
    precisions = (
        args.precisions.split(",")
        if args.precisions
        else (["bf16", "fp16", "fp32"] if device.type == "cuda" else ["bf16", "fp32"])
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{describe_hardware(device)}; DEGAN x{args.scale}, HR patch {args.patch}, batch {args.batch}", flush=True)
    dropouts = [float(x) for x in args.attention_dropouts.split(",")]
    cases = {
        (m, p, a): setup(m, p, a, args, device) for m in args.modes.split(",") for p in precisions for a in dropouts
    }
    times: dict = {k: [] for k in cases}
    for r in range(args.steps):
        for key, step in cases.items():
            t0 = time.perf_counter()
            step()
            times[key].append(time.perf_counter() - t0)
        print(
            f"round {r + 1}: "
            + ", ".join(f"{m}/{p}/drop {a:g} {args.batch / times[(m, p, a)][-1]:.2f}" for m, p, a in cases),
            flush=True,
        )
    rows = []
    for (mode, prec, drop), ts in times.items():
        med, best = args.batch / statistics.median(ts), args.batch / min(ts)
        rows.append(
            {
                "mode": mode,
                "precision": prec,
                "attention_dropout": drop,
                "patches_per_s_median": round(med, 3),
                "patches_per_s_best": round(best, 3),
                "step_s": [round(t, 2) for t in ts],
            }
        )
        print(f"{mode:8s} {prec:5s} attention dropout {drop:<4g} median {med:6.2f}  best {best:6.2f} HR patches/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "hardware": describe_hardware(device),
                    "threads": torch.get_num_threads(),
                    "args": vars(args),
                    "load_average": os.getloadavg(),
                    "results": rows,
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
