"""The service's ``gaf_...`` metrics as Triton custom metrics, for the ``gaf`` model of a
``gaf-trt triton-repo`` repository (Python backend: ``pb_utils.MetricFamily``), so that they
appear on Triton's own metrics port beside its ``nv_inference_...`` ones.

Same names as ``gaf-trt serve``'s ``/metrics`` (:func:`gaf_trt.serve.metrics.service_families`),
each sample with the label ``instance`` (the Triton model instance: every instance runs a
service of its own). Triton's custom metrics know counters, gauges and (Triton >= 24.08)
histograms, no summaries: a summary ``NAME`` (``_sum``, ``_count``) becomes two counters
``NAME_sum`` and ``NAME_count``, so the queries written for ``serve``
(``rate(NAME_sum[5m]) / rate(NAME_count[5m])``) work on both. ``gaf_network_call_rows`` is a
histogram where the backend has them (the same ``le`` bounds), else two counters likewise.

The values are copied from the service by a daemon thread every :data:`SYNC_S` seconds
(counters by their increase since the last copy) and once more at :meth:`stop`.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from gaf_trt.serve.metrics import Family, row_buckets, service_families

if TYPE_CHECKING:
    from gaf_trt.serve.service import GenerationService

log = logging.getLogger(__name__)

SYNC_S = 1.0  # how often the values are copied from the service
ROWS_HISTOGRAM = "gaf_network_call_rows"


def _key(name: str, labels: dict[str, str]) -> tuple:
    return (name, tuple(sorted(labels.items())))


class TritonCustomMetrics:
    """Copies ``service``'s counters into Triton custom metrics created with ``utils``
    (``triton_python_backend_utils``); ``labels`` go on every sample."""

    def __init__(self, utils: Any, service: GenerationService, labels: dict[str, str],
                 period: float = SYNC_S) -> None:
        self._utils = utils
        self._service = service
        self._labels = dict(labels)
        self._period = period
        self._families: dict[str, Any] = {}
        self._metrics: dict[tuple, Any] = {}
        self._last: dict[tuple, float] = {}
        self._rows_seen: dict[int, int] = {}
        self._histogram = hasattr(utils.MetricFamily, "HISTOGRAM")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.update()

    def _metric(self, name: str, kind: str, help_text: str, labels: dict[str, str],
                buckets: list[float] | None = None) -> Any:
        """The Triton metric of ``name`` with ``labels`` (created at first use)."""
        key = _key(name, labels)
        if key not in self._metrics:
            family = self._families.get(name)
            if family is None:
                family = self._utils.MetricFamily(
                    name=name, description=help_text,
                    kind=getattr(self._utils.MetricFamily, kind))
                self._families[name] = family
            extra = {"buckets": buckets} if buckets is not None else {}
            self._metrics[key] = family.Metric(labels={**self._labels, **labels}, **extra)
        return self._metrics[key]

    def _add(self, name: str, help_text: str, labels: dict[str, str], value: float) -> None:
        """A counter to ``value``: increased by what it grew since the last copy."""
        key = _key(name, labels)
        grown = value - self._last.get(key, 0.0)
        metric = self._metric(name, "COUNTER", help_text, labels)
        if grown > 0:
            metric.increment(grown)
        self._last[key] = max(value, self._last.get(key, 0.0))

    def _copy(self, fam: Family) -> None:
        if fam.kind == "gauge":
            for _, labels, value in fam.samples:
                self._metric(fam.name, "GAUGE", fam.help, labels).set(float(value))
        elif fam.kind == "counter":
            for _, labels, value in fam.samples:
                self._add(fam.name, fam.help, labels, float(value))
        else:  # summary (and the histogram without Triton histograms): _sum and _count
            for suffix, labels, value in fam.samples:
                if suffix in ("_sum", "_count"):
                    self._add(fam.name + suffix, f"{fam.help} ({suffix[1:]})", labels,
                              float(value))

    def _observe_rows(self, fam: Family) -> None:
        """The rows histogram: each call made since the last copy observed once."""
        sched = self._service.scheduler
        buckets = [float(b) for b in row_buckets(sched.max_rows)]
        metric = self._metric(fam.name, "HISTOGRAM", fam.help, {}, buckets)
        stats, _ = sched.snapshot()
        for rows, calls in stats.rows_per_call.items():
            for _ in range(calls - self._rows_seen.get(rows, 0)):
                metric.observe(float(rows))
            self._rows_seen[rows] = calls

    def update(self) -> None:
        """Copy the service's values now."""
        with self._lock:
            for fam in service_families(self._service):
                if fam.name == ROWS_HISTOGRAM and self._histogram:
                    self._observe_rows(fam)
                else:
                    self._copy(fam)

    def start(self) -> TritonCustomMetrics:
        self._thread = threading.Thread(target=self._run, name="gaf-triton-metrics",
                                        daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            try:
                self.update()
            except Exception:  # noqa: BLE001 - metrics must never stop serving
                log.exception("copying the gaf metrics to Triton failed")

    def stop(self) -> None:
        """Stop the copying thread after a last copy; the metrics go with their families."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.update()
        self._metrics.clear()
        self._families.clear()
