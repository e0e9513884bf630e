"""``gaf-trt serve --batching request`` end to end (the comparison mode: Triton's dynamic
batcher groups whole requests into one execute): concurrent requests of different
compositions, solvers and step counts get the same bits as step-level batching (the
``min_rows_reference``), and a bad request batched with good ones does not take the server
down. One server for the module, stopped with SIGTERM at its end."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from gaf_trt.serve import ServeRequest
from tests.serve.refs import min_rows_reference
from tests.serve.server_proc import (
    Server,
    http_client,
    infer_latents,
    make_inputs,
    stats,
    th,
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


def test_sigterm_stops(server):
    assert server.stop() == 0, server.stderr[-2000:]
    assert server.lines[-1] == "stopped"
