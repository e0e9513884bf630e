"""Load test of the generation service: step-level vs request-level vs sequential batching.

An open-loop client sends Poisson arrivals of single-image requests (1-3 classes composed
with weights, mixed solvers and step counts: IER-8, euler-20, heun-10) to an in-process
:class:`~gaf_trt.serve.GenerationService`, at several rates, for each mode, and reports
throughput, p50 / p90 / p99 latency, the achieved rows and requests per network call, and
the share of the wall time the network was computing ("net busy"). First it measures each
mode's saturation throughput (all requests submitted at once, repeated and interleaved, the
median kept) and the latency of a lone request; the Poisson rates are fractions of the
step-level saturation rate.

Modes (all on the same scheduler, which forms a call when every running request is parked
on its next evaluation or ``call_rows`` rows wait):

- ``sequential``: one request at a time (calls of that request's rows, no padding);
- ``request``: request-level batching, what a dynamic batcher in front of a whole-request
  model does: the requests waiting when the previous group is done start together (at most
  ``--group-size``), each call carries one evaluation of every unfinished member, and
  newcomers wait until the whole group is done (no padding);
- ``step``: step-level batching, calls padded to at least 16 rows (results independent of
  what else runs), of at most ``call_rows`` rows, measured by
  :func:`~gaf_trt.serve.curve.calibrate_call_rows` at start; all admitted requests
  run, or (``N active``) at most N, the others wait in line and start as slots free, with N
  = call_rows / mean rows per request (enough running requests to fill one call per
  iteration, no more: more would only wait longer for the same throughput).

    python benchmarks/serve_load.py                    # digits on CPU, ~4 min on 2 cores
    python benchmarks/serve_load.py --requests 200 --rates 0.25 0.5 0.75 --threads 2

This measures the scheduler in-process (no transport); ``benchmarks/serve_triton_load.py``
measures the same workload through Triton.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import datetime
import os
import platform
import random
import statistics
import threading
import time
from dataclasses import dataclass

import torch

from gaf_trt.engine.base import LoadRequest, load_backend
from gaf_trt.serve import (
    GenerationService,
    Overloaded,
    ServeConfig,
    ServeLimits,
    ServeRequest,
)
from gaf_trt.serve.curve import calibrate_call_rows, call_times
from gaf_trt.serve.scheduler import padded_rows

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
    p.add_argument("--max-active", type=int, default=0,
                   help="step mode's extra variant: requests running at once (0: "
                        "call_rows / mean rows per request)")
    p.add_argument("--curve-max", type=int, default=256,
                   help="largest call timed for the network's rows-vs-time curve")
    p.add_argument("--call-rows", type=int, default=0,
                   help="step mode's rows per call (0: calibrated on the network)")
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


@dataclass(frozen=True)
class Mode:
    """One configuration of the service."""

    label: str
    mode: str
    min_rows: int
    call_rows: int | None = None
    max_active: int = 0


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
    busy: float  # share of the wall time spent in network calls
    load: float  # 1-minute load average at the end
    calls: collections.Counter  # calls per real row count
    @property
    def throughput(self) -> float:
        return self.done / self.seconds

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


class TimedNetwork:
    """The network, adding up the wall time of its calls (``x [M,...], t, y -> (J, K)``)."""

    def __init__(self, network) -> None:
        self.network, self.config, self.seconds = network, network.config, 0.0

    def __call__(self, x, t, y):
        start = time.perf_counter()
        out = self.network(x, t, y)
        self.seconds += time.perf_counter() - start
        return out


def run(network, m: Mode, requests: list[ServeRequest], rate: float | None,
        args: argparse.Namespace, seed: int) -> RunResult:
    """Send ``requests`` (Poisson at ``rate`` req/s, or all at once) and wait for all."""
    timed = TimedNetwork(network)
    service = GenerationService(timed, ServeConfig(
        max_queue=args.max_queue, min_rows=m.min_rows, mode=m.mode, group_size=args.group_size,
        max_active=m.max_active, call_rows=m.call_rows,
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
    for req in paced(requests, rate, rng):
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
    return RunResult(m.label, rate, len(latencies), refused, seconds, latencies,
                     stats.rows / calls, per_call, timed.seconds / seconds, os.getloadavg()[0],
                     stats.rows_per_call)


def paced(items, rate: float | None, rng: random.Random):
    """Yield ``items`` at open-loop Poisson arrival times of ``rate`` per second (each due
    time counted from the previous one, never from when the caller finished); all at once
    when ``rate`` is None."""
    due = time.perf_counter()
    for item in items:
        if rate is not None:
            due += rng.expovariate(rate)
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        yield item


def lone_latency(network, m: Mode, requests: list[ServeRequest], args) -> float:
    """Mean latency of a request alone in mode ``m``: one of each workload kind."""
    kinds = requests[:len(WORKLOAD)]
    run(network, m, kinds, None, args, 0)  # warm-up
    return statistics.mean(run(network, m, [req], None, args, 0).latencies[0] for req in kinds)


def modes_for(network, requests: list[ServeRequest], args) -> list[Mode]:
    """The configurations compared; step's call size and cap come from the network's
    rows-vs-time curve."""
    call_rows = args.call_rows or calibrate_call_rows(network, 256, 16)
    mean_rows = statistics.mean(len(r.classes) * r.batch for r in requests)
    active = args.max_active or max(1, round(call_rows / mean_rows))
    return [Mode("sequential", "sequential", 1), Mode("request", "request", 1),
            Mode(f"step (min 16, {call_rows} rows/call)", "step", 16, call_rows),
            Mode(f"step (min 16, {call_rows} rows/call, {active} active)", "step", 16,
                 call_rows, active)]


CURVE_SIZES = [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256]


def curve_seconds(curve: dict[int, float], calls: collections.Counter, min_rows: int) -> float:
    """Network seconds the call-size histogram ``calls`` would take on the measured
    ``curve`` (call time per row count, linear between and beyond the measured sizes): the ceiling a
    mode's packing allows, free of thread hand-offs and of the machine's load."""
    sizes = sorted(curve)
    total = 0.0
    for m, n in calls.items():
        m = padded_rows(m, min_rows)
        i = min(max(1, bisect.bisect_left(sizes, m)), len(sizes) - 1)
        a, b = sizes[i - 1], sizes[i]
        total += n * (curve[a] + (curve[b] - curve[a]) * (m - a) / (b - a))
    return total


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    network = load_backend(args.backend, LoadRequest(artifact=args.ckpt, device=args.device))
    requests = workload(args.requests, network.config.num_classes, args.seed)
    print(f"# serve load test, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}, torch {torch.__version__}, "
          f"{args.threads} thread(s), {args.ckpt} on {args.backend}/{args.device}")
    modes = modes_for(network, requests, args)
    print(f"# {args.requests} single-image requests, 1-3 classes, "
          f"{', '.join(f'{s}-{n}' for s, n in WORKLOAD)}; request-level groups of "
          f"{args.group_size}; step: {modes[2].call_rows} rows per call")
    step, best = modes[2], modes[3]
    lone = lone_latency(network, step, requests, args)
    print(f"lone request latency (step mode, mean of the three kinds): {lone * 1000:.0f} ms\n")
    rows = []
    sat: dict[Mode, list[RunResult]] = {m: [] for m in modes}
    for _ in range(args.repeats):  # interleaved: a load change on the machine hits every mode
        for m in modes:
            sat[m].append(run(network, m, requests, None, args, args.seed))
    for runs in sat.values():
        runs.sort(key=lambda r: r.throughput)
        rows.append(runs[len(runs) // 2])
    thr = {m: runs[len(runs) // 2].throughput for m, runs in sat.items()}
    for frac in args.rates:
        for m in modes:
            rows.append(run(network, m, requests, frac * thr[step], args, args.seed + 1))
    print("| mode | offered req/s | done | refused | req/s | p50 ms | p90 ms | p99 ms | "
          "rows/call | requests/call | net busy | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        offered = "all at once" if r.rate is None else f"{r.rate:.1f}"
        print(f"| {r.mode} | {offered} | {r.done} | {r.refused} | {r.throughput:.1f} | "
              f"{r.pct(0.5) * 1000:.0f} | {r.pct(0.9) * 1000:.0f} | {r.pct(0.99) * 1000:.0f} | "
              f"{r.rows_per_call:.1f} | {r.requests_per_call:.1f} | {r.busy:.0%} | "
              f"{r.load:.1f} |")
    sizes = [m for m in CURVE_SIZES if m <= args.curve_max]
    curve = call_times(network, sizes, repeats=5)
    print("\nnetwork alone (fastest of 5 calls): " + ", ".join(
        f"{m}: {curve[m] * 1000:.1f} ms" for m in sizes))
    ideal = {m: curve_seconds(curve, sat[m][len(sat[m]) // 2].calls, m.min_rows) for m in modes}
    print("network seconds of each mode's saturation calls on that curve (ceiling): " + ", ".join(
        f"{m.label} {ideal[m]:.2f} s" for m in modes))
    print(f"ceiling ratio step / request-level = {ideal[modes[1]] / ideal[step]:.2f}x, "
          f"{best.label} / request-level = {ideal[modes[1]] / ideal[best]:.2f}x")
    req_sat, seq_sat = thr[modes[1]], thr[modes[0]]
    print(f"\nsaturation: {step.label} / request-level = {thr[step] / req_sat:.2f}x, "
          f"{best.label} / request-level = {thr[best] / req_sat:.2f}x, "
          f"{step.label} / sequential = {thr[step] / seq_sat:.2f}x, "
          f"request-level / sequential = {req_sat / seq_sat:.2f}x")
    for m in (step, best):
        half = [r for r in rows if r.mode == m.label and r.rate is not None
                and abs(r.rate - 0.5 * thr[step]) < 1e-9]
        if half:
            print(f"p99 of {m.label} at half the step-level saturation rate / lone latency = "
                  f"{half[0].pct(0.99) / lone:.2f}")


if __name__ == "__main__":
    main()
