"""Triton Inference Server front end (through PyTriton) of the generation service.

Model ``gaf``: each row of the batch dimension is one generation request. Input tensors (one
value per row unless noted; all optional):

- ``classes`` INT32 ``[n]`` (class ids); ``weights`` FP32 ``[n]``; ``alpha``, ``sigma``,
  ``t_eps`` FP32; ``steps``, ``batch`` (images per request) INT32; ``seed`` INT64;
  ``mask_image`` UINT8 ``[H, W]`` (one region per gray level, as ``--mask-type custom
  --mask-img``; at most ``ServeLimits.max_mask_pixels``).

String settings are request parameters (one per request): ``solver``, ``mask_type`` (a
preset), ``output``, and ``class_names`` (a JSON list of class names, instead of the
``classes`` input). No BYTES tensors: the stub crashes decoding them under numpy >= 2 (its
``as_numpy`` builds object arrays with the numpy 1.x ABI, and BYTES have no DLPack form).

Model ``gaf_stats`` (no inputs): the service's counters ``active`` (requests admitted and
not finished), ``pending_rows`` (rows waiting for the next network call), ``calls``, ``rows``
and ``cancelled`` (requests cancelled by their client), INT64 ``[1]`` each.

Outputs: ``images`` UINT8 ``[B, S, S, C]`` (pixel models) and ``latents`` FP32
``[B, C, S, S]``; a client asks for the one it wants.

Triton's dynamic batcher queues requests (bounded: past ``max_queue`` waiting requests one is
rejected at once) and hands each free model instance one request; every request goes to the
:class:`~gaf_trt.serve.GenerationService`, whose scheduler packs the network calls of all
instances' requests (step-level batching). Request-level batching (the switch): Triton's
dynamic batcher alone decides what runs together (up to ``max_batch`` requests per execute),
and the service (``request`` mode) starts each batch as one group once the whole previous
one is done (a bad request then fails the requests batched with it). That mode has
:data:`REQUEST_INSTANCES` instances, not one: with a bounded queue (``max_queue``) Triton
does not prefetch, and its batcher hands a batch only to an instance already back waiting;
the "execution done" wake-up it gets comes before the instance is back, so with one
instance every next batch waited for the batcher's 500 ms timed re-check
(``DynamicBatchScheduler::WaitForPayloadSlotAvailable`` in triton-inference-server/core;
~0.1-0.5 s between queued requests). With two, the other instance is always back waiting.

Two facts of the Triton build PyTriton bundles are handled here so that the user sets
nothing: its Python-backend stub loads ``libpython`` through the dynamic loader (so the
child's ``LD_LIBRARY_PATH`` gets this interpreter's ``lib``), and the stub is compiled
against the numpy 1.x ABI (so with numpy >= 2 the proxy's output tensors are handed over
through DLPack instead of ``pb_utils.Tensor(name, array)``, which reads the array's element
size at the numpy 1.x offset and sends empty outputs).
"""

from __future__ import annotations

import contextlib
import json
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

from gaf_trt.errors import ConfigError, GAFError
from gaf_trt.serve.requests import ServeRequest, to_images
from gaf_trt.serve.scheduler import Cancelled
from gaf_trt.serve.service import GenerationService, Job

log = logging.getLogger(__name__)

MODEL_NAME = "gaf"
# Triton's stop shares one --exit-timeout-secs budget between waiting for open client
# connections and unloading the model instances (one after another, each ~1.3 s: the
# backend's 1 s health check, then the stub's finalize); past it, Triton exits at once and
# the stubs exit on their own (nothing is left, but they skip their finalize).
EXIT_TIMEOUT_BASE_S = 5
EXIT_TIMEOUT_PER_INSTANCE_S = 2
MIN_SHM_BYTES = 256 * 2 ** 20  # PyTriton's tensor store and the Python backend's shm regions
STRING_FIELDS = ("solver", "mask_type", "output")
NAMES_PARAM = "class_names"  # JSON list of class names: no BYTES tensors (see above)
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


# Two more changes to the stub-side proxy (0.7.0): (1) a prompt shutdown -- its requests
# server notices the shutdown flag only at a 1 s poll, and Triton unloads the instances one
# after another, so each instance's finalize would add that second to the stop; (2) request
# cancellation -- while waiting for the answer the proxy checks Triton's
# ``request.is_cancelled()`` (a gRPC client cancelled or went away) every 50 ms and creates
# the request's marker file, whose path it passes to this process as the request parameter
# ``CANCEL_PARAM``; the serving process watches it and cancels the generation (rows freed).
CANCEL_PARAM = "gaf_cancel_file"
CANCEL_POLL_S = 0.05
_STUB_SERVING_HELPER = '''


# -- gaf-trt serving additions (gaf_trt/serve/triton.py): prompt shutdown, cancellation --
_GAF_CANCEL_PARAM = "@CANCEL_PARAM@"
_GAF_CANCEL_POLL_S = @CANCEL_POLL_S@
_gaf_cancel_files = {}  # id(triton request) -> path of the file marking it cancelled
_gaf_cancel_state = {"dir": None, "next": 0}


def _gaf_shutdown_now(requests_server):
    """Stop the requests server now: its loop would notice the flag only at its next 1 s poll."""
    requests_server.shutdown()
    loop = requests_server._server.server_loop
    if loop is None:
        return

    def cancel_all():
        for task in asyncio.all_tasks(loop):
            task.cancel()

    try:
        loop.call_soon_threadsafe(cancel_all)
    except RuntimeError:  # the loop has just closed
        pass


def _gaf_set_workspace(workspace_path):
    _gaf_cancel_state["dir"] = pathlib.Path(workspace_path) / "gaf-cancel"
    _gaf_cancel_state["dir"].mkdir(exist_ok=True)


def _gaf_register(triton_requests):
    """A cancel-marker path for each request (sent along as a request parameter)."""
    for request in triton_requests:
        _gaf_cancel_state["next"] += 1
        name = f"{os.getpid()}-{_gaf_cancel_state['next']}"
        _gaf_cancel_files[id(request)] = str(_gaf_cancel_state["dir"] / name)


def _gaf_parameters(triton_request):
    params = json.loads(triton_request.parameters())
    params.pop(_GAF_CANCEL_PARAM, None)  # never a client's own value
    path = _gaf_cancel_files.get(id(triton_request))
    if path is not None:
        params[_GAF_CANCEL_PARAM] = path
    return params


def _gaf_wait(future, triton_requests):
    """future.result(); meanwhile a request that Triton cancelled gets its marker file."""
    waiting = list(triton_requests)
    try:
        while True:
            try:
                return future.result(timeout=_GAF_CANCEL_POLL_S)
            except TimeoutError:
                for request in list(waiting):
                    if request.is_cancelled():
                        waiting.remove(request)
                        path = _gaf_cancel_files.get(id(request))
                        if path is not None:
                            open(path, "w").close()
    finally:
        for request in triton_requests:
            path = _gaf_cancel_files.pop(id(request), None)
            if path is not None and os.path.exists(path):
                os.unlink(path)
'''.replace("@CANCEL_PARAM@", CANCEL_PARAM).replace("@CANCEL_POLL_S@", repr(CANCEL_POLL_S))
_WORKSPACE_LINE = ('            workspace_path = pathlib.Path(model_config["parameters"]'
                   '["workspace-path"]["string_value"])\n')
_STUB_SERVING_EDITS = (  # (original line(s), replacement) in the stub's model.py
    (_WORKSPACE_LINE, _WORKSPACE_LINE + "            _gaf_set_workspace(workspace_path)\n"),
    ("            handle_responses_task_async_future = self._requests_server.push(",
     ("            _gaf_register(triton_requests)\n"
      "            handle_responses_task_async_future = self._requests_server.push(")),
    ("                triton_responses_or_error = handle_responses_concurrent_future.result()\n",
     ("                triton_responses_or_error = _gaf_wait(handle_responses_concurrent_future, "
      "triton_requests)\n")),
    ("            parameters=json.loads(triton_request.parameters()),\n",
     "            parameters=_gaf_parameters(triton_request),\n"),
    ("        self._requests_server.shutdown()\n",
     "        _gaf_shutdown_now(self._requests_server)\n"),
)


def patch_stub_serving(source: str) -> str:
    """The stub's ``model.py`` with the prompt shutdown and the cancellation check."""
    for old, new in _STUB_SERVING_EDITS:
        if source.count(old) != 1:
            raise ConfigError("unsupported nvidia-pytriton version: its proxy model.py differs "
                              "from 0.7.0's; install nvidia-pytriton==0.7.0")
        source = source.replace(old, new)
    return source + _STUB_SERVING_HELPER


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
    source = (source.replace(_STUB_LINE, _STUB_FIX).replace(_HANDSHAKE, _HANDSHAKE_FIX)
              .replace(_STUB_INPUT, _STUB_INPUT_FIX))
    return patch_stub_serving(source)


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


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free now (each bound to port 0 on the loopback, then
    released): for tests and benchmarks that start servers side by side."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


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


def decode_names(text: object) -> list[str]:
    """The classes of the parameter ``class_names``: a JSON list of class names (or ids)."""
    try:
        names = json.loads(text) if isinstance(text, str) else None
    except (json.JSONDecodeError, RecursionError):  # deep nesting raises RecursionError
        names = None
    if not isinstance(names, list) or not all(isinstance(n, (str, int)) and not isinstance(
            n, bool) for n in names):
        shown = repr(text) if len(repr(text)) <= 200 else repr(text)[:200] + "..."
        raise ConfigError(f"parameter {NAMES_PARAM} must be a JSON list of class names, e.g. "
                          f'\'["golden retriever", "3"]\', got {shown}')
    return [str(n) for n in names]


def decode_request(row: Mapping[str, np.ndarray],
                   parameters: Mapping[str, object] | None = None) -> ServeRequest:
    """A :class:`ServeRequest` from the input tensors of one row (batch dimension removed)
    and the request's string parameters."""
    params = dict(parameters or {})
    names = params.pop(NAMES_PARAM, None)
    if ("classes" in row) == (names is not None):
        raise ConfigError(f"give the classes either as the input 'classes' (ids) or as the "
                          f"parameter '{NAMES_PARAM}' (a JSON list of names or ids), not "
                          f"{'both' if names is not None else 'neither'}")
    fields: dict[str, object] = {"classes": decode_names(names) if names is not None
                                 else [int(c) for c in row["classes"].reshape(-1)]}
    if "weights" in row:
        fields["weights"] = [float(v) for v in np.asarray(row["weights"]).reshape(-1)]
    if "mask_image" in row:
        fields["mask_image"] = np.asarray(row["mask_image"])
    for name in STRING_FIELDS:
        if name in params:
            value = params.pop(name)
            if not isinstance(value, str):
                raise ConfigError(f"parameter {name} must be a string, got {value!r}")
            fields[name] = value
    if params:
        raise ConfigError(f"unknown request parameter(s) {sorted(params)}; valid: "
                          f"{', '.join((*STRING_FIELDS, NAMES_PARAM))}")
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
    if n == 0:
        raise ConfigError("a request needs at least one row (its batch dimension is 0)")
    if "batch" in request and len({int(b) for b in np.asarray(request["batch"]).reshape(-1)}) > 1:
        raise ConfigError("all rows of one request must ask for the same batch (images per "
                          f"row), got {np.asarray(request['batch']).reshape(-1).tolist()}; "
                          "send rows of other batches as requests of their own")
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


# Triton instances of request-level batching: one executes while the other waits for the
# next batch (see the module docstring); the service runs one batch at a time.
REQUEST_INSTANCES = 2


STATS = ("active", "pending_rows", "calls", "rows", "cancelled")
STATS_MODEL = "gaf_stats"


class GafTritonServer:
    """The ``gaf`` model (and ``gaf_stats``) on a local Triton started by PyTriton,
    answering with ``service``."""

    def __init__(self, service: GenerationService, config: ServerConfig) -> None:
        self.service = service
        self.config = config
        self.cancelled = 0  # requests cancelled by their client (Triton's cancellation)
        self._triton = None
        self._logdir: tempfile.TemporaryDirectory | None = None
        self._lock = threading.Lock()

    def _await(self, job: Job, marker: str | None) -> object:
        """``job.result()``; cancels the job once the stub has created ``marker`` (Triton
        cancelled the request: its client cancelled or went away)."""
        while True:
            try:
                return job.result(timeout=CANCEL_POLL_S)
            except TimeoutError:
                if marker is not None and os.path.exists(marker):
                    marker = None
                    job.cancel()
                    with self._lock:
                        self.cancelled += 1
                    log.info("request %d cancelled by its client; its rows left the scheduler",
                             job.ticket.id)

    def infer(self, requests: Sequence) -> list[dict[str, np.ndarray]]:
        """PyTriton inference callable: a list of requests -> a list of output dicts. Every
        row of every request is submitted, together (one group in ``request`` mode), before
        any is awaited (they share calls)."""
        markers: list[str | None] = []
        decoded: list[list[ServeRequest]] = []
        for req in requests:
            params = dict(req.parameters or {})
            markers.append(params.pop(CANCEL_PARAM, None))
            decoded.append([decode_request(row, params) for row in split_rows(req.data)])
        flat = self.service.submit_all([r for rows in decoded for r in rows])
        jobs, start = [], 0
        for rows in decoded:
            jobs.append(flat[start:start + len(rows)])
            start += len(rows)
        try:
            return [self._outputs([self._await(job, marker) for job in req_jobs])
                    for req_jobs, marker in zip(jobs, markers)]
        except BaseException:  # the call fails as a whole: nothing of it runs on
            for job in flat:
                if not job.done():
                    job.cancel()
            raise

    def _outputs(self, states: list) -> dict[str, np.ndarray]:
        """Output tensors of one request from its rows' final states ``[B, C, S, S]``."""
        latents = np.stack([s.numpy() for s in states]).astype(np.float32)
        images = (np.stack([to_images(s) for s in states])
                  if self.service.scheduler.config.mode != "latent"
                  else np.zeros((len(states), 0, 0, 0, 0), np.uint8))
        return {"images": images, "latents": latents}

    def _safe_infer(self, requests: Sequence) -> list[dict[str, np.ndarray]]:
        try:
            return self.infer(requests)
        except (GAFError, Cancelled) as err:  # bad request, overload, cancelled, shutdown
            from pytriton.exceptions import PyTritonBadParameterError

            raise PyTritonBadParameterError(str(err)) from None

    def stats(self, requests: Sequence) -> list[dict[str, np.ndarray]]:
        """``gaf_stats``: the service's counters (see :data:`STATS`), one INT64 each."""
        sched = self.service.scheduler
        values = {"active": self.service.active, "pending_rows": sched.pending_rows(),
                  "calls": sched.stats.calls, "rows": sched.stats.rows,
                  "cancelled": self.cancelled}
        return [{k: np.array([values[k]], np.int64) for k in STATS} for _ in requests]

    def start(self) -> None:
        """Check ports and /dev/shm, then start Triton with the models bound."""
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
                           log_file=Path(self._logdir.name) / "triton.log",
                           exit_timeout_secs=EXIT_TIMEOUT_BASE_S + EXIT_TIMEOUT_PER_INSTANCE_S
                           * (self.config.instances + 1))
        self._triton = Triton(config=cfg)
        inputs = [Tensor(name="classes", dtype=np.int32, shape=(-1,), optional=True),
                  Tensor(name="weights", dtype=np.float32, shape=(-1,), optional=True),
                  Tensor(name="mask_image", dtype=np.uint8, shape=(-1, -1), optional=True)]
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
        self._triton.bind(model_name=STATS_MODEL, infer_func=self.stats,
                          inputs=[Tensor(name="unused", dtype=np.int32, shape=(1,),
                                         optional=True)],
                          outputs=[Tensor(name=k, dtype=np.int64, shape=(1,)) for k in STATS],
                          config=ModelConfig(batching=False))
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
        """Stop Triton and wait until every process it started is gone (the stubs' helper
        processes outlive Triton by a moment); its shared memory and workspace go with it."""
        if self._triton is not None:
            started = descendants(os.getpid()) - own_helpers()
            self._triton.stop()
            self._triton = None
            wait_gone(started)
            remove_leftover_regions()
        if self._logdir is not None:
            self._logdir.cleanup()
            self._logdir = None


def remove_leftover_regions(shm: Path = Path("/dev/shm")) -> None:
    """Remove the Python backend's shared-memory regions of this process's Triton (named
    ``pytrtion<this pid>-...`` by PyTriton) that outlived it: when Triton's exit timeout
    expires (idle client connections) it exits without unloading the stubs, which then do
    not remove their regions. Call once Triton and its stubs are gone."""
    for region in shm.glob(f"pytrtion{os.getpid()}-*"):
        log.info("removing shared memory %s left by Triton's stubs", region.name)
        with contextlib.suppress(FileNotFoundError):
            region.unlink()


def own_helpers() -> set[int]:
    """This process's own multiprocessing resource tracker: it lives as long as this
    process (started by PyTriton's shared-memory client here), not as long as Triton."""
    from multiprocessing import resource_tracker

    pid = getattr(resource_tracker._resource_tracker, "_pid", None)
    return {pid} if pid else set()


def serve_until_stopped(service: GenerationService, config: ServerConfig,
                        stop: threading.Event, ready: Callable[[str], None]) -> None:
    """Start the scheduler and Triton, call ``ready(message)`` once serving, and run until
    ``stop`` is set (a signal) or Triton dies; then close the service (requests in flight
    get a "shutting down" error at once) and stop Triton. Nothing is left behind: Triton's
    processes, PyTriton's shared memory and workspace go with it."""
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
        service.close()
        server.stop()
