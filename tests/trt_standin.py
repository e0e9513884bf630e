"""A stand-in of the ``tensorrt`` Python module (builder and runtime) that refuses what
TensorRT refuses, for the machines where TensorRT cannot be installed.

Modelled on the TensorRT 10.x / 11.x bindings (``python/src/infer/pyCore.cpp``,
``pyFoundationalTypes.cpp``, ``parsers/pyOnnx.cpp``) and ``NvInfer.h``:

- the enums carry the real members and values of the version asked for (``BuilderFlag`` loses
  ``FP16`` / ``BF16`` in 11.x, ``STRONGLY_TYPED`` is 1 in 10.x and 0 in 11.x,
  ``HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY`` appears in 10.9);
- ``build_serialized_network`` returns an ``IHostMemory`` (a buffer with ``nbytes`` and
  ``dtype``, no ``len`` and no slicing), or ``None``; ``create_network`` can return ``None``,
  ``add_optimization_profile`` ``-1``, ``set_timing_cache`` ``False`` for another GPU's cache;
- loggers must be ``ILogger`` subclasses that called ``ILogger.__init__``; errors go to the
  logger; the stock ``Logger`` prints ``[TRT] [E] ...`` lines as TensorRT's does;
- the runtime: ``deserialize_cuda_engine`` returns ``None`` for a foreign or corrupt plan (and
  for a version-compatible plan unless ``engine_host_code_allowed``); ``set_input_shape``
  returns ``False`` outside the profile; ``set_tensor_address`` returns ``False`` for an address
  that is not 256-byte aligned; ``execute_async_v3`` returns ``False`` when a shape or address
  is missing, a weight-stripped plan was not refitted, user-managed memory was not set, or the
  current CUDA device is not the engine's; it warns on the default stream (handle 0).

Execution is real: the plan remembers its ONNX graph; ``execute_async_v3`` reads every input
from the address it was given, runs the graph with ONNX Runtime and writes each output to its
address, so a wrong address gives a wrong (or refused) result. "Device" memory is host
memory: :class:`FakeCuda` stands in for torch's CUDA calls of
:class:`gaf_trt.engine.trt_backend.CudaOps` and records streams, waits and the current device.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

from gaf_trt.engine.trt_backend import CudaOps

ALIGN = 256
_ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 16: "BF16", 6: "INT32", 7: "INT64", 3: "INT8",
                2: "UINT8", 9: "BOOL"}
_TRT_TO_NP = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64,
              "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_}
PLAN_MAGIC = "standin-tensorrt-plan"


# --------------------------------------------------------------------------- fake CUDA


class FakeStream:
    """A CUDA stream: a handle and the ``wait_stream`` calls made on it (into ``log``)."""

    def __init__(self, handle: int, log: list) -> None:
        self.cuda_stream = handle
        self._log = log

    def wait_stream(self, other: FakeStream) -> None:
        self._log.append(("wait", self.cuda_stream, other.cuda_stream))


class FakeCuda(CudaOps):
    """torch's CUDA calls on the CPU: device memory is host memory; records the current
    device, streams and waits; ``capture()`` makes the current stream a capturing one."""

    def __init__(self, capability: str = "9.0", name: str = "Fake GPU") -> None:
        self.log: list = []
        self.current_device = 0
        self.capability, self.name = capability, name
        self.default = FakeStream(0, self.log)  # the legacy default stream
        self._capture: FakeStream | None = None
        self._next = 100
        self.streams: list[FakeStream] = []

    def current_stream(self, device):
        return self._capture or self.default

    def new_stream(self, device):
        self._next += 1
        s = FakeStream(self._next, self.log)
        self.streams.append(s)
        return s

    @contextlib.contextmanager
    def device_guard(self, device):
        prev = self.current_device
        self.current_device = torch.device(device).index or 0
        try:
            yield
        finally:
            self.current_device = prev

    def capturing(self, device) -> bool:
        return self._capture is not None

    @contextlib.contextmanager
    def capture(self):
        """Calls inside run "during a CUDA-graph capture" on a capture stream."""
        self._capture = FakeStream(7, self.log)
        self.log.append(("capture_begin",))
        try:
            yield
        finally:
            self.log.append(("capture_end",))
            self._capture = None

    def empty_bytes(self, nbytes, device):
        return torch.empty(int(nbytes), dtype=torch.uint8)


# --------------------------------------------------------------------------- host memory


def _host_memory_type(tensorrt_module: types.ModuleType):
    class IHostMemory(np.ndarray):
        """TensorRT's IHostMemory: a buffer (``memoryview`` works) with ``nbytes`` and
        ``dtype``; unlike ``bytes`` it has no ``len`` and cannot be sliced."""

        def __len__(self):
            raise TypeError("object of type 'tensorrt.IHostMemory' has no len()")

        def __getitem__(self, key):
            raise TypeError("'tensorrt.IHostMemory' object is not subscriptable")

        def __iter__(self):
            raise TypeError("'tensorrt.IHostMemory' object is not iterable")

    IHostMemory.__module__ = "tensorrt"
    return IHostMemory


def _read(ptr: int, nbytes: int) -> np.ndarray:
    return np.ctypeslib.as_array((ctypes.c_uint8 * max(nbytes, 1)).from_address(ptr))[:nbytes]


# --------------------------------------------------------------------------- the module


def make_trt(version: str = "10.13.0.35", cuda: FakeCuda | None = None, *,
             network_none: bool = False, profile_refused: bool = False,
             build_fails: bool = False, dtype_override: dict[str, str] | None = None,
             gpu_tag: str = "Fake GPU 9.0") -> types.ModuleType:
    """A fresh stand-in ``tensorrt`` module of ``version``. Fault switches make the calls
    that TensorRT can refuse refuse; ``state.calls`` records what the code under test did."""
    major, minor = (int(p) for p in version.split(".")[:2])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    state = types.SimpleNamespace(calls=[], cuda=cuda or FakeCuda(), printed=[], contexts=[],
                                  engines=[], sessions={})
    trt.state = state

    def call(*item):
        state.calls.append(item)

    # -- enums (values as in NvInfer.h of that version)
    flags = {"DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5, "TF32": 6,
             "SPARSE_WEIGHTS": 7}
    if major >= 11:
        flags.update(VERSION_COMPATIBLE=12, EXCLUDE_LEAN_RUNTIME=13, STRIP_PLAN=18,
                     REFIT_IDENTICAL=19)
    else:
        flags.update(FP16=0, INT8=1, VERSION_COMPATIBLE=13, EXCLUDE_LEAN_RUNTIME=14, BF16=17,
                     STRIP_PLAN=19, REFIT_IDENTICAL=20)
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", flags)
    trt.NetworkDefinitionCreationFlag = enum.IntEnum(
        "NetworkDefinitionCreationFlag",
        {"STRONGLY_TYPED": 0} if major >= 11 else {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1})
    levels = {"NONE": 0, "AMPERE_PLUS": 1}
    if (major, minor) >= (10, 9):
        levels["SAME_COMPUTE_CAPABILITY"] = 2
    trt.HardwareCompatibilityLevel = enum.IntEnum("HardwareCompatibilityLevel", levels)
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0})
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    trt.DataType = enum.IntEnum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3,
                                             "BOOL": 4, "UINT8": 5, "FP8": 6, "BF16": 7,
                                             "INT64": 8})
    trt.ExecutionContextAllocationStrategy = enum.IntEnum(
        "ExecutionContextAllocationStrategy", {"STATIC": 0, "ON_PROFILE_CHANGE": 1,
                                               "USER_MANAGED": 2})
    HostMemory = _host_memory_type(trt)
    trt.IHostMemory = HostMemory

    # -- loggers
    class ILogger:
        Severity = enum.IntEnum("Severity", {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2,
                                             "INFO": 3, "VERBOSE": 4})

        def __init__(self) -> None:
            self._standin_init = True

        def log(self, severity, msg):  # pure virtual in TensorRT
            raise RuntimeError("Tried to call pure virtual function \"ILogger::log\"")

    class Logger(ILogger):
        WARNING = ILogger.Severity.WARNING
        ERROR = ILogger.Severity.ERROR
        INFO = ILogger.Severity.INFO
        VERBOSE = ILogger.Severity.VERBOSE

        def __init__(self, min_severity=ILogger.Severity.WARNING) -> None:
            super().__init__()
            self.min_severity = min_severity

        def log(self, severity, msg):
            if severity <= self.min_severity:
                tag = "FEWIV"[int(severity)]
                line = f"[TRT] [{tag}] {msg}"
                state.printed.append(line)
                print(line)

    def _check_logger(logger) -> ILogger:
        if not isinstance(logger, ILogger) or not getattr(logger, "_standin_init", False):
            raise TypeError("__init__(): incompatible constructor arguments (logger must be a "
                            "tensorrt.ILogger whose __init__ was called)")
        return logger

    def _err(logger, msg: str) -> None:
        logger.log(ILogger.Severity.ERROR, msg)

    trt.ILogger, trt.Logger = ILogger, Logger

    # -- builder
    class Tensor:
        def __init__(self, name, dtype, shape):
            self.name, self.dtype, self.shape = name, dtype, tuple(shape)

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.inputs: list[Tensor] = []
            self.outputs: list[Tensor] = []
            self.onnx: str | None = None

        @property
        def num_inputs(self):
            return len(self.inputs)

        @property
        def num_outputs(self):
            return len(self.outputs)

        def get_input(self, i):
            return self.inputs[i]

        def get_output(self, i):
            return self.outputs[i]

    def _onnx_io(path: str):
        import onnx

        model = onnx.load(path, load_external_data=False)
        folder = Path(path).parent
        for t in model.graph.initializer:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                loc = {e.key: e.value for e in t.external_data}.get("location", "")
                if not (folder / loc).is_file():
                    raise FileNotFoundError(f"Failed to open external weights file {loc}")

        def spec(v):
            dims = [d.dim_value if d.HasField("dim_value") else -1
                    for d in v.type.tensor_type.shape.dim]
            syms = [d.dim_param if d.HasField("dim_param") else None
                    for d in v.type.tensor_type.shape.dim]
            return {"name": v.name, "dtype": _ONNX_TO_TRT[v.type.tensor_type.elem_type],
                    "shape": dims, "symbols": syms}

        return [spec(v) for v in model.graph.input], [spec(v) for v in model.graph.output]

    def _model_bytes(path: str) -> bytes:
        """The graph with its weights (external data read), as a plan carries them."""
        import onnx

        return onnx.load(path).SerializeToString()

    class _ParserErrors:
        """``num_errors`` / ``get_error(i)`` as TensorRT's ONNX parser and refitter have."""

        def __init__(self, logger):
            self.logger = _check_logger(logger)
            self.errors: list[str] = []

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    class OnnxParser(_ParserErrors):
        def __init__(self, network, logger):
            super().__init__(logger)
            self.network = network

        def parse_from_file(self, path):
            call("parse", Path(path).name)
            try:
                ins, outs = _onnx_io(str(path))
            except Exception as err:  # noqa: BLE001 - the parser reports, never raises
                self.errors.append(f"ModelImporter.cpp: {err}")
                return False
            if int(version.split(".")[1]) < 14 and major == 10:
                import onnx

                ops = {n.op_type for n in onnx.load(str(path), load_external_data=False)
                       .graph.node}
                if "Attention" in ops:
                    self.errors.append("No importer registered for op: Attention")
                    return False
            self.network.inputs = [Tensor(s["name"], s["dtype"], s["shape"]) for s in ins]
            self.network.outputs = [Tensor(s["name"], s["dtype"], s["shape"]) for s in outs]
            self.network.io = (ins, outs)
            self.network.onnx = str(path)
            return True

    class TimingCache:
        def __init__(self, data: bytes):
            self.tag = data.decode() if data else gpu_tag
            self.valid = not data or data.decode().startswith("cache:")

        def serialize(self):
            return np.frombuffer(b"cache:" + gpu_tag.encode(), np.uint8).copy().view(HostMemory)

    class Profile:
        def __init__(self):
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, name, lo, opt, hi):
            if not (len(lo) == len(opt) == len(hi)) or any(
                    not a <= b <= c for a, b, c in zip(lo, opt, hi)):
                raise RuntimeError("Shape provided for min is inconsistent with other shapes.")
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class BuilderConfig:
        def __init__(self, logger):
            self.logger = logger
            self.flags: set[int] = {int(trt.BuilderFlag.TF32)}
            self.cache = None
            self.profiles: list[Profile] = []
            self._hw = trt.HardwareCompatibilityLevel.NONE

        @property
        def hardware_compatibility_level(self):
            return self._hw

        @hardware_compatibility_level.setter
        def hardware_compatibility_level(self, level):
            if not isinstance(level, trt.HardwareCompatibilityLevel):
                raise TypeError("incompatible function arguments")
            call("hardware_compatibility_level", level.name)
            self._hw = level

        def set_flag(self, f):
            call("set_flag", trt.BuilderFlag(f).name)
            self.flags.add(int(f))

        def clear_flag(self, f):
            call("clear_flag", trt.BuilderFlag(f).name)
            self.flags.discard(int(f))

        def get_flag(self, f):
            return int(f) in self.flags

        def set_memory_pool_limit(self, pool, size):
            call("pool", size)

        def create_timing_cache(self, data):
            data = bytes(memoryview(data))
            call("timing_cache_in", data)
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            ok = cache.valid and (ignore_mismatch or cache.tag in ("", f"cache:{gpu_tag}",
                                                                    gpu_tag))
            call("set_timing_cache", ok)
            if not ok:
                _err(self.logger, "[timingCache.cpp] Error Code 2: Internal Error (timing cache "
                     "was created on another device or TensorRT version)")
                return False
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

        def add_optimization_profile(self, p):
            call("profile", dict(p.shapes))
            if profile_refused or not p.shapes:
                _err(self.logger, "[optimizationProfile] Error Code 3: API Usage Error "
                     "(profile is not valid)")
                return -1
            self.profiles.append(p)
            return len(self.profiles) - 1

    class Builder:
        def __init__(self, logger):
            self.logger = _check_logger(logger)

        def create_network(self, flags=0):
            call("network_flags", flags)
            if network_none:
                _err(self.logger, "[network.cpp] Error Code 1: out of host memory")
                return None
            return Network(flags)

        def create_builder_config(self):
            return BuilderConfig(self.logger)

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            if build_fails or not config.profiles:
                _err(self.logger, "[builder.cpp] Error Code 10: Internal Error (Could not find "
                     "any implementation for node /blocks.0/Attention)")
                return None
            prof = config.profiles[0]
            ins, outs = network.io
            for s in ins:
                if -1 in s["shape"] and s["name"] not in prof.shapes:
                    _err(self.logger, f"input {s['name']} has dynamic shape but no profile")
                    return None
            stripped = int(trt.BuilderFlag.STRIP_PLAN) in config.flags
            header = {"magic": PLAN_MAGIC, "tensorrt": version,
                      "onnx": Path(network.onnx).name,
                      "inputs": ins, "outputs": outs,
                      "profile": {k: [list(x) for x in v] for k, v in prof.shapes.items()},
                      "stripped": stripped,
                      "version_compatible": int(trt.BuilderFlag.VERSION_COMPATIBLE)
                      in config.flags,
                      "hardware_compatibility_level": config.hardware_compatibility_level.name,
                      "tf32": int(trt.BuilderFlag.TF32) in config.flags,
                      "capability": state.cuda.capability}
            body = json.dumps(header).encode() + b"\n"
            if not stripped:  # a plan carries its weights (here: the whole graph)
                body += _model_bytes(network.onnx)
            arr = np.frombuffer(body, np.uint8).copy()
            return arr.view(HostMemory)

    trt.Builder, trt.OnnxParser = Builder, OnnxParser

    # -- runtime
    class Runtime:
        def __init__(self, logger):
            self.logger = _check_logger(logger)
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, data):
            raw = bytes(memoryview(data))
            head, _, model = raw.partition(b"\n")
            try:
                header = json.loads(head)
                assert header["magic"] == PLAN_MAGIC
            except (ValueError, AssertionError, KeyError, UnicodeDecodeError):
                _err(self.logger, "1: [runtime.cpp::deserializeCudaEngine] Error Code 1: "
                     "Serialization (Serialization assertion magicTagRead == kMAGIC_TAG failed."
                     "Magic tag does not match)")
                return None
            if header["version_compatible"] and not self.engine_host_code_allowed:
                _err(self.logger, "1: [runtime.cpp] Error Code 1: Serialization (the plan "
                     "holds a lean runtime; set engine_host_code_allowed to load it)")
                return None
            if not header["version_compatible"] and header["tensorrt"] != version:
                _err(self.logger, "6: The engine plan file is not compatible with this version "
                     "of TensorRT")
                return None
            here, built = state.cuda.capability, header["capability"]
            level = header["hardware_compatibility_level"]
            if level == "AMPERE_PLUS":
                ok = tuple(map(int, here.split("."))) >= (8, 0)
            else:
                ok = here == built
            if not ok:
                _err(self.logger, "6: The engine plan file is generated on an incompatible "
                     "device")
                return None
            call("deserialize", state.cuda.current_device)
            engine = Engine(header, state.cuda.current_device, self.logger, model or None)
            state.engines.append(engine)
            return engine

    class Engine:
        def __init__(self, header, device, logger, model):
            self.h, self.device, self.logger, self.model = header, device, logger, model
            self.io = [(s, trt.TensorIOMode.INPUT) for s in header["inputs"]] + \
                      [(s, trt.TensorIOMode.OUTPUT) for s in header["outputs"]]
            self.by_name = {s["name"]: (s, m) for s, m in self.io}
            self.refitted = not header["stripped"]
            self.device_memory_size_v2 = 4096

        @property
        def num_io_tensors(self):
            return len(self.io)

        def get_tensor_name(self, i):
            return self.io[i][0]["name"]

        def get_tensor_mode(self, name):
            return self.by_name[name][1] if name in self.by_name else trt.TensorIOMode.NONE

        def get_tensor_dtype(self, name):
            dt = (dtype_override or {}).get(name, self.by_name[name][0]["dtype"])
            return trt.DataType[dt]

        def get_tensor_profile_shape(self, name, index):
            if index != 0 or name not in self.h["profile"]:
                raise RuntimeError("Invalid tensor name or profile index")
            return [tuple(s) for s in self.h["profile"][name]]

        def create_execution_context(self, strategy=None):
            strategy = trt.ExecutionContextAllocationStrategy.STATIC if strategy is None \
                else strategy
            if state.cuda.capturing(None):  # creation allocates: forbidden in a capture
                _err(self.logger, "createExecutionContext: operation not permitted when "
                     "stream is capturing")
                return None
            ctx = Context(self, strategy)
            state.contexts.append(ctx)
            return ctx

    class Refitter:
        def __init__(self, engine, logger):
            self.engine, self.logger = engine, _check_logger(logger)
            self.loaded = None

        def refit_cuda_engine(self):
            if self.loaded is None:
                _err(self.logger, "[refit.cpp] Error Code 3: missing weights")
                return False
            self.engine.model, self.engine.refitted = self.loaded[1], True
            call("refit", self.loaded[0])
            return True

    class OnnxParserRefitter(_ParserErrors):
        def __init__(self, refitter, logger):
            super().__init__(logger)
            self.refitter = refitter

        def refit_from_file(self, path):
            try:
                _onnx_io(str(path))
            except Exception as err:  # noqa: BLE001
                self.errors.append(str(err))
                return False
            if Path(path).name != self.refitter.engine.h["onnx"]:
                self.errors.append(f"{Path(path).name} is not the graph the plan was built from")
                return False
            self.refitter.loaded = (Path(path).name, _model_bytes(str(path)))
            return True

    class Context:
        def __init__(self, engine, strategy):
            self.engine, self.strategy = engine, strategy
            self.shapes: dict[str, tuple] = {}
            self.addresses: dict[str, int] = {}
            self.memory = None
            self.events: list = []  # (what, capture?) in call order
            self.logger = engine.logger

        def _ev(self, *what):
            self.events.append((*what, state.cuda.capturing(None), len(state.cuda.log)))

        def set_device_memory(self, ptr, size):
            if ptr % ALIGN:
                _err(self.logger, "setDeviceMemory: memory must be 256-byte aligned")
                return
            self.memory = (ptr, size)
            self._ev("device_memory")

        def set_optimization_profile_async(self, index, stream):
            if index != 0:
                raise RuntimeError("Error in set optimization profile async.")
            self._ev("profile", stream)
            return True

        def set_input_shape(self, name, shape):
            shape = tuple(int(d) for d in shape)
            self._ev("shape", name, shape)
            spec = self.engine.by_name.get(name)
            if spec is None or spec[1] != trt.TensorIOMode.INPUT:
                _err(self.logger, f"setInputShape: {name} is not an input")
                return False
            lo, _, hi = self.engine.h["profile"][name]
            if len(shape) != len(lo) or any(not a <= s <= b for a, s, b in zip(lo, shape, hi)):
                _err(self.logger, f"IExecutionContext::setInputShape: Error Code 3: API Usage "
                     f"Error (Parameter check failed, condition: dimensions of {name} "
                     f"{list(shape)} within the profile [{lo}, {hi}])")
                return False
            self.shapes[name] = shape
            return True

        def set_tensor_address(self, name, ptr):
            self._ev("address", name, int(ptr))
            if name not in self.engine.by_name:
                _err(self.logger, f"setTensorAddress: unknown tensor {name}")
                return False
            if int(ptr) % ALIGN:
                _err(self.logger, f"IExecutionContext::setTensorAddress: Error Code 3: API "
                     f"Usage Error (Parameter check failed, condition: (uintptr_t)data % "
                     f"256 == 0. Address of {name} is not aligned to 256 bytes)")
                return False
            self.addresses[name] = int(ptr)
            return True

        def get_tensor_shape(self, name):
            spec, mode = self.engine.by_name[name]
            if mode == trt.TensorIOMode.INPUT:
                return self.shapes.get(name, tuple(spec["shape"]))
            sizes = {}
            for s, m in self.engine.io:
                if m == trt.TensorIOMode.INPUT and s["name"] in self.shapes:
                    for sym, n in zip(s["symbols"], self.shapes[s["name"]]):
                        if sym:
                            sizes[sym] = n
            return tuple(sizes.get(sym, -1) if sym else d
                         for sym, d in zip(spec["symbols"], spec["shape"]))

        def execute_async_v3(self, stream_handle):
            cuda = state.cuda
            self._ev("execute", int(stream_handle))
            call("execute", id(self), int(stream_handle), cuda.current_device,
                 cuda.capturing(None))
            if int(stream_handle) == 0:
                self.logger.log(ILogger.Severity.WARNING, "Using default stream in "
                                "enqueueV3() may lead to performance issues due to additional "
                                "calls to cudaStreamSynchronize() by TensorRT")
            eng = self.engine
            problems = []
            if cuda.current_device != eng.device:
                problems.append(f"current device {cuda.current_device} is not the engine's "
                                f"device {eng.device}")
            if not eng.refitted:
                problems.append("the weight-stripped engine was not refitted")
            if self.strategy == trt.ExecutionContextAllocationStrategy.USER_MANAGED and \
                    self.memory is None:
                problems.append("no device memory was set for a USER_MANAGED context")
            for s, m in eng.io:
                if s["name"] not in self.addresses:
                    problems.append(f"address of {s['name']} not set")
                if m == trt.TensorIOMode.INPUT and s["name"] not in self.shapes:
                    problems.append(f"shape of {s['name']} not set")
            if problems:
                _err(self.logger, f"IExecutionContext::enqueueV3: Error Code 1: {problems[0]}")
                return False
            self._run()
            return True

        def _run(self):
            import onnxruntime as ort

            eng = self.engine
            sess = state.sessions.get(id(eng))
            if sess is None:
                so = ort.SessionOptions()
                so.intra_op_num_threads = 1
                sess = ort.InferenceSession(eng.model, so, providers=["CPUExecutionProvider"])
                state.sessions[id(eng)] = sess
            feeds = {}
            for s, m in eng.io:
                if m != trt.TensorIOMode.INPUT:
                    continue
                shape = self.shapes[s["name"]]
                dt = np.dtype(_TRT_TO_NP[s["dtype"]])
                n = int(np.prod(shape)) * dt.itemsize
                feeds[s["name"]] = _read(self.addresses[s["name"]], n).view(dt).reshape(
                    shape).copy()
            names = [s["name"] for s, m in eng.io if m == trt.TensorIOMode.OUTPUT]
            for name, value in zip(names, sess.run(names, feeds)):
                value = np.ascontiguousarray(value)
                _read(self.addresses[name], value.nbytes)[:] = value.view(np.uint8).reshape(-1)

    trt.Runtime, trt.Refitter, trt.OnnxParserRefitter = Runtime, Refitter, OnnxParserRefitter
    return trt


def install(monkeypatch, version: str = "10.13.0.35", cuda: FakeCuda | None = None,
            **faults) -> types.ModuleType:
    """Put a stand-in ``tensorrt`` in ``sys.modules`` and make gaf-trt see a CUDA machine
    (``runtime_info`` reports the fake GPU); returns the module (``.state`` records calls)."""
    from gaf_trt.engine import trt_runtime
    from gaf_trt.enginedir import RuntimeInfo
    from gaf_trt.export import tensorrt as builder

    cuda = cuda or FakeCuda()
    trt = make_trt(version, cuda, **faults)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_runtime, "runtime_info",
                        lambda device_index=None: RuntimeInfo(version, cuda.name,
                                                              cuda.capability))
    monkeypatch.setattr(builder, "gpu_uuid", lambda device_index=None: "GPU-fake-0000",
                        raising=False)  # (absent before the timing cache was keyed by GPU)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: cuda.current_device)
    return trt


def tiny_onnx(path: Path, extra: dict[str, list] | None = None, opset: int = 18) -> Path:
    """A small real ONNX graph ``y = x * W + t`` (``x [B,3,8,8]``, ``t [B]``, dynamic ``B``,
    one initializer) for the builder tests; ``extra`` inputs (name -> shape) pass through
    Identity nodes to outputs ``<name>_out``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    extra = extra or {}
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 3, 8, 8]),
           helper.make_tensor_value_info("t", TensorProto.FLOAT, ["B"])]
    ins += [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in extra.items()]
    w = numpy_helper.from_array(np.linspace(0.5, 1.5, 3 * 8 * 8, dtype=np.float32)
                                .reshape(3, 8, 8), "W")
    shape = numpy_helper.from_array(np.array([-1, 1, 1, 1], dtype=np.int64), "shape")
    nodes = [helper.make_node("Mul", ["x", "W"], ["xw"]),
             helper.make_node("Reshape", ["t", "shape"], ["t4"]),
             helper.make_node("Add", ["xw", "t4"], ["y"])]
    nodes += [helper.make_node("Identity", [n], [f"{n}_out"]) for n in extra]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 3, 8, 8])]
    outs += [helper.make_tensor_value_info(f"{n}_out", TensorProto.FLOAT, s)
             for n, s in extra.items()]
    graph = helper.make_graph(nodes, "tiny", ins, outs, [w, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save_model(model, str(path))
    return Path(path)
