"""Triton Inference Server front end (through PyTriton) of the generation service.

One model, ``gaf``: each row of the batch dimension is one generation request. Input
tensors (one value per row unless noted; all but ``classes`` optional):

- ``classes`` INT32 ``[n]`` (class ids); ``weights`` FP32 ``[n]``; ``alpha``, ``sigma``,
  ``t_eps`` FP32; ``steps``, ``batch`` (images per request) INT32; ``seed`` INT64.

String settings are request parameters (one per request): ``solver``, ``mask_type`` (a
preset; image masks are not taken), ``output``. No BYTES tensors: the stub decodes them
wrongly under numpy >= 2 (it crashes on them).

Outputs: ``images`` UINT8 ``[B, S, S, C]`` (pixel models) and ``latents`` FP32
``[B, C, S, S]``; a client asks for the one it wants.

Triton's dynamic batcher queues requests (bounded: past ``max_queue`` waiting requests one is
rejected at once) and hands each free model instance one request; every request goes to the
:class:`~gaf_trt.serve.GenerationService`, whose scheduler packs the network calls of all
instances' requests (step-level batching). Request-level batching (the switch): one
instance taking up to ``max_batch`` requests per execute -- Triton's dynamic batcher alone
decides what runs together, and the next batch waits for the whole previous one (a bad
request then fails the requests batched with it).

Two facts of the Triton build PyTriton bundles are handled here so that the user sets
nothing: its Python-backend stub loads ``libpython`` through the dynamic loader (so the
child's ``LD_LIBRARY_PATH`` gets this interpreter's ``lib``), and the stub is compiled
against the numpy 1.x ABI (so with numpy >= 2 the proxy's output tensors are handed over
through DLPack instead of ``pb_utils.Tensor(name, array)``, which reads the array's element
size at the numpy 1.x offset and sends empty outputs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sysconfig
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gaf_trt.errors import ConfigError
from gaf_trt.serve.requests import ServeRequest, to_images
from gaf_trt.serve.service import GenerationService

log = logging.getLogger(__name__)

MODEL_NAME = "gaf"
MIN_SHM_BYTES = 256 * 2 ** 20  # PyTriton's tensor store and the Python backend's shm regions
STRING_FIELDS = ("solver", "mask_type", "output")
INT_FIELDS = ("steps", "seed", "batch")
FLOAT_FIELDS = ("alpha", "sigma", "t_eps")

# The one line of PyTriton's stub-side proxy (pytriton/proxy/model.py, 0.5-0.7) that builds
# output tensors, and what replaces it (see module docstring).
_STUB_LINE = "                pb_utils.Tensor(name, value)\n"
_STUB_FIX = "                _gaf_output_tensor(name, value)\n"
# The helpers come from gaf_trt/serve/pb_tensors.py, inserted as source (the stub-side proxy
# does not import gaf_trt); the proxy calls them under its own names.
_STUB_HELPER = ("\n\n" + (Path(__file__).with_name("pb_tensors.py")).read_text()
                + "\n_gaf_output_tensor = gaf_output_tensor\n"
                "_gaf_input_array = gaf_input_array\n")
_STUB_ANCHOR = "import triton_python_backend_utils as pb_utils"
_STUB_INPUT = "request[input_name] = input_tensor.as_numpy()"
_STUB_INPUT_FIX = "request[input_name] = _gaf_input_array(input_tensor)"
# The stub waits only 1 s for PyTriton's handshake socket; on a busy machine that fails the
# model load, so it waits up to a minute.
_HANDSHAKE = "get_config_from_handshake_server(handshake_socket)"
_HANDSHAKE_FIX = "get_config_from_handshake_server(handshake_socket, timeout_s=60.0)"


def pytriton_missing() -> str | None:
    """None when PyTriton is importable here, else why not (one line)."""
    try:
        import pytriton.triton  # noqa: F401
    except ImportError as err:
        return (f"nvidia-pytriton is not installed ({err}); install it with "
                "`pip install --no-deps nvidia-pytriton==0.7.0` after `pip install "
                "'gaf-trt[serve]'` (README, Serving)")
    return None


def patched_stub_source(source: str) -> str:
    """PyTriton's stub-side ``model.py`` with output tensors built through DLPack."""
    if source.count(_STUB_LINE) != 1 or _STUB_ANCHOR not in source \
            or source.count(_HANDSHAKE) != 1 or source.count(_STUB_INPUT) != 1:
        raise ConfigError("unsupported nvidia-pytriton version: its proxy model.py does not "
                          "build outputs the way 0.5-0.7 do; install nvidia-pytriton==0.7.0")
    head, tail = source.split(_STUB_ANCHOR, 1)
    first_line_end = tail.index("\n") + 1
    source = head + _STUB_ANCHOR + tail[:first_line_end] + _STUB_HELPER + tail[first_line_end:]
    return (source.replace(_STUB_LINE, _STUB_FIX).replace(_HANDSHAKE, _HANDSHAKE_FIX)
            .replace(_STUB_INPUT, _STUB_INPUT_FIX))


def install_stub_fix() -> None:
    """Make PyTriton ship the patched stub-side ``model.py`` (idempotent)."""
    from pytriton.models import model as pt_model

    original = pt_model.Model.get_proxy_model_files
    if getattr(original, "_gaf_patched", False):
        return

    def get_proxy_model_files(self):  # type: ignore[no-untyped-def]
        files = original(self)
        for key in files:
            if key.endswith("/model.py"):
                files[key] = patched_stub_source(files[key].decode("utf-8")).encode("utf-8")
        return files

    get_proxy_model_files._gaf_patched = True  # type: ignore[attr-defined]
    pt_model.Model.get_proxy_model_files = get_proxy_model_files


def prepare_child_environment() -> None:
    """The Triton child (and its Python-backend stubs) find this interpreter's libpython
    first: with a pyenv / venv Python the stub would otherwise load the system one."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir:
        return
    current = os.environ.get("LD_LIBRARY_PATH", "")
    if libdir not in current.split(":"):
        os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{current}" if current else libdir


def check_port_free(port: int, what: str) -> None:
    """Refuse at once a port that is taken (Triton would only time out after ~60 s)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"{what} must be a port number in 1..65535, got {port!r}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is free
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            raise ConfigError(f"{what} {port} is already in use; give a free port with "
                              f"{what}") from None


def check_shm(required: int = MIN_SHM_BYTES, path: str = "/dev/shm") -> None:
    """Triton's Python backend and PyTriton exchange tensors through ``/dev/shm``: too small
    a one (Docker's default is 64 MB) kills the server with a bus error on large requests."""
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        raise ConfigError(f"{path} is missing: Triton's Python backend needs shared memory "
                          f"(at least {required // 2 ** 20} MB)") from None
    if free < required:
        raise ConfigError(f"{path} has {free // 2 ** 20} MB free; serving needs at least "
                          f"{required // 2 ** 20} MB (Docker: --shm-size=1g)")


def _one(name: str, value: np.ndarray) -> object:
    if value.size != 1:
        raise ConfigError(f"{name} takes one value per request, got {value.size}")
    return value.reshape(-1)[0]


def descendants(pid: int) -> set[int]:
    """Live (non-zombie) processes below ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def is_running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_gone(pids: set[int], timeout: float = 30.0) -> None:
    """Wait until ``pids`` have exited; SIGKILL the ones still there after ``timeout``."""
    import signal
    import time

    deadline = time.monotonic() + timeout
    while any(is_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for p in pids:
        if is_running(p):
            log.warning("process %d outlived Triton's shutdown; killing it", p)
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)


def decode_request(row: Mapping[str, np.ndarray],
                   parameters: Mapping[str, object] | None = None) -> ServeRequest:
    """A :class:`ServeRequest` from the input tensors of one row (batch dimension removed)
    and the request's string parameters."""
    if "classes" not in row:
        raise ConfigError("a request needs the input 'classes'")
    fields: dict[str, object] = {"classes": [int(c) for c in row["classes"].reshape(-1)]}
    if "weights" in row:
        fields["weights"] = [float(v) for v in np.asarray(row["weights"]).reshape(-1)]
    params = dict(parameters or {})
    for name in STRING_FIELDS:
        if name in params:
            value = params.pop(name)
            if not isinstance(value, str):
                raise ConfigError(f"parameter {name} must be a string, got {value!r}")
            fields[name] = value
    if params:
        raise ConfigError(f"unknown request parameter(s) {sorted(params)}; valid: "
                          f"{', '.join(STRING_FIELDS)}")
    for name in INT_FIELDS:
        if name in row:
            fields[name] = int(_one(name, row[name]))
    for name in FLOAT_FIELDS:
        if name in row:
            fields[name] = float(_one(name, row[name]))
    return ServeRequest(**fields)  # type: ignore[arg-type]


def split_rows(request: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """The rows of a Triton request (leading batch dimension) as one mapping each."""
    sizes = {v.shape[0] for v in request.values() if v.ndim}
    if len(sizes) != 1:
        raise ConfigError(f"inputs disagree on the batch size: {sorted(sizes)}")
    n = sizes.pop()
    return [{k: v[i] for k, v in request.items()} for i in range(n)]


@dataclass(frozen=True)
class ServerConfig:
    """Triton settings: ports, instances, queue bound, request-level batch size."""

    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    instances: int = 8  # requests executing at once (each instance takes one at a time)
    max_batch: int = 1  # requests per execute; > 1 only for request-level batching
    max_queue: int = 64


class GafTritonServer:
    """The ``gaf`` model on a local Triton started by PyTriton, answering with ``service``."""

    def __init__(self, service: GenerationService, config: ServerConfig) -> None:
        self.service = service
        self.config = config
        self._triton = None
        self._logdir: tempfile.TemporaryDirectory | None = None

    def infer(self, requests: Sequence) -> list[dict[str, np.ndarray]]:
        """PyTriton inference callable: a list of requests -> a list of output dicts. Every
        row of every request is submitted before any is awaited (they share calls)."""
        jobs = [[self.service.submit(decode_request(row, req.parameters))
                 for row in split_rows(req.data)] for req in requests]
        out = []
        for req_jobs in jobs:
            states = [job.result() for job in req_jobs]
            latents = np.stack([s.numpy() for s in states]).astype(np.float32)
            images = (np.stack([to_images(s) for s in states])
                      if self.service.scheduler.config.mode != "latent"
                      else np.zeros((len(states), 0, 0, 0, 0), np.uint8))
            out.append({"images": images, "latents": latents})
        return out

    def _safe_infer(self, requests: Sequence) -> list[dict[str, np.ndarray]]:
        try:
            return self.infer(requests)
        except ConfigError as err:
            from pytriton.exceptions import PyTritonBadParameterError

            raise PyTritonBadParameterError(str(err)) from None

    def start(self) -> None:
        """Check ports and /dev/shm, then start Triton with the ``gaf`` model bound."""
        for port, what in ((self.config.http_port, "--http-port"),
                           (self.config.grpc_port, "--grpc-port"),
                           (self.config.metrics_port, "--metrics-port")):
            check_port_free(port, what)
        check_shm()
        prepare_child_environment()
        install_stub_fix()
        from pytriton.model_config import DynamicBatcher, ModelConfig, QueuePolicy, Tensor
        from pytriton.triton import Triton, TritonConfig

        self._logdir = tempfile.TemporaryDirectory(prefix="gaf-triton-")
        cfg = TritonConfig(http_port=self.config.http_port, grpc_port=self.config.grpc_port,
                           metrics_port=self.config.metrics_port,
                           log_file=Path(self._logdir.name) / "triton.log")
        self._triton = Triton(config=cfg)
        inputs = [Tensor(name="classes", dtype=np.int32, shape=(-1,)),
                  Tensor(name="weights", dtype=np.float32, shape=(-1,), optional=True)]
        inputs += [Tensor(name=n, dtype=np.int64 if n == "seed" else np.int32, shape=(1,),
                          optional=True) for n in INT_FIELDS]
        inputs += [Tensor(name=n, dtype=np.float32, shape=(1,), optional=True)
                   for n in FLOAT_FIELDS]
        outputs = [Tensor(name="images", dtype=np.uint8, shape=(-1, -1, -1, -1)),
                   Tensor(name="latents", dtype=np.float32, shape=(-1, -1, -1, -1))]
        batcher = DynamicBatcher(default_queue_policy=QueuePolicy(
            max_queue_size=self.config.max_queue))
        self._triton.bind(model_name=MODEL_NAME,
                          infer_func=[self._safe_infer] * self.config.instances,
                          inputs=inputs, outputs=outputs,
                          config=ModelConfig(max_batch_size=self.config.max_batch,
                                             batcher=batcher))
        self._triton.run()

    def alive(self) -> bool:
        return self._triton is not None and self._triton.is_alive()

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of Triton's log (kept in a temporary folder until :meth:`stop`)."""
        if self._logdir is None:
            return ""
        path = Path(self._logdir.name) / "triton.log"
        text = path.read_text(errors="replace") if path.is_file() else ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self) -> None:
        """Stop Triton and wait until every process it started is gone (the stubs' own
        helper processes outlive Triton by a moment); its shared memory and workspace go
        with it."""
        if self._triton is not None:
            started = descendants(os.getpid())
            self._triton.stop()
            self._triton = None
            wait_gone(started)
        if self._logdir is not None:
            self._logdir.cleanup()
            self._logdir = None


def serve_until_stopped(service: GenerationService, config: ServerConfig,
                        stop: threading.Event, ready: Callable[[str], None]) -> None:
    """Start the scheduler and Triton, call ``ready(message)`` once serving, and run until
    ``stop`` is set (a signal) or Triton dies; then stop Triton and the service. Nothing is
    left behind: Triton's processes, PyTriton's shared memory and workspace go with it."""
    server = GafTritonServer(service, config)
    service.start()
    try:
        server.start()
        ready(f"serving model '{MODEL_NAME}' on HTTP :{config.http_port}, gRPC "
              f":{config.grpc_port} ({service.config.mode} batching, {config.instances} "
              f"instance(s)); Ctrl-C or SIGTERM stops")
        while not stop.wait(1.0):
            if not server.alive():
                raise RuntimeError(f"Triton stopped unexpectedly; its log ends: "
                                  f"{server.log_tail()}")
    finally:
        server.stop()
        service.close()
