"""Engine directories that store their weights once.

Every graph of an engine directory (``trunk``, ``j_head``, ``k_bank``, ``step_velocity``,
``step_anchors``) holds the same network weights; written naively they are stored four times
over, plus the PyTorch copy. Here each precision's weights are stored once, in the
directory's ``model.safetensors``:

1. :func:`untranspose` — the dynamo exporter folds ``Linear`` weights into transposed
   initializers; each is put back as the PyTorch parameter plus a ``Transpose`` node (same
   name scopes as its consumer, so the precision pass treats it alike; ONNX Runtime and
   TensorRT fold it when they load the graph). Every large initializer is then a parameter
   byte for byte (in FP32, or rounded to FP16 / BF16 by :mod:`gaf_trt.export.precision`).
2. :func:`write_shared_weights` — ``model.safetensors`` holds the state dict, each parameter in
   the dtype the graphs read it in (FP32 in an FP32 directory; FP16 / BF16 where only reduced
   nodes read it), with the model config in its metadata: still a gaf-trt checkpoint that
   :func:`gaf_trt.model.checkpoint.load_model` opens (the torch backend and the bench's
   reference row read it; reduced tensors are widened to FP32 there).
3. :func:`point_graph_at` — every initializer of ``SHARED_MIN_BYTES`` or more whose bytes
   equal a stored tensor becomes ONNX external data (``location`` ``model.safetensors``,
   ``offset`` into the file past the safetensors header, ``length``). ONNX Runtime and
   TensorRT's parser read external data by location / offset / length. What matches nothing
   (small constants, a parameter the graphs read in two dtypes) stays inside the graph.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

SHARED_FILE = "model.safetensors"
#: Initializers smaller than this stay inside the graph (shape constants, scalars).
SHARED_MIN_BYTES = 1024
_ONNX_FLOAT, _ONNX_FP16, _ONNX_BF16 = 1, 10, 16
_TORCH_OF_ONNX = {_ONNX_FLOAT: torch.float32, _ONNX_FP16: torch.float16,
                  _ONNX_BF16: torch.bfloat16}


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def raw_bytes(t) -> bytes:
    """An ONNX tensor's bytes (its ``raw_data``, else its typed fields)."""
    from onnx import numpy_helper

    if t.HasField("raw_data") and t.raw_data:
        return bytes(t.raw_data)
    return numpy_helper.to_array(t).tobytes()


@dataclass
class ParamIndex:
    """The FP32 state dict by content: ``(shape, sha256)`` of each parameter and of each
    2-D parameter's transpose -> ``(name, transposed)``."""

    params: dict[str, torch.Tensor]
    by_digest: dict[tuple[tuple[int, ...], str], tuple[str, bool]] = field(default_factory=dict)
    _reduced: dict[int, dict[tuple[tuple[int, ...], str], str]] = field(default_factory=dict)

    def reduced(self, onnx_dtype: int) -> dict[tuple[tuple[int, ...], str], str]:
        """``(shape, sha256)`` of each parameter rounded to FP16 / BF16 -> its name."""
        if onnx_dtype not in self._reduced:
            dtype = _TORCH_OF_ONNX[onnx_dtype]
            self._reduced[onnx_dtype] = {
                (tuple(p.shape), _digest(_tensor_bytes(p.to(dtype)))): name
                for name, p in self.params.items() if p.numel() * 2 >= SHARED_MIN_BYTES // 2}
        return self._reduced[onnx_dtype]

    @classmethod
    def of(cls, model: torch.nn.Module) -> ParamIndex:
        params = {k: v.detach().to("cpu", torch.float32).contiguous()
                  for k, v in model.state_dict().items() if v.is_floating_point()}
        idx = cls(params)
        for name, p in params.items():
            if p.numel() * 4 < SHARED_MIN_BYTES:
                continue
            idx.by_digest.setdefault((tuple(p.shape), _digest(p.numpy().tobytes())),
                                     (name, False))
            if p.dim() == 2:
                t = p.t().contiguous()
                idx.by_digest.setdefault((tuple(t.shape), _digest(t.numpy().tobytes())),
                                         (name, True))
        return idx

    def match(self, t) -> tuple[str, bool] | None:
        """The parameter an FP32 initializer is (or is the transpose of), else None."""
        if t.data_type != _ONNX_FLOAT:
            return None
        raw = raw_bytes(t)
        if len(raw) < SHARED_MIN_BYTES:
            return None
        return self.by_digest.get((tuple(t.dims), _digest(raw)))


def untranspose(model, index: ParamIndex) -> int:
    """Replace each initializer that is a transposed parameter by the parameter and a
    ``Transpose`` node producing the old name; returns how many were replaced."""
    from onnx import helper, numpy_helper

    g = model.graph
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    new_nodes, replaced = [], 0
    for t in list(g.initializer):
        hit = index.match(t)
        if hit is None or not hit[1]:
            continue
        name, dims = t.name, list(t.dims)
        src = numpy_helper.from_array(index.params[hit[0]].numpy(), f"{name}__param")
        node = helper.make_node("Transpose", [src.name], [name], perm=[1, 0],
                                name=f"untranspose_{name}")
        first = (consumers.get(name) or [None])[0]
        if first is not None:
            for p in first.metadata_props:
                node.metadata_props.add(key=p.key, value=p.value)
        g.initializer.remove(t)
        g.initializer.append(src)
        g.value_info.append(helper.make_tensor_value_info(name, _ONNX_FLOAT, dims))
        new_nodes.append(node)
        replaced += 1
    prepend_nodes(g, new_nodes)
    return replaced


def prepend_nodes(graph, nodes: list) -> None:
    """Put ``nodes`` (which read only initializers) ahead of the graph's nodes."""
    if nodes:
        rest = list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes + rest)


def parameter_uses(model, index: ParamIndex) -> dict[str, int]:
    """``parameter -> ONNX dtype`` for each initializer that is a parameter (FP32) or a
    parameter rounded to FP16 / BF16 (as :mod:`gaf_trt.export.precision` rounds)."""
    uses: dict[str, int] = {}
    for t in model.graph.initializer:
        if t.data_type not in _TORCH_OF_ONNX:
            continue
        name = _param_name(t, index)
        if name is not None:
            uses[name] = t.data_type
    return uses


def _param_name(t, index: ParamIndex) -> str | None:
    if t.data_type == _ONNX_FLOAT:
        hit = index.match(t)
        return hit[0] if hit is not None and not hit[1] else None
    raw = raw_bytes(t)  # reduced: the parameter rounded the way the precision pass rounds
    if len(raw) < SHARED_MIN_BYTES // 2:
        return None
    return index.reduced(t.data_type).get((tuple(t.dims), _digest(raw)))


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def write_shared_weights(path: Path, index: ParamIndex, uses: list[dict[str, int]],
                         metadata: dict[str, str]) -> dict[str, tuple[int, int, int]]:
    """Write ``model.safetensors`` (each parameter in the one dtype every graph reads it in,
    else FP32); returns ``parameter -> (onnx dtype, absolute offset, length)``."""
    from safetensors.torch import save_file

    from gaf_trt.io.files import atomic_write

    dtypes: dict[str, set[int]] = {}
    for u in uses:
        for name, dt in u.items():
            dtypes.setdefault(name, set()).add(dt)
    tensors, stored = {}, {}
    for name, p in index.params.items():
        dts = dtypes.get(name, {_ONNX_FLOAT})
        dt = next(iter(dts)) if len(dts) == 1 else _ONNX_FLOAT
        tensors[name] = p.to(_TORCH_OF_ONNX[dt]).contiguous()
        stored[name] = dt
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return {name: (stored[name], off, length)
            for name, (off, length) in safetensors_offsets(path).items() if name in stored}


def safetensors_offsets(path: Path) -> dict[str, tuple[int, int]]:
    """``tensor -> (absolute byte offset, length)`` from a safetensors file's header."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    base = 8 + n
    return {k: (base + v["data_offsets"][0], v["data_offsets"][1] - v["data_offsets"][0])
            for k, v in header.items() if k != "__metadata__"}


def point_graph_at(model, index: ParamIndex, stored: dict[str, tuple[int, int, int]],
                   location: str = SHARED_FILE) -> tuple[int, int]:
    """Turn every initializer equal to a stored tensor into external data in ``location``;
    returns ``(initializers shared, bytes shared)``."""

    shared = nbytes = 0
    for t in model.graph.initializer:
        name = _param_name(t, index) if t.data_type in _TORCH_OF_ONNX else None
        if name is None or name not in stored or stored[name][0] != t.data_type:
            continue
        _, offset, length = stored[name]
        if len(raw_bytes(t)) != length:
            continue
        set_external(t, location, offset, length)
        shared += 1
        nbytes += length
    return shared, nbytes


def set_external(t, location: str, offset: int, length: int) -> None:
    """Make the ONNX tensor ``t`` external data: ``length`` bytes at ``offset`` of
    ``location`` (a file beside the graph); its inline data is dropped."""
    from onnx import TensorProto

    t.ClearField("raw_data")
    for f in ("float_data", "int32_data", "int64_data", "double_data"):
        t.ClearField(f)
    del t.external_data[:]
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = t.external_data.add()
        entry.key, entry.value = k, v


def share_graphs(folder: Path, graph_files: dict[str, str], model: torch.nn.Module,
                 metadata: dict[str, str]) -> dict[str, dict[str, int]]:
    """Store the weights of ``graph_files`` (name -> ``.onnx`` in ``folder``, written with
    their weights) once, in ``folder/model.safetensors``, and point the graphs at it; their own
    ``.onnx.data`` files are removed. Returns per graph ``{"shared": n, "shared_bytes": b,
    "inline_bytes": b}``."""
    import onnx

    index = ParamIndex.of(model)
    uses = []
    for file in graph_files.values():  # pass 1: which parameter in which dtype
        uses.append(parameter_uses(onnx.load(str(folder / file)), index))
    stored = write_shared_weights(folder / SHARED_FILE, index, uses, metadata)
    report = {}
    for name, file in graph_files.items():  # pass 2: point the graphs at the shared file
        path = folder / file
        proto = onnx.load(str(path))
        n, b = point_graph_at(proto, index, stored)
        inline = sum(len(raw_bytes(t)) for t in proto.graph.initializer
                     if t.data_location != onnx.TensorProto.EXTERNAL)
        data = folder / f"{file}.data"
        onnx.save_model(proto, str(path))
        data.unlink(missing_ok=True)
        report[name] = {"shared": n, "shared_bytes": b, "inline_bytes": inline}
        log.info("%s: %d initializers (%d bytes) in %s, %d bytes inline", file, n, b,
                 SHARED_FILE, inline)
    return report


def weights_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's floating-point state dict in FP32."""
    return sum(int(np.prod(v.shape)) * 4 for v in model.state_dict().values()
               if v.is_floating_point())
