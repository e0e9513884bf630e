"""Load test of the generation service: step-level vs request-level vs sequential batching.

An open-loop client sends Poisson arrivals of single-image requests (1-3 classes composed
with weights, mixed solvers and step counts: IER-8, euler-20, heun-10) to an in-process
:class:`~gaf_trt.serve.GenerationService`, at several rates, for each mode, and reports
throughput, p50 / p90 / p99 latency and the achieved rows and requests per network call.
First it measures each mode's saturation throughput (all requests submitted at once) and the
latency of a lone request; the Poisson rates are fractions of the step-level saturation rate.

Baselines run without padding (``min_rows 1``: what a plain server does, smaller calls,
results not independent of what else runs); step-level runs both with the default minimum of
16 rows per call (results independent of what else runs) and with 1.

    python benchmarks/serve_load.py                    # digits on CPU, ~3 min on 2 cores
    python benchmarks/serve_load.py --requests 200 --rates 0.25 0.5 0.75 --threads 2

This measures the scheduler in-process (no Triton, no network transport).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import random
import statistics
import threading
import time
from dataclasses import dataclass

import torch

from gaf_trt.engine.base import LoadRequest, load_backend
from gaf_trt.serve import GenerationService, Overloaded, ServeConfig, ServeLimits, ServeRequest

WORKLOAD = [("ier", 8), ("euler", 20), ("heun", 10)]  # (solver, steps)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", default="digits")
    p.add_argument("--backend", default="torch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--requests", type=int, default=60, help="requests per run")
    p.add_argument("--rates", type=float, nargs="+", default=[0.5, 0.8],
                   help="Poisson rates as fractions of the step-level saturation rate")
    p.add_argument("--group-size", type=int, default=8, help="request-level group size")
    p.add_argument("--max-queue", type=int, default=256)
    p.add_argument("--max-active", type=int, default=16,
                   help="step mode's extra variant: requests running at once")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2,
                   help="saturation runs per mode, interleaved; the median is reported")
    return p.parse_args()


def workload(n: int, num_classes: int, seed: int) -> list[ServeRequest]:
    """``n`` single-image requests: 1-3 distinct classes with random weights, a solver
    and step count from :data:`WORKLOAD`, each its own seed."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.randint(1, 3)
        classes = rng.sample(range(num_classes), k)
        solver, steps = WORKLOAD[i % len(WORKLOAD)]
        weights = [round(rng.uniform(0.5, 2.0), 2) for _ in classes] if k > 1 else None
        out.append(ServeRequest(classes=classes, weights=weights, solver=solver, steps=steps,
                                seed=rng.randrange(1 << 30), batch=1, output="latents"))
    return out


@dataclass
class RunResult:
    mode: str
    rate: float | None  # requests/s offered (None: all at once)
    done: int
    refused: int
    seconds: float
    latencies: list[float]
    rows_per_call: float
    requests_per_call: float

    @property
    def throughput(self) -> float:
        return self.done / self.seconds

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def run(network, mode: str, min_rows: int, requests: list[ServeRequest], rate: float | None,
        args: argparse.Namespace, seed: int, max_active: int = 0) -> RunResult:
    """Send ``requests`` (Poisson at ``rate`` req/s, or all at once) and wait for all."""
    service = GenerationService(network, ServeConfig(
        max_queue=args.max_queue, min_rows=min_rows, mode=mode, group_size=args.group_size,
        max_active=max_active,
        limits=ServeLimits(max_rows=256))).start()
    rng = random.Random(seed)
    latencies: list[float] = []
    lock = threading.Lock()
    waiters, refused = [], 0

    def wait(job, t0: float) -> None:
        job.result()
        with lock:
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    due = start
    for req in requests:
        if rate is not None:
            due += rng.expovariate(rate)
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        t0 = time.perf_counter()
        try:
            job = service.submit(req)
        except Overloaded:
            refused += 1
            continue
        th = threading.Thread(target=wait, args=(job, t0), daemon=True)
        th.start()
        waiters.append(th)
    for th in waiters:
        th.join()
    seconds = time.perf_counter() - start
    stats = service.scheduler.stats
    calls = max(1, stats.calls)
    per_call = sum(n * c for n, c in stats.requests_per_call.items()) / calls
    service.close()
    label = mode if min_rows == 1 or mode != "step" else f"{mode} (min {min_rows})"
    label += f", {max_active} active" if max_active else ""
    return RunResult(label,
                     rate, len(latencies), refused, seconds, latencies, stats.rows / calls,
                     per_call)


def lone_latency(network, requests: list[ServeRequest], args) -> float:
    """Mean latency of a request alone (step mode, min 16 rows): one of each workload kind."""
    kinds = requests[:len(WORKLOAD)]
    res = run(network, "step", 16, kinds, None, args, 0)  # warm-up
    times = []
    for req in kinds:
        res = run(network, "step", 16, [req], None, args, 0)
        times.append(res.latencies[0])
    return statistics.mean(times)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    network = load_backend(args.backend, LoadRequest(artifact=args.ckpt, device=args.device))
    requests = workload(args.requests, network.config.num_classes, args.seed)
    modes = [("sequential", 1, 0), ("request", 1, 0), ("step", 1, 0), ("step", 16, 0),
             ("step", 16, args.max_active)]
    print(f"# serve load test, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s), {args.ckpt} on {args.backend}/{args.device}")
    print(f"# {args.requests} single-image requests, 1-3 classes, "
          f"{', '.join(f'{s}-{n}' for s, n in WORKLOAD)}; request-level groups of "
          f"{args.group_size}")
    lone = lone_latency(network, requests, args)
    print(f"lone request latency (mean of the three kinds): {lone * 1000:.0f} ms\n")
    rows = []
    sat: dict[tuple[str, int, int], list[RunResult]] = {m: [] for m in modes}
    for _ in range(args.repeats):  # interleaved: a load change on the machine hits every mode
        for mode, block, active in modes:
            sat[(mode, block, active)].append(run(network, mode, block, requests, None, args,
                                                  args.seed, active))
    for runs in sat.values():
        runs.sort(key=lambda r: r.throughput)
        rows.append(runs[len(runs) // 2])
    sat = {key: runs[len(runs) // 2].throughput for key, runs in sat.items()}
    step_sat = sat[("step", 16, 0)]
    for frac in args.rates:
        for mode, block, active in modes:
            rows.append(run(network, mode, block, requests, frac * step_sat, args, args.seed + 1,
                            active))
    print("| mode | offered req/s | done | refused | req/s | p50 ms | p90 ms | p99 ms | "
          "rows/call | requests/call |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        offered = "all at once" if r.rate is None else f"{r.rate:.1f}"
        print(f"| {r.mode} | {offered} | {r.done} | {r.refused} | {r.throughput:.1f} | "
              f"{r.pct(0.5) * 1000:.0f} | {r.pct(0.9) * 1000:.0f} | {r.pct(0.99) * 1000:.0f} | "
              f"{r.rows_per_call:.1f} | {r.requests_per_call:.1f} |")
    req_sat = sat[("request", 1, 0)]
    print(f"\nsaturation: step (min 16) / request-level = {step_sat / req_sat:.2f}x, "
          f"step (min 16, {args.max_active} active) / request-level = "
          f"{sat[('step', 16, args.max_active)] / req_sat:.2f}x, step (min 16) / sequential = "
          f"{step_sat / sat[('sequential', 1, 0)]:.2f}x, step (min 1) / request-level = "
          f"{sat[('step', 1, 0)] / req_sat:.2f}x")
    half = [r for r in rows if r.mode == "step (min 16)" and r.rate is not None
            and abs(r.rate - 0.5 * step_sat) < 1e-9]
    if half:
        print(f"p99 at half the step-level saturation rate / lone latency = "
              f"{half[0].pct(0.99) / lone:.2f}")


if __name__ == "__main__":
    main()
