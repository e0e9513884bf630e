"""A stand-in for Triton's ``triton_python_backend_utils``, enough to run the Python models
of a ``gaf-trt triton-repo`` repository in-process (no server).

It refuses what the real module refuses or gets wrong: tensors are numpy arrays (copied
in), DLPack in and out; ``Tensor.as_numpy()`` raises under numpy >= 2, as the stub PyTriton
bundles (numpy 1.x ABI) cannot give a correct array there; BLS ``exec()`` only while a request
is served (inside ``execute`` or before its response is sent); one final response per
request; constructors take only their real keyword arguments, the right types,
and a response list must match the request list. ``FakeTriton`` holds the "served" models
(name -> Python model or function) and runs an ``execute`` as Triton does.
"""

from __future__ import annotations

import json
import threading
import types
from collections.abc import Callable

import numpy as np

TRITONSERVER_MEMORY_CPU = 0
TRITONSERVER_MEMORY_CPU_PINNED = 1
TRITONSERVER_MEMORY_GPU = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1


class TritonModelException(Exception):
    pass


class TritonError:
    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, \
        CANCELLED = range(8)

    def __init__(self, message: str, code: int = 1) -> None:
        if not isinstance(message, str) or not isinstance(code, int):
            raise TypeError("TritonError(message: str, code: int)")
        self._message, self._code = message, code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class PreferredMemory:
    def __init__(self, preferred_memory_type: int, preferred_device_id: int = 0) -> None:
        if preferred_memory_type not in (0, 1, 2):
            raise TypeError("unknown memory type")
        self.preferred_memory_type = preferred_memory_type
        self.preferred_device_id = preferred_device_id


class _Wrapped:
    def __init__(self, capsule):
        self.capsule = capsule

    def __dlpack__(self, *args, **kwargs):
        return self.capsule

    def __dlpack_device__(self):
        return (1, 0)


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        if not isinstance(name, str) or not isinstance(array, np.ndarray):
            raise TypeError("Tensor(name: str, array: numpy.ndarray)")
        self._name = name
        self._array = np.array(array, copy=True)  # the stub copies into shared memory

    @staticmethod
    def from_dlpack(name: str, capsule) -> Tensor:
        if type(capsule).__name__ != "PyCapsule" and not hasattr(capsule, "__dlpack__"):
            raise TypeError("from_dlpack takes a DLPack capsule or an object with __dlpack__")
        obj = capsule if hasattr(capsule, "__dlpack__") else _Wrapped(capsule)
        array = np.from_dlpack(obj)
        if not array.flags.c_contiguous:
            raise TritonModelException("DLPack tensor is not C-contiguous")
        return Tensor(name, array)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        if int(np.__version__.split(".")[0]) >= 2:
            raise TritonModelException("as_numpy() of a stub built for numpy 1.x reads wrong "
                                       "data under numpy 2 (use DLPack)")
        return self._array

    def to_dlpack(self):
        return self._array.__dlpack__()

    def is_cpu(self) -> bool:
        return True

    def shape(self) -> list[int]:
        return list(self._array.shape)


def _tensors(value, what: str) -> list[Tensor]:
    if not isinstance(value, list) or not all(isinstance(t, Tensor) for t in value):
        raise TypeError(f"{what} must be a list of pb_utils.Tensor")
    return value


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor] | None = None,
                 error: TritonError | None = None) -> None:
        if error is not None and not isinstance(error, TritonError):
            raise TypeError("error must be a TritonError")
        self._outputs = _tensors(output_tensors if output_tensors is not None else [],
                                 "output_tensors")
        self._error = error

    def output_tensors(self) -> list[Tensor]:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error


class InferenceResponseSender:
    """Sends a request's response later (Triton >= 24.06 in the default mode): exactly one
    response, with the final flag; nothing after the final flag. A decoupled model's sender
    sends any number of responses (``responses``), then the final flag (with or without
    one)."""

    def __init__(self, decoupled: bool = False) -> None:
        self.response: InferenceResponse | None = None
        self.responses: list[InferenceResponse] = []  # decoupled: every response sent
        self.decoupled = decoupled
        self.final = threading.Event()
        self.cancelled = False  # set by a test: the client cancelled the request

    def is_cancelled(self) -> bool:
        return self.cancelled

    def send(self, response: InferenceResponse | None = None, flags: int = 0) -> None:
        if self.final.is_set():
            raise TritonModelException("the response of this request was already sent")
        if response is not None:
            if not isinstance(response, InferenceResponse):
                raise TypeError("send takes an InferenceResponse")
            if self.response is not None and not self.decoupled:
                raise TritonModelException("a non-decoupled model sends one response")
            self.response = response
            self.responses.append(response)
        if flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL:
            if self.response is None and not self.decoupled:
                raise TritonModelException("a non-decoupled model must send a response")
            SERVER.answered(self)
            self.final.set()


class InferenceRequest:
    """A request to a model: made by the harness (client requests) or by a model (BLS)."""

    def __init__(self, model_name: str, requested_output_names: list[str],
                 inputs: list[Tensor], request_id: str = "", correlation_id: int = 0,
                 model_version: int = -1, flags: int = 0, timeout: int = 0,
                 preferred_memory: PreferredMemory | None = None, parameters: dict | str = "",
                 ) -> None:
        if not isinstance(model_name, str) or not model_name:
            raise TypeError("model_name must be a non-empty string")
        if not isinstance(requested_output_names, list) or not all(
                isinstance(n, str) for n in requested_output_names):
            raise TypeError("requested_output_names must be a list of strings")
        if preferred_memory is not None and not isinstance(preferred_memory, PreferredMemory):
            raise TypeError("preferred_memory must be a PreferredMemory")
        self.model_name = model_name
        self._outputs = requested_output_names
        self._inputs = _tensors(inputs, "inputs")
        self.preferred_memory = preferred_memory
        self._parameters = parameters if isinstance(parameters, str) else json.dumps(parameters)
        self.sender: InferenceResponseSender | None = None
        self.decoupled = False  # set by FakeTriton.execute: the served model is decoupled

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def parameters(self) -> str:
        return self._parameters

    def requested_output_names(self) -> list[str]:
        return self._outputs

    def get_response_sender(self) -> InferenceResponseSender:
        if self.sender is None:
            self.sender = InferenceResponseSender(self.decoupled)
            SERVER.waiting(self.sender)
        return self.sender

    def exec(self, decoupled: bool = False) -> InferenceResponse:
        return SERVER.infer(self)


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    return next((t for t in request.inputs() if t.name() == name), None)


def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
    return next((t for t in response.output_tensors() if t.name() == name), None)


class Metric:
    """One custom metric (a family's label set): counters only grow, gauges are set,
    histograms (with their buckets) observe; as the Python backend's ``Metric``."""

    def __init__(self, family: MetricFamily, labels: dict[str, str],
                 buckets: list[float] | None = None) -> None:
        if not isinstance(labels, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise TypeError("labels must be a dict of str -> str")
        if (family.kind == MetricFamily.HISTOGRAM) != (buckets is not None):
            raise TritonModelException("buckets are required for a histogram, and only there")
        self.family, self.labels, self.buckets = family, labels, buckets
        self._value = 0.0
        self.observed: list[float] = []

    def increment(self, value: float) -> None:
        if self.family.kind == MetricFamily.HISTOGRAM:
            raise TritonModelException("increment() is not supported for a histogram")
        if self.family.kind == MetricFamily.COUNTER and value < 0:
            raise TritonModelException("a counter cannot be decremented")
        self._value += value

    def set(self, value: float) -> None:
        if self.family.kind != MetricFamily.GAUGE:
            raise TritonModelException("set() is supported for a gauge only")
        self._value = value

    def observe(self, value: float) -> None:
        if self.family.kind != MetricFamily.HISTOGRAM:
            raise TritonModelException("observe() is supported for a histogram only")
        self.observed.append(value)

    def value(self) -> float:
        if self.family.kind == MetricFamily.HISTOGRAM:
            raise TritonModelException("value() is not supported for a histogram")
        return self._value


class MetricFamily:
    """A custom metric family; ``FAMILIES`` holds the live ones by name (a name is one kind)."""

    COUNTER, GAUGE, HISTOGRAM = range(3)

    def __init__(self, name: str, description: str, kind: int) -> None:
        if kind not in (self.COUNTER, self.GAUGE, self.HISTOGRAM):
            raise TritonModelException(f"unknown metric kind {kind!r}")
        if name in FAMILIES and FAMILIES[name].kind != kind:
            raise TritonModelException(f"metric family {name!r} exists with another kind")
        self.name, self.description, self.kind = name, description, kind
        self.metrics: list[Metric] = []
        FAMILIES[name] = self

    def Metric(self, labels: dict[str, str], buckets: list[float] | None = None) -> Metric:  # noqa: N802
        metric = Metric(self, labels, buckets)
        self.metrics.append(metric)
        return metric


FAMILIES: dict[str, MetricFamily] = {}


class FakeTriton:
    """The models BLS requests reach: name -> a Python model (``execute``) or a function
    ``request -> response``; ``execute(model, requests)`` runs one execute as Triton does."""

    def __init__(self) -> None:
        self.models: dict[str, object] = {}
        self.calls: dict[str, int] = {}
        self._executing = 0
        self._unanswered: set[InferenceResponseSender] = set()
        self._lock = threading.Lock()

    def waiting(self, sender: InferenceResponseSender) -> None:
        with self._lock:
            self._unanswered.add(sender)

    def answered(self, sender: InferenceResponseSender) -> None:
        with self._lock:
            self._unanswered.discard(sender)

    def execute(self, model, requests: list[InferenceRequest],
                wait: float | None = 120.0, decoupled: bool = False
                ) -> list[InferenceResponse] | None:
        """One execute. A model that returns None answers through the requests' response
        senders: then wait (up to ``wait`` s) for every final response and return them, or,
        with ``wait=None``, return None at once. A ``decoupled`` model must return None;
        its requests' senders hold their responses."""
        with self._lock:
            self._executing += 1
        for r in requests:
            r.decoupled = decoupled
        try:
            responses = model.execute(requests)
        finally:
            with self._lock:
                self._executing -= 1
        if decoupled and responses is not None:
            raise TritonModelException("a decoupled model's execute must return None")
        if responses is None:
            if any(r.sender is None for r in requests):
                raise TritonModelException("execute returned None without taking the "
                                           "response sender of every request")
            if wait is None:
                return None
            for r in requests:
                if not r.sender.final.wait(wait):
                    raise TritonModelException(f"no final response within {wait} s")
            if decoupled:
                return None  # the senders hold every request's responses
            responses = [r.sender.response for r in requests]
        if not isinstance(responses, list) or len(responses) != len(requests) or not all(
                isinstance(r, InferenceResponse) for r in responses):
            raise TritonModelException("execute must return one InferenceResponse per request")
        return responses

    def infer(self, request: InferenceRequest) -> InferenceResponse:
        if not self._executing and not self._unanswered:
            raise TritonModelException("BLS requests are only allowed while a request is "
                                       "being served (inside execute, or before its response "
                                       "is sent)")
        if request.model_name not in self.models:
            return InferenceResponse(error=TritonError(
                f"Request for unknown model: '{request.model_name}' is not found", 2))
        self.calls[request.model_name] = self.calls.get(request.model_name, 0) + 1
        target = self.models[request.model_name]
        if hasattr(target, "execute"):
            response = self.execute(target, [request])[0]
        else:
            response = target(request)
        if not response.has_error():
            wanted = request.requested_output_names()
            response = InferenceResponse(output_tensors=[
                t for t in response.output_tensors() if not wanted or t.name() in wanted])
        return response


SERVER = FakeTriton()


def as_module() -> types.ModuleType:
    """This module under the name the Python backend gives it."""
    import sys

    return sys.modules[__name__]


def ensemble(*steps: tuple[str, dict[str, str], dict[str, str]]
             ) -> Callable[[InferenceRequest], InferenceResponse]:
    """A fake ensemble: each step ``(model, {model input: tensor}, {model output: tensor})``
    runs through ``SERVER`` in order (as Triton's ensemble scheduler routes tensors)."""

    def run(request: InferenceRequest) -> InferenceResponse:
        pool = {t.name(): t for t in request.inputs()}
        for model, ins, outs in steps:
            sub = InferenceRequest(model, list(outs), [
                Tensor.from_dlpack(k, _Wrapped(pool[v].to_dlpack())) for k, v in ins.items()])
            response = SERVER.infer(sub)
            if response.has_error():
                return response
            for t in response.output_tensors():
                pool[outs[t.name()]] = t
        return InferenceResponse(output_tensors=list(pool.values()))

    return run
