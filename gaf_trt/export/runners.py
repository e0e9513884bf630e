"""Polygraphy runners over gaf-trt's runtimes: one interface (Polygraphy's ``BaseRunner``)
for every runtime that runs a graph, so one comparator checks them all on the same inputs.

- :class:`TorchRunner`: a graph's PyTorch module (``export.graphs``), the reference;
- :class:`EngineGraphRunner`: one graph of an opened engine directory through our own
  backend (OpenVINO: ``engine/openvino_backend.py``; any :class:`~gaf_trt.engine.graph_engine.
  GraphEngine`);
- :func:`ort_runner`: Polygraphy's own ``OnnxrtRunner`` over an ONNX Runtime session opened
  with our session settings;
- :func:`trt_runner`: Polygraphy's own ``TrtRunner`` over a plan our TensorRT backend
  deserialised (checked, refitted).

This module imports Polygraphy at the top: import it only after :func:`require_polygraphy`
(the core package imports without Polygraphy; ``pip install 'gaf-trt[compare]'``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata

#: Graph I/O dtypes -> numpy (graph I/O is float32 or int64: ``export.graphs.TensorSpec``).
NUMPY_DTYPES = {"float32": np.float32, "int64": np.int64, "float16": np.float16,
                "int32": np.int32}


def io_metadata(inputs: Sequence[Any]) -> TensorMetadata:
    """Polygraphy's ``TensorMetadata`` of graph inputs (``TensorSpec`` or manifest records:
    ``name``, ``shape`` with str for a dynamic axis, ``dtype``); dynamic axes are None."""
    meta = TensorMetadata()
    for spec in inputs:
        name, shape, dtype = _fields(spec)
        meta.add(name, dtype=NUMPY_DTYPES[dtype],
                 shape=[None if isinstance(d, str) else int(d) for d in shape])
    return meta


def _fields(spec: Any) -> tuple[str, Sequence[Any], str]:
    if isinstance(spec, dict):
        return spec["name"], spec["shape"], spec["dtype"]
    return spec.name, spec.shape, spec.dtype


class _TimedRunner(BaseRunner):
    """A runner whose ``infer_impl`` times ``_outputs(feed) -> {name: numpy array}``."""

    def __init__(self, inputs: Sequence[Any], name: str) -> None:
        super().__init__(name=name)
        self._meta = io_metadata(inputs)

    def get_input_metadata_impl(self) -> TensorMetadata:
        return self._meta

    def _outputs(self, feed: dict[str, np.ndarray]) -> OrderedDict:
        raise NotImplementedError

    def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> OrderedDict:
        start = time.perf_counter()
        out = self._outputs(feed_dict)
        self.inference_time = time.perf_counter() - start
        return out


class TorchRunner(_TimedRunner):
    """A graph's PyTorch module (``module(*inputs) -> output | tuple``) on the CPU, no grad:
    ``feed {input name: array}`` -> ``{output name: contiguous float32 array}`` (Polygraphy's
    comparator views arrays, which needs them contiguous)."""

    def __init__(self, module: torch.nn.Module, inputs: Sequence[Any],
                 output_names: Sequence[str], name: str = "torch") -> None:
        super().__init__(inputs, name)
        self.module = module
        self.input_names = [_fields(s)[0] for s in inputs]
        self.output_names = list(output_names)

    def _outputs(self, feed: dict[str, np.ndarray]) -> OrderedDict:
        args = [torch.from_numpy(np.ascontiguousarray(feed[n])) for n in self.input_names]
        with torch.no_grad():
            got = self.module(*args)
        got = got if isinstance(got, tuple) else (got,)
        return OrderedDict((n, g.detach().float().cpu().contiguous().numpy())
                           for n, g in zip(self.output_names, got, strict=True))


class EngineGraphRunner(_TimedRunner):
    """One graph of an opened engine directory (a ``GraphEngine``: ``engine._run(graph,
    {name: tensor}) -> [tensor]``), its I/O from the manifest record."""

    def __init__(self, engine: Any, graph: str, name: str | None = None) -> None:
        record = engine.manifest["graphs"][graph]
        super().__init__(record["inputs"], name or engine.name)
        self.engine, self.graph = engine, graph
        self.output_names = [o["name"] for o in record["outputs"]]

    def _outputs(self, feed: dict[str, np.ndarray]) -> OrderedDict:
        inputs = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feed.items()}
        got = self.engine._run(self.graph, inputs)
        return OrderedDict((n, g.detach().cpu().contiguous().numpy())
                           for n, g in zip(self.output_names, got, strict=True))


def ort_runner(session: Any, name: str = "ort") -> BaseRunner:
    """Polygraphy's ``OnnxrtRunner`` over an ``onnxruntime.InferenceSession`` (opened with
    our settings: ``engine.ort_backend`` / ``export.parity.cpu_session``)."""
    from polygraphy.backend.onnxrt import OnnxrtRunner

    return OnnxrtRunner(session, name=name)


def trt_runner(plan: Any, name: str = "trt") -> BaseRunner:
    """Polygraphy's ``TrtRunner`` over a deserialised plan (``TrtPlan.engine``, an
    ``ICudaEngine`` our TensorRT backend checked and refitted)."""
    from polygraphy.backend.trt import TrtRunner

    return TrtRunner(plan.engine, name=name)

