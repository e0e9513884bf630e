"""The TensorRT backend (``trt``): an engine directory's plans as an AnchorNetwork (split
plans) and FusedComposedStep (fused plans).

Lifecycle: check each plan's TensorRT version and GPU against this machine (before
deserialising; a mismatch says to rebuild with ``gaf-trt export --from-onnx DIR``) ->
deserialise under the engine's device (``None`` is an error with TensorRT's reason, never a
crash; TensorRT's log is captured, not printed) -> refit a weight-stripped plan from its ONNX
weights -> check every I/O tensor's dtype against the manifest -> one execution context per
plan, on activation memory the plan owns.

Per call, as NVIDIA's own runtimes do (demoDiffusion, torch-tensorrt, trtexec): under a
device guard, ``set_input_shape`` then ``set_tensor_address`` for every tensor (each result
checked; an input that is not 256-byte aligned, e.g. a one-element view into a time grid, is
copied into a preallocated aligned buffer), outputs allocated at the shapes
``get_tensor_shape`` reports, ``execute_async_v3`` on a stream of the plan's own, ordered
after the caller's current stream and before it again (``wait_stream``), never on the
default stream. No host synchronisation, so
:class:`~gaf_trt.compose.capture.CapturedLoop` can capture a whole solver loop; every capture
gets an execution context of its own (NVIDIA's samples capture one graph per context), so
eager calls with other shapes between replays never touch the state a graph recorded.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gaf_trt.device import resolve_device
from gaf_trt.engine.base import BACKENDS, Backend, LoadRequest
from gaf_trt.engine.graph_engine import (
    TORCH_DTYPES,
    FusedStepMixin,
    GraphEngine,
    open_engine_dir,
    output_shapes,
)
from gaf_trt.enginedir import (
    REBUILD_HINT,
    EngineDirError,
    check_plan_compatible,
    files_of,
    verify_files,
)
from gaf_trt.errors import ConfigError, GAFError

log = logging.getLogger(__name__)

#: TensorRT requires every I/O address to be 256-byte aligned (setTensorAddress).
ALIGN = 256
#: ``trt.DataType`` member -> manifest dtype name.
TRT_DTYPE_NAMES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT32": "int32",
                   "INT64": "int64", "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"}


class TrtExecutionError(GAFError):
    """TensorRT refused a call of the runtime (the message carries TensorRT's reason)."""


def trt_unavailable() -> str | None:
    from gaf_trt.engine.trt_runtime import unavailable

    return unavailable()


class CudaOps:
    """The CUDA calls the runtime makes, in one place (tests stand in for them on the CPU)."""

    def current_stream(self, device: torch.device):
        return torch.cuda.current_stream(device)

    def new_stream(self, device: torch.device):
        return torch.cuda.Stream(device=device)

    def device_guard(self, device: torch.device):
        return torch.cuda.device(device)

    def capturing(self, device: torch.device) -> bool:
        return torch.cuda.is_current_stream_capturing()

    def empty_bytes(self, nbytes: int, device: torch.device) -> Tensor:
        return torch.empty(nbytes, dtype=torch.uint8, device=device)


CUDA = CudaOps()


def aligned_empty(cuda: CudaOps, nbytes: int, device: torch.device) -> Tensor:
    """``nbytes`` uint8 on ``device`` starting at a 256-byte aligned address."""
    raw = cuda.empty_bytes(max(int(nbytes), 1) + ALIGN, device)
    offset = (-raw.data_ptr()) % ALIGN
    return raw[offset:offset + max(int(nbytes), 1)]


def _dtype_name(trt, dtype) -> str:
    for member, name in TRT_DTYPE_NAMES.items():
        if getattr(trt.DataType, member, None) is not None and dtype == getattr(trt.DataType,
                                                                               member):
            return name
    return str(dtype)


class TrtPlan:
    """One deserialised plan: its engine, activation memory, own stream, and execution
    contexts (one for eager calls, one per captured CUDA graph)."""

    def __init__(self, path: Path, record: dict[str, Any], folder: Path,
                 device: str | torch.device | None = None,
                 graph: dict[str, Any] | None = None, onnx_path: Path | None = None,
                 cuda: CudaOps | None = None) -> None:
        import tensorrt as trt

        from gaf_trt.engine.trt_runtime import make_logger, require_version

        require_version(trt)
        self.trt, self.record, self.cuda = trt, record, cuda or CUDA
        self.name = str(record.get("file", Path(path).name))
        self.device = torch.device(device) if device is not None else \
            torch.device("cuda", torch.cuda.current_device())
        self.logger = make_logger(trt)
        with self.cuda.device_guard(self.device):
            self.runtime = trt.Runtime(self.logger)
            if self.runtime is None:
                raise EngineDirError(f"TensorRT could not create a runtime: "
                                     f"{self.logger.reason()}")
            if record.get("version_compatible"):
                self.runtime.engine_host_code_allowed = True  # lean runtime inside the plan
            self.engine = self.runtime.deserialize_cuda_engine(Path(path).read_bytes())
            if self.engine is None:
                raise EngineDirError(f"TensorRT could not deserialise {path} "
                                     f"({self.logger.reason()}); "
                                     + REBUILD_HINT.format(dir=folder))
            if record.get("weights_stripped"):
                self._refit(onnx_path, folder)
            self.inputs, self.outputs, self.dtypes = [], [], {}
            for i in range(self.engine.num_io_tensors):
                name = self.engine.get_tensor_name(i)
                is_in = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                (self.inputs if is_in else self.outputs).append(name)
                self.dtypes[name] = _dtype_name(trt, self.engine.get_tensor_dtype(name))
            if graph is not None:
                self._check_io(graph, folder)
            self.stream = self.cuda.new_stream(self.device)
            self.memory = aligned_empty(self.cuda, int(self.engine.device_memory_size_v2),
                                        self.device)
            self.staging = {n: self._staging_buffer(n) for n in self.inputs}
            self.context = self._new_context()
            # a spare for the next capture: no context is created while a stream captures
            # (TensorRT may allocate, which a CUDA-graph capture forbids)
            self._spare = [self._new_context()]
        self.captured_contexts: list[Any] = []
        self._capture_context = None

    # -- load
    def _refit(self, onnx_path: Path | None, folder: Path) -> None:
        """Fill a weight-stripped plan's weights from its ONNX graph (TensorRT's
        OnnxParserRefitter reads the external weights file beside the graph)."""
        trt = self.trt
        if onnx_path is None:
            raise EngineDirError(f"{self.name} is weight-stripped and needs its ONNX graph")
        start = time.perf_counter()
        refitter = trt.Refitter(self.engine, self.logger)
        parser = trt.OnnxParserRefitter(refitter, self.logger)
        if not parser.refit_from_file(str(onnx_path)):
            errors = [" ".join(str(parser.get_error(i)).split())
                      for i in range(getattr(parser, "num_errors", 0))]
            raise EngineDirError(f"TensorRT cannot refit {self.name} from {onnx_path.name}: "
                                 + ("; ".join(errors[:3]) or self.logger.reason())
                                 + "; " + REBUILD_HINT.format(dir=folder))
        if not refitter.refit_cuda_engine():
            raise EngineDirError(f"TensorRT could not refit {self.name} "
                                 f"({self.logger.reason()}); " + REBUILD_HINT.format(dir=folder))
        log.info("refitted %s from %s in %.2f s", self.name, onnx_path.name,
                 time.perf_counter() - start)

    def _check_io(self, graph: dict[str, Any], folder: Path) -> None:
        """The plan's I/O names, directions and dtypes are the manifest's graph's."""
        want = {s["name"]: ("input", s["dtype"]) for s in graph["inputs"]}
        want.update({s["name"]: ("output", s["dtype"]) for s in graph["outputs"]})
        have = {n: ("input", self.dtypes[n]) for n in self.inputs}
        have.update({n: ("output", self.dtypes[n]) for n in self.outputs})
        for name, (mode, dtype) in want.items():
            if name not in have:
                raise EngineDirError(f"{self.name} has no {mode} {name!r} (it has "
                                     f"{', '.join(sorted(have))}); "
                                     + REBUILD_HINT.format(dir=folder))
            if have[name] != (mode, dtype):
                raise EngineDirError(f"{self.name}: {mode} {name!r} is {have[name][1]} "
                                     f"({have[name][0]}) in the plan, {dtype} in the manifest; "
                                     + REBUILD_HINT.format(dir=folder))
        extra = sorted(set(have) - set(want))
        if extra:
            raise EngineDirError(f"{self.name} has tensors the manifest does not list: "
                                 f"{', '.join(extra)}; " + REBUILD_HINT.format(dir=folder))

    def _staging_buffer(self, name: str) -> Tensor:
        """An aligned buffer for the largest shape of input ``name``'s profile."""
        max_shape = tuple(self.engine.get_tensor_profile_shape(name, 0)[2])
        itemsize = torch.empty((), dtype=TORCH_DTYPES[self.dtypes[name]]).element_size()
        numel = 1
        for d in max_shape:
            numel *= max(int(d), 1)
        return aligned_empty(self.cuda, numel * itemsize, self.device)

    def _new_context(self):
        """An execution context on the plan's activation memory, profile 0 selected."""
        trt = self.trt
        ctx = self.engine.create_execution_context(
            trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if ctx is None:
            raise EngineDirError(f"TensorRT could not create an execution context for "
                                 f"{self.name} ({self.logger.reason()})")
        ctx.set_device_memory(self.memory.data_ptr(), int(self.engine.device_memory_size_v2))
        try:
            ok = ctx.set_optimization_profile_async(0, self.stream.cuda_stream)
        except RuntimeError:
            ok = False
        if not ok:
            raise TrtExecutionError(f"TensorRT refused optimisation profile 0 of {self.name} "
                                    f"({self.logger.reason()})")
        return ctx

    # -- run
    def _context_for_call(self):
        """The eager context, or the context of the CUDA graph being captured (a new one
        per capture: a capture starts with the first captured call after an eager one)."""
        if not self.cuda.capturing(self.device):
            self._capture_context = None
            if not self._spare:  # replenished outside captures (CapturedLoop warms up first)
                self._spare.append(self._new_context())
            return self.context
        if self._capture_context is None:
            if not self._spare:
                raise TrtExecutionError(f"{self.name}: a CUDA-graph capture began without an "
                                        "eager call before it; run the loop once uncaptured "
                                        "first (CapturedLoop does)")
            self._capture_context = self._spare.pop()
            self.captured_contexts.append(self._capture_context)
        return self._capture_context

    def _bind_input(self, ctx, name: str, t: Tensor) -> Tensor:
        want = TORCH_DTYPES[self.dtypes[name]]
        if t.dtype != want:
            raise TrtExecutionError(f"{self.name}: input {name} is {t.dtype}, the plan takes "
                                    f"{want}")
        mark = self.logger.mark()
        if not ctx.set_input_shape(name, tuple(int(d) for d in t.shape)):
            raise ConfigError(f"input {name} shape {list(t.shape)} is outside {self.name}'s "
                              f"profile {self.record.get('shapes', {}).get(name)} "
                              f"({self.logger.reason(mark)}); export with larger --max-batch "
                              "/ --max-classes")
        if t.data_ptr() % ALIGN or not t.is_contiguous():
            nbytes = t.numel() * t.element_size()
            view = self.staging[name][:nbytes].view(want).view(t.shape)
            view.copy_(t)  # on the caller's stream, before the plan's stream waits on it
            t = view
        if not ctx.set_tensor_address(name, t.data_ptr()):
            raise TrtExecutionError(f"TensorRT refused the address of input {name} of "
                                    f"{self.name} ({self.logger.reason(mark)})")
        return t

    def execute(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """Run the plan on ``inputs`` (name -> device tensor); returns name -> output."""
        with self.cuda.device_guard(self.device):
            ctx = self._context_for_call()
            bound = [self._bind_input(ctx, n, inputs[n]) for n in self.inputs]
            outs = {}
            mark = self.logger.mark()
            for name in self.outputs:
                shape = tuple(int(d) for d in ctx.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise TrtExecutionError(f"{self.name}: output {name} has no shape after "
                                            f"the inputs were set ({self.logger.reason(mark)})")
                dtype = TORCH_DTYPES[self.dtypes[name]]
                numel = 1
                for d in shape:
                    numel *= d
                buf = aligned_empty(self.cuda, numel * torch.empty((), dtype=dtype)
                                    .element_size(), self.device).view(dtype)[:numel].view(shape)
                if not ctx.set_tensor_address(name, buf.data_ptr()):
                    raise TrtExecutionError(f"TensorRT refused the address of output {name} "
                                            f"of {self.name} ({self.logger.reason(mark)})")
                outs[name] = buf
            caller = self.cuda.current_stream(self.device)
            self.stream.wait_stream(caller)  # inputs written on the caller's stream
            ok = ctx.execute_async_v3(self.stream.cuda_stream)
            caller.wait_stream(self.stream)  # outputs read on the caller's stream
            del bound
            if not ok:
                raise TrtExecutionError(f"TensorRT execution of {self.name} failed "
                                        f"({self.logger.reason(mark)})")
        return outs


class TrtSplitEngine(GraphEngine):
    """TensorRT plans of the split graphs (an AnchorNetwork)."""

    name = "trt"

    def _load_plans(self, static: bool, plan_device: torch.device | None = None,
                    cuda: CudaOps | None = None) -> None:
        """Deserialise the plans for this engine's graphs on ``plan_device`` (default: the
        engine's device; a test on the CPU gives a fake CUDA device and ``cuda`` ops)."""
        from gaf_trt.engine.trt_runtime import runtime_info

        plans = self.manifest.get("plans") or {}
        plan_device = torch.device(plan_device or self.device)
        here = runtime_info(plan_device.index)
        self.plans: dict[str, TrtPlan] = {}
        for g in self.graphs:
            name = _plan_for(plans, g, static)
            rec = plans[name]
            check_plan_compatible(rec, here, self.folder)  # before deserialising
            graph = self.manifest["graphs"][g]
            need = files_of(self.manifest, plans=[name])
            if rec.get("weights_stripped"):
                need += files_of(self.manifest, graphs=[g])
            verify_files(self.folder, self.manifest, need)
            self.plans[g] = TrtPlan(self.folder / rec["file"], rec, self.folder, plan_device,
                                    graph, self.folder / graph["file"], cuda or CUDA)

    def _run(self, graph: str, inputs: dict[str, Tensor]) -> list[Tensor]:
        record = self.manifest["graphs"][graph]
        want = output_shapes(record, inputs)
        outs = self.plans[graph].execute(inputs)
        for name, shape in want.items():
            if tuple(outs[name].shape) != shape:
                raise EngineDirError(f"plan of {graph} returns {name} of shape "
                                     f"{list(outs[name].shape)}, the graph {list(shape)}; "
                                     + REBUILD_HINT.format(dir=self.folder))
        return [outs[o["name"]] for o in record["outputs"]]


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


def _with_index(device: str) -> str:
    """``cuda`` -> ``cuda:<current device>``: the plans run on the device they were loaded on."""
    dev = torch.device(device)
    if dev.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(dev)


def load_trt(req: LoadRequest) -> TrtSplitEngine:
    """Open an engine directory's TensorRT plans on a CUDA device (``req.options``:
    ``graphs`` = auto|split|fused, ``static`` = use the fixed-shape plans)."""
    device = resolve_device(req.device)
    if not device.startswith("cuda"):
        raise ConfigError(f"the trt backend needs a CUDA device, got {device!r}; use "
                          "--device cuda (or the ort backend on the CPU)")
    folder = Path(req.artifact)
    static = bool(req.options.get("static", False))
    from gaf_trt.engine.trt_runtime import require_version
    from gaf_trt.enginedir import read_manifest
    from gaf_trt.enginedir.compat import trt_refusal

    try:
        import tensorrt as trt
    except ImportError:  # TrtPlan says so when it gets there; the manifest checks come first
        trt = None
    if trt is not None:
        require_version(trt)  # one clear line, not an AttributeError deep in the runtime

    man = read_manifest(folder)
    why_not = trt_refusal(man)
    if why_not is not None:
        raise ConfigError(f"the trt backend cannot run {folder}: {why_not}")
    have = {rec.get("graph") for rec in (man.get("plans") or {}).values()
            if bool(rec.get("static")) == static}
    if not have:
        raise EngineDirError(f"{folder} has no TensorRT plans; "
                             + REBUILD_HINT.format(dir=folder).replace("rebuild", "build", 1))
    man, graphs = open_engine_dir(folder, str(req.options.get("graphs", "auto")), have=have,
                                  precision=req.precision)
    cls = TrtFusedEngine if "step_velocity" in graphs else TrtSplitEngine
    engine = cls(folder, man, graphs, _with_index(device))
    engine._load_plans(static)
    return engine


BACKENDS.add("trt", Backend("trt", "TensorRT plans of an exported engine directory (CUDA)",
                            load_trt, trt_unavailable))
