"""The ONNX Runtime backend (``ort``): an engine directory's ONNX graphs as an
:class:`~gaf_trt.engine.base.AnchorNetwork` (split graphs) and, with the fused graphs, a
:class:`~gaf_trt.engine.base.FusedComposedStep`.

Providers are given explicitly: CPU; on CUDA (``onnxruntime-gpu``) the CUDA provider, with
the TensorRT provider ahead of it on request (``options={"ort_provider": "tensorrt"}``; its
engine and timing caches go to ``<engine dir>/ort_cache``). On the GPU, inputs and outputs
are bound to torch buffers with IOBinding so the state never leaves the device. The intra-op
thread count is ``options["threads"]`` (``--threads``), 0 or absent: the number of CPUs this
process may use. ``onnxruntime`` and ``onnxruntime-gpu``
install the same module: install one (extras ``[onnx]`` or ``[gpu]``), never both.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
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

ORT_PROVIDERS = ("cuda", "tensorrt")
_NP = {"float32": np.float32, "int64": np.int64}


def ort_unavailable() -> str | None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed (pip install 'gaf-trt[onnx]', or '[gpu]' for CUDA)"
    return None


def cpu_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _cache_dir(folder: Path) -> str:
    cache = folder / "ort_cache"
    try:
        cache.mkdir(exist_ok=True)
        if os.access(cache, os.W_OK):
            return str(cache)
    except OSError:
        pass
    alt = Path.home() / ".cache" / "gaf-trt" / "ort" / folder.resolve().name
    alt.mkdir(parents=True, exist_ok=True)
    return str(alt)


def providers_for(device: torch.device, folder: Path, choice: str = "cuda") -> list[Any]:
    """The explicit provider list for ``device`` (``choice``: ``cuda`` or ``tensorrt``)."""
    import onnxruntime as ort

    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    if choice not in ORT_PROVIDERS:
        raise ConfigError(f"unknown ort provider {choice!r}; valid: {', '.join(ORT_PROVIDERS)}")
    have = set(ort.get_available_providers())
    if "CUDAExecutionProvider" not in have:
        raise ConfigError("onnxruntime here has no CUDA provider: install onnxruntime-gpu "
                          "('gaf-trt[gpu]') instead of onnxruntime, or use --device cpu")
    idx = device.index if device.index is not None else torch.cuda.current_device()
    out: list[Any] = []
    if choice == "tensorrt":
        if "TensorrtExecutionProvider" not in have:
            raise ConfigError("onnxruntime here has no TensorRT provider")
        cache = _cache_dir(folder)
        out.append(("TensorrtExecutionProvider", {
            "device_id": idx, "trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": True, "trt_timing_cache_path": cache}))
    out.append(("CUDAExecutionProvider", {"device_id": idx}))
    out.append("CPUExecutionProvider")
    return out


def open_session(folder: Path, graph: str, record: dict[str, Any], options: Any,
                 providers: list[Any]) -> Any:
    """An ONNX Runtime session for one graph of an engine directory. A graph ONNX Runtime
    refuses (truncated, an unknown operator, inconsistent shapes) or whose inputs and outputs
    differ from the manifest's record is bad input: an
    :class:`~gaf_trt.enginedir.EngineDirError` naming the graph and the reason."""
    import onnxruntime as ort

    from gaf_trt.enginedir import EngineDirError

    path = folder / record["file"]
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as err:  # noqa: BLE001 - ONNX Runtime raises its own Fail/InvalidGraph...
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        raise EngineDirError(f"ONNX Runtime cannot load graph {graph} ({path}): {reason}") \
            from None
    for kind, got, want in (("inputs", session.get_inputs(), record["inputs"]),
                            ("outputs", session.get_outputs(), record["outputs"])):
        have = [(a.name, _ort_dims(a.shape), _ORT_TYPES.get(a.type, a.type)) for a in got]
        need = [(s["name"], [d if isinstance(d, int) else None for d in s["shape"]], s["dtype"])
                for s in want]
        if have != need:
            raise EngineDirError(f"graph {graph} ({path}) does not match its manifest record: "
                                 f"{kind} {_io_text(have)} in the graph, {_io_text(need)} in "
                                 "manifest.json; re-export the engine")
    return session


_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16",
              "tensor(bfloat16)": "bfloat16", "tensor(int64)": "int64", "tensor(int32)": "int32",
              "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


def _ort_dims(shape: Any) -> list[int | None]:
    return [d if isinstance(d, int) else None for d in (shape or [])]


def _io_text(items: list[tuple[str, list[int | None], str]]) -> str:
    return ", ".join(f"{n}{['?' if d is None else d for d in dims]} {t}" for n, dims, t in items)


class OrtSplitEngine(GraphEngine):
    """ONNX Runtime sessions for the chosen graphs of an engine directory (split graphs:
    an AnchorNetwork)."""

    name = "ort"

    def _open_sessions(self, options: dict[str, Any]) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = check_threads(options.get("threads", 0)) or cpu_threads()
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 4  # failures become one error line of ours (below)
        ort.set_default_logger_severity(4)  # ...with no log line of ONNX Runtime's beside it
        # Spinning intra-op threads keep the cores busy between calls and starve torch work
        # in the same process (measured: torch 20-35x slower beside an idle session on 2
        # cores); spin only on request (options={"spin": True}).
        spin = "1" if options.get("spin") else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        so.add_session_config_entry("session.inter_op.allow_spinning", spin)
        providers = providers_for(self.device, self.folder,
                                  str(options.get("ort_provider", "cuda")))
        self.sessions = {}
        for g in self.graphs:
            self.sessions[g] = open_session(self.folder, g, self.manifest["graphs"][g], so,
                                            providers)
        if self.precision == "fp8" and self.device.type == "cpu" \
                and options.get("fp8_note", True):  # export measures, it does not run
            log.warning("fp8 graphs run dequantised to fp32 on the CPU (the FP8 rounding is "
                        "simulated; the speed-up needs TensorRT on compute capability >= 8.9)")
        log.info("ort engine %s: %s on %s, %d threads", self.folder, ", ".join(self.graphs),
                 providers[0] if isinstance(providers[0], str) else providers[0][0],
                 so.intra_op_num_threads)

    def _run(self, graph: str, inputs: dict[str, Tensor]) -> list[Tensor]:
        record = self.manifest["graphs"][graph]
        if self.device.type == "cuda":
            return self._run_bound(graph, record, inputs)
        names = [o["name"] for o in record["outputs"]]
        feeds = {k: v.detach().cpu().numpy() for k, v in inputs.items()}
        return [torch.from_numpy(a) for a in self.sessions[graph].run(names, feeds)]

    def _run_bound(self, graph: str, record: dict[str, Any],
                   inputs: dict[str, Tensor]) -> list[Tensor]:
        """IOBinding on torch CUDA buffers (outputs preallocated by torch)."""
        session = self.sessions[graph]
        binding = session.io_binding()
        idx = self.device.index if self.device.index is not None else torch.cuda.current_device()
        for spec in record["inputs"]:
            t = inputs[spec["name"]]
            binding.bind_input(spec["name"], "cuda", idx, _NP[spec["dtype"]], tuple(t.shape),
                               t.data_ptr())
        outs = []
        for name, shape in output_shapes(record, inputs).items():
            dtype = next(o["dtype"] for o in record["outputs"] if o["name"] == name)
            buf = torch.empty(shape, dtype=TORCH_DTYPES[dtype], device=self.device)
            binding.bind_output(name, "cuda", idx, _NP[dtype], shape, buf.data_ptr())
            outs.append(buf)
        torch.cuda.current_stream(self.device).synchronize()  # inputs written by torch
        session.run_with_iobinding(binding)
        return outs


class OrtFusedEngine(FusedStepMixin, OrtSplitEngine):
    """ONNX Runtime engine with the fused composed step (also a FusedComposedStep)."""


def load_ort(req: LoadRequest) -> OrtSplitEngine:
    """Open an engine directory with ONNX Runtime (``req.options``: ``graphs`` =
    auto|split|fused, ``ort_provider`` = cuda|tensorrt, ``threads``, ``verify``,
    ``fp8_note``: False to leave out the note that fp8 runs simulated on the CPU)."""
    device = resolve_device(req.device)
    folder = Path(req.artifact)
    man, graphs = open_engine_dir(folder, str(req.options.get("graphs", "auto")),
                                  precision=req.precision)
    if req.options.get("verify", True):
        verify_graph_files(folder, man, graphs)
    cls = OrtFusedEngine if "step_velocity" in graphs else OrtSplitEngine
    engine = cls(folder, man, graphs, device)
    engine._open_sessions(dict(req.options))
    return engine


BACKENDS.add("ort", Backend("ort", "ONNX Runtime over an exported engine directory (CPU, or "
                                   "CUDA/TensorRT providers with onnxruntime-gpu)",
                            load_ort, ort_unavailable))
