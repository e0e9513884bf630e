"""Quantised engines: INT8 (ONNX Runtime CPU, TensorRT) and FP8 (TensorRT) Q/DQ graphs.

``gaf-trt export --precision int8|fp8`` exports the FP32 graphs (checked against PyTorch as
usual), then replaces each graph by its quantised form here:

1. **Calibration** (:mod:`gaf_trt.export.calibration`): the checkpoint's FP32 model runs the
   real solvers (euler, heun, IER) over seeded random classes and compositions (pure,
   weighted, masked); every network input on the way is captured.
2. **Quantisation** with ONNX Runtime's tool (``onnxruntime.quantization.quantize_static``,
   QDQ format): only the transformer blocks' linear MatMuls — attention QKV and output
   projection, MLP fc1 / fc2 — get Q/DQ pairs; INT8 weights are int8 per output channel,
   activations per tensor, uint8 (U8S8) or int8 (S8S8) by ``--int8-scheme`` (``auto``: U8S8
   on x86 with VNNI / AMX, S8S8 elsewhere and for TensorRT: :func:`config.resolve_scheme`);
   ``--quant dynamic`` quantises the same MatMuls with ``quantize_dynamic`` instead (no
   calibration); FP8 is E4M3 per tensor with scales ``amax / 448``
   (:func:`fp8_amax_overrides`; ONNX Runtime insists on running its histogram calibrator
   for FP8, whose standard-deviation rule the overrides replace). Everything else stays
   FP32, as in NVIDIA's DiT recipes: the patch / timestep / class embedders, every adaLN
   modulation linear, the final layer (J head and K bank), LayerNorm, Softmax, the attention
   products Q·K and P·V, and the anchor and blend arithmetic.
3. **Weights once** (:mod:`.store`): the graphs' weights in one ``int8_weights.data``.
4. **Quality, measured before anything is written**: on held-out trajectories (another seed)
   each quantised graph's outputs against PyTorch FP32 (relative error ``||a-b|| / ||b||``
   over the items, worst item too), the velocity ``K - J`` / ``v`` of the engine, and the
   final state of short solver runs (euler, masked 2-class composition and a pure class)
   against FP32 on the same noise. Above :data:`ERROR_BOUNDS` export refuses with one error
   line unless ``accept_error``.

ONNX Runtime's CPU provider runs the INT8 graphs with integer kernels (VNNI / AMX); it runs
the FP8 graphs by dequantising to FP32 (the Q/DQ rounding is real, so it is the FP8
*simulated* quality; the speed-up needs TensorRT on compute capability >= 8.9).

NVIDIA ModelOpt (``modelopt.torch.quantization``) was tried for the TensorRT graphs
(README, "Quantised engines"): its fake quantisation and calibration run on this CPU, but its
ONNX export only works through the TorchScript exporter, which cannot export this model
(``unpatchify`` shape arithmetic), and the dynamo exporter fails on its quantiser ops.
"""


from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from gaf_trt.errors import ConfigError
from gaf_trt.export.quantize.config import (
    ERROR_BOUNDS,
    HIGH_PRECISION,
    QuantConfig,
    QuantizationError,
    check_fp8_device,
    is_quantized,
    quant_unavailable,
    resolved,
)
from gaf_trt.export.quantize.graphs import (
    quantizable_nodes,
    quantize_graph,
    quantize_graph_dynamic,
    set_meta,
)
from gaf_trt.export.quantize.quality import describe_quality, measure_quality
from gaf_trt.export.quantize.smoothquant import channel_max, smooth_graph
from gaf_trt.export.quantize.store import share_quantized, weights_file
from gaf_trt.precision import Precision


def quantize_engine(model, specs: list, staging: Path, graphs: dict[str, dict[str, Any]],
                    precision: Precision, qcfg: QuantConfig, external_threshold: int,
                    say=lambda _m: None) -> dict[str, Any]:
    """Replace the FP32 graphs in ``staging`` by quantised ones (``graphs``: the manifest's
    graph records, updated in place). Returns the manifest's ``quantization`` section;
    raises before the caller commits anything when the quality is out of bounds."""
    from gaf_trt.export.calibration import CALIB_KINDS, CALIB_SOLVERS, capture

    qcfg.validate()
    qcfg.check_precision(precision)
    qcfg = resolved(qcfg, precision, tensorrt=False)
    why = quant_unavailable()
    if why is not None:
        raise ConfigError(f"precision {precision.value} cannot be exported here: {why}")
    calib, act_max = None, {}
    if qcfg.mode == "static":
        say(f"calibrating: {qcfg.samples} trajectories x {qcfg.steps} steps "
            f"({', '.join(CALIB_SOLVERS)}; {', '.join(CALIB_KINDS)})")
        calib = capture(model, qcfg.samples, qcfg.steps, qcfg.seed)
        if qcfg.smoothquant is not None or precision is Precision.FP8:
            act_max = channel_max(model, calib)
    per_graph: dict[str, Any] = {}
    tmp = staging / ".quantize"
    tmp.mkdir()
    try:
        for spec in specs:
            per_graph[spec.name] = _quantize_one(
                spec, graphs[spec.name], staging, tmp, calib, act_max, precision, qcfg,
                model.config.input_size, external_threshold, say)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for rec in graphs.values():
        rec["precision"] = precision.value
    storage = _store_once(staging, specs, graphs, precision, say)
    say("measuring the quantised engine against FP32 on held-out trajectories")
    quality = measure_quality(model, specs, staging, graphs, precision, qcfg)
    bounds = ERROR_BOUNDS[precision]
    over = {k: quality[k] for k in bounds if not quality[k] <= bounds[k]}
    if over and not qcfg.accept_error:
        worst = ", ".join(f"{k} {v:.3g} > bound {bounds[k]:g}" for k, v in over.items())
        raise QuantizationError(f"the {precision.value} engine is too far from FP32 ({worst}; "
                                "relative error): nothing written; try more --calib-samples, "
                                "another --calib-method, or --accept-error to keep it")
    section = _section(precision, qcfg, calib, per_graph, quality, bounds, bool(over))
    section["storage"] = storage
    return section


def _store_once(staging: Path, specs: list, graphs: dict[str, dict[str, Any]],
                precision: Precision, say) -> dict[str, Any]:
    """The GAF graphs' weights once, in the directory's quantised weights file; each graph
    record's ``data_file`` names it."""
    gaf = {s.name: graphs[s.name]["file"] for s in specs if s.group != "vae"}
    say(f"storing the {precision.value} weights once in {weights_file(precision.value)}")
    for name in gaf:
        if graphs[name].get("data_file"):
            (staging / graphs[name]["data_file"]).unlink(missing_ok=True)
    storage = share_quantized(staging, gaf, precision.value)
    for name, n in storage["initializers_per_graph"].items():
        graphs[name]["data_file"] = storage["file"] if n else None
    return storage


def _quantize_one(spec, rec: dict[str, Any], staging: Path, tmp: Path, calib,
                  act_max: dict[str, torch.Tensor], precision: Precision, qcfg: QuantConfig,
                  size: int, external_threshold: int, say) -> dict[str, Any]:
    """Quantise one graph of ``staging`` in place (through ``tmp``, emptied after); updates
    its manifest record ``rec`` and returns the graph's entry of the ``graphs`` report."""
    import onnx

    from gaf_trt.export.onnx_export import check_by_path, save_model

    if spec.group == "vae":
        return {"quantized_nodes": 0, "reason": "VAE decoder kept FP32"}
    path = staging / rec["file"]
    names = quantizable_nodes(onnx.load(str(path), load_external_data=False))
    if not names:
        return {"quantized_nodes": 0}
    say(f"quantising {spec.name} ({precision.value} {qcfg.mode}"
        f"{'' if precision is Precision.FP8 else ' ' + qcfg.scheme}, {len(names)} MatMuls)")
    out = tmp / rec["file"]
    if qcfg.mode == "dynamic":
        info = quantize_graph_dynamic(path, out)
    else:
        items = calib.items_for(spec.input_names, qcfg.rows, size)
        src = path
        if qcfg.smoothquant is not None:
            src = tmp / f"smooth_{rec['file']}"
            smoothed = smooth_graph(path, src, act_max, qcfg.smoothquant)
        info = quantize_graph(src, out, items, precision, qcfg.method, qcfg.symmetric,
                              None if qcfg.smoothquant is not None else act_max, qcfg.scheme)
        info["items"] = len(items)
        if qcfg.smoothquant is not None:
            info["smoothed_nodes"] = smoothed
    proto = onnx.load(str(out))
    set_meta(proto, "gaf_trt.precision", precision.value)
    if rec.get("data_file"):
        (staging / rec["data_file"]).unlink(missing_ok=True)
    rec["data_file"] = save_model(proto, path, external_threshold)
    check_by_path(path)
    rec["nodes"] = len(proto.graph.node)
    for f in tmp.iterdir():
        f.unlink()
    return info


def _section(precision: Precision, qcfg: QuantConfig, calib, per_graph: dict[str, Any],
             quality: dict[str, Any], bounds: dict[str, float], over: bool) -> dict[str, Any]:
    """The manifest's ``quantization`` section: the recipe (mode, INT8 scheme and the CPU it
    was chosen for), calibration and quality."""
    from gaf_trt.device import cpu_model, int8_dot_flags

    fp8 = precision is Precision.FP8
    u8 = qcfg.scheme == "u8s8" or qcfg.mode == "dynamic"
    acts = ("per call (dynamic), uint8 asymmetric" if qcfg.mode == "dynamic"
            else "per-tensor, " + ("asymmetric uint8" if u8 and not fp8 else
                                   "symmetric" if qcfg.symmetric else "asymmetric"))
    return {
        "precision": precision.value, "tool": _tool(precision, qcfg), "mode": qcfg.mode,
        "scheme": None if fp8 else ("u8s8" if u8 else "s8s8"),
        "scheme_requested": None if fp8 else qcfg.requested,
        "cpu": {"model": cpu_model(), "int8_dot_flags": int8_dot_flags()},
        "tensorrt": not u8,
        "smoothquant": ({"alpha": qcfg.smoothquant} if qcfg.smoothquant is not None
                        else None),
        "calibration": None if calib is None else _calibration(precision, qcfg, calib),
        "quantized": "transformer-block MatMuls: attn.qkv, attn.proj, mlp.fc1, mlp.fc2",
        "weights": "per-channel" if precision is Precision.INT8 else "per-tensor",
        "activations": acts,
        "high_precision": list(HIGH_PRECISION), "graphs": per_graph, "quality": quality,
        "bounds": bounds, "accepted_over_bound": over, "versions": _versions(),
    }


def _calibration(precision: Precision, qcfg: QuantConfig, calib) -> dict[str, Any]:
    from gaf_trt.export.calibration import CALIB_KINDS, CALIB_SOLVERS

    return {"samples": qcfg.samples, "steps": qcfg.steps, "seed": qcfg.seed,
            "method": "distribution" if precision is Precision.FP8 else qcfg.method,
            "rows_per_item": qcfg.rows, "network_calls": calib.calls,
            "rows": calib.rows, "solvers": list(CALIB_SOLVERS),
            "compositions": list(CALIB_KINDS), "runs": len(calib.runs)}


def _tool(precision: Precision, qcfg: QuantConfig) -> str:
    if qcfg.mode == "dynamic":
        return "onnxruntime.quantization.quantize_dynamic (U8S8, MatMulInteger)"
    kind = ("FP8 E4M3 (float8e4m3fn)" if precision is Precision.FP8
            else qcfg.scheme.upper())
    return f"onnxruntime.quantization.quantize_static (QDQ, {kind})"


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
            "torch": torch.__version__}



__all__ = ["ERROR_BOUNDS", "QuantConfig", "QuantizationError", "check_fp8_device",
           "describe_quality", "is_quantized", "quant_unavailable", "quantize_engine"]
