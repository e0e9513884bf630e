"""Reduced-precision ONNX graphs (FP16 / BF16) with real FP32 islands.

TensorRT 11 is strongly typed only (no FP16 builder flag), so the precision has to be in the
graph. The exporter traces once in FP32 and retypes the graph itself:

- a node runs reduced only if its op is in :data:`REDUCED_OPS` (shape-preserving or
  matmul-like ops whose type follows their inputs) and it belongs to the trunk blocks, the
  patch / label embedding or the heads (its ``pkg.torch.onnx.name_scopes``), and not to the
  timestep MLP or an adaLN modulation;
- so LayerNormalization, Softmax (inside an opset-23 ``Attention`` node too, through its
  ``softmax_precision`` attribute), the timestep sinusoid (Sin/Cos) and MLP, every adaLN
  modulation linear, the anchor skip terms ``(1-t) x`` / ``t x``, the class repeat and the
  coefficient blend (arXiv 2511.22693, transport algebra) stay FP32, as do graph inputs and
  outputs;
- weights used only by reduced nodes are stored reduced (rounded from FP32); a Cast is
  inserted once per tensor where a value crosses between the two regions.

onnxconverter-common's ``node_block_list`` was measured and rejected (benchmarks/EXPORT.md):
it wraps each blocked node in its own Cast pair and carries the values between blocked nodes
in FP16, so a multi-node region (the timestep MLP) is not kept FP32, and it labels an FP32
graph output FP16 when the last node is blocked. BF16 uses the same plan with BFLOAT16.
"""

from __future__ import annotations

import ast
import logging
import re
from dataclasses import dataclass

import numpy as np

from gaf_trt.precision import Precision

log = logging.getLogger(__name__)

#: Ops that may run reduced: their output type follows their float inputs.
REDUCED_OPS = frozenset({
    "MatMul", "Gemm", "Conv", "ConvTranspose", "Add", "Sub", "Mul", "Div", "Neg", "Tanh",
    "Sigmoid", "Relu", "Gelu", "Erf", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Slice",
    "Split", "Concat", "Gather", "GatherND", "GatherElements", "Flatten", "Expand", "Einsum",
    "ReduceSum", "Where", "Identity", "Tile", "Resize", "Attention", "Pow",
})
#: Module scopes that run reduced (everything else stays FP32).
REDUCED_SCOPES = re.compile(r"(^|\.)(blocks\.\d+|x_embedder|y_embedder|twins|J|K|vae)(\.|$)")
#: Module scopes kept FP32 even inside a reduced scope.
FP32_SCOPES = re.compile(r"(adaLN_modulation|t_embedder|norm)")
NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


@dataclass(frozen=True)
class PrecisionReport:
    """How much of the graph runs reduced."""

    precision: str
    reduced_nodes: int
    fp32_nodes: int
    casts_added: int

    def to_dict(self) -> dict[str, object]:
        return {"precision": self.precision, "reduced_nodes": self.reduced_nodes,
                "fp32_nodes": self.fp32_nodes, "casts_added": self.casts_added}


def node_scopes(node) -> list[str]:
    """The module scopes the dynamo exporter recorded on ``node`` (empty when none)."""
    for p in node.metadata_props:
        if p.key == NAME_SCOPES_KEY:
            try:
                return [str(s) for s in ast.literal_eval(p.value)]
            except (ValueError, SyntaxError):
                return []
    return []


def runs_reduced(node) -> bool:
    """Whether ``node`` computes in reduced precision (see the module docstring)."""
    if node.op_type not in REDUCED_OPS or node.domain not in ("", "ai.onnx"):
        return False
    scopes = node_scopes(node)
    return (any(REDUCED_SCOPES.search(s) for s in scopes)
            and not any(FP32_SCOPES.search(s) for s in scopes))


def _value_types(model) -> dict[str, int]:
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.output, *g.value_info)}
    types.update({t.name: t.data_type for t in g.initializer})
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


def reduce_precision(model, precision: Precision):
    """Return ``(retyped ModelProto, PrecisionReport)``; FP32 returns the model unchanged.

    The model is modified in place (weights are converted one at a time, so an XL/2 graph
    needs little extra memory)."""
    from onnx import TensorProto

    if precision is Precision.FP32:
        return model, PrecisionReport("fp32", 0, len(model.graph.node), 0)
    low = TensorProto.FLOAT16 if precision is Precision.FP16 else TensorProto.BFLOAT16
    g = model.graph
    types = _value_types(model)
    missing = [o for n in g.node for o in n.output if o and o not in types]
    if missing:
        raise RuntimeError(f"exported graph lacks types for {len(missing)} values "
                           f"(e.g. {missing[0]}); cannot retype it")
    reduced = [runs_reduced(n) for n in g.node]
    low_values = _reduce_weights(g, reduced, types, low)
    low_values |= {o for n, red in zip(g.node, reduced, strict=True) if red for o in n.output
                   if types.get(o) == TensorProto.FLOAT}
    casts = _insert_casts(g, reduced, types, low_values, low)
    for vi in g.value_info:
        if vi.name in low_values:
            vi.type.tensor_type.elem_type = low
    n_red = sum(reduced)
    report = PrecisionReport(precision.value, n_red, len(reduced) - n_red, casts)
    log.info("%s graph: %d nodes reduced, %d kept fp32, %d casts", precision.value,
             report.reduced_nodes, report.fp32_nodes, report.casts_added)
    return model, report


def _reduce_weights(g, reduced: list[bool], types: dict[str, int], low: int) -> set[str]:
    """Convert FP32 initializers consumed only by reduced nodes; returns their names."""
    from onnx import TensorProto

    consumers: dict[str, list[bool]] = {}
    for n, red in zip(g.node, reduced, strict=True):
        for i in n.input:
            consumers.setdefault(i, []).append(red)
    done = set()
    for t in g.initializer:
        if t.data_type == TensorProto.FLOAT and consumers.get(t.name) and all(consumers[t.name]):
            t.CopyFrom(_convert_tensor(t, low))
            types[t.name] = low
            done.add(t.name)
    return done


def _insert_casts(g, reduced: list[bool], types: dict[str, int], low_values: set[str],
                  low: int) -> int:
    """One Cast per tensor crossing between the FP32 and reduced regions (graph outputs
    stay FP32); returns the number of casts added. Nodes stay in topological order."""
    from onnx import TensorProto, helper

    f32 = TensorProto.FLOAT
    outputs = {o.name for o in g.output}
    casts: dict[tuple[str, int], str] = {}
    out_nodes: list = []

    def cast(value: str, to: int) -> str:
        key = (value, to)
        if key not in casts:
            casts[key] = f"{value}__to_{'low' if to == low else 'f32'}"
            out_nodes.append(helper.make_node("Cast", [value], [casts[key]], to=to,
                                              name=f"cast_{len(casts)}_{value}"))
        return casts[key]

    for n, red in zip(list(g.node), reduced, strict=True):
        for k, i in enumerate(n.input):
            if i and red and types.get(i) == f32 and i not in low_values:
                n.input[k] = cast(i, low)
            elif i and not red and i in low_values:
                n.input[k] = cast(i, f32)
        out_nodes.append(n)
        if red and n.op_type == "Attention":  # opset 23: its softmax still runs in FP32
            _set_int_attr(n, "softmax_precision", f32)
        for k, o in enumerate(n.output):
            if red and o in outputs and o in low_values:  # graph outputs stay FP32
                n.output[k] = f"{o}__low"
                low_values.discard(o)
                low_values.add(n.output[k])
                out_nodes.append(helper.make_node("Cast", [n.output[k]], [o], to=f32,
                                                  name=f"cast_out_{o}"))
                casts[(o, -1)] = o
    del g.node[:]
    g.node.extend(out_nodes)
    return len(casts)


def _set_int_attr(node, name: str, value: int) -> None:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            a.i = value
            return
    node.attribute.append(helper.make_attribute(name, value))


def _convert_tensor(t, low: int):
    """An FP32 initializer as FP16 / BF16 (round to nearest even, as torch rounds)."""
    import torch
    from onnx import TensorProto, helper, numpy_helper

    values = np.array(numpy_helper.to_array(t), dtype=np.float32, copy=True)
    src = torch.from_numpy(values)
    if low == TensorProto.FLOAT16:
        raw = src.to(torch.float16).numpy().tobytes()
    else:
        raw = src.to(torch.bfloat16).view(torch.int16).numpy().tobytes()
    return helper.make_tensor(t.name, low, list(t.dims), raw, raw=True)
