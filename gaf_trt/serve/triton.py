"""Triton Inference Server front end (through PyTriton) of the generation service.

Model ``gaf`` takes one generation request per row of its batch dimension and model
``gaf_stats`` reports the service's counters; their tensors and the decoding of a request
are :mod:`gaf_trt.serve.wire`. The machine side (ports, ``/dev/shm``, the processes Triton
leaves) is :mod:`gaf_trt.serve.host`; the patch of PyTriton's stub-side proxy (tensors through
DLPack under numpy >= 2, prompt shutdown, cancellation) is :mod:`gaf_trt.serve.pytriton_patch`.

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

Model ``gaf_stream`` streams live previews of one request, then its result (Triton's
decoupled mode; :mod:`gaf_trt.serve.triton_stream`), on the same service.

A request that its client cancels is noticed by the patched stub, which creates a marker
file named in the request parameter :data:`CANCEL_PARAM`; :meth:`GafTritonServer._await`
then cancels its generation.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

from gaf_trt.serve.host import (
    check_port_free,
    check_shm,
    descendants,
    own_helpers,
    prepare_child_environment,
    remove_leftover_regions,
    remove_model_folders,
    wait_gone,
)
from gaf_trt.errors import GAFError
from gaf_trt.serve.metrics import MetricsEndpoint, format_families, service_families
from gaf_trt.serve.pytriton_patch import install_stub_fix
from gaf_trt.serve.requests import ServeRequest, to_images
from gaf_trt.serve.service import GenerationService, Job, Overloaded
from gaf_trt.serve.stub_serving import GAF_CANCEL_PARAM as CANCEL_PARAM
from gaf_trt.serve.stub_serving import GAF_CANCEL_POLL_S as CANCEL_POLL_S
from gaf_trt.serve.stub_serving import GAF_ERROR_MARK as ERROR_MARK
from gaf_trt.serve.stream import STREAM_MODEL, STREAM_OUTPUTS
from gaf_trt.serve.triton_stream import StreamFrontEnd
from gaf_trt.serve.wire import (
    INPUTS,
    MODEL_NAME,
    OUTPUTS,
    STATS,
    STATS_MODEL,
    decode_request,
    error_answer,
    split_rows,
)

log = logging.getLogger(__name__)

# Triton's stop shares one --exit-timeout-secs budget between waiting for open client
# connections and unloading the model instances (one after another, each ~1.3 s: the
# backend's 1 s health check, then the stub's finalize); past it, Triton exits at once and
# the stubs exit on their own (nothing is left, but they skip their finalize).
EXIT_TIMEOUT_BASE_S = 5
EXIT_TIMEOUT_PER_INSTANCE_S = 2
# PyTriton's run() only warns when its models are not ready after its wait; serve waits for
# every model's ready endpoint itself (the readiness probe, docs/serving.md) up to this long.
MODELS_READY_TIMEOUT_S = 120


@dataclass(frozen=True)
class ServerConfig:
    """Triton settings: ports (``gaf_metrics_port``: gaf-trt's own ``/metrics``, 0: none),
    instances, queue bound, request-level batch size."""

    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    gaf_metrics_port: int = 8003
    instances: int = 8  # requests executing at once (each instance takes one at a time)
    max_batch: int = 1  # requests per execute; > 1 only for request-level batching
    max_queue: int = 64
    max_streams: int = 8  # gaf_stream requests streaming at once (more are refused)


# Triton instances of request-level batching: one executes while the other waits for the
# next batch (see the module docstring); the service runs one batch at a time.
REQUEST_INSTANCES = 2


class GafTritonServer:
    """The ``gaf`` model (and ``gaf_stats``) on a local Triton started by PyTriton,
    answering with ``service``."""

    def __init__(self, service: GenerationService, config: ServerConfig,
                 decode: Callable[[Tensor], Tensor] | None = None) -> None:
        self.service = service
        self.config = config
        self.decode = decode  # a latent model's decoder: latents [B,C,S,S] -> [B,3,H,W]
        self.cancelled = 0  # requests cancelled by their client (Triton's cancellation)
        self._triton = None
        self._metrics: MetricsEndpoint | None = None
        self._stream: StreamFrontEnd | None = None
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
        try:
            for req in requests:
                params = dict(req.parameters or {})
                markers.append(params.pop(CANCEL_PARAM, None))
                decoded.append([decode_request(row, params) for row in split_rows(req.data)])
            flat = self.service.submit_all([r for rows in decoded for r in rows])
        except GAFError as err:  # refused before admission: all of this execution's requests
            self.service.metrics.refused("overloaded" if isinstance(err, Overloaded)
                                         else "invalid", len(requests))
            raise
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
        if self.decode is not None:  # a latent model served with its VAE
            images = np.stack([to_images(self.decode(s)) for s in states])
        elif self.service.scheduler.config.mode != "latent":
            images = np.stack([to_images(s) for s in states])
        else:  # latents only (serve --vae decodes them)
            images = np.zeros((len(states), 0, 0, 0, 0), np.uint8)
        return {"images": images, "latents": latents}

    def _safe_infer(self, requests: Sequence) -> list[dict[str, np.ndarray]]:
        """:meth:`infer`; a failure is raised marked ``[gaf-error CODE] one line``
        (:func:`~gaf_trt.serve.wire.error_answer`), which the patched stub answers as a
        Triton error of that code (a refused request: INVALID_ARG, HTTP 400) without the
        traceback PyTriton sends along. A real fault's traceback goes to the server's log."""
        try:
            return self.infer(requests)
        except Exception as err:  # noqa: BLE001 - every failure is answered, in one line
            raise marked_error(err) from None

    def _count_cancel(self) -> None:
        with self._lock:
            self.cancelled += 1

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
                           (self.config.metrics_port, "--metrics-port"),
                           (self.config.gaf_metrics_port, "--gaf-metrics-port")):
            if port or what != "--gaf-metrics-port":
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
                           * (self.config.instances + 2))  # + gaf_stats and gaf_stream
        self._triton = Triton(config=cfg)
        inputs = [Tensor(name=t.name, dtype=np.dtype(t.dtype).type, shape=t.shape,
                         optional=t.optional) for t in INPUTS]
        outputs = [Tensor(name=t.name, dtype=np.dtype(t.dtype).type, shape=t.shape)
                   for t in OUTPUTS]
        batcher = DynamicBatcher(default_queue_policy=QueuePolicy(
            max_queue_size=self.config.max_queue))
        self._triton.bind(model_name=MODEL_NAME,
                          infer_func=[self._safe_infer] * self.config.instances,
                          inputs=inputs, outputs=outputs,
                          config=ModelConfig(max_batch_size=self.config.max_batch,
                                             batcher=batcher))
        self._bind_stream(Tensor, ModelConfig, DynamicBatcher, inputs)
        self._triton.bind(model_name=STATS_MODEL, infer_func=self.stats,
                          inputs=[Tensor(name="unused", dtype=np.int32, shape=(1,),
                                         optional=True)],
                          outputs=[Tensor(name=k, dtype=np.int64, shape=(1,)) for k in STATS],
                          config=ModelConfig(batching=False))
        self._triton.run()
        self._wait_models_ready((MODEL_NAME, STREAM_MODEL, STATS_MODEL))
        if self.config.gaf_metrics_port:
            self._metrics = MetricsEndpoint(self.config.gaf_metrics_port, self.metrics_text)

    def _bind_stream(self, tensor: type, model_config: type, batcher: type,
                     inputs: list) -> None:
        """Bind ``gaf_stream`` (decoupled: a response per preview, then the final one)."""
        self._stream = StreamFrontEnd(self.service, self.config.max_streams, self._outputs,
                                      self.decode, marked_error, self._count_cancel)
        outputs = [tensor(name=t.name, dtype=np.dtype(t.dtype).type, shape=t.shape)
                   for t in STREAM_OUTPUTS]
        self._triton.bind(model_name=STREAM_MODEL, infer_func=self._stream.infer,
                          inputs=inputs, outputs=outputs,
                          config=model_config(max_batch_size=1, batcher=batcher(),
                                              decoupled=True))

    def metrics_text(self) -> str:
        """The service's ``gaf_...`` metrics, Prometheus text format."""
        return format_families(service_families(self.service))

    def _wait_models_ready(self, models: Sequence[str],
                           timeout: float = MODELS_READY_TIMEOUT_S) -> None:
        """Block until ``/v2/models/NAME/ready`` answers 200 for every model (Triton's
        ``/v2/health/ready`` does before they are loaded); RuntimeError past ``timeout``
        or when Triton stops."""
        deadline = time.monotonic() + timeout
        for name in models:
            url = f"http://127.0.0.1:{self.config.http_port}/v2/models/{name}/ready"
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=5) as resp:
                        if resp.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if not self.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"model {name!r} not ready within {timeout:.0f} s; "
                                       f"Triton's log ends: {self.log_tail()}")
                time.sleep(0.1)

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
        if self._metrics is not None:
            self._metrics.stop()
            self._metrics = None
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self._triton is not None:
            started = descendants(os.getpid()) - own_helpers()
            workspace = getattr(getattr(self._triton, "_workspace", None), "path", None)
            self._triton.stop()
            self._triton = None
            wait_gone(started)
            remove_leftover_regions()
            if workspace is not None:
                remove_model_folders(workspace)
        if self._logdir is not None:
            self._logdir.cleanup()
            self._logdir = None


def marked_error(err: BaseException) -> Exception:
    """The exception PyTriton raises for a failed request: ``[gaf-error CODE] one line``
    (:func:`~gaf_trt.serve.wire.error_answer`), which the patched stub answers as a Triton
    error of that code without PyTriton's traceback; a real fault's traceback goes to the
    server's log."""
    from pytriton.exceptions import PyTritonBadParameterError

    code, line = error_answer(err)
    if code == "INTERNAL":
        log.error("request failed: %s", line, exc_info=err)
    return PyTritonBadParameterError(f"{ERROR_MARK}{code}] {line}")


def serve_until_stopped(service: GenerationService, config: ServerConfig,
                        stop: threading.Event, ready: Callable[[str], None],
                        decode: Callable[[Tensor], Tensor] | None = None) -> None:
    """Start the scheduler and Triton, call ``ready(message)`` once the models answer
    (``/v2/models/NAME/ready`` is 200 for ``gaf`` and ``gaf_stats``), and run until
    ``stop`` is set (a signal) or Triton dies; then close the service (requests in flight
    get a "shutting down" error at once) and stop Triton. Nothing is left behind: Triton's
    processes, PyTriton's shared memory and workspace go with it. ``decode`` turns a latent
    model's latents into the ``images`` output."""
    server = GafTritonServer(service, config, decode)
    service.start()
    try:
        server.start()
        metrics = (f", gaf metrics :{config.gaf_metrics_port}/metrics"
                   if config.gaf_metrics_port else "")
        ready(f"serving model '{MODEL_NAME}' on HTTP :{config.http_port}, gRPC "
              f":{config.grpc_port}{metrics} ({service.config.mode} batching, "
              f"{config.instances} instance(s)); models ready; Ctrl-C or SIGTERM stops")
        while not stop.wait(1.0):
            if not server.alive():
                raise RuntimeError(f"Triton stopped unexpectedly; its log ends: "
                                  f"{server.log_tail()}")
    finally:
        service.close()
        server.stop()
