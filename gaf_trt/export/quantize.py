"""Quantised engines: INT8 (ONNX Runtime CPU, TensorRT) and FP8 (TensorRT) Q/DQ graphs.

``gaf-trt export --precision int8|fp8`` exports the FP32 graphs (checked against PyTorch as
usual), then replaces each graph by its quantised form here:

1. **Calibration** (:mod:`gaf_trt.export.calibration`): the checkpoint's FP32 model runs the
   real solvers (euler, heun, IER) over seeded random classes and compositions (pure,
   weighted, masked); every network input on the way is captured.
2. **Quantisation** with ONNX Runtime's tool (``onnxruntime.quantization.quantize_static``,
   QDQ format): only the transformer blocks' linear MatMuls — attention QKV and output
   projection, MLP fc1 / fc2 — get Q/DQ pairs; INT8 is S8S8 with weights per output channel
   and activations per tensor; FP8 is E4M3 per tensor with scales ``amax / 448``
   (:func:`fp8_amax_overrides`; ONNX Runtime insists on running its histogram calibrator
   for FP8, whose standard-deviation rule the overrides replace). Everything else stays
   FP32, as in NVIDIA's DiT recipes: the patch / timestep / class embedders, every adaLN
   modulation linear, the final layer (J head and K bank), LayerNorm, Softmax, the attention
   products Q·K and P·V, and the anchor and blend arithmetic.
3. **Quality, measured before anything is written**: on held-out trajectories (another seed)
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

import contextlib
import io
import logging
import math
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gaf_trt.errors import ConfigError, GAFError
from gaf_trt.export.precision import node_scopes
from gaf_trt.precision import Precision

log = logging.getLogger(__name__)

#: Precisions produced by this module.
QUANT_PRECISIONS = (Precision.INT8, Precision.FP8)
#: Inclusive bounds of the calibration options.
CALIB_LIMITS = {"samples": (4, 4096), "steps": (2, 200), "rows": (1, 4096)}
#: ONNX Runtime calibrators selectable for INT8 (FP8 always uses ``distribution``).
CALIB_METHODS = ("minmax", "percentile", "entropy")
#: The MatMuls that are quantised (module scopes of the dynamo exporter's name_scopes).
QUANT_SCOPES = re.compile(r"(^|\.)blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))$")
#: Kept in high precision, recorded in the manifest.
HIGH_PRECISION = ("patch embedder (Conv)", "timestep embedder", "class embedder",
                  "adaLN modulation linears", "final layer (J head, K bank)", "LayerNorm",
                  "Softmax", "attention products Q·K and P·V", "anchor and blend arithmetic")
#: Relative-error bounds against FP32: ``velocity`` is the worst graph's error over the
#: held-out trajectory items (``sqrt(Σ||Δv||² / Σ||v||²)``), ``final_state`` the worst image
#: of the short solver runs. W8A8 with per-tensor activations costs the trained digits model
#: about 0.1 in velocity but 0.02 in final state (benchmarks/RESULTS.md, quantisation); a
#: broken calibration (wrong ranges, clipped outliers) gives errors of order 1.
ERROR_BOUNDS = {Precision.INT8: {"velocity": 0.2, "final_state": 0.05},
                Precision.FP8: {"velocity": 0.2, "final_state": 0.05}}
#: Held-out items per graph for the quality report.
QUALITY_ITEMS = 8


class QuantizationError(GAFError):
    """A quantised engine cannot be written (bad scales, error above the bound)."""


@dataclass(frozen=True)
class QuantConfig:
    """Calibration options of ``gaf-trt export --precision int8|fp8``.

    ``samples`` trajectories of ``steps`` solver steps; items of ``rows`` rows each.
    """

    samples: int = 32
    steps: int = 10
    seed: int = 0
    method: str = "minmax"
    rows: int = 16
    accept_error: bool = False
    symmetric: bool = True  # activations too: TensorRT takes only zero-point-0 Q/DQ
    smoothquant: float | None = None  # SmoothQuant alpha (0, 1]; None: off

    def validate(self) -> None:
        for name in ("samples", "steps", "rows"):
            lo, hi = CALIB_LIMITS[name]
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                flag = {"samples": "--calib-samples", "steps": "--calib-steps",
                        "rows": "calibration rows"}[name]
                raise ConfigError(f"{flag} must be an integer in [{lo}, {hi}], got {v!r}")
        if self.method not in CALIB_METHODS:
            raise ConfigError(f"unknown calibration method {self.method!r}; valid: "
                              f"{', '.join(CALIB_METHODS)}")
        sq = self.smoothquant
        if sq is not None and (isinstance(sq, bool) or not isinstance(sq, (int, float))
                               or not 0.0 < float(sq) <= 1.0):
            raise ConfigError(f"--smoothquant must be an alpha in (0, 1], got {sq!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"--calib-seed must be an integer >= 0, got {self.seed!r}")


def is_quantized(precision: Precision) -> bool:
    return precision in QUANT_PRECISIONS


def check_fp8_device(device: int | None = None) -> None:
    """FP8 plans need compute capability >= 8.9 (Ada, Hopper): refuse an older visible GPU
    (the ONNX graphs themselves can be written anywhere, e.g. with ``--onnx-only``)."""
    if not torch.cuda.is_available():
        return
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        raise ConfigError(f"precision fp8 needs a GPU of compute capability >= 8.9; this GPU "
                          f"is {major}.{minor}: use --precision int8, fp16 or bf16, or "
                          "--onnx-only and build the plans on an FP8 GPU")


def quant_unavailable() -> str | None:
    """None when ONNX Runtime's quantisation tool is importable, else why not."""
    try:
        import onnxruntime.quantization  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed (pip install 'gaf-trt[quant]')"
    return None


# --------------------------------------------------------------------------- graphs


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
                   act_max: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Quantise the ONNX graph ``src`` into ``dst`` with ``items`` as calibration data.

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
    calib = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
             "entropy": CalibrationMethod.Entropy}[method]
    with _quiet_ort():
        quantize_static(
            str(src), str(dst), _Reader(items), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"], nodes_to_quantize=names, per_channel=not fp8,
            activation_type=qtype, weight_type=qtype,
            calibrate_method=CalibrationMethod.Distribution if fp8 else calib,
            use_external_data_format=(src.parent / f"{src.name}.data").is_file(),
            extra_options={"CalibPercentile": 99.999, "ActivationSymmetric": symmetric,
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
        key = next((k for k in map(_linear_key, node_scopes(node)) if k), None)
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


# --------------------------------------------------------------------------- SmoothQuant


def _linear_key(scope: str) -> str | None:
    """``model.trunk.blocks.3.mlp.fc1`` -> ``blocks.3.mlp.fc1`` (None: not quantised)."""
    m = QUANT_SCOPES.search(scope)
    return m.group(0).lstrip(".") if m else None


def channel_max(model, calib) -> dict[str, torch.Tensor]:
    """Per-input-channel ``max |x|`` of every quantised linear over the calibration rows
    (``{"blocks.i.attn.qkv": [D_in]}``), from forward pre-hooks on the FP32 model."""
    stats: dict[str, torch.Tensor] = {}
    hooks = []
    for name, mod in model.named_modules():
        key = _linear_key(name)
        if key is None or not isinstance(mod, torch.nn.Linear):
            continue

        def hook(_m, inp, key=key):
            cur = inp[0].detach().abs().flatten(0, -2).amax(0).float()
            stats[key] = cur if key not in stats else torch.maximum(stats[key], cur)

        hooks.append(mod.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            for item in calib.split_items(256):
                model(item["x"], item["t"], item["y"])
    finally:
        for h in hooks:
            h.remove()
    return stats


def smooth_graph(src: Path, dst: Path, act_max: dict[str, torch.Tensor], alpha: float) -> int:
    """SmoothQuant (Xiao et al. 2023) as an exact graph rewrite before quantisation: for each
    quantised MatMul ``x @ W`` (``W [K, N]``), ``s_k = max|x_k|^α / max_n |W_kn|^(1-α)``,
    a per-channel ``Mul(x, 1/s)`` (kept FP32) is inserted and ``W`` becomes ``diag(s) W``;
    the product is unchanged, the activation's outlier channels move into the weights (which
    are quantised per channel). Returns the number of MatMuls smoothed."""
    import onnx
    from onnx import helper, numpy_helper

    from gaf_trt.export.onnx_export import EXTERNAL_DATA_THRESHOLD, save_model

    model = onnx.load(str(src))
    inits = {t.name: t for t in model.graph.initializer}
    new_nodes, done = [], 0
    for node in model.graph.node:
        key = next((k for k in map(_linear_key, node_scopes(node)) if k), None)
        if (node.op_type == "MatMul" and key in act_max and node.input[1] in inits
                and QUANT_SCOPES.search(key)):
            w_t = inits[node.input[1]]
            w = numpy_helper.to_array(w_t).astype(np.float32)
            x = act_max[key].numpy().astype(np.float64)
            if w.ndim == 2 and w.shape[0] == x.shape[0]:
                wmax = np.abs(w).max(axis=1).astype(np.float64)
                s = np.power(np.maximum(x, 1e-5), alpha) / np.power(np.maximum(wmax, 1e-5),
                                                                     1 - alpha)
                s = np.clip(s, 1e-5, 1e5)
                w_t.CopyFrom(numpy_helper.from_array((w * s[:, None]).astype(np.float32),
                                                     w_t.name))
                inv = numpy_helper.from_array((1.0 / s).astype(np.float32),
                                              f"{node.name}_smooth_scale")
                model.graph.initializer.append(inv)
                out = f"{node.input[0]}__smooth_{node.name}"
                mul = helper.make_node("Mul", [node.input[0], inv.name], [out],
                                       name=f"{node.name}_smooth")
                new_nodes.append(mul)
                node.input[0] = out
                done += 1
        new_nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    save_model(model, dst, EXTERNAL_DATA_THRESHOLD)
    return done


# --------------------------------------------------------------------------- engine


def quantize_engine(model, specs: list, staging: Path, graphs: dict[str, dict[str, Any]],
                    precision: Precision, qcfg: QuantConfig, external_threshold: int,
                    say=lambda _m: None) -> dict[str, Any]:
    """Replace the FP32 graphs in ``staging`` by quantised ones (``graphs``: the manifest's
    graph records, updated in place). Returns the manifest's ``quantization`` section;
    raises before the caller commits anything when the quality is out of bounds."""
    import onnx

    from gaf_trt.export.calibration import CALIB_KINDS, CALIB_SOLVERS, capture
    from gaf_trt.export.onnx_export import check_by_path, save_model

    qcfg.validate()
    why = quant_unavailable()
    if why is not None:
        raise ConfigError(f"precision {precision.value} cannot be exported here: {why}")
    size = model.config.input_size
    say(f"calibrating: {qcfg.samples} trajectories x {qcfg.steps} steps "
        f"({', '.join(CALIB_SOLVERS)}; {', '.join(CALIB_KINDS)})")
    calib = capture(model, qcfg.samples, qcfg.steps, qcfg.seed)
    act_max = (channel_max(model, calib)
               if qcfg.smoothquant is not None or precision is Precision.FP8 else {})
    per_graph: dict[str, Any] = {}
    tmp = staging / ".quantize"
    tmp.mkdir()
    try:
        for spec in specs:
            rec = graphs[spec.name]
            if spec.group == "vae":
                per_graph[spec.name] = {"quantized_nodes": 0, "reason": "VAE decoder kept FP32"}
                continue
            path = staging / rec["file"]
            names = quantizable_nodes(onnx.load(str(path), load_external_data=False))
            if not names:
                per_graph[spec.name] = {"quantized_nodes": 0}
                continue
            say(f"quantising {spec.name} ({precision.value}, {len(names)} MatMuls)")
            items = calib.items_for(spec.input_names, qcfg.rows, size)
            out = tmp / rec["file"]
            src = path
            if qcfg.smoothquant is not None:
                src = tmp / f"smooth_{rec['file']}"
                smoothed = smooth_graph(path, src, act_max, qcfg.smoothquant)
            info = quantize_graph(src, out, items, precision, qcfg.method, qcfg.symmetric,
                                  None if qcfg.smoothquant is not None else act_max)
            info["items"] = len(items)
            if qcfg.smoothquant is not None:
                info["smoothed_nodes"] = smoothed
            proto = onnx.load(str(out))
            _set_meta(proto, "gaf_trt.precision", precision.value)
            if rec.get("data_file"):
                (staging / rec["data_file"]).unlink(missing_ok=True)
            rec["data_file"] = save_model(proto, path, external_threshold)
            check_by_path(path)
            rec["nodes"] = len(proto.graph.node)
            per_graph[spec.name] = info
            for f in tmp.iterdir():
                f.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for rec in graphs.values():
        rec["precision"] = precision.value
    say("measuring the quantised engine against FP32 on held-out trajectories")
    quality = measure_quality(model, specs, staging, graphs, precision, qcfg)
    bounds = ERROR_BOUNDS[precision]
    over = {k: quality[k] for k in bounds if not quality[k] <= bounds[k]}
    if over and not qcfg.accept_error:
        worst = ", ".join(f"{k} {v:.3g} > bound {bounds[k]:g}" for k, v in over.items())
        raise QuantizationError(f"the {precision.value} engine is too far from FP32 ({worst}; "
                                "relative error): nothing written; try more --calib-samples, "
                                "another --calib-method, or --accept-error to keep it")
    return {
        "precision": precision.value, "tool": _tool(precision, qcfg),
        "smoothquant": ({"alpha": qcfg.smoothquant} if qcfg.smoothquant is not None
                        else None),
        "calibration": {"samples": qcfg.samples, "steps": qcfg.steps, "seed": qcfg.seed,
                        "method": "distribution" if precision is Precision.FP8 else qcfg.method,
                        "rows_per_item": qcfg.rows, "network_calls": calib.calls,
                        "rows": calib.rows, "solvers": list(CALIB_SOLVERS),
                        "compositions": list(CALIB_KINDS),
                        "runs": len(calib.runs)},
        "quantized": "transformer-block MatMuls: attn.qkv, attn.proj, mlp.fc1, mlp.fc2",
        "weights": "per-channel" if precision is Precision.INT8 else "per-tensor",
        "activations": "per-tensor, " + ("symmetric" if qcfg.symmetric else "asymmetric"),
        "high_precision": list(HIGH_PRECISION), "graphs": per_graph, "quality": quality,
        "bounds": bounds, "accepted_over_bound": bool(over), "versions": _versions(),
    }


def describe_quality(section: dict[str, Any]) -> str:
    """One line for the CLI: velocity error per graph and final-state error vs FP32."""
    q, b = section["quality"], section["bounds"]
    graphs = ", ".join(f"{g} {max(e['rel'] for e in v.values()):.2g}"
                       for g, v in q["graphs"].items())
    over = " (over the bound, kept by --accept-error)" if section["accepted_over_bound"] else ""
    return (f"{section['precision']} vs fp32 (relative error): velocity {q['velocity']:.2g} "
            f"(bound {b['velocity']:g}; {graphs}), final state {q['final_state']:.2g} "
            f"(bound {b['final_state']:g}){over}")


def _tool(precision: Precision, qcfg: QuantConfig) -> str:
    kind = "FP8 E4M3 (float8e4m3fn)" if precision is Precision.FP8 else "S8S8"
    return f"onnxruntime.quantization.quantize_static (QDQ, {kind})"


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
            "torch": torch.__version__}


def _set_meta(proto, key: str, value: str) -> None:
    for p in proto.metadata_props:
        if p.key == key:
            p.value = value
            return
    entry = proto.metadata_props.add()
    entry.key, entry.value = key, value


# --------------------------------------------------------------------------- quality


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` in float64 (inf when not finite)."""
    a, b = a.double(), b.double()
    d = float((a - b).norm())
    n = float(b.norm())
    r = d / n if n > 0 else (0.0 if d == 0 else math.inf)
    return r if math.isfinite(r) else math.inf


def _spread(items: list, k: int = QUALITY_ITEMS) -> list:
    """``k`` items evenly spread over the list (the captured runs come one after another, so
    every solver and composition is represented)."""
    if len(items) <= k:
        return items
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)]


class _ErrorSum:
    """Relative error over many items: ``sqrt(Σ||a-b||² / Σ||b||²)`` (the set's error,
    ``rel``) and the worst single item's (``worst_item``)."""

    def __init__(self) -> None:
        self.num = self.den = self.worst = 0.0

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:
        d = float((a.double() - b.double()).norm()) ** 2
        n = float(b.double().norm()) ** 2
        self.num, self.den = self.num + d, self.den + n
        self.worst = max(self.worst, rel_err(a, b))

    @property
    def rel(self) -> float:
        r = math.sqrt(self.num / self.den) if self.den > 0 else math.inf
        return r if math.isfinite(r) else math.inf

    def to_dict(self) -> dict[str, float]:
        return {"rel": self.rel, "worst_item": self.worst}


def final_state_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Worst image's relative error of ``out [B,...]`` against ``ref``."""
    if not bool(torch.isfinite(out).all()):
        return math.inf
    d = (out.double() - ref.double()).flatten(1).norm(dim=1)
    return float((d / ref.double().flatten(1).norm(dim=1).clamp_min(1e-30)).max())


def open_staged(staging: Path, graphs: dict[str, dict[str, Any]], config, precision: Precision,
                mode: str):
    """An ORT engine over the graphs written so far (``mode``: split | fused)."""
    from gaf_trt.engine.ort_backend import OrtFusedEngine, OrtSplitEngine
    from gaf_trt.engine.graph_engine import FUSED, SPLIT

    man = {"graphs": graphs, "config": config.to_dict(), "precision": precision.value}
    names = list(SPLIT if mode == "split" else FUSED)
    cls = OrtFusedEngine if mode == "fused" else OrtSplitEngine
    engine = cls(staging, man, names, "cpu")
    engine._open_sessions({})
    return engine


def measure_quality(model, specs: list, staging: Path, graphs: dict[str, dict[str, Any]],
                    precision: Precision, qcfg: QuantConfig) -> dict[str, Any]:
    """Errors of the staged quantised graphs against PyTorch FP32 on held-out trajectories
    (seed ``qcfg.seed + 1000``): per graph output, velocity (worst of ``v`` and split
    ``K - J``) and the final state of short euler runs."""
    from gaf_trt.compose import masks as mask_lib
    from gaf_trt.compose.composition import ComposedField, Composition
    from gaf_trt.compose.solvers import integrate
    from gaf_trt.export.calibration import capture
    from gaf_trt.export.parity import cpu_session

    cfg = model.config
    held = capture(model, max(4, min(qcfg.samples, 12)), qcfg.steps, qcfg.seed + 1000)
    per_graph: dict[str, dict[str, dict[str, float]]] = {}
    velocity: list[float] = []
    for spec in specs:
        if spec.name not in ("trunk", "step_velocity", "step_anchors"):
            continue
        items = _spread(held.items_for(spec.input_names, qcfg.rows, cfg.input_size))
        session = cpu_session(staging / graphs[spec.name]["file"])
        errs = {name: _ErrorSum() for name in spec.output_names}
        for item in items:
            got = session.run(spec.output_names, {k: v.numpy() for k, v in item.items()})
            with torch.no_grad():
                want = spec.module(*[item[k] for k in spec.input_names])
            want = want if isinstance(want, tuple) else (want,)
            for name, g, w in zip(spec.output_names, got, want, strict=True):
                errs[name].add(torch.from_numpy(g), w)
        per_graph[spec.name] = {k: e.to_dict() for k, e in errs.items()}
        if spec.name == "step_velocity":
            velocity.append(errs["v"].rel)
    modes = [m for m, names in (("split", ("trunk", "j_head", "k_bank")),
                                ("fused", ("step_velocity", "step_anchors")))
             if all(n in graphs for n in names)]
    final: dict[str, float] = {}
    gen = torch.Generator().manual_seed(qcfg.seed + 2000)
    noise = torch.randn(4, *cfg.sample_shape, generator=gen)
    comps = {"pure": Composition.pure(0)}
    if cfg.num_classes >= 2:
        comps["masked"] = Composition.build(
            [0, 1], masks=mask_lib.build("horizontal_2", cfg.input_size, cfg.input_size))
    for mode in modes:
        engine = open_staged(staging, graphs, cfg, precision, mode)
        if mode == "split":
            err = _ErrorSum()
            for item in _spread(held.split_items(qcfg.rows)):
                with torch.no_grad():
                    j, k = engine(item["x"], item["t"], item["y"])
                    jr, kr = model(item["x"], item["t"], item["y"])
                err.add(k - j, kr - jr)
            per_graph["split_velocity"] = {"K-J": err.to_dict()}
            velocity.append(err.rel)
        for cname, comp in comps.items():
            with torch.no_grad():
                out = integrate(ComposedField(engine, comp), noise, steps=qcfg.steps,
                                solver="euler", t_eps=cfg.t_eps)
                ref = integrate(ComposedField(model, comp), noise, steps=qcfg.steps,
                                solver="euler", t_eps=cfg.t_eps)
            final[f"{mode} {cname} euler-{qcfg.steps}"] = final_state_err(out, ref)
    return {"graphs": per_graph, "velocity": max(velocity, default=math.inf),
            "final_state": max(final.values(), default=math.inf), "final_runs": final}
