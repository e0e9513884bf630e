"""The OpenVINO backend (``openvino``): an engine directory's ONNX graphs run by OpenVINO's
CPU plugin, as an :class:`~gaf_trt.engine.base.AnchorNetwork` (split graphs) and, with the
fused graphs, a :class:`~gaf_trt.engine.base.FusedComposedStep`.

- Graphs: OpenVINO reads the directory's ONNX files (external data beside them) after the
  directory was verified (manifest, precision, sha256 of every file used), as for ``ort``.
  fp32 graphs run at fp32 (``INFERENCE_PRECISION_HINT f32``, set explicitly: on CPUs with
  AMX OpenVINO's default is bf16); int8 QDQ graphs run OpenVINO's int8 kernels; an fp32
  directory asked for ``--precision bf16`` runs with the bf16 inference-precision hint (needs a
  CPU with BF16; what stays fp32 is OpenVINO's choice).
- Shapes: each graph is compiled once per set of input shapes (static shapes, up to
  :data:`MAX_STATIC_SHAPES` per graph, then one dynamic-shape compilation serves the rest);
  each compiled graph keeps one infer request, reused.
- Memory: inputs are contiguous CPU torch tensors handed to OpenVINO as ``ov.Tensor`` over a
  numpy view (``shared_memory=True``, no copy); outputs are torch tensors allocated per call
  and set as the request's output tensors, so OpenVINO writes into them (no copy).
- Threads: ``options["threads"]`` (``INFERENCE_NUM_THREADS``), else OpenVINO's default.
- Device: the CPU only (OpenVINO's CPU plugin); results are CPU tensors and
  ``gaf_trt.compose.placement`` moves them to the caller's device.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gaf_trt.device import resolve_device
from gaf_trt.engine.base import BACKENDS, Backend, LoadRequest, check_threads
from gaf_trt.engine.graph_engine import (
    TORCH_DTYPES,
    FusedStepMixin,
    GraphEngine,
    open_engine_dir,
    output_shapes,
    verify_graph_files,
)
from gaf_trt.errors import ConfigError

log = logging.getLogger(__name__)

#: engine-directory precisions OpenVINO runs (fp8 QDQ graphs: ``ort`` or ``trt``)
OV_PRECISIONS = ("fp32", "fp16", "int8")
#: inference-precision hints (``options["ov_precision"]``) -> OpenVINO's value
OV_HINTS = {"fp32": "f32", "bf16": "bf16"}
#: static-shape compilations kept per graph before one dynamic-shape compilation takes over
MAX_STATIC_SHAPES = 8


def openvino_unavailable() -> str | None:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "openvino is not installed (pip install 'gaf-trt[openvino]')"
    return None


def _ov_type(t: Any) -> str:
    name = t.get_type_name()
    return {"f32": "float32", "i64": "int64", "f16": "float16", "bf16": "bfloat16",
            "i32": "int32"}.get(name, name)


def _check_io(model: Any, graph: str, path: Path, record: dict[str, Any]) -> None:
    """The graph's input and output names and types against the manifest's record."""
    from gaf_trt.enginedir import EngineDirError

    for kind, got, want in (("inputs", model.inputs, record["inputs"]),
                            ("outputs", model.outputs, record["outputs"])):
        have = [(p.get_any_name(), _ov_type(p.get_element_type())) for p in got]
        need = [(s["name"], s["dtype"]) for s in want]
        if have != need:
            raise EngineDirError(f"graph {graph} ({path}) does not match its manifest record: "
                                 f"{kind} {have} in the graph, {need} in manifest.json; "
                                 "re-export the engine")


def read_graph(core: Any, folder: Path, graph: str, record: dict[str, Any]) -> Any:
    """The ``ov.Model`` of one graph of an engine directory; a graph OpenVINO cannot read
    or whose I/O differs from the manifest is an :class:`~gaf_trt.enginedir.EngineDirError`
    naming the graph and the reason."""
    from gaf_trt.enginedir import EngineDirError

    path = folder / record["file"]
    try:
        model = core.read_model(str(path))
    except Exception as err:  # noqa: BLE001 - OpenVINO raises RuntimeError / its own types
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        raise EngineDirError(f"OpenVINO cannot read graph {graph} ({path}): {reason}") from None
    _check_io(model, graph, path, record)
    return model


class _CompiledGraph:
    """One graph: its ``ov.Model``, compiled per input-shape set, one infer request each."""

    def __init__(self, core: Any, model: Any, config: dict[str, Any]) -> None:
        self.core, self.model, self.config = core, model, config
        self.requests: dict[tuple[tuple[int, ...], ...], Any] = {}
        self.dynamic: Any = None

    def request(self, shapes: dict[str, tuple[int, ...]]) -> Any:
        key = tuple(shapes.values())
        req = self.requests.get(key)
        if req is not None:
            return req
        if len(self.requests) >= MAX_STATIC_SHAPES:
            if self.dynamic is None:
                self.dynamic = self.core.compile_model(self.model, "CPU",
                                                       self.config).create_infer_request()
            return self.dynamic
        model = self.model.clone()
        model.reshape({name: list(shape) for name, shape in shapes.items()})
        req = self.core.compile_model(model, "CPU", self.config).create_infer_request()
        self.requests[key] = req
        return req


class OvSplitEngine(GraphEngine):
    """OpenVINO compiled graphs for the chosen graphs of an engine directory (split graphs:
    an AnchorNetwork)."""

    name = "openvino"

    def _open_graphs(self, options: dict[str, Any]) -> None:
        import openvino as ov

        hint = str(options.get("ov_precision") or "fp32")
        if hint not in OV_HINTS:
            raise ConfigError(f"unknown openvino inference precision {hint!r}; valid: "
                              f"{', '.join(OV_HINTS)}")
        core = ov.Core()
        if hint == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise ConfigError("--precision bf16 with openvino needs a CPU with BF16 "
                              "instructions (AVX512_BF16 or AMX); this CPU has none")
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": OV_HINTS[hint],
                                  "PERFORMANCE_HINT": "LATENCY"}
        if check_threads(options.get("threads", 0)):
            config["INFERENCE_NUM_THREADS"] = int(options["threads"])
        self.hint = hint
        self.compiled = {g: _CompiledGraph(core, read_graph(core, self.folder, g,
                                                            self.manifest["graphs"][g]), config)
                         for g in self.graphs}
        log.info("openvino engine %s: %s (%s, inference precision %s, %s threads)",
                 self.folder, ", ".join(self.graphs), self.precision, hint,
                 config.get("INFERENCE_NUM_THREADS", "default"))

    def _run(self, graph: str, inputs: dict[str, Tensor]) -> list[Tensor]:
        """One graph on CPU tensors: inputs shared (no copy), outputs written into torch
        tensors allocated here (shapes from the manifest record)."""
        import openvino as ov

        record = self.manifest["graphs"][graph]
        feeds = {s["name"]: inputs[s["name"]].detach().to("cpu").contiguous()
                 for s in record["inputs"]}
        req = self.compiled[graph].request({k: tuple(v.shape) for k, v in feeds.items()})
        for name, t in feeds.items():
            req.set_tensor(name, ov.Tensor(t.numpy(), shared_memory=True))
        outs = []
        for spec, shape in zip(record["outputs"], output_shapes(record, feeds).values(),
                               strict=True):
            buf = torch.empty(shape, dtype=TORCH_DTYPES[spec["dtype"]])
            req.set_tensor(spec["name"], ov.Tensor(buf.numpy(), shared_memory=True))
            outs.append(buf)
        req.infer()
        return outs

    def describe(self) -> str:
        hint = ", bf16 inference hint" if getattr(self, "hint", "fp32") == "bf16" else ""
        return super().describe()[:-1] + hint + ")"


class OvFusedEngine(FusedStepMixin, OvSplitEngine):
    """OpenVINO engine with the fused composed step (also a FusedComposedStep)."""


def load_openvino(req: LoadRequest) -> OvSplitEngine:
    """Open an engine directory with OpenVINO on the CPU (``req.options``: ``graphs`` =
    auto|split|fused, ``threads``, ``verify``, ``ov_precision`` = fp32|bf16). ``req.precision``
    bf16 on an fp32 directory runs its graphs with the bf16 inference-precision hint; any
    other precision must be the directory's own."""
    asked = str(req.device).strip()
    if asked.startswith("cuda"):
        raise ConfigError(f"the openvino backend runs on the CPU, not {asked}; use "
                          "--device cpu (or backend ort / trt on CUDA)")
    device = "cpu" if asked == "auto" else resolve_device(asked)
    folder = Path(req.artifact)
    options = dict(req.options)
    from gaf_trt.enginedir import read_manifest

    built = read_manifest(folder)["precision"]
    precision = getattr(req.precision, "value", req.precision)
    if precision == "bf16" and built == "fp32":
        options["ov_precision"], precision = "bf16", None
    man, graphs = open_engine_dir(folder, str(options.get("graphs", "auto")),
                                  precision=precision)
    if man["precision"] not in OV_PRECISIONS:
        raise ConfigError(f"the openvino backend runs {', '.join(OV_PRECISIONS)} engine "
                          f"directories (and bf16 on fp32 ones), not {man['precision']}; use "
                          "backend ort or trt")
    if options.get("verify", True):
        verify_graph_files(folder, man, graphs)
    cls = OvFusedEngine if "step_velocity" in graphs else OvSplitEngine
    engine = cls(folder, man, graphs, device)
    engine._open_graphs(options)
    if engine.hint == "bf16":
        engine.precision = "bf16"
    return engine


BACKENDS.add("openvino", Backend("openvino", "OpenVINO over an exported engine directory "
                                             "(CPU: fp32, bf16 hint, int8)",
                                 load_openvino, openvino_unavailable))
