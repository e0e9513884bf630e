"""A ``gaf-trt triton-repo`` repository loaded by a real Triton: the ``tritonserver`` binary
that PyTriton 0.7.0 bundles (Triton 2.51; its only backend is ``python``, so the network
models are written with ``--network-backend python``), started directly with
``--model-repository`` on free ports, queried with tritonclient over HTTP and gRPC, and
stopped with nothing left behind (processes, Python-backend shared memory).

Readiness is Triton's own ready endpoint, polled until a deadline (or until the server
exits). The Python-backend stub runs an isolated interpreter (it ignores PYTHONPATH; its
``sys.path`` starts with the working directory), so the server runs in the checkout's root
and the stub imports this checkout's gaf_trt.

Numerics: the reference is ``gaf-trt sample``'s pipeline on the ``ort`` backend over the
same engine directory with the scheduler's minimum rows (``MinRowsNetwork``); each request
runs alone and all its calls have 16 rows, the same calls on the same graphs with the same
ONNX Runtime session options: results are compared bit for bit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import gaf_trt
from gaf_trt.engine.base import LoadRequest, load_backend
from gaf_trt.serve import MinRowsNetwork, ServeRequest, to_images
from gaf_trt.serve.host import descendants, free_ports, is_running
from tests.serve.refs import sample_reference

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
pytriton = pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed (README: "
                               "Serving, `pip install --no-deps nvidia-pytriton==0.7.0`)")
th = pytest.importorskip("tritonclient.http", reason="tritonclient is not installed")
tg = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")

SHM_PREFIX = f"gaf_repo_test_{os.getpid()}_"
START_TIMEOUT = 180  # a hang fails the module, not the suite
REQUEST_TIMEOUT = 120
ROOT = Path(gaf_trt.__file__).resolve().parent.parent
TRITON = Path(pytriton.__file__).parent / "tritonserver"
STUB = TRITON / "python_backend_stubs" / f"{os.sys.version_info[0]}.{os.sys.version_info[1]}" \
    / "triton_python_backend_stub"

COMPOSED = ServeRequest(classes=[3, 7], weights=[1.0, 2.0], steps=4, solver="ier", seed=5,
                        batch=2)
MASKED = ServeRequest(classes=[1, 8], mask_type="horizontal_2", steps=3, solver="euler", seed=9)


def backend_dir(root: Path) -> Path:
    """The bundled Python backend with this interpreter's stub beside it (as PyTriton lays
    it out in its workspace), by symbolic links."""
    python = root / "python"
    python.mkdir(parents=True)
    for src in (TRITON / "backends" / "python" / "libtriton_python.so",
                TRITON / "backends" / "python" / "triton_python_backend_utils.py", STUB):
        (python / src.name).symlink_to(src)
    return root


def shm_entries() -> set[str]:
    shm = Path("/dev/shm")
    return {p.name for p in shm.iterdir()} if shm.is_dir() else set()


class Server:
    """``tritonserver --model-repository REPO`` in a subprocess."""

    def __init__(self, repo: Path, backends: Path, log: Path) -> None:
        self.http, self.grpc, self.metrics = free_ports(3)
        env = dict(os.environ)
        libdir = sysconfig.get_config_var("LIBDIR")  # the stub loads this Python's libpython
        env["LD_LIBRARY_PATH"] = f"{libdir}:{env['LD_LIBRARY_PATH']}" \
            if env.get("LD_LIBRARY_PATH") else libdir
        self.log = log
        self.proc = subprocess.Popen(
            [str(TRITON / "bin" / "tritonserver"), f"--model-repository={repo}",
             f"--backend-directory={backends}", f"--cache-directory={TRITON / 'caches'}",
             f"--http-port={self.http}", f"--grpc-port={self.grpc}",
             f"--metrics-port={self.metrics}",
             f"--backend-config=python,shm-default-byte-size={4 << 20}", f"--backend-config=python,shm-region-prefix-name={SHM_PREFIX}",
             "--exit-timeout-secs=10", "--disable-auto-complete-config"],
            cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        self.client = th.InferenceServerClient(f"127.0.0.1:{self.http}",
                                               network_timeout=REQUEST_TIMEOUT)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                ready = self.client.is_server_ready()
            except Exception:  # noqa: BLE001 - not listening yet
                ready = False
            if ready:
                return
            time.sleep(0.2)  # polling interval only: readiness is the endpoint's answer
        tail = self.log.read_text(errors="replace")[-3000:]
        raise AssertionError(f"tritonserver not ready (exit {self.proc.poll()}): {tail}")

    def stop(self) -> int:
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.client.close()  # an open keep-alive connection holds Triton's shutdown
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@pytest.fixture(scope="module")
def server(digits_engine, tmp_path_factory):
    from gaf_trt.serve.repository import RepoOptions, build_repository

    root = tmp_path_factory.mktemp("triton-repo")
    build_repository(digits_engine, root / "repo", RepoOptions(network_backend="python"))
    srv = Server(root / "repo", backend_dir(root / "backends"), root / "triton.log")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def reference(digits_engine, one_thread):
    engine = load_backend("ort", LoadRequest(artifact=str(digits_engine), device="cpu",
                                             options={"graphs": "split"}))
    return lambda req: sample_reference(req, lambda _net: MinRowsNetwork(engine))


def inputs(mod, req: ServeRequest) -> list:
    arrays = {"classes": np.array([req.classes], np.int32),
              "steps": np.array([[req.steps]], np.int32), "seed": np.array([[req.seed]], np.int64),
              "batch": np.array([[req.batch]], np.int32)}
    if req.weights is not None:
        arrays["weights"] = np.array([req.weights], np.float32)
    out = []
    for name, value in arrays.items():
        dtype = {np.int32: "INT32", np.int64: "INT64", np.float32: "FP32"}[value.dtype.type]
        i = mod.InferInput(name, list(value.shape), dtype)
        i.set_data_from_numpy(value)
        out.append(i)
    return out


def params(req: ServeRequest) -> dict:
    return {"solver": req.solver, **({"mask_type": req.mask_type} if req.mask_type else {})}


def test_repository_loads_and_answers_http(server, reference):
    """All five models load; a weighted composition over HTTP is bit-identical to the
    pipeline, its images the rounding of those latents."""
    models = {m["name"]: m.get("state") for m in server.client.get_model_repository_index()}
    assert models == {m: "READY" for m in ("gaf", "gaf_anchors", "gaf_trunk", "gaf_j_head",
                                           "gaf_k_bank", "gaf_stream")}  # issue 27: gaf_stream
    r = server.client.infer("gaf", inputs(th, COMPOSED), parameters=params(COMPOSED),
                            outputs=[th.InferRequestedOutput("latents"),
                                     th.InferRequestedOutput("images")])
    got = torch.from_numpy(r.as_numpy("latents")[0].copy())
    ref = reference(COMPOSED)
    assert got.abs().max() > 0.1 and torch.equal(got, ref)
    assert np.array_equal(r.as_numpy("images")[0], to_images(ref))


def test_grpc_mask_preset_and_a_bad_request(server, reference):
    """Over gRPC: a bad request gets an error naming the value; the server then answers a
    mask-preset composition bit-identically."""
    client = tg.InferenceServerClient(f"127.0.0.1:{server.grpc}")
    bad = ServeRequest(classes=[3, 42], steps=2)
    with pytest.raises(Exception, match="42") as err:
        client.infer("gaf", inputs(tg, bad), parameters=params(bad),
                     client_timeout=REQUEST_TIMEOUT)
    # issue 23 item 7: a refused request is the client's error, in one line
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT", str(err.value)
    assert "Traceback" not in str(err.value)
    names = [i for i in inputs(tg, bad) if i.name() != "classes"]
    with pytest.raises(Exception, match="'--3'") as err:
        client.infer("gaf", names, parameters={"class_names": '["--3"]'},
                     client_timeout=REQUEST_TIMEOUT)
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT", str(err.value)
    r = client.infer("gaf", inputs(tg, MASKED), parameters=params(MASKED),
                     outputs=[tg.InferRequestedOutput("latents")],
                     client_timeout=REQUEST_TIMEOUT)
    assert torch.equal(torch.from_numpy(r.as_numpy("latents")[0].copy()), reference(MASKED))
    client.close()


def triton_metric(server, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples on Triton's metrics port whose labels include
    ``labels`` (-1: no such sample)."""
    import re
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics}/metrics", timeout=30) as r:
        text = r.read().decode()
    found = -1.0
    for label_text, value in re.findall(rf"^{name}{{([^}}]*)}} (\S+)$", text, re.MULTILINE):
        have = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
        if all(have.get(k) == v for k, v in labels.items()):
            found = max(found, 0.0) + float(value)
    return found


def test_gaf_metrics_on_tritons_metrics_port(server):
    """After the requests above (two answered, two refused), the gaf model's custom metrics
    are on Triton's own metrics port under serve's names (copied every second)."""
    deadline = time.monotonic() + 30
    while triton_metric(server, "gaf_requests_finished_total", outcome="ok") < 2:
        assert time.monotonic() < deadline, "no gaf_ metrics on Triton's metrics port"
        time.sleep(0.2)
    assert triton_metric(server, "gaf_requests_refused_total", reason="invalid") >= 2
    assert triton_metric(server, "gaf_requests_active") == 0
    calls = triton_metric(server, "gaf_network_calls_total")
    assert calls > 0
    assert triton_metric(server, "gaf_network_call_rows_count") == calls
    assert triton_metric(server, "gaf_request_run_seconds_count") >= 2

def test_grpc_stream_previews_then_the_result(server, reference):
    """Issue 27: the decoupled ``gaf_stream`` over a gRPC stream: previews after 2 and 4
    evaluations, then the latents of the pipeline's bits."""
    import queue

    answers: queue.Queue = queue.Queue()
    client = tg.InferenceServerClient(f"127.0.0.1:{server.grpc}")
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    client.async_stream_infer("gaf_stream", inputs(tg, COMPOSED),
                              parameters={**params(COMPOSED), "preview_every": 2},
                              outputs=[tg.InferRequestedOutput(n) for n in
                                       ("preview", "preview_step", "latents")])
    steps = []
    while True:
        result, error = answers.get(timeout=REQUEST_TIMEOUT)
        assert error is None, error
        if result.as_numpy("latents") is not None:
            break
        assert result.as_numpy("preview").shape == (1, 2, 16, 16, 1)
        steps.append(int(result.as_numpy("preview_step")[0, 0]))
    client.stop_stream()
    client.close()
    assert steps == [2, 4]
    got = torch.from_numpy(result.as_numpy("latents")[0].copy())
    assert torch.equal(got, reference(COMPOSED))


def test_stopped_server_leaves_nothing(server):
    """Runs last: stop the server now and check that it left no process and no
    Python-backend shared memory behind."""
    started = descendants(server.proc.pid) | {server.proc.pid}
    assert len(started) >= 5  # tritonserver and a stub per Python model (not the ensemble)
    assert server.stop() == 0
    deadline = time.monotonic() + 30  # the stubs exit a moment after the server
    while any(is_running(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not {p for p in started if is_running(p)}
    assert not {n for n in shm_entries() if n.startswith(SHM_PREFIX)}
