"""``gaf-trt serve --batching request`` end to end (the comparison mode: Triton's dynamic
batcher groups whole requests into one execute): concurrent requests of different
compositions, solvers and step counts get the same bits as step-level batching (the
``min_rows_reference``), and a bad request batched with good ones does not take the server
down; requests of 1, 2 and 3 classes padded to the class limit (``class_count``) are grouped
into one execute and get their unpadded bits. One server for the module, stopped with
SIGTERM at its end."""

from __future__ import annotations

import csv
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from gaf_trt.serve import ServeRequest
from gaf_trt.serve.wire import encode_request, pad_request
from tests.serve.refs import min_rows_reference
from tests.serve.server_proc import (
    START_TIMEOUT,
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


ROOT = Path(__file__).resolve().parents[2]


def test_locustfile_runs_headless_against_the_server(server, tmp_path):
    """``benchmarks/locustfile.py`` for 2 s (3 users, one per mix, 2-step requests; each
    user's last request finishes, ``--stop-timeout``): every mix answered, no failure,
    Locust's CSV written; the locust process is gone after."""
    if shutil.which("locust") is None:
        pytest.skip("locust is not installed (pip install locust==2.47.0; scripts/test.sh "
                    "installs it)")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from serve_requests import locust_data, write_json

    data = tmp_path / "locust.json"
    write_json(data, locust_data([dataclasses.replace(r, solver=solver, steps=2)
                                  for r in MIXED for solver in ("ier", "euler", "heun")]))
    cmd = ["locust", "-f", str(ROOT / "benchmarks" / "locustfile.py"), "--headless", "-u", "3",
           "-r", "3", "-t", "2s", "--stop-timeout", "60", "--csv", str(tmp_path / "run"), "--only-summary",
           "--host", f"http://127.0.0.1:{server.http}"]
    proc = subprocess.run(cmd, env={**os.environ, "GAF_LOCUST_DATA": str(data),
                                    "GAF_LOCUST_RATE": "5"},
                          capture_output=True, text=True, timeout=START_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / "run_stats.csv") as f:
        rows = {r["Name"]: r for r in csv.DictReader(f)}
    for mix in ("gaf ier", "gaf euler", "gaf heun"):
        assert int(rows[mix]["Request Count"]) > 0 and rows[mix]["Failure Count"] == "0", rows
    assert int(rows["Aggregated"]["Failure Count"]) == 0


def test_locust_dtypes_are_the_wire_dtypes():
    """The KServe bodies name each input with the ``gaf`` model's dtype."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from serve_requests import kserve_body

    from gaf_trt.serve.wire import INPUTS

    dtypes = {t.name: t.dtype for t in INPUTS}
    names = {"INT32": "int32", "INT64": "int64", "FP32": "float32"}
    for req in MIXED:
        for inp in kserve_body(req)["inputs"]:
            assert names[inp["datatype"]] == dtypes[inp["name"]]


def test_gpu_serve_checks_burst_and_reference_on_the_cpu(server, one_thread):
    """benchmarks/gpu_serve_check.py's parity part (its burst over gRPC and its ``sample``
    reference on the device), here on the CPU against this server: bit-identical."""
    pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_serve_check

    got = gpu_serve_check.burst(server, MIXED)
    for req, g in zip(MIXED, got):
        assert torch.equal(g, gpu_serve_check.reference(req, "cpu"))


def test_sigterm_stops(server):
    assert server.stop() == 0, server.stderr[-2000:]
    assert server.lines[-1] == "stopped"
