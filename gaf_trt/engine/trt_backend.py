"""The TensorRT backend (``trt``): an engine directory's plans as an AnchorNetwork (split
plans) and FusedComposedStep (fused plans).

Lifecycle: check each plan's TensorRT version and GPU against this machine (before
deserialising; a mismatch says to rebuild with ``gaf-trt export --from-onnx DIR``) ->
deserialise (``None`` is an error, never a crash) -> one execution context per plan ->
per call: ``set_input_shape``, ``set_tensor_address`` on torch buffers (outputs allocated by
torch's caching allocator), ``execute_async_v3`` on torch's current stream. No host
synchronisation, so :class:`~gaf_trt.compose.capture.CapturedLoop` can capture a whole solver
loop over it (after its warm-up calls).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gaf_trt.engine.base import BACKENDS, Backend, LoadRequest, resolve_device
from gaf_trt.errors import ConfigError
from gaf_trt.export.manifest import (
    REBUILD_HINT,
    EngineDirError,
    check_plan_compatible,
    files_of,
    verify_files,
)
from gaf_trt.export.runtime import (
    TORCH_DTYPES,
    FusedStepMixin,
    GraphEngine,
    open_engine_dir,
    output_shapes,
)

log = logging.getLogger(__name__)


def trt_unavailable() -> str | None:
    from gaf_trt.export.tensorrt import unavailable

    return unavailable()


class TrtPlan:
    """One deserialised plan and its execution context."""

    def __init__(self, path: Path, record: dict[str, Any], folder: Path) -> None:
        import tensorrt as trt

        self.record = record
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self._logger)
        if record.get("version_compatible"):
            self.runtime.engine_host_code_allowed = True  # lean runtime embedded in the plan
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise EngineDirError(f"TensorRT could not deserialise {path}; "
                                 + REBUILD_HINT.format(dir=folder))
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise EngineDirError(f"TensorRT could not create an execution context for {path} "
                                 "(out of GPU memory?)")
        self.inputs, self.outputs = [], []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            is_in = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_in else self.outputs).append(name)

    def execute(self, inputs: dict[str, Tensor], out_shapes: dict[str, tuple[int, ...]],
                out_dtypes: dict[str, torch.dtype], device: torch.device) -> list[Tensor]:
        ctx = self.context
        for name in self.inputs:
            t = inputs[name]
            if not ctx.set_input_shape(name, tuple(t.shape)):
                raise ConfigError(f"input {name} shape {list(t.shape)} is outside the plan's "
                                  f"profile {self.record.get('shapes', {}).get(name)}; export "
                                  "with larger --max-batch / --max-classes")
            ctx.set_tensor_address(name, t.data_ptr())
        outs = []
        for name in self.outputs:
            buf = torch.empty(out_shapes[name], dtype=out_dtypes[name], device=device)
            ctx.set_tensor_address(name, buf.data_ptr())
            outs.append(buf)
        if not ctx.execute_async_v3(torch.cuda.current_stream(device).cuda_stream):
            raise RuntimeError(f"TensorRT execution of {self.record.get('file')} failed")
        return outs


class TrtSplitEngine(GraphEngine):
    """TensorRT plans of the split graphs (an AnchorNetwork)."""

    name = "trt"

    def _load_plans(self, static: bool) -> None:
        from gaf_trt.export.tensorrt import runtime_info

        plans = self.manifest.get("plans") or {}
        here = runtime_info(self.device.index)
        self.plans: dict[str, TrtPlan] = {}
        for g in self.graphs:
            name = _plan_for(plans, g, static)
            rec = plans[name]
            check_plan_compatible(rec, here, self.folder)  # before deserialising
            verify_files(self.folder, self.manifest, files_of(self.manifest, plans=[name]))
            with torch.cuda.device(self.device):
                self.plans[g] = TrtPlan(self.folder / rec["file"], rec, self.folder)

    def _run(self, graph: str, inputs: dict[str, Tensor]) -> list[Tensor]:
        record = self.manifest["graphs"][graph]
        shapes = output_shapes(record, inputs)
        dtypes = {o["name"]: TORCH_DTYPES[o["dtype"]] for o in record["outputs"]}
        outs = self.plans[graph].execute(inputs, shapes, dtypes, self.device)
        order = [o["name"] for o in record["outputs"]]
        by_name = dict(zip(self.plans[graph].outputs, outs, strict=True))
        return [by_name[n] for n in order]


class TrtFusedEngine(FusedStepMixin, TrtSplitEngine):
    """TensorRT plans with the fused composed step (also a FusedComposedStep)."""


def _plan_for(plans: dict[str, Any], graph: str, static: bool) -> str:
    for name, rec in plans.items():
        if rec.get("graph") == graph and bool(rec.get("static")) == static:
            return name
    kind = "static" if static else "dynamic"
    hint = " --static-batch B" if static else ""
    raise EngineDirError(f"no {kind} TensorRT plan for graph {graph!r}; build it with "
                         f"`gaf-trt export --from-onnx DIR{hint}`")


def load_trt(req: LoadRequest) -> TrtSplitEngine:
    """Open an engine directory's TensorRT plans on a CUDA device (``req.options``:
    ``graphs`` = auto|split|fused, ``static`` = use the fixed-shape plans)."""
    device = resolve_device(req.device)
    if not device.startswith("cuda"):
        raise ConfigError(f"the trt backend needs a CUDA device, got {device!r}; use "
                          "--device cuda (or the ort backend on the CPU)")
    folder = Path(req.artifact)
    static = bool(req.options.get("static", False))
    from gaf_trt.export.manifest import read_manifest

    man = read_manifest(folder)
    have = {rec.get("graph") for rec in (man.get("plans") or {}).values()
            if bool(rec.get("static")) == static}
    if not have:
        raise EngineDirError(f"{folder} has no TensorRT plans; "
                             + REBUILD_HINT.format(dir=folder).replace("rebuild", "build", 1))
    man, graphs = open_engine_dir(folder, str(req.options.get("graphs", "auto")), have=have,
                                  precision=req.precision)
    cls = TrtFusedEngine if "step_velocity" in graphs else TrtSplitEngine
    engine = cls(folder, man, graphs, device)
    engine._load_plans(static)
    return engine


BACKENDS.add("trt", Backend("trt", "TensorRT plans of an exported engine directory (CUDA)",
                            load_trt, trt_unavailable))
