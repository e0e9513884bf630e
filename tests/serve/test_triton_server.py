"""``gaf-trt serve`` end to end: a real Triton (PyTriton) in a subprocess on free ports,
queried with tritonclient over HTTP and gRPC, stopped with SIGTERM; nothing may be left
(processes, /dev/shm entries, PyTriton workspaces). Readiness is the server's own
"serving" line, never a sleep. Skipped (with the reason) where PyTriton is not installed."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gaf_trt.serve import ServeRequest, to_images
from gaf_trt.serve.triton import descendants, is_running
from tests.serve.refs import min_rows_reference

pytest.importorskip("pytriton.triton", reason="nvidia-pytriton is not installed (README: "
                    "Serving, `pip install --no-deps nvidia-pytriton==0.7.0`)")
th = pytest.importorskip("tritonclient.http", reason="tritonclient is not installed")
tg = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")

START_TIMEOUT = 240  # a hang fails the module, not the suite
REQUEST_TIMEOUT = 120
WORKSPACES = Path.home() / ".cache" / "pytriton"

GOOD = ServeRequest(classes=[3, 7], weights=[1.0, 2.0], steps=4, solver="ier", seed=5, batch=2)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def listing(path: Path) -> set[str]:
    return {p.name for p in path.iterdir()} if path.is_dir() else set()


class Server:
    """``python -m gaf_trt.cli serve`` in a subprocess; ready when it prints 'serving'."""

    def __init__(self, *extra: str) -> None:
        self.http, self.grpc, self.metrics = free_ports(3)
        cmd = [sys.executable, "-m", "gaf_trt.cli", "serve", "--device", "cpu", "--threads",
               "1", "--instances", "2", "--http-port", str(self.http), "--grpc-port",
               str(self.grpc), "--metrics-port", str(self.metrics), *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.stderr = ""
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("serving"):
                self.ready.set()
        self.ready.set()  # exited: wake the waiter

    def _read_err(self) -> None:
        self.stderr = self.proc.stderr.read()

    def wait_ready(self) -> None:
        assert self.ready.wait(START_TIMEOUT) and self.proc.poll() is None, \
            f"server did not start: {self.lines[-5:]} {self.stderr[-2000:]}"

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(START_TIMEOUT)


@pytest.fixture(scope="module")
def server():
    ws_start = listing(WORKSPACES)
    srv = Server()
    srv.ws_start = ws_start
    try:
        srv.wait_ready()
        yield srv
    finally:
        if srv.proc.poll() is None:  # a failed test left it running: stop it cleanly
            srv.proc.send_signal(signal.SIGTERM)
            try:
                srv.proc.wait(START_TIMEOUT)
            except subprocess.TimeoutExpired:
                srv.proc.kill()
                srv.proc.wait()


def http_client(server):
    """An HTTP client of ``server``; close it (``with``): Triton's stop waits for open
    connections."""
    return th.InferenceServerClient(f"localhost:{server.http}", network_timeout=REQUEST_TIMEOUT)


def http_inputs(classes, weights=None, steps=None, seed=None, batch=None, steps_dtype="INT32"):
    def one(name, arr, dt):
        i = th.InferInput(name, list(arr.shape), dt)
        i.set_data_from_numpy(arr)
        return i

    ins = [one("classes", np.array([classes], np.int32), "INT32")]
    if weights is not None:
        ins.append(one("weights", np.array([weights], np.float32), "FP32"))
    if steps is not None:
        ins.append(one("steps", np.array([[steps]], np.int32 if steps_dtype == "INT32"
                                         else np.float32), steps_dtype))
    if seed is not None:
        ins.append(one("seed", np.array([[seed]], np.int64), "INT64"))
    if batch is not None:
        ins.append(one("batch", np.array([[batch]], np.int32), "INT32"))
    return ins


def good_http(client):
    r = client.infer("gaf", http_inputs(GOOD.classes, GOOD.weights, GOOD.steps, GOOD.seed,
                                        GOOD.batch),
                     outputs=[th.InferRequestedOutput("latents"), th.InferRequestedOutput("images")],
                     parameters={"solver": GOOD.solver}, timeout=REQUEST_TIMEOUT)
    return r.as_numpy("latents")[0], r.as_numpy("images")[0]


@pytest.fixture(scope="module")
def reference(one_thread):
    return min_rows_reference(GOOD)


def test_http_result_is_the_sample_result(server, reference):
    with http_client(server) as client:
        latents, images = good_http(client)
    assert torch.equal(torch.from_numpy(latents.copy()), reference)
    assert np.array_equal(images, to_images(reference))


def test_grpc_client(server, reference):
    i = tg.InferInput("classes", [1, 2], "INT32")
    i.set_data_from_numpy(np.array([GOOD.classes], np.int32))
    ins = [i]
    for name, value, dt, np_dt in (("weights", GOOD.weights, "FP32", np.float32),
                                   ("steps", [GOOD.steps], "INT32", np.int32),
                                   ("seed", [GOOD.seed], "INT64", np.int64),
                                   ("batch", [GOOD.batch], "INT32", np.int32)):
        t = tg.InferInput(name, [1, len(value)], dt)
        t.set_data_from_numpy(np.array([value], np_dt))
        ins.append(t)
    with tg.InferenceServerClient(f"localhost:{server.grpc}") as client:
        r = client.infer("gaf", ins, parameters={"solver": GOOD.solver},
                         outputs=[tg.InferRequestedOutput("latents")],
                         client_timeout=REQUEST_TIMEOUT)
    assert torch.equal(torch.from_numpy(r.as_numpy("latents")[0].copy()), reference)


BAD = [  # (inputs kwargs, request parameters, text the error must contain)
    ({"classes": [12]}, {}, "out of range"),
    ({"classes": [3, 7], "weights": [1.0]}, {}, "give one weight per class"),
    ({"classes": [3], "steps": 0}, {}, "steps must be an integer in 1..1000, got 0"),
    ({"classes": [3], "steps": 10 ** 9}, {}, "got 1000000000"),
    ({"classes": [3], "steps": 4, "steps_dtype": "FP32"}, {}, "expects 'INT32'"),
    ({"classes": [3]}, {"solver": "nope"}, "unknown solver 'nope'"),
    ({"classes": [3]}, {"colour": "red"}, "unknown request parameter(s) ['colour']"),
]


@pytest.mark.parametrize("inputs,params,message", BAD, ids=[m for *_, m in BAD])
def test_malformed_request_gets_an_error_and_serving_goes_on(server, reference, inputs, params,
                                                              message):
    from tritonclient.utils import InferenceServerException

    with http_client(server) as client:
        with pytest.raises(InferenceServerException) as err:
            client.infer("gaf", http_inputs(**inputs), parameters=params or None,
                         timeout=REQUEST_TIMEOUT)
        assert message in str(err.value)
        assert torch.equal(torch.from_numpy(good_http(client)[0].copy()), reference)


def test_busy_port_refused_in_one_line(server):
    """A second server on the first one's HTTP port: one error line, exit 2."""
    grpc, metrics = free_ports(2)
    res = subprocess.run([sys.executable, "-m", "gaf_trt.cli", "serve", "--device", "cpu",
                          "--http-port", str(server.http), "--grpc-port", str(grpc),
                          "--metrics-port", str(metrics)],
                         capture_output=True, text=True, timeout=START_TIMEOUT, check=False)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    want = (f"error: --http-port {server.http} is already in use; give a free port with "
            "--http-port")
    assert res.returncode == 2 and errors == [want], res.stderr
    assert "Traceback" not in res.stderr


def shm_mapped_by(pids: set[int]) -> set[str]:
    """/dev/shm entries that processes ``pids`` have mapped (from /proc/PID/maps)."""
    names = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        names |= {ln.split("/dev/shm/", 1)[1].split(" ")[0] for ln in maps.splitlines()
                  if "/dev/shm/" in ln}
    return names


def test_sigterm_stops_cleanly_leaving_nothing(server):
    """Last in this module: SIGTERM ends the server with exit 0 and 'stopped' within
    seconds; its Triton processes, shared memory and PyTriton workspace are gone."""
    children = descendants(server.proc.pid)
    assert children, "Triton should run as a child of the server"
    shm_used = shm_mapped_by(children | {server.proc.pid})
    assert any(n.startswith(f"pytrtion{server.proc.pid}-") for n in shm_used), shm_used
    ws_running = listing(WORKSPACES)
    assert server.stop() == 0, server.stderr[-2000:]
    assert server.lines[-1] == "stopped"
    # the server's own resource tracker exits (removing what it tracks) once it sees the
    # server gone: wait for that (bounded), not for a time
    deadline = time.monotonic() + START_TIMEOUT
    while {pid for pid in children if is_running(pid)} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not {pid for pid in children if is_running(pid)}, "a Triton process outlived it"
    assert not shm_used & listing(Path("/dev/shm"))
    assert not (listing(WORKSPACES) & ws_running) - server.ws_start
