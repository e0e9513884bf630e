"""A ``gaf-trt serve`` subprocess for the server tests (``Server``: free ports, ready when
it prints "serving", the models' ready endpoints checked at that line) and the clients'
helpers: request tensors, ``gaf_stats``, gaf-trt's ``/metrics`` read strictly."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from gaf_trt.serve import ServeRequest
from gaf_trt.serve.host import free_ports
from gaf_trt.serve.wire import STATS
from tests.serve import prometheus_text as prom

th = pytest.importorskip("tritonclient.http", reason="tritonclient is not installed")

START_TIMEOUT = 240  # a hang fails the module, not the suite
REQUEST_TIMEOUT = 120

INSTANCES = 2  # Server's --instances

READY_ENDPOINTS = ("/v2/models/gaf/ready", "/v2/models/gaf_stats/ready")


def http_status(url: str) -> int:
    """The HTTP status of GET ``url`` (0: no answer)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


class Server:
    """``python -m gaf_trt.cli serve`` in a subprocess; ready when it prints 'serving'."""

    def __init__(self, *extra: str) -> None:
        self.http, self.grpc, self.metrics, self.gaf_metrics = free_ports(4)
        cmd = [sys.executable, "-m", "gaf_trt.cli", "serve", "--device", "cpu", "--threads",
               "1", "--instances", str(INSTANCES), "--http-port", str(self.http), "--grpc-port",
               str(self.grpc), "--metrics-port", str(self.metrics), "--gaf-metrics-port",
               str(self.gaf_metrics), *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.ready_status: dict[str, int] = {}  # endpoint -> HTTP status at the serving line
        self.stderr = ""
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("serving"):
                self.ready_status = {ep: http_status(f"http://127.0.0.1:{self.http}{ep}")
                                     for ep in READY_ENDPOINTS}
                self.ready.set()
        self.proc.wait()
        self.ready.set()  # exited: wake the waiter

    def _read_err(self) -> None:
        self.stderr = self.proc.stderr.read()

    def wait_ready(self) -> None:
        assert self.ready.wait(START_TIMEOUT) and self.proc.poll() is None, \
            f"server did not start: {self.lines[-5:]} {self.stderr[-2000:]}"

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(START_TIMEOUT)

    def close(self) -> None:
        """Stop it if a test left it running (SIGTERM, then SIGKILL after the timeout)."""
        if self.proc.poll() is None:
            try:
                self.stop()
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()



def http_client(server):
    """An HTTP client of ``server``; close it (``with``): Triton's stop waits for open
    connections."""
    return th.InferenceServerClient(f"localhost:{server.http}", network_timeout=REQUEST_TIMEOUT)


DTYPES = {"classes": "INT32", "weights": "FP32", "steps": "INT32", "seed": "INT64",
          "batch": "INT32", "alpha": "FP32", "sigma": "FP32", "mask_image": "UINT8"}
NP = {"INT32": np.int32, "INT64": np.int64, "FP32": np.float32, "UINT8": np.uint8}


def make_inputs(mod, dtypes=None, **values):
    """Input tensors of one request (a batch of one row): lists are ``[n]`` inputs, arrays
    are sent as they are, scalars as ``[1]``; ``dtypes`` overrides a Triton dtype."""
    out = []
    for name, value in values.items():
        dt = (dtypes or {}).get(name, DTYPES[name])
        arr = np.asarray(value if isinstance(value, (list, np.ndarray)) else [value], NP[dt])[None]
        i = mod.InferInput(name, list(arr.shape), dt)
        i.set_data_from_numpy(arr)
        out.append(i)
    return out


def request_inputs(mod, req: ServeRequest, **extra):
    values = {"classes": req.classes, "steps": req.steps, "seed": req.seed, "batch": req.batch}
    if req.weights is not None:
        values["weights"] = req.weights
    if req.alpha is not None:
        values["alpha"] = req.alpha
    if req.mask_image is not None:
        values["mask_image"] = req.mask_image
    return make_inputs(mod, **values, **extra)


def infer_latents(client, req: ServeRequest, params=None) -> torch.Tensor:
    """``req`` served over HTTP: its latents ``[B, C, S, S]``."""
    r = client.infer("gaf", request_inputs(th, req), outputs=[th.InferRequestedOutput("latents")],
                     parameters={"solver": req.solver, **(params or {})}, timeout=REQUEST_TIMEOUT)
    return torch.from_numpy(r.as_numpy("latents")[0].copy())


def stats(server) -> dict[str, int]:
    """The server's counters (model ``gaf_stats``)."""
    with http_client(server) as c:
        r = c.infer("gaf_stats", [], timeout=REQUEST_TIMEOUT)
    return {k: int(r.as_numpy(k)[0]) for k in STATS}


def wait_for(condition, what: str) -> None:
    """Poll ``condition`` until it holds (bounded by START_TIMEOUT): orders events, not time."""
    deadline = time.monotonic() + START_TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def scrape(server) -> dict:
    """``/metrics`` of gaf-trt's own endpoint, read strictly (Prometheus text 0.0.4)."""
    url = f"http://127.0.0.1:{server.gaf_metrics}/metrics"
    with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        types, samples = prom.parse(r.read().decode())
    assert types["gaf_requests_admitted_total"] == "counter"
    assert types["gaf_network_call_rows"] == "histogram"
    return samples
