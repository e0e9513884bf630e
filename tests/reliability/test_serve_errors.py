"""Serving reliability (issue 18): every malformed request gets one clear error naming the
bad value while the service keeps serving the others; 1,000 requests with faults mixed in
leave it answering correctly. In-process (the service layer every front end calls)."""

from __future__ import annotations

import socket

import pytest
import torch

from gaf_trt.engine.base import LoadRequest, load_backend
from gaf_trt.errors import ConfigError
from gaf_trt.serve import GenerationService, ServeConfig, ServeLimits, ServeRequest
from gaf_trt.serve.requests import request_from_mapping
from tests.reliability.conftest import assert_bad_input, gaf_app, invoke
from tests.serve.refs import min_rows_reference

TIMEOUT = 120
GOOD = ServeRequest(classes=[3, 7], weights=[1, 1], steps=2, seed=11, batch=2)

BAD = [  # (request fields, text the error must contain)
    ({"classes": [12]}, "out of range"),
    ({"classes": ["cat"]}, "unknown class name 'cat'"),
    ({"classes": "3"}, "classes must be a list"),
    ({"classes": []}, "at least one class"),
    ({"classes": [3, 7], "weights": [1]}, "give one weight per class"),
    ({"classes": [3, 7], "weights": ["a", "b"]}, "weights must be a list of numbers"),
    ({"classes": [3, 7], "weights": [float("nan"), 1]}, "finite"),
    ({"classes": [3, 7], "alpha": "x"}, "alpha must be a number, got 'x'"),
    ({"classes": [3], "steps": 0}, "steps must be an integer in 1..1000, got 0"),
    ({"classes": [3], "steps": 10 ** 9}, "got 1000000000"),
    ({"classes": [3], "steps": "5"}, "steps must be an integer"),
    ({"classes": [3], "steps": 5.0}, "steps must be an integer"),
    ({"classes": [3], "batch": 0}, "batch must be an integer in 1..16"),
    ({"classes": [3], "batch": True}, "batch must be an integer"),
    ({"classes": [3], "seed": -1}, "seed must be an integer"),
    ({"classes": [3], "solver": "nope"}, "unknown solver 'nope'"),
    ({"classes": [3, 7], "mask_type": "custom"}, "needs an image file"),
    ({"classes": [3, 7], "mask_type": "nope"}, "unknown mask type 'nope'"),
    ({"classes": [3, 7, 1], "mask_type": "vertical_2"}, "2 region(s) but 3 class(es)"),
    ({"classes": [3], "sigma": -1}, "sigma must be in"),
    ({"classes": [3], "t_eps": 0.7}, "t_eps must be in"),
    ({"classes": [3], "output": "png"}, "unknown output 'png'"),
    ({"classes": [3], "stepz": 4}, "unknown request field(s) ['stepz']"),
    ({"steps": 4}, "needs 'classes'"),
    ({"classes": [1, 2, 3], "weights": [1, 1, 1], "batch": 16}, "row budget is 32"),
]


@pytest.fixture(scope="module")
def service(one_thread):
    net = load_backend("torch", LoadRequest(artifact="digits", device="cpu"))
    svc = GenerationService(net, ServeConfig(max_queue=64, limits=ServeLimits(max_rows=32)))
    yield svc.start()
    svc.close()


@pytest.fixture(scope="module")
def good_ref(service):
    return min_rows_reference(GOOD)


def submit_fields(service: GenerationService, fields: dict):
    return service.submit(request_from_mapping(fields))


@pytest.mark.parametrize("fields,message", BAD, ids=[m for _, m in BAD])
def test_malformed_request_refused_and_service_keeps_serving(service, good_ref, fields, message):
    with pytest.raises(ConfigError) as err:
        submit_fields(service, fields)
    text = str(err.value)
    assert message in text and "\n" not in text
    assert torch.equal(service.generate(GOOD, TIMEOUT), good_ref)


def test_thousand_requests_with_faults_mixed_in(service, good_ref):
    """1,000 requests, one in five valid: every bad one refused, every good one exact."""
    jobs, refused = [], 0
    for i in range(1000):
        if i % 5 == 0:
            jobs.append(service.submit(GOOD))
            if len(jobs) == 50:  # stay below max_queue: wait for this wave
                assert all(torch.equal(j.result(TIMEOUT), good_ref) for j in jobs)
                jobs = []
        else:
            with pytest.raises(ConfigError):
                submit_fields(service, BAD[i % len(BAD)][0])
            refused += 1
    assert all(torch.equal(j.result(TIMEOUT), good_ref) for j in jobs)
    assert refused == 800 and service.active == 0


# --------------------------------------------------------------------------- gaf-trt serve
# Option checks run before Triton (or PyTriton) is touched: these need neither.


@pytest.fixture()
def busy_port():
    """A port some other program is listening on."""
    s = socket.socket()
    s.bind(("0.0.0.0", 0))
    s.listen()
    yield s.getsockname()[1]
    s.close()


def test_serve_busy_port_refused_in_one_line(busy_port):
    res = invoke(gaf_app(), ["serve", "--http-port", str(busy_port)])
    assert_bad_input(res, f"--http-port {busy_port} is already in use")


@pytest.mark.parametrize("args,needle", [
    (["--batching", "continuous"], "unknown --batching 'continuous'; valid: request, step"),
    (["--instances", "0"], "--instances must be an integer in 1..64, got 0"),
    (["--max-queue", "0"], "--max-queue must be an integer in 1..100000, got 0"),
    (["--http-port", "70000"], "--http-port must be a port number in 1..65535, got 70000"),
    (["--call-rows", "-3"], "--call-rows must be 0 (measured at start) or 1..65536, got -3"),
    (["--min-rows", "0"], "--min-rows must be an integer in 1..4096, got 0"),
    (["--gaf-metrics-port", "70000"],
     "--gaf-metrics-port must be a port number in 1..65535, got 70000"),
], ids=["batching", "instances", "max-queue", "port-range", "call-rows", "min-rows",
        "gaf-metrics-port"])
def test_serve_bad_options(args, needle):
    assert_bad_input(invoke(gaf_app(), ["serve", *args]), needle)


def test_serve_same_port_twice():
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    res = invoke(gaf_app(), ["serve", "--http-port", str(port), "--grpc-port", str(port)])
    assert_bad_input(res, "must differ")


def test_serve_gaf_metrics_port_must_differ():
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    res = invoke(gaf_app(), ["serve", "--http-port", str(port), "--gaf-metrics-port", str(port)])
    assert_bad_input(res, "--http-port, --grpc-port, --metrics-port, --gaf-metrics-port must "
                          "differ")
