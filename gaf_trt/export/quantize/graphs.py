"""Q/DQ graphs with ONNX Runtime's tool: which MatMuls are quantised, ``quantize_static``
(INT8 S8S8, FP8 E4M3 with ``amax / 448`` scales) and the scales' sanity."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gaf_trt.export.precision import node_scopes
from gaf_trt.export.quantize.config import QuantizationError
from gaf_trt.precision import Precision

#: The MatMuls that are quantised (module scopes of the dynamo exporter's name_scopes).
QUANT_SCOPES = re.compile(r"(^|\.)blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))$")


def quantizable_nodes(model) -> list[str]:
    """Names of the MatMul nodes to quantise in an exported graph (see module docstring)."""
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and any(QUANT_SCOPES.search(s) for s in node_scopes(n))]


class _Reader:
    """``onnxruntime.quantization.CalibrationDataReader`` over captured items."""

    def __init__(self, items: list[dict[str, torch.Tensor]]) -> None:
        self.items = items
        self.pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.items):
            return None
        item = self.items[self.pos]
        self.pos += 1
        return {k: v.numpy() for k, v in item.items()}

    def rewind(self) -> None:
        self.pos = 0


@contextlib.contextmanager
def _quiet_ort():
    """quantize_static logs advice on the root logger and prints histogram progress."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), warnings.catch_warnings(), \
                np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # overflowing ranges: reported as bad scales
            yield
    finally:
        root.setLevel(level)


def quantize_graph(src: Path, dst: Path, items: list[dict[str, torch.Tensor]],
                   precision: Precision, method: str = "minmax",
                   symmetric: bool = True,
                   act_max: dict[str, torch.Tensor] | None = None,
                   scheme: str = "s8s8") -> dict[str, Any]:
    """Quantise the ONNX graph ``src`` into ``dst`` with ``items`` as calibration data
    (``scheme``: INT8 ``s8s8`` -- activations int8, symmetric when ``symmetric`` -- or
    ``u8s8`` -- activations uint8, asymmetric; weights int8 per output channel in both).

    Returns ``{"quantized_nodes", "scales": {"min", "max"}}``; raises
    :class:`QuantizationError` when a scale is not finite and positive."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    names = quantizable_nodes(onnx.load(str(src), load_external_data=False))
    if not names:
        return {"quantized_nodes": 0}
    fp8 = precision is Precision.FP8
    overrides = fp8_amax_overrides(onnx.load(str(src)), act_max) if fp8 and act_max else {}
    qtype = QuantType.QFLOAT8E4M3FN if fp8 else QuantType.QInt8
    u8 = scheme == "u8s8" and not fp8
    act_type = QuantType.QUInt8 if u8 else qtype
    calib = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
             "entropy": CalibrationMethod.Entropy}[method]
    with _quiet_ort():
        quantize_static(
            str(src), str(dst), _Reader(items), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"], nodes_to_quantize=names, per_channel=not fp8,
            activation_type=act_type, weight_type=qtype,
            calibrate_method=CalibrationMethod.Distribution if fp8 else calib,
            use_external_data_format=(src.parent / f"{src.name}.data").is_file(),
            extra_options={"CalibPercentile": 99.999, "ActivationSymmetric": symmetric and not u8,
                           "WeightSymmetric": True, "TensorQuantOverrides": overrides})
    scales = _scales(onnx.load(str(dst)))
    bad = [k for k, v in scales.items() if not (np.isfinite(v).all() and (v > 0).all())]
    if bad:
        raise QuantizationError(f"calibration of {src.stem} produced non-finite or zero "
                                f"scales ({len(bad)} tensors, e.g. {bad[0]}): the calibration "
                                "activations are out of range; check the checkpoint")
    every = np.concatenate([v.ravel() for v in scales.values()]) if scales else np.ones(1)
    return {"quantized_nodes": len(names),
            "scales": {"min": float(every.min()), "max": float(every.max())}}


def quantize_graph_dynamic(src: Path, dst: Path) -> dict[str, Any]:
    """ONNX Runtime's dynamic quantisation of the block MatMuls of ``src`` into ``dst``:
    weights int8 per output channel, activations uint8 with their range computed per call
    (``DynamicQuantizeLinear`` + ``MatMulInteger``, fused by ONNX Runtime into
    ``DynamicQuantizeMatMul``); no calibration. Returns ``{"quantized_nodes"}``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    names = quantizable_nodes(onnx.load(str(src), load_external_data=False))
    if not names:
        return {"quantized_nodes": 0}
    with _quiet_ort():
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul"],
                         nodes_to_quantize=names, per_channel=True,
                         weight_type=QuantType.QInt8,
                         use_external_data_format=(src.parent / f"{src.name}.data").is_file(),
                         extra_options={"MatMulConstBOnly": True, "WeightSymmetric": True})
    return {"quantized_nodes": len(names)}


#: Largest finite float8 E4M3FN value.
E4M3_MAX = 448.0


def fp8_amax_overrides(model, act_max: dict[str, torch.Tensor]) -> dict[str, list[dict]]:
    """FP8 scales ``amax / 448`` (ModelOpt's max calibration) for every quantised MatMul's
    activation (calibrated absolute maximum) and weight, as ONNX Runtime
    ``TensorQuantOverrides``. Without them ORT derives FP8 scales from the tensor's standard
    deviation, which clips the outliers (measured: digits Fréchet distance 7x worse)."""
    from ml_dtypes import float8_e4m3fn
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    zero = np.array(0, dtype=float8_e4m3fn)
    out: dict[str, list[dict]] = {}
    for node in model.graph.node:
        key = next((k for k in map(linear_key, node_scopes(node)) if k), None)
        if node.op_type != "MatMul" or key not in act_max:
            continue
        amax = float(act_max[key].max())
        out[node.input[0]] = [{"scale": np.array(max(amax, 1e-12) / E4M3_MAX, np.float32),
                               "zero_point": zero}]
        if node.input[1] in inits:
            w = float(np.abs(numpy_helper.to_array(inits[node.input[1]])).max())
            out[node.input[1]] = [{"scale": np.array(max(w, 1e-12) / E4M3_MAX, np.float32),
                                   "zero_point": zero}]
    return out


def _scales(model) -> dict[str, np.ndarray]:
    """The scale initializers of every QuantizeLinear / DequantizeLinear node."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 1:
            t = inits.get(n.input[1])
            if t is not None:
                out[t.name] = numpy_helper.to_array(t).astype(np.float64)
    return out



def linear_key(scope: str) -> str | None:
    """``model.trunk.blocks.3.mlp.fc1`` -> ``blocks.3.mlp.fc1`` (None: not quantised)."""
    m = QUANT_SCOPES.search(scope)
    return m.group(0).lstrip(".") if m else None


def set_meta(proto, key: str, value: str) -> None:
    for p in proto.metadata_props:
        if p.key == key:
            p.value = value
            return
    entry = proto.metadata_props.add()
    entry.key, entry.value = key, value

