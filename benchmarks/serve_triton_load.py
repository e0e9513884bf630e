"""Load test through Triton: `gaf-trt serve` in a subprocess, driven by a `tritonclient` gRPC
client with open-loop Poisson arrivals; sequential vs request-level vs step-level batching.

For each batching configuration the benchmark starts ``python -m gaf_trt.cli serve`` on free
ports, waits for its "serving" line, and sends the same workload as
``benchmarks/serve_load.py`` (single-image requests of 1-3 weighted classes cycling IER-8 /
euler-20 / heun-10, each its own seed): first all at once (saturation), then Poisson arrivals
at fractions of the step-level saturation rate (the step configuration runs first). Each
request is one gRPC ``async_infer`` (non-blocking: arrivals never wait for answers). It
reports throughput, p50 / p90 / p99 latency as the client sees them (send to answer), and
the achieved requests per model execution from Triton's own metrics
(``nv_inference_count / nv_inference_exec_count``), the rows per *network call* of the
server's scheduler from its ``gaf_stats`` model (calls and rows counted before and after
each run) and the share of the run's wall time the network computed ("net busy", from
``gaf_network_call_seconds_sum`` on gaf-trt's metrics port).

Beside them, the network's rows-vs-time curve (one call of m rows, measured here before any
server starts, on the client's torch threads) and what it allows: when both servers are
network-bound, step ÷ request-level throughput is at most the ratio of their per-row call
times at the rows per call each achieved (calls padded to its ``--min-rows``), the
"curve's ceiling". The benchmark also writes the workload, padded, as a
``perf_analyzer --input-data`` file (``--perf-data``; docs/serving.md has the command).

Configurations (``gaf-trt serve`` options):

- ``sequential``: ``--batching request --max-batch 1`` (one request at a time);
- ``request``: ``--batching request --max-batch G``: Triton's dynamic batcher hands one model
  instance up to G whole requests; the next group starts when the whole group is done.
  Triton batches only requests whose inputs have the same shape, consecutive in its queue:
  requests of 1, 2 and 3 classes (``classes [1, k]``) are never in one group;
- ``request-padded``: the same server, every request padded to the server's class limit
  (``classes`` / ``weights`` ``[1, 8]`` and ``class_count``; same bits): the fair
  request-level baseline, whose groups take any mix of class counts;
- ``step``: ``--batching step --instances N``: N Triton instances each hold one request, and
  the server's scheduler packs all of their evaluations into shared network calls.

The baselines run with ``--min-rows 1`` (no padding, as in ``serve_load.py``: what a plain
server does); step keeps the default 16 (results independent of what else runs).

    python benchmarks/serve_triton_load.py                      # ~5 min on 2 cores
    python benchmarks/serve_triton_load.py --requests 90 --rates 0.5 0.8 --instances 32
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self


from gaf_trt.serve.host import free_ports

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_load import WORKLOAD, paced, workload
from serve_requests import CLASS_WIDTH, TRITON_DTYPES, perf_analyzer_data, wire_arrays, write_json

READY = "serving model"
ANSWER_TIMEOUT = 900.0  # a run whose answers stop coming fails instead of hanging


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", default="digits")
    p.add_argument("--num-classes", type=int, default=10, help="classes of --ckpt")
    p.add_argument("--requests", type=int, default=60, help="requests per run")
    p.add_argument("--rates", type=float, nargs="+", default=[0.5, 0.8],
                   help="Poisson rates as fractions of the step-level saturation rate")
    p.add_argument("--group-size", type=int, default=8, help="request-level --max-batch")
    p.add_argument("--instances", type=int, default=16, help="step-level --instances")
    p.add_argument("--threads", type=int, default=1, help="server's torch threads")
    p.add_argument("--device", default="cpu", help="the server's --device (cuda: "
                   "benchmarks/gpu_serve_check.py)")
    p.add_argument("--baseline-min-rows", type=int, default=1,
                   help="--min-rows of the request / sequential servers (1: no padding, "
                        "as in benchmarks/serve_load.py; step keeps the default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-timeout", type=float, default=300.0)
    p.add_argument("--modes", nargs="+", default=["step", "request-padded", "request"],
                   choices=["step", "request-padded", "request", "sequential"])
    p.add_argument("--curve", type=int, nargs="+", default=[1, 2, 4, 8, 16, 24, 32, 48, 64,
                                                            96, 128, 256],
                   help="call sizes (rows) of the network's rows-vs-time curve")
    p.add_argument("--locust-seconds", type=int, default=0,
                   help="also run benchmarks/locustfile.py this long against each server "
                        "(HTTP, --locust-users users; 0: not; needs locust==2.47.0)")
    p.add_argument("--locust-users", type=int, default=16)
    p.add_argument("--perf-data", default="/tmp/gaf_serve_requests.json",
                   help="where the perf_analyzer --input-data file of the workload goes")
    p.add_argument("--extra", default="", help="more `gaf-trt serve` options, one string")
    return p.parse_args()


class Server:
    """``gaf-trt serve`` in a subprocess on free ports; a context manager that waits for its
    "serving" line and stops it with SIGINT (its clean shutdown) on exit."""

    def __init__(self, args: argparse.Namespace, mode: str) -> None:
        self.http, self.grpc, self.metrics, self.gaf_metrics = free_ports(4)
        batching = ["--batching", "step", "--instances", str(args.instances)] if mode == "step" \
            else ["--batching", "request", "--min-rows", str(args.baseline_min_rows),
                  "--max-batch", "1" if mode == "sequential" else str(args.group_size)]
        self.cmd = [sys.executable, "-m", "gaf_trt.cli", "serve", "--ckpt", args.ckpt,
                    "--device", args.device, "--threads", str(args.threads),
                    "--http-port", str(self.http), "--grpc-port", str(self.grpc),
                    "--metrics-port", str(self.metrics), "--gaf-metrics-port",
                    str(self.gaf_metrics), "--max-queue", "1024",
                    *batching, *args.extra.split()]
        self.timeout = args.start_timeout
        self.mode = mode
        self.proc: subprocess.Popen | None = None
        self.lines: queue.Queue[str] = queue.Queue()

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def __enter__(self) -> Self:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        threading.Thread(target=self._pump, daemon=True).start()
        deadline, seen = time.monotonic() + self.timeout, []
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line and READY in line:
                return self
            if line:
                seen.append(line.rstrip())
            if line == "" or line is None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"the server did not start: {' | '.join(seen[-5:])}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def triton_counts(self) -> tuple[float, float]:
        """Triton's (inferences, executions) of the ``gaf`` model so far."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics",
                                      timeout=10).read().decode()

        def metric(name: str) -> float:
            return sum(float(v) for v in re.findall(
                rf'^{name}{{[^}}]*model="gaf"[^}}]*}} (\S+)$', text, re.MULTILINE))
        return metric("nv_inference_count"), metric("nv_inference_exec_count")


    def network_seconds(self) -> float:
        """The serving process's network call seconds so far (gaf-trt's metrics port)."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.gaf_metrics}/metrics",
                                      timeout=10).read().decode()
        found = re.search(r"^gaf_network_call_seconds_sum (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def service_counts(self) -> tuple[int, int]:
        """The serving process's (network calls, rows) so far (model ``gaf_stats``)."""
        import tritonclient.grpc as grpcclient

        with grpcclient.InferenceServerClient(f"127.0.0.1:{self.grpc}") as client:
            r = client.infer("gaf_stats", [])
        return int(r.as_numpy("calls")[0]), int(r.as_numpy("rows")[0])


def inputs_for(req, grpcclient, width: int | None) -> tuple[list, dict]:
    """gRPC inputs and parameters of one request (batch dimension 1); padded to ``width``
    classes unless None."""
    arrays, params = wire_arrays(req, width)
    ins = []
    for name, value in arrays.items():
        t = grpcclient.InferInput(name, list(value.shape), TRITON_DTYPES[value.dtype.name])
        t.set_data_from_numpy(value)
        ins.append(t)
    return ins, {**params, "output": "latents"}


@dataclass
class RunResult:
    mode: str
    rate: float | None
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    per_exec: float = 0.0
    rows_per_call: float = 0.0
    net_busy: float = 0.0  # share of the wall time in network calls
    row_seconds: float = 0.0  # network seconds per real row, in the server

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] if xs else float("nan")


def drive(server: Server, mode: str, requests, rate: float | None, seed: int) -> RunResult:
    """Send ``requests`` (Poisson at ``rate`` req/s, or all at once) and wait for all."""
    import tritonclient.grpc as grpcclient

    width = CLASS_WIDTH if mode == "request-padded" else None
    prepared = [inputs_for(r, grpcclient, width) for r in requests]
    rng = random.Random(seed)
    result = RunResult(mode, rate, 0.0)
    lock, left = threading.Lock(), threading.Semaphore(0)
    count0, exec0 = server.triton_counts()
    calls0, rows0 = server.service_counts()
    net0 = server.network_seconds()
    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc}") as client:
        outputs = [grpcclient.InferRequestedOutput("latents")]
        start = time.perf_counter()
        for inputs, params in paced(prepared, rate, rng):
            sent = time.perf_counter()

            def done(result=None, error=None, sent=sent, out=result) -> None:  # tritonclient passes keywords
                try:
                    with lock:
                        if error is not None:
                            out.errors.append(str(error).splitlines()[0][:200])
                        else:
                            out.latencies.append(time.perf_counter() - sent)
                finally:
                    left.release()
            client.async_infer("gaf", inputs, done, outputs=outputs, parameters=params)
        for _ in prepared:
            if not left.acquire(timeout=ANSWER_TIMEOUT):
                raise RuntimeError(f"no answer within {ANSWER_TIMEOUT:.0f} s")
        result.seconds = time.perf_counter() - start
    count1, exec1 = server.triton_counts()
    result.per_exec = (count1 - count0) / max(1.0, exec1 - exec0)
    calls1, rows1 = server.service_counts()
    result.rows_per_call = (rows1 - rows0) / max(1, calls1 - calls0)
    net = server.network_seconds() - net0
    result.net_busy = net / result.seconds
    result.row_seconds = net / max(1, rows1 - rows0)
    return result


def loadavg() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def rows_curve(args: argparse.Namespace) -> dict[int, float]:
    """Seconds of one network call of m rows, for each m of ``--curve`` (this process, the
    client's torch threads, before any server starts)."""
    import torch

    from gaf_trt.engine.base import LoadRequest, load_backend
    from gaf_trt.serve.curve import call_times

    torch.set_num_threads(args.threads)
    network = load_backend("torch", LoadRequest(artifact=args.ckpt, device=args.device))
    return call_times(network, sorted(set(args.curve)), repeats=5)


def call_seconds(curve: dict[int, float], rows: float) -> float:
    """The curve's time of a call of ``rows`` rows (linear between measured sizes; beyond
    the largest, in proportion)."""
    sizes = sorted(curve)
    if rows <= sizes[0]:
        return curve[sizes[0]]
    for lo, hi in zip(sizes, sizes[1:]):
        if rows <= hi:
            return curve[lo] + (curve[hi] - curve[lo]) * (rows - lo) / (hi - lo)
    return curve[sizes[-1]] * rows / sizes[-1]


def per_row(curve: dict[int, float], rows: float, min_rows: int) -> float:
    """Network seconds per real row in calls of ``rows`` real rows padded to ``min_rows``."""
    return call_seconds(curve, max(rows, min_rows)) / max(rows, 1e-9)


def print_curve(curve: dict[int, float]) -> None:
    print("\nnetwork rows-vs-time curve (one call, fastest of 5):\n")
    print("| rows | ms/call | ms/row | rows/s |")
    print("|---|---|---|---|")
    for m, sec in sorted(curve.items()):
        print(f"| {m} | {sec * 1000:.2f} | {sec * 1000 / m:.3f} | {m / sec:.0f} |")


def print_ceiling(curve: dict[int, float], sat: dict[str, RunResult], args) -> None:
    """Step ÷ request-level at saturation beside what the curve allows at the rows per call
    each achieved: throughput = net busy share / (network seconds per row x rows per
    request), so with both network-bound the ratio is the curve's ceiling; a server that
    leaves the network idle more (net busy lower) falls below it by that ratio too."""
    if "step" not in sat:
        return
    step = sat["step"]
    step_row = per_row(curve, step.rows_per_call, 16)
    for base in ("request-padded", "request", "sequential"):
        if base not in sat:
            continue
        b = sat[base]
        ceiling = per_row(curve, b.rows_per_call, args.baseline_min_rows) / step_row
        busy = step.net_busy / max(b.net_busy, 1e-9)
        print(f"step / {base} at saturation = {step.throughput / b.throughput:.2f}x; the "
              f"curve's ceiling at {step.rows_per_call:.1f} vs {b.rows_per_call:.1f} rows per "
              f"call = {ceiling:.2f}x; net busy {step.net_busy:.0%} vs {b.net_busy:.0%} "
              f"({busy:.2f}x); ceiling x busy ratio = {ceiling * busy:.2f}x; in the servers "
              f"{b.row_seconds * 1000:.2f} vs {step.row_seconds * 1000:.2f} ms per row "
              f"({b.row_seconds / max(step.row_seconds, 1e-12):.2f}x; x busy ratio = "
              f"{busy * b.row_seconds / max(step.row_seconds, 1e-12):.2f}x, the measured "
              "ratio up to rounding)")


def run_locust(server: Server, args, requests) -> list[str]:
    """``benchmarks/locustfile.py`` headless against ``server`` (its HTTP port) for
    ``--locust-seconds``; the summary lines of its CSV stats (a row per mix, Aggregated)."""
    import csv
    import shutil
    import tempfile

    from serve_requests import locust_data

    if shutil.which("locust") is None:
        return [f"{server.mode}: locust skipped (pip install locust==2.47.0)"]
    with tempfile.TemporaryDirectory(prefix="gaf-locust-") as tmp:
        data = Path(tmp) / "data.json"
        write_json(data, locust_data(requests))
        n = str(args.locust_users)
        subprocess.run(["locust", "-f", os.path.join(os.path.dirname(__file__), "locustfile.py"),
                        "--headless", "-u", n, "-r", n, "-t", f"{args.locust_seconds}s",
                        "--stop-timeout", "60", "--csv", f"{tmp}/run", "--only-summary",
                        "--host", f"http://127.0.0.1:{server.http}"],
                       env={**os.environ, "GAF_LOCUST_DATA": str(data)},
                       capture_output=True, timeout=args.locust_seconds + 300)
        with open(f"{tmp}/run_stats.csv") as f:
            return [f"| {server.mode} | {r['Name']} | {r['Request Count']} | "
                    f"{r['Failure Count']} | {float(r['Requests/s']):.1f} | {r['50%']} | "
                    f"{r['90%']} | {r['99%']} | {loadavg()} |" for r in csv.DictReader(f)]


def run_modes(args, requests) -> tuple[list, dict[str, RunResult], float]:
    """Every mode: warm-up, (first mode) lone latency, saturation, then the Poisson rates."""
    rows, sat, lone = [], {}, float("nan")
    for mode in args.modes:
        with Server(args, mode) as server:
            print(f"# {mode}: {' '.join(server.cmd[1:])}", flush=True)
            drive(server, mode, requests[:len(WORKLOAD)], None, args.seed)  # warm-up
            if mode == args.modes[0]:
                lone_runs = [drive(server, mode, [r], None, args.seed)
                             for r in requests[:len(WORKLOAD)]]
                lone = sum(r.latencies[0] for r in lone_runs) / len(lone_runs)
            res = drive(server, mode, requests, None, args.seed)
            sat[mode] = res
            rows.append((res, loadavg()))
            base = sat[args.modes[0]].throughput
            for frac in args.rates:
                rows.append((drive(server, mode, requests, frac * base, args.seed + 1),
                             loadavg()))
            if args.locust_seconds:
                LOCUST.extend(run_locust(server, args, requests))
    return rows, sat, lone


LOCUST: list[str] = []  # the locust summary rows of run_modes


def print_runs(rows: list) -> None:
    """The runs' table (``rows``: ``(RunResult, load average)``) and their errors."""
    print("| mode | offered req/s | done | errors | req/s | p50 ms | p90 ms | p99 ms | "
          "requests/execution | rows/call | net busy | net ms/row | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r, load in rows:
        offered = "all at once" if r.rate is None else f"{r.rate:.1f}"
        print(f"| {r.mode} | {offered} | {len(r.latencies)} | {len(r.errors)} | "
              f"{r.throughput:.1f} | {r.pct(0.5) * 1000:.0f} | {r.pct(0.9) * 1000:.0f} | "
              f"{r.pct(0.99) * 1000:.0f} | {r.per_exec:.1f} | {r.rows_per_call:.1f} | "
              f"{r.net_busy:.0%} | {r.row_seconds * 1000:.2f} | {load} |")
    for r, _ in rows:
        if r.errors:
            print(f"errors of {r.mode} at {r.rate}: {sorted(set(r.errors))[:3]}")


def main() -> None:
    args = parse_args()
    requests = workload(args.requests, args.num_classes, args.seed)
    write_json(Path(args.perf_data), perf_analyzer_data(requests))
    print(f"# serve load test through Triton (gRPC, tritonclient), "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {loadavg()}; {args.ckpt} on torch/{args.device}, {args.threads} thread(s)")
    print(f"# {args.requests} single-image requests, 1-3 classes, "
          f"{', '.join(f'{s}-{n}' for s, n in WORKLOAD)}; step: --instances {args.instances}; "
          f"request: --max-batch {args.group_size}; sequential: --max-batch 1; "
          f"perf_analyzer data: {args.perf_data}")
    curve = rows_curve(args)
    rows, sat, lone = run_modes(args, requests)
    print(f"\nlone request latency ({args.modes[0]} server, mean of the three kinds): "
          f"{lone * 1000:.0f} ms\n")
    print_runs(rows)
    if LOCUST:
        print(f"\nlocust, {args.locust_users} users, {args.locust_seconds} s each, exponential "
              "think time of mean 1 s (HTTP, padded requests; ms):\n")
        print("| server | mix | requests | failures | req/s | p50 | p90 | p99 | load avg |")
        print("|---|---|---|---|---|---|---|---|---|")
        print("\n".join(LOCUST))
    print_curve(curve)
    print()
    print_ceiling(curve, sat, args)
    if "step" in sat and args.modes[0] == "step" and 0.5 in args.rates:
        half = next(r for r, _ in rows if r.mode == "step" and r.rate is not None
                    and abs(r.rate - 0.5 * sat["step"].throughput) < 1e-9)
        print(f"p99 at half the step-level saturation rate / lone latency = "
              f"{half.pct(0.99) / lone:.2f}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
