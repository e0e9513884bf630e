"""Prometheus metrics of the generation service, named ``gaf_...``, and the small HTTP
endpoint of ``gaf-trt serve`` that answers ``GET /metrics`` with them (``--gaf-metrics-port``).

PyTriton runs the inference callables in the serving process, not in Triton's Python-backend
stubs, and has no metrics API; Triton's custom metrics (``pb_utils.MetricFamily``) exist only
inside a stub. So the service's counters are served beside Triton's own metrics port, in the
Prometheus text exposition format (0.0.4), written here by hand (no extra package).

:class:`ServiceMetrics` holds the counters the service keeps per request (admitted,
finished by outcome, refused by reason, queue and run time), each change under one lock;
the scheduler keeps the per-call counters (:class:`~gaf_trt.serve.scheduler.SchedulerStats`).
:func:`service_families` reads both at one scrape.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gaf_trt.serve.service import GenerationService

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OUTCOMES = ("ok", "failed", "cancelled")  # how an admitted request finished
REFUSALS = ("invalid", "overloaded")  # why a request was refused (400 / 503)


class ServiceMetrics:
    """Thread-safe per-request counters of a :class:`~gaf_trt.serve.GenerationService`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._admitted = 0
        self._finished: collections.Counter[str] = collections.Counter()
        self._refused: collections.Counter[str] = collections.Counter()
        self._queue = [0.0, 0]  # seconds, requests: admission -> its solver starts
        self._run = [0.0, 0]  # seconds, requests: solver start -> finished

    def admitted(self, n: int) -> None:
        with self._lock:
            self._admitted += n

    def refused(self, reason: str, n: int = 1) -> None:
        """``n`` requests refused: ``invalid`` (a bad request) or ``overloaded``."""
        if reason not in REFUSALS:
            raise ValueError(f"unknown refusal reason {reason!r}; valid: {', '.join(REFUSALS)}")
        with self._lock:
            self._refused[reason] += n

    def started(self, queue_s: float) -> None:
        with self._lock:
            self._queue[0] += queue_s
            self._queue[1] += 1

    def finished(self, outcome: str, run_s: float | None) -> None:
        """A request finished (``ok``, ``failed``, ``cancelled``); ``run_s`` None when it
        never started (cancelled while waiting)."""
        with self._lock:
            self._finished[outcome] += 1
            if run_s is not None:
                self._run[0] += run_s
                self._run[1] += 1

    def snapshot(self) -> dict:
        """The counters now, consistent with each other."""
        with self._lock:
            return {"admitted": self._admitted, "finished": dict(self._finished),
                    "refused": dict(self._refused), "queue": tuple(self._queue),
                    "run": tuple(self._run)}


@dataclass(frozen=True)
class Family:
    """One metric family: ``samples`` are ``(name suffix, labels, value)`` (a counter's
    name ends ``_total``, as the 0.0.4 text format has it on its samples' lines)."""

    name: str
    kind: str  # counter, gauge, summary, histogram
    help: str
    samples: Sequence[tuple[str, dict[str, str], float]] = field(default_factory=list)


def _value(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if isinstance(v, float) and not float(v).is_integer() else str(int(v))


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    esc = {k: v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
           for k, v in labels.items()}
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc.items()) + "}"


def format_families(families: Sequence[Family]) -> str:
    """The Prometheus text exposition (format 0.0.4) of ``families``."""
    lines = []
    for fam in families:
        lines.append(f"# HELP {fam.name} {fam.help}")
        lines.append(f"# TYPE {fam.name} {fam.kind}")
        lines.extend(f"{fam.name}{suffix}{_labels(labels)} {_value(value)}"
                     for suffix, labels, value in fam.samples)
    return "\n".join(lines) + "\n"


def row_buckets(max_rows: int) -> list[int]:
    """Histogram bounds of rows per call: powers of two below ``max_rows``, then it."""
    bounds, b = [], 1
    while b < max_rows:
        bounds.append(b)
        b *= 2
    return [*bounds, max_rows]


def rows_histogram(rows_per_call: dict[int, int], max_rows: int) -> list:
    """Cumulative ``_bucket`` samples, ``_sum`` (real rows) and ``_count`` (calls) of the
    calls' row counts (``rows_per_call[m]`` = calls of ``m`` rows)."""
    samples = [("_bucket", {"le": str(b)}, sum(n for m, n in rows_per_call.items() if m <= b))
               for b in row_buckets(max_rows)]
    calls = sum(rows_per_call.values())
    samples.append(("_bucket", {"le": "+Inf"}, calls))
    samples.append(("_sum", {}, sum(m * n for m, n in rows_per_call.items())))
    samples.append(("_count", {}, calls))
    return samples


def service_families(service: GenerationService) -> list[Family]:
    """Every ``gaf_...`` family of ``service`` now."""
    req = service.metrics.snapshot()
    stats, pending = service.scheduler.snapshot()
    return [
        Family("gaf_requests_active", "gauge", "Requests admitted and not finished.",
               [("", {}, service.active)]),
        Family("gaf_rows_pending", "gauge", "Rows waiting for a network call.",
               [("", {}, pending)]),
        Family("gaf_requests_admitted_total", "counter", "Requests admitted (one per row of the "
               "gaf model's batch dimension).", [("", {}, req["admitted"])]),
        Family("gaf_requests_finished_total", "counter", "Admitted requests finished, by outcome.",
               [("", {"outcome": o}, req["finished"].get(o, 0)) for o in OUTCOMES]),
        Family("gaf_requests_refused_total", "counter", "Requests to the gaf model refused before "
               "admission: invalid (a bad request, 400) or overloaded (the service's bound or "
               "shutting down, 503).",
               [("", {"reason": r}, req["refused"].get(r, 0)) for r in REFUSALS]),
        Family("gaf_request_queue_seconds", "summary", "Time from admission to the request's "
               "solver starting.",
               [("_sum", {}, req["queue"][0]), ("_count", {}, req["queue"][1])]),
        Family("gaf_request_run_seconds", "summary", "Time from the solver starting to the "
               "request finishing.", [("_sum", {}, req["run"][0]), ("_count", {}, req["run"][1])]),
        Family("gaf_network_calls_total", "counter", "Network calls made.",
               [("", {}, stats.calls)]),
        Family("gaf_network_call_rows", "histogram", "Real rows per network call (before "
               "padding to --min-rows).", rows_histogram(stats.rows_per_call,
                                                        service.scheduler.max_rows)),
        Family("gaf_network_padded_rows_total", "counter",
               "Padding rows added to reach --min-rows.",
               [("", {}, stats.padded)]),
        Family("gaf_network_call_seconds", "summary", "Time of the network calls.",
               [("_sum", {}, stats.seconds), ("_count", {}, stats.calls)]),
    ]


class MetricsEndpoint:
    """``GET /metrics`` on ``port`` (all interfaces) answered with ``render()``, in a daemon
    thread; any other path is 404. :meth:`stop` closes the socket."""

    def __init__(self, port: int, render: Callable[[], str]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                try:
                    body = render().encode()
                except Exception:  # noqa: BLE001 - a scrape fails, serving goes on
                    log.exception("rendering the metrics failed")
                    self.send_error(500, "rendering the metrics failed")
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args) -> None:
                log.debug("metrics endpoint: " + fmt, *args)

        self._server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="gaf-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
