"""The service's Prometheus metrics (``gaf_trt.serve.metrics``) in-process: counts under
concurrent requests, cancellations, the exposition format read strictly, the endpoint."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import pytest

from gaf_trt.serve import Cancelled, GenerationService, ServeConfig, ServeRequest
from gaf_trt.serve.metrics import (
    CONTENT_TYPE,
    Family,
    MetricsEndpoint,
    ServiceMetrics,
    format_families,
    service_families,
)
from tests.serve.prometheus_text import parse, value

TIMEOUT = 120


def scrape(service: GenerationService) -> dict:
    return parse(format_families(service_families(service)))[1]


def test_counts_are_exact_under_concurrent_requests(digits):
    """8 threads x 3 requests at once: every request admitted and finished once, every
    call counted, the rows histogram adds up to the scheduler's rows."""
    service = GenerationService(digits, ServeConfig(max_queue=32)).start()
    reqs = [ServeRequest(classes=[1 + i % 5], steps=2 + i % 3, batch=1 + i % 2, seed=i)
            for i in range(24)]
    errors: list[BaseException] = []

    def client(part: list[ServeRequest]) -> None:
        try:
            for job in [service.submit(r) for r in part]:
                job.result(TIMEOUT)
        except BaseException as err:  # noqa: BLE001 - reported by the test
            errors.append(err)

    try:
        threads = [threading.Thread(target=client, args=(reqs[i::8],)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        assert not errors
        s = scrape(service)
        stats = service.scheduler.stats
    finally:
        service.close()
    assert value(s, "gaf_requests_admitted_total") == 24
    assert value(s, "gaf_requests_finished_total", outcome="ok") == 24
    assert value(s, "gaf_requests_finished_total", outcome="cancelled") == 0
    assert value(s, "gaf_requests_active") == 0 and value(s, "gaf_rows_pending") == 0
    assert value(s, "gaf_request_queue_seconds_count") == 24
    assert value(s, "gaf_request_run_seconds_count") == 24
    assert value(s, "gaf_network_calls_total") == stats.calls > 0
    assert value(s, "gaf_network_call_rows_count") == stats.calls
    assert value(s, "gaf_network_call_rows_sum") == stats.rows
    assert value(s, "gaf_network_call_rows_bucket", le="+Inf") == stats.calls
    assert value(s, "gaf_network_call_seconds_count") == stats.calls
    assert value(s, "gaf_network_call_seconds_sum") > 0
    assert value(s, "gaf_network_padded_rows_total") == stats.padded


def test_cancellations_counted(digits):
    """A request cancelled while waiting finishes ``cancelled`` and never ran."""
    service = GenerationService(digits, ServeConfig(mode="sequential", max_queue=2))
    try:
        job = service.submit(ServeRequest(classes=[3], steps=2))
        job.cancel()
        with pytest.raises(Cancelled):
            job.result(TIMEOUT)
        s = scrape(service)
    finally:
        service.close()
    assert value(s, "gaf_requests_admitted_total") == 1
    assert value(s, "gaf_requests_finished_total", outcome="cancelled") == 1
    assert value(s, "gaf_request_run_seconds_count") == 0


def test_refusal_reasons_and_format():
    m = ServiceMetrics()
    m.refused("invalid", 2)
    m.refused("overloaded")
    assert m.snapshot()["refused"] == {"invalid": 2, "overloaded": 1}
    with pytest.raises(ValueError, match="unknown refusal reason 'full'; valid: invalid"):
        m.refused("full")
    text = format_families([Family("x_total", "counter", "a help", [("", {"k": 'a"b\\'}, 3)]),
                            Family("y", "gauge", "g", [("", {}, 0.25)])])
    assert text == ('# HELP x_total a help\n# TYPE x_total counter\nx_total{k="a\\"b\\\\"} 3\n'
                    "# HELP y g\n# TYPE y gauge\ny 0.25\n")
    types, samples = parse(text)
    assert types == {"x_total": "counter", "y": "gauge"}
    assert samples[("x_total", (("k", 'a\\"b\\\\'),))] == 3


def test_endpoint_serves_metrics_only():
    ep = MetricsEndpoint(0, lambda: "# HELP a b\n# TYPE a gauge\na 1\n")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ep.port}/metrics", timeout=10) as r:
            assert r.status == 200 and r.headers["Content-Type"] == CONTENT_TYPE
            assert parse(r.read().decode())[1] == {("a", ()): 1.0}
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{ep.port}/other", timeout=10)
        assert err.value.code == 404
    finally:
        ep.stop()
