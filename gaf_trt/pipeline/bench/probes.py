"""Timing and the GEMM ceilings a row's achieved GFLOP/s is compared to: ``F.linear`` at the
model's shapes, ONNX Runtime's CPU ``MatMul`` (its integer GEMM at int8) and, on CUDA, the
GPU's datasheet peak."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from gaf_trt.device import gpu_peak_tflops
from gaf_trt.precision import Precision


def time_calls(fn: Callable[[], Any], device: str, warmup: int, repeats: int) -> list[float]:
    """Seconds per call of ``fn`` over ``repeats`` timed calls after ``warmup`` untimed ones
    (CUDA events on CUDA, the wall clock elsewhere)."""
    for _ in range(warmup):
        fn()
    cuda = device.startswith("cuda")
    out = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in (0, 100])."""
    s = sorted(values)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def matmul_ceiling(device: str, precision: Precision, rows: int, hidden: int, inner: int,
                   min_seconds: float = 0.1) -> float:
    """Best GFLOP/s of ``F.linear`` at the model's GEMM shapes (qkv, fc1, fc2) with ``rows``
    tokens, at ``precision`` on ``device`` — the ceiling a row's GFLOP/s is compared to.
    The bench probes once per timed round and keeps the best (a ceiling is the best case)."""
    dtype = precision.torch_dtype
    best = 0.0
    g = torch.Generator().manual_seed(0)
    for k, n in ((hidden, 3 * hidden), (hidden, inner), (inner, hidden)):
        a = torch.randn(rows, k, generator=g).to(device, dtype)
        w = torch.randn(n, k, generator=g).to(device, dtype)
        F.linear(a, w)
        count, elapsed = 0, 0.0
        while elapsed < min_seconds or count < 3:
            elapsed += sum(time_calls(lambda: F.linear(a, w), device, 0, 1))
            count += 1
        best = max(best, 2.0 * rows * k * n * count / elapsed / 1e9)
    return best


def ort_matmul_gflops(precision: Precision, rows: int, hidden: int, inner: int,
                      sessions: dict[Any, Any] | None = None,
                      min_seconds: float = 0.1) -> float | None:
    """Best GFLOP/s of ONNX Runtime's CPU ``MatMul`` at the model's GEMM shapes (a tiny graph
    ``A [rows, k] @ W [k, n]``, as many threads as the ort engine uses; at int8 its integer
    GEMM, ``MatMulInteger`` of uint8 activations and int8 weights, in giga-ops/s); None when
    ONNX Runtime is absent or has no kernel for ``precision``."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    from gaf_trt.engine.ort_backend import cpu_threads

    np_dtype = {Precision.FP32: "float32", Precision.FP16: "float16",
                Precision.INT8: "int8"}.get(precision)
    if np_dtype is None:  # no BF16 / FP8 MatMul kernel on ONNX Runtime's CPU provider
        return None
    integer = precision is Precision.INT8
    onnx_dtype = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16,
                  "int8": TensorProto.UINT8}[np_dtype]
    out_dtype = TensorProto.INT32 if integer else onnx_dtype
    sessions = {} if sessions is None else sessions
    best = 0.0
    g = torch.Generator().manual_seed(0)
    for k, n in ((hidden, 3 * hidden), (hidden, inner), (inner, hidden)):
        key = (precision, rows, k, n)
        if key not in sessions:
            w = _probe_operand(torch.randn(k, n, generator=g), np_dtype, signed=True)
            graph = helper.make_graph(
                [helper.make_node("MatMulInteger" if integer else "MatMul", ["A", "W"], ["Y"])],
                "gemm", [helper.make_tensor_value_info("A", onnx_dtype, [rows, k])],
                [helper.make_tensor_value_info("Y", out_dtype, [rows, n])],
                [numpy_helper.from_array(w, "W")])
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
            so = ort.SessionOptions()
            so.intra_op_num_threads = cpu_threads()
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.log_severity_level = 3
            try:
                sess = ort.InferenceSession(model.SerializeToString(), so,
                                            providers=["CPUExecutionProvider"])
                a = _probe_operand(torch.randn(rows, k, generator=g), np_dtype, signed=False)
                sess.run(None, {"A": a})
            except Exception:  # noqa: BLE001 - no kernel for this type: not a provider here
                return None
            sessions[key] = (sess, a)
        sess, a = sessions[key]
        count, elapsed = 0, 0.0
        while elapsed < min_seconds or count < 3:
            elapsed += sum(time_calls(lambda: sess.run(None, {"A": a}), "cpu", 0, 1))
            count += 1
        best = max(best, 2.0 * rows * k * n * count / elapsed / 1e9)
    return best


def _probe_operand(x: Tensor, np_dtype: str, *, signed: bool) -> Any:
    """A probe operand as numpy: floats as they are, int8 as random integers (int8 weights,
    uint8 activations: ONNX Runtime's fast u8s8 path)."""
    if np_dtype != "int8":
        return x.numpy().astype(np_dtype)
    q = (x * 40).round().clamp(-127, 127)
    return q.numpy().astype("int8") if signed else (q + 128).numpy().astype("uint8")


def gemm_probes(device: str, precision: Precision, rows: int, hidden: int, inner: int,
                sessions: dict[Any, Any] | None = None) -> dict[str, float]:
    """GFLOP/s of every GEMM provider present at the model's shapes: ``torch`` (its float
    precisions), ``ort`` (ONNX Runtime's MatMul, or its integer GEMM at int8) on the CPU where
    it has a kernel for the precision, and on CUDA the device's datasheet peak
    (``device-peak``) when the GPU is known."""
    out = {}
    if not precision.quantized:
        out["torch"] = matmul_ceiling(device, precision, rows, hidden, inner)
    if device.startswith("cuda"):
        peak = gpu_peak_tflops(device, precision)
        if peak is not None:
            out["device-peak"] = peak * 1e3
    else:
        ort = ort_matmul_gflops(precision, rows, hidden, inner, sessions)
        if ort is not None:
            out["ort"] = ort
    return out


def assign_ceilings(rows: Sequence[tuple[str, Precision, int, float]],
                    probes: dict[tuple[Precision, int], dict[str, float]]
                    ) -> list[tuple[float, str]]:
    """``(ceiling GFLOP/s, source)`` per row ``(label, precision, gemm rows, achieved)``.

    A row's ceiling is the best GEMM provider measured at its precision and shape (or the
    device peak); a row that outruns every probe (a fused runtime at a shape the probes do
    not reach) raises the ceiling of its precision to itself, named as the source, so no row
    ever reads more than 100 % of what this machine was seen to do."""
    best_row: dict[Precision, tuple[float, str]] = {}
    for label, prec, _m, gflops in rows:
        if gflops > best_row.get(prec, (0.0, ""))[0]:
            best_row[prec] = (gflops, label)
    out = []
    for _label, prec, m, gflops in rows:
        found = probes.get((prec, m)) or {}
        source, ceiling = max(found.items(), key=lambda kv: kv[1], default=("", 0.0))
        top, top_label = best_row.get(prec, (0.0, ""))
        if top > ceiling:
            ceiling, source = top, f"row {top_label}"
        out.append((ceiling, source))
    return out


def probe_precision(precision: Precision, device: str) -> Precision:
    """The GEMM ceiling a row is compared to: int8 rows against the integer GEMMs (ONNX
    Runtime's MatMulInteger on the CPU, the datasheet peak on CUDA); fp8 rows, which run
    dequantised on the CPU, against the fp32 ceiling there and the fp8 peak on CUDA."""
    if precision is Precision.FP8 and not device.startswith("cuda"):
        return Precision.FP32
    return precision


