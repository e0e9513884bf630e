"""GPU serving check (benchmarks/gpu_check.sh runs it): ``gaf-trt serve --device cuda``

1. a burst of mixed requests (1-3 weighted classes, IER / euler / heun, all sent at once over
   gRPC) against ``gaf-trt sample``'s pipeline on the same GPU, padded to the scheduler's
   minimum rows (``MinRowsNetwork``): how many are bit-identical, the largest difference;
2. step ÷ request-level throughput through Triton at saturation (the fair, padded
   request-level baseline), p50 / p99 latency at half the step-level saturation rate, and
   the network's rows-vs-time curve with its ceiling (``benchmarks/serve_triton_load.py``).

It prints what it measured. ``--dry`` runs the same on the CPU with a small workload (a
self-test of this script, ~2 min on 2 cores).

    python benchmarks/gpu_serve_check.py                 # on a machine with CUDA
    python benchmarks/gpu_serve_check.py --dry           # CPU self-test
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import threading
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_triton_load as stl  # noqa: E402
from serve_load import workload  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry", action="store_true", help="CPU self-test, small workload")
    p.add_argument("--burst", type=int, default=24, help="requests of the parity burst")
    p.add_argument("--requests", type=int, default=120, help="requests per load run")
    p.add_argument("--budget", type=float, default=330.0, help="seconds; later parts skip")
    return p.parse_args()


def load_args(args: argparse.Namespace, device: str) -> argparse.Namespace:
    """``serve_triton_load``'s options for this check."""
    saved = sys.argv
    sys.argv = [saved[0], "--device", device, "--modes", "step", "request-padded",
                "--rates", "0.5", "--requests", str(args.requests),
                "--curve", "1", "4", "16", "64", "256", "--perf-data",
                os.path.join(os.environ.get("OUT") or "/tmp", "gaf_serve_requests.json")]
    try:
        return stl.parse_args()
    finally:
        sys.argv = saved


def reference(req, device: str) -> torch.Tensor:
    """``gaf-trt sample``'s pipeline for ``req`` on ``device``, on the network padded to the
    scheduler's minimum rows (the served numerics)."""
    from gaf_trt.pipeline.generation import generate
    from gaf_trt.pipeline.sample import prepare_sample
    from gaf_trt.serve import MinRowsNetwork

    if device == "cpu":
        torch.set_num_threads(1)  # the server's --threads: same kernels, same bits
    cfg = req.sample_config()
    cfg.model = dataclasses.replace(cfg.model, device=device)
    plan = prepare_sample(cfg)
    plan.network = MinRowsNetwork(plan.network)
    gen = generate(cfg, plan)
    out = gen.mixes[plan.composition.classes] if plan.composition is not None \
        else gen.pure[plan.classes[0]]
    return out.float().cpu()


def burst(server: stl.Server, requests) -> list[torch.Tensor | str]:
    """Every request sent at once over gRPC; each one's latents (or its error line)."""
    import tritonclient.grpc as grpcclient

    results: list[torch.Tensor | str] = [""] * len(requests)
    left = threading.Semaphore(0)
    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc}") as client:
        for i, req in enumerate(requests):
            inputs, params = stl.inputs_for(req, grpcclient, None)

            def done(result=None, error=None, i=i) -> None:
                results[i] = (str(error).splitlines()[0] if error is not None else
                              torch.from_numpy(result.as_numpy("latents")[0].copy()))
                left.release()
            client.async_infer("gaf", inputs, done, parameters=params,
                               outputs=[grpcclient.InferRequestedOutput("latents")])
        for _ in requests:
            if not left.acquire(timeout=stl.ANSWER_TIMEOUT):
                raise RuntimeError("no answer to the burst")
    return results


def parity(args: argparse.Namespace, device: str) -> None:
    requests = workload(args.burst, 10, 7)
    if args.dry:
        requests = [dataclasses.replace(r, steps=min(r.steps, 4)) for r in requests]
    with stl.Server(load_args(args, device), "step") as server:
        got = burst(server, requests)
    same, worst, errors = 0, 0.0, [g for g in got if isinstance(g, str)]
    for req, g in zip(requests, got):
        if isinstance(g, str):
            continue
        ref = reference(req, device)
        same += torch.equal(g, ref)
        worst = max(worst, (g - ref).abs().max().item())
    print(f"burst of {len(requests)} mixed requests on {device}: {same} bit-identical to "
          f"`sample` on the same device (MinRowsNetwork), max |diff| {worst:.3g}, "
          f"{len(errors)} errors {sorted(set(errors))[:2]}", flush=True)


def load(args: argparse.Namespace, device: str) -> None:
    largs = load_args(args, device)
    requests = workload(largs.requests, largs.num_classes, largs.seed)
    curve = stl.rows_curve(largs)
    rows, sat, lone = stl.run_modes(largs, requests)
    stl.print_runs(rows)
    stl.print_curve(curve)
    print()
    stl.print_ceiling(curve, sat, largs)
    print(f"lone request latency {lone * 1000:.0f} ms")


def main() -> None:
    args = parse_args()
    if args.dry:
        args.burst, args.requests = min(args.burst, 6), min(args.requests, 12)
    device = "cpu" if args.dry else "cuda"
    try:
        import pytriton.triton  # noqa: F401
        import tritonclient.grpc  # noqa: F401
    except ImportError as err:
        print(f"gpu_serve_check: skipped, {err} (pip install -e '.[serve]' and "
              "pip install --no-deps nvidia-pytriton==0.7.0)")
        return
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_serve_check: no CUDA device; skipped (--dry runs it on the CPU)")
        return
    start = time.monotonic()
    print(f"# gpu_serve_check on {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}"
          f", load average {stl.loadavg()}", flush=True)
    parity(args, device)
    if time.monotonic() - start > args.budget / 2:
        print("load runs skipped: over half the time budget went on the burst")
        return
    load(args, device)
    print(f"# gpu_serve_check done in {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
