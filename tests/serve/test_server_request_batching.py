"""``gaf-trt serve --batching request`` end to end (the comparison mode: Triton's dynamic
batcher groups whole requests into one execute): concurrent requests of different
compositions, solvers and step counts get the same bits as step-level batching (the
``min_rows_reference``), and a bad request batched with good ones does not take the server
down; requests of 1, 2 and 3 classes padded to the class limit (``class_count``) are grouped
into one execute and get their unpadded bits. One server for the module, stopped with
SIGTERM at its end."""

from __future__ import annotations

import re
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from gaf_trt.serve import ServeRequest
from gaf_trt.serve.wire import encode_request, pad_request
from tests.serve.refs import min_rows_reference
from tests.serve.server_proc import (
    Server,
    http_client,
    infer_latents,
    make_inputs,
    stats,
    th,
    wait_for,
)

GROUP = 4  # --max-batch: requests per execute

# the same input tensors and shapes (Triton batches only such requests together), different
# compositions, solvers, step counts, seeds and image counts
REQUESTS = [
    ServeRequest(classes=[3, 7], weights=[1.0, 2.0], steps=4, solver="ier", seed=5, batch=2),
    ServeRequest(classes=[1, 4], weights=[1.0, 1.0], steps=3, solver="euler", seed=1, batch=1),
    ServeRequest(classes=[2, 8], weights=[0.5, 1.0], steps=2, solver="heun", seed=9, batch=3),
    ServeRequest(classes=[0, 6], weights=[2.0, 1.0], steps=5, solver="euler", seed=3, batch=1),
]


@pytest.fixture(scope="module")
def server():
    srv = Server("--batching", "request", "--max-batch", str(GROUP))
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.close()


@pytest.fixture(scope="module")
def references(one_thread):
    return [min_rows_reference(r) for r in REQUESTS]


def serve_all(server, requests) -> list[torch.Tensor]:
    """``requests`` sent at once, one client each (Triton batches what waits together)."""
    def one(req):
        with http_client(server) as client:
            return infer_latents(client, req)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(one, requests))


def test_request_batching_gives_the_step_batching_bits(server, references):
    for _ in range(2):  # twice: groups form differently, the bits do not change
        for got, ref in zip(serve_all(server, REQUESTS), references):
            assert torch.equal(got, ref)
    assert stats(server)["active"] == 0


def test_bad_request_then_serving_goes_on(server, references):
    from tritonclient.utils import InferenceServerException

    with http_client(server) as client:
        with pytest.raises(InferenceServerException) as err:
            client.infer("gaf", make_inputs(th, classes=[12], steps=2))
        assert "out of range" in str(err.value)
    assert torch.equal(serve_all(server, REQUESTS[:1])[0], references[0])


# one request of each class count (Triton's batcher would never group them unpadded)
MIXED = [ServeRequest(classes=[5], steps=3, solver="euler", seed=2),
         ServeRequest(classes=[3, 7], weights=[1.0, 2.0], steps=4, solver="ier", seed=5),
         ServeRequest(classes=[0, 6, 9], weights=[2.0, 1.0, 0.5], steps=2, solver="heun",
                      seed=3)]
BLOCKER = ServeRequest(classes=[1], steps=150, solver="euler", seed=0)  # ~1 s of calls


def triton_executions(server) -> float:
    """Triton's execution count of model ``gaf`` (its metrics port)."""
    url = f"http://127.0.0.1:{server.metrics}/metrics"
    with urllib.request.urlopen(url, timeout=30) as r:
        text = r.read().decode()
    return sum(float(v) for v in re.findall(
        r'^nv_inference_exec_count{[^}]*model="gaf"[^}]*} (\S+)$', text, re.MULTILINE))


def infer_padded(server, req: ServeRequest) -> torch.Tensor:
    arrays, params = encode_request(req)
    inputs = []
    for name, arr in pad_request(arrays, 8).items():
        i = th.InferInput(name, list(arr.shape), {"int32": "INT32", "int64": "INT64",
                                                  "float32": "FP32"}[arr.dtype.name])
        i.set_data_from_numpy(arr)
        inputs.append(i)
    with http_client(server) as client:
        r = client.infer("gaf", inputs, parameters=params,
                         outputs=[th.InferRequestedOutput("latents")])
    return torch.from_numpy(r.as_numpy("latents")[0].copy())


def test_padded_requests_of_any_class_count_share_an_execute(server, one_thread):
    """With one instance busy (a blocker), the padded requests wait in Triton's queue; the
    second instance takes the first alone, the other two go as one execute (unpadded, their
    shapes differ: one execute each, 4 in all; checked). Each gets the bits of its
    unpadded request."""
    refs = [min_rows_reference(r) for r in MIXED]
    before = triton_executions(server)
    blocker = threading.Thread(target=serve_all, args=(server, [BLOCKER]))
    blocker.start()
    wait_for(lambda: stats(server)["active"] == 1, "the blocker admitted")
    with ThreadPoolExecutor(len(MIXED)) as pool:
        got = list(pool.map(lambda r: infer_padded(server, r), MIXED))
    blocker.join()
    for g, ref in zip(got, refs):
        assert torch.equal(g, ref)
    assert triton_executions(server) - before <= 3  # blocker 1, the three padded <= 2


def test_sigterm_stops(server):
    assert server.stop() == 0, server.stderr[-2000:]
    assert server.lines[-1] == "stopped"
