"""The Triton Python-backend models of a ``gaf-trt triton-repo`` repository.

- :class:`SolverModel` (model ``gaf``): decodes each request exactly as ``gaf-trt serve``
  does (:func:`gaf_trt.serve.wire.decode_request` / ``split_rows``: same inputs,
  parameters and outputs) and runs it on a :class:`~gaf_trt.serve.GenerationService` -- the
  solver loop of ``gaf-trt sample`` (``run_request``), step-level batched. ``execute``
  admits its requests and returns at once; each request is answered through its response
  sender when done (Triton >= 24.06 allows that in the default mode), so requests of later
  executes join the scheduler while earlier ones run and share their network calls, as in
  ``gaf-trt serve`` (``--blocking-execute`` repositories answer within ``execute``
  instead: then only the requests of one execute share calls). The service's network is a
  :class:`BlsAnchorNetwork`, an :class:`~gaf_trt.engine.base.AnchorNetwork` whose call is one
  BLS request to the repository's network model (``gaf_anchors``: ``(x, t, y) -> (J, K)``).
  Its service's ``gaf_...`` metrics are Triton custom metrics on Triton's metrics port
  (:mod:`gaf_trt.serve.triton_metrics`; the names of ``gaf-trt serve``'s ``/metrics``).
- :class:`GraphModel`: one exported ONNX graph run with ONNX Runtime, for Triton builds
  without the onnxruntime backend (``--network-backend python``).

Both run in Triton's Python-backend stub, so gaf_trt must be installed in that Python.
Tensors cross the stub through DLPack (:mod:`gaf_trt.serve.pb_tensors`: the stub PyTriton
bundles is built against the numpy 1.x ABI).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gaf_trt.errors import ConfigError, GAFError
from gaf_trt.model.config import GAFConfig
from gaf_trt.serve.network_models import GRAPH_RECORD, MODEL_RECORD
from gaf_trt.serve.pb_tensors import gaf_input_array, gaf_output_tensor
from gaf_trt.serve.requests import ServeLimits, to_images
from gaf_trt.serve.scheduler import Cancelled
from gaf_trt.serve.service import GenerationService, Job, Overloaded, ServeConfig
from gaf_trt.serve.triton_metrics import TritonCustomMetrics
from gaf_trt.serve.wire import decode_request, error_answer, split_rows

log = logging.getLogger(__name__)

OUTPUTS = ("images", "latents")
CANCEL_POLL_S = 0.25  # how often a waiting request checks whether its client cancelled it


def pb() -> Any:
    """Triton's ``triton_python_backend_utils`` (importable inside the stub only)."""
    import triton_python_backend_utils

    return triton_python_backend_utils


class NetworkCallError(RuntimeError):
    """The network model answered a BLS request with an error (fails the requests whose
    rows were in that call)."""


def version_folder(args: dict[str, str]) -> Path:
    """The model's version folder from the ``initialize`` arguments."""
    return Path(args["model_repository"]) / str(args["model_version"])


def read_model_record(path: Path) -> dict[str, Any]:
    """The solver model's record written by ``gaf-trt triton-repo``."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} is missing or not JSON ({err}); rewrite the repository with "
                          "`gaf-trt triton-repo`") from None
    if not isinstance(record, dict) or record.get("format") != "gaf-trt-triton-model":
        raise ConfigError(f"{path} is not a gaf-trt solver-model record")
    return record


# --------------------------------------------------------------------------- the network


class BlsAnchorNetwork:
    """``(x [M,C,S,S], t [M], y [M]) -> (J, K)`` by one BLS request to ``model_name``
    (inputs ``x`` FP32 ``[M,C,S,S]``, ``t`` FP32 ``[M,1]``, ``y`` INT64 ``[M,1]``; outputs
    ``J``, ``K`` FP32 ``[M,C,S,S]``, asked in CPU memory)."""

    def __init__(self, model_name: str, config: GAFConfig,
                 outputs: Sequence[str] = ("J", "K")) -> None:
        self.model_name = model_name
        self.config = config
        self.outputs = list(outputs)

    def __call__(self, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        utils = pb()
        m = x.shape[0]
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1)
        t = t.expand(m) if t.numel() == 1 else t
        inputs = [gaf_output_tensor("x", x.detach().to("cpu", torch.float32).contiguous().numpy()),
                  gaf_output_tensor("t", t.detach().cpu().reshape(m, 1).contiguous().numpy()),
                  gaf_output_tensor("y", y.detach().to("cpu", torch.int64).reshape(m, 1)
                                    .contiguous().numpy())]
        request = utils.InferenceRequest(
            model_name=self.model_name, requested_output_names=self.outputs, inputs=inputs,
            preferred_memory=utils.PreferredMemory(utils.TRITONSERVER_MEMORY_CPU, 0))
        response = request.exec()
        if response.has_error():
            raise NetworkCallError(f"network model {self.model_name!r} failed: "
                                   f"{response.error().message()}")
        out = []
        for name in self.outputs:
            tensor = utils.get_output_tensor_by_name(response, name)
            if tensor is None:
                raise NetworkCallError(f"network model {self.model_name!r} returned no {name}")
            out.append(torch.from_numpy(gaf_input_array(tensor)).reshape(
                m, *self.config.sample_shape))
        return out[0], out[1]


# --------------------------------------------------------------------------- the solver


def _request_rows(request: Any) -> tuple[list[dict[str, np.ndarray]], dict[str, object]]:
    """Input rows and string parameters of one Triton request."""
    data = {t.name(): gaf_input_array(t) for t in request.inputs()}
    raw = request.parameters()
    params = json.loads(raw) if raw else {}
    if not isinstance(params, dict):
        raise ConfigError(f"request parameters must be a mapping, got {params!r}")
    return split_rows(data), params


def _outputs(states: list[Tensor], latent: bool, wanted: list[str]) -> list[Any]:
    """Output tensors ``images`` UINT8 ``[n, B, S, S, C]`` and ``latents`` FP32
    ``[n, B, C, S, S]`` of the ``n`` rows of one request (the outputs of ``gaf-trt serve``)."""
    arrays = {"latents": lambda: np.stack([s.numpy() for s in states]).astype(np.float32),
              "images": lambda: (np.zeros((len(states), 0, 0, 0, 0), np.uint8) if latent
                                 else np.stack([to_images(s) for s in states]))}
    return [gaf_output_tensor(name, arrays[name]()) for name in wanted]


def _error_response(err: BaseException) -> Any:
    """A failed request's response: its code and one line (:func:`wire.error_answer`)."""
    utils = pb()
    code, line = error_answer(err)
    return utils.InferenceResponse(error=utils.TritonError(line, getattr(utils.TritonError, code)))


def admit(service: GenerationService, requests: Sequence[Any]
          ) -> list[tuple[list[Job], BaseException | None]]:
    """Submit every row of every request (bad ones: their error, nothing submitted)."""
    admitted: list[tuple[list[Job], BaseException | None]] = []
    for request in requests:
        jobs: list[Job] = []
        try:
            rows, params = _request_rows(request)
            for row in rows:
                jobs.append(service.submit(decode_request(row, dict(params))))
            admitted.append((jobs, None))
        except Exception as err:  # answered as this request's error
            for job in jobs:
                job.cancel()
            if isinstance(err, GAFError):
                service.metrics.refused("overloaded" if isinstance(err, Overloaded)
                                        else "invalid")
            else:
                log.exception("request could not be admitted")
            admitted.append(([], err))
    return admitted


def _results(jobs: list[Job], cancelled: Callable[[], bool] | None) -> list[Tensor]:
    """The final states of a request's rows; with ``cancelled`` (the client's cancellation,
    checked every :data:`CANCEL_POLL_S`), a cancelled request's rows leave the scheduler."""
    states = []
    for job in jobs:
        while True:
            try:
                states.append(job.result(None if cancelled is None else CANCEL_POLL_S))
                break
            except TimeoutError:
                if cancelled is not None and cancelled():
                    for j in jobs:
                        j.cancel()
                    raise Cancelled("the client cancelled the request") from None
    return states


def response_of(jobs: list[Job], error: BaseException | None, wanted: list[str],
                latent: bool, cancelled: Callable[[], bool] | None = None) -> Any:
    """Wait for a request's rows; its response (outputs, or its error)."""
    if error is None:
        try:
            states = _results(jobs, cancelled)
            return pb().InferenceResponse(output_tensors=_outputs(states, latent, wanted))
        except Exception as err:  # noqa: BLE001 - the request's own failure: answered
            error = err
            for job in jobs:
                job.cancel()
    return _error_response(error)


def _wanted(request: Any) -> list[str]:
    return [n for n in request.requested_output_names() if n in OUTPUTS] or list(OUTPUTS)


def execute_requests(service: GenerationService, requests: Sequence[Any]) -> list[Any]:
    """One response per request: every row of every request is admitted before any is
    awaited (they share network calls); a bad request gets an error response and the
    others are still answered."""
    latent = service.scheduler.config.mode == "latent"
    return [response_of(jobs, error, _wanted(request), latent)
            for request, (jobs, error) in zip(requests, admit(service, requests))]


def respond_later(service: GenerationService, requests: Sequence[Any]) -> None:
    """Admit the requests and return at once; each is answered through its response
    sender when its rows are done. So requests of later executes join the scheduler while
    these run: step-level batching across arrivals, as in ``gaf-trt serve``. A request
    its client cancels leaves the scheduler (its rows are freed) and is answered
    ``CANCELLED``."""
    latent = service.scheduler.config.mode == "latent"
    utils = pb()
    for request, (jobs, error) in zip(requests, admit(service, requests)):
        sender, wanted = request.get_response_sender(), _wanted(request)

        def answer(sender=sender, jobs=jobs, error=error, wanted=wanted) -> None:
            sender.send(response_of(jobs, error, wanted, latent, sender.is_cancelled),
                        flags=utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

        threading.Thread(target=answer, name="gaf-respond", daemon=True).start()


class SolverModel:
    """Triton Python model ``gaf``: the GAF solver over the repository's network model."""

    def initialize(self, args: dict[str, str]) -> None:
        record = read_model_record(version_folder(args) / MODEL_RECORD)
        config = GAFConfig.from_dict(record["config"])
        self.network = BlsAnchorNetwork(record["network_model"], config,
                                        record.get("network_outputs", ("J", "K")))
        serve = ServeConfig(max_queue=int(record["max_queue"]), min_rows=int(record["min_rows"]),
                            limits=ServeLimits(**record["limits"]))
        self.service = GenerationService(self.network, serve).start()
        self.respond_later = bool(record.get("respond_later", True))
        self.metrics = self._custom_metrics(args)

    def _custom_metrics(self, args: dict[str, str]) -> TritonCustomMetrics | None:
        """The service's metrics on Triton's metrics port (None: a Python backend without
        custom metrics, before Triton 23.05)."""
        utils = pb()
        if not hasattr(utils, "MetricFamily"):
            log.warning("this Triton's Python backend has no custom metrics: no gaf_ metrics")
            return None
        labels = {"instance": str(args.get("model_instance_name", "gaf"))}
        return TritonCustomMetrics(utils, self.service, labels).start()

    def execute(self, requests: Sequence[Any]) -> list[Any] | None:
        if self.respond_later:
            respond_later(self.service, requests)
            return None
        return execute_requests(self.service, requests)

    def finalize(self) -> None:
        self.service.close()
        if self.metrics is not None:
            self.metrics.stop()


# --------------------------------------------------------------------------- a graph


def session_options(threads: int) -> Any:
    """ONNX Runtime session options as the ``ort`` backend sets them (no spinning)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 4
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return so


class GraphModel:
    """Triton Python model running one exported graph (``model.onnx`` of its version
    folder, I/O in ``graph.json``) with ONNX Runtime; the requests of one ``execute`` are
    concatenated along rows into one run."""

    def initialize(self, args: dict[str, str]) -> None:
        from gaf_trt.engine.ort_backend import cpu_threads, open_session, providers_for

        folder = version_folder(args)
        self.record = json.loads((folder / GRAPH_RECORD).read_text())
        gpu = args.get("model_instance_kind") == "GPU"
        device = torch.device(f"cuda:{args.get('model_instance_device_id', '0')}" if gpu
                              else "cpu")
        self.session = open_session(folder, self.record["graph"], self.record,
                                    session_options(cpu_threads()),
                                    providers_for(device, folder))
        self.inputs = [(s["name"], np.dtype(s["dtype"]), s["shape"][1:])
                       for s in self.record["inputs"]]
        self.outputs = [s["name"] for s in self.record["outputs"]]

    def _feeds(self, requests: Sequence[Any]) -> tuple[dict[str, np.ndarray], list[int]]:
        utils = pb()
        feeds: dict[str, list[np.ndarray]] = {n: [] for n, _, _ in self.inputs}
        rows = []
        for request in requests:
            for name, dtype, dims in self.inputs:
                tensor = utils.get_input_tensor_by_name(request, name)
                if tensor is None:
                    raise ConfigError(f"graph {self.record['graph']} needs input {name}")
                arr = gaf_input_array(tensor)
                feeds[name].append(arr.reshape(arr.shape[0], *dims).astype(dtype, copy=False))
            rows.append(feeds[self.inputs[0][0]][-1].shape[0])
        return {n: np.concatenate(v) for n, v in feeds.items()}, rows

    def execute(self, requests: Sequence[Any]) -> list[Any]:
        utils = pb()
        try:
            feeds, rows = self._feeds(requests)
            outs = self.session.run(self.outputs, feeds)
        except Exception as err:  # noqa: BLE001 - every request of the run fails with it
            return [_error_response(err) for _ in requests]
        responses, start = [], 0
        for n in rows:
            responses.append(utils.InferenceResponse(output_tensors=[
                gaf_output_tensor(name, out[start:start + n])
                for name, out in zip(self.outputs, outs)]))
            start += n
        return responses
