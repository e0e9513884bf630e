"""Quantised engine directories that store their weights once.

The quantised graphs (``trunk``, ``step_velocity``, ``step_anchors``) each hold the same int8
(or fp8) weights with their scales, and every graph the same FP32 weights of the layers kept
in high precision (embedders, adaLN modulation, final layer, J head and K bank). Here they are
stored once, in one file of the directory (``int8_weights.data`` / ``fp8_weights.data``) that
every graph reads as ONNX external data (``location``, ``offset``, ``length``), as the FP32 /
FP16 directories share ``model.safetensors`` (:mod:`gaf_trt.export.shared_weights`):

- every initializer of :data:`SHARED_MIN_BYTES` or more is stored once by content
  (``(dtype, shape, sha256)``: the same tensor in two graphs is one entry of the file);
- an FP32 weight of a layer kept in high precision is *stored* in float16 and widened by a
  ``Cast`` node (ONNX Runtime and OpenVINO fold it at load): the layer still computes in FP32
  on FP32 activations, only its weights are rounded to float16 (relative 2^-11, far below the
  int8 error of the quantised layers; the export's quality check measures the engine as
  written). Tensors that quantisation nodes read (scales, zero points) and values float16
  cannot hold stay as they are.

An S/2 int8 directory is then about a third of its FP32 weights (docs/results.md, issue 25);
it holds no PyTorch weights (the ``torch`` backend does not run int8 / fp8; the bench's
reference row reads the checkpoint it was exported from).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from gaf_trt.export.shared_weights import (
    SHARED_MIN_BYTES,
    prepend_nodes,
    raw_bytes,
    set_external,
)

log = logging.getLogger(__name__)

#: Ops whose FP32 weight input may be stored as float16 and widened by a Cast.
HALF_STORABLE = frozenset({"MatMul", "Gemm", "Conv", "Add", "Sub", "Mul", "Gather",
                           "Transpose", "Einsum"})
#: Tensors of this many bytes or more start at a page boundary of the file (mmap-friendly).
PAGE_ALIGN_BYTES = 1 << 20
_FLOAT, _FLOAT16 = 1, 10


def weights_file(precision: str) -> str:
    """The shared weights file of a quantised directory: ``int8_weights.data``."""
    return f"{precision}_weights.data"


def store_half(model) -> int:
    """Store each FP32 initializer that only float compute ops read (:data:`HALF_STORABLE`)
    as float16 plus a ``Cast`` to float producing its old name; returns how many were
    rewritten. Values float16 cannot represent (beyond ±65504) stay FP32."""
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    readers: dict[str, set[str]] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, set()).add(n.op_type)
    casts, done = [], 0
    for t in list(g.initializer):
        if t.data_type != _FLOAT or len(raw_bytes(t)) < SHARED_MIN_BYTES:
            continue
        ops = readers.get(t.name)
        if not ops or not ops <= HALF_STORABLE:
            continue
        values = numpy_helper.to_array(t)
        if not np.isfinite(values).all() or float(np.abs(values).max()) > 65504.0:
            continue
        half = numpy_helper.from_array(values.astype(np.float16), f"{t.name}__f16")
        casts.append(helper.make_node("Cast", [half.name], [t.name], to=TensorProto.FLOAT,
                                      name=f"widen_{t.name}"))
        g.initializer.remove(t)
        g.initializer.append(half)
        done += 1
    prepend_nodes(g, casts)
    return done


class _Store:
    """The shared weights file, appended as tensors come: content -> (offset, length)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.index: dict[tuple[int, tuple[int, ...], str], tuple[int, int]] = {}
        self.fh = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.size = 0

    def put(self, t, raw: bytes) -> tuple[int, int]:
        key = (t.data_type, tuple(t.dims), hashlib.sha256(raw).hexdigest())
        if key not in self.index:
            align = 4096 if len(raw) >= PAGE_ALIGN_BYTES else 64
            pad = -self.size % align
            self.fh.write(b"\0" * pad + raw)
            self.index[key] = (self.size + pad, len(raw))
            self.size += pad + len(raw)
        return self.index[key]

    def close(self) -> None:
        self.fh.close()


def share_quantized(folder: Path, graph_files: dict[str, str], precision: str,
                    half_storage: bool = True) -> dict[str, Any]:
    """Store the weights of the quantised directory's graphs (``graph_files``: name ->
    ``.onnx`` in ``folder``, each written with its own weights) once, in
    ``folder / weights_file(precision)``, and point the graphs at it (their own ``.onnx.data``
    files are removed). Returns the manifest's ``storage`` report."""
    import onnx

    name = weights_file(precision)
    store = _Store(folder / name)
    per_graph, halved, referenced = {}, 0, 0
    try:
        for graph, file in graph_files.items():
            path = folder / file
            proto = onnx.load(str(path))
            halved += store_half(proto) if half_storage else 0
            n = 0
            for t in proto.graph.initializer:
                raw = raw_bytes(t)
                if len(raw) < SHARED_MIN_BYTES:
                    continue
                set_external(t, name, *store.put(t, raw))
                n += 1
                referenced += len(raw)
            onnx.save_model(proto, str(path))
            (folder / f"{file}.data").unlink(missing_ok=True)
            per_graph[graph] = n
    finally:
        store.close()
    log.info("%s: %d unique tensors, %d bytes (%d bytes referenced by %d graphs)", name,
             len(store.index), store.size, referenced, len(graph_files))
    return {"file": name, "bytes": store.size, "tensors": len(store.index),
            "referenced_bytes": referenced, "initializers_per_graph": per_graph,
            "half_stored_initializers": halved,
            "high_precision_weights": ("float16 storage, widened to float32 by a Cast at "
                                       "load (computed in float32)") if half_storage
            else "float32"}
