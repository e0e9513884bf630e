"""Cycle error versus steps and solver (the paper's lossless-cycle test, arXiv 2511.22693).

Runs ``noise -> c1 -> noise -> c2 -> noise -> c1`` with :func:`gaf_trt.compose.transport.cycle`
for every (solver, steps) pair and prints a markdown table of the error between the first
and last c1 images: latent MSE (model space), pixel MSE (images in [0, 1]), LPIPS where its
weights are available locally, and the MSE between the start noise and the last inverted
noise. Defaults: bundled ``digits`` model on the CPU, 8 noises, classes 3 and 8.

    python benchmarks/transport_table.py                       # ~5 min on 2 CPU cores
    python benchmarks/transport_table.py --ckpt engines/x --backend tensorrt --device cuda \
        --precision fp16 --steps 10 25 50 100 250
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time

import torch

from gaf_trt.compose import transport as tr
from gaf_trt.pipeline.source import ModelSource, load_source
from gaf_trt.pipeline.transport import image_metrics
from gaf_trt.precision import Precision


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", default="digits")
    p.add_argument("--backend", default="torch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=[x.value for x in Precision])
    p.add_argument("--classes", type=int, nargs="+", default=[3, 8])
    p.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50, 100, 250])
    p.add_argument("--solvers", nargs="+", default=["euler", "heun", "rk4"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    return p.parse_args()


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} thread(s)"


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_source(ModelSource(artifact=args.ckpt, backend=args.backend,
                                     device=args.device, precision=Precision(args.precision)))
    shape = loaded.config.sample_shape
    gen = torch.Generator().manual_seed(args.seed)
    noise = torch.randn(args.batch, *shape, generator=gen).to(loaded.device)
    legs = 2 * len(args.classes) + 1
    print(f"Cycle {' -> '.join(map(str, args.classes + args.classes[:1]))} on {args.ckpt} "
          f"({'x'.join(map(str, shape))}), {args.batch} noises, backend {args.backend}, "
          f"{args.precision}, {machine(loaded.device)}, torch {torch.__version__}, "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n")
    print("| solver | steps | NFE | latent MSE | pixel MSE | LPIPS | noise MSE | s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    note = None
    for solver in args.solvers:
        for steps in args.steps:
            t0 = time.perf_counter()
            res = tr.cycle(loaded.network, args.classes, noise, steps=steps, solver=solver)
            sec = time.perf_counter() - t0
            m = image_metrics(res.first, res.last, loaded)
            note = note or m["lpips_note"]
            nfe = legs * steps * _evals(solver)
            lp = "n/a" if m["lpips"] is None else f"{m['lpips']:.4f}"
            print(f"| {solver} | {steps} | {nfe} | {m['latent_mse']:.2e} | {m['pixel_mse']:.2e} "
                  f"| {lp} | {res.noise_mse:.2e} | {sec:.1f} |", flush=True)
    print(f"\nNFE: network evaluations per sample over the {legs} legs."
          + (f" LPIPS n/a: {note}." if note else ""))


def _evals(solver: str) -> int:
    from gaf_trt.compose.solvers import SOLVERS

    return SOLVERS.get(solver).evals_per_step


if __name__ == "__main__":
    main()
