"""``gaf-trt bench``: whole composed sampling loops on every backend, against the reference loop.

A grid over backend x precision x batch x classes x steps x solver. For every
``(batch, classes, steps, solver)`` case the same noise runs through:

- the **reference loop** (backend ``reference``): the published sampler's way — fp32 eager,
  one network call per class per velocity evaluation, no batching across classes;
- each requested backend / precision: all classes of an evaluation in one network call,
  replayed from one captured CUDA graph per loop on CUDA (torch, torch-compile, trt).

Every row reports median / p90 wall time per image and per step, images/s, network
evaluations/s (sample-forwards), peak memory, achieved GFLOP/s and its fraction of a matmul
ceiling probed in the same run at the model's GEMM shapes for that precision and device,
model-FLOPs utilisation on CUDA (against the GPU's datasheet peak, when known), the output's
max per-image relative error vs the fp32 eager result of the same noise, and its speed-up over
the reference row. Ratios are only ever taken within one run.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from gaf_trt.compose import masks as mask_lib
from gaf_trt.compose.capture import CapturedLoop
from gaf_trt.compose.composition import ComposedField, Composition
from gaf_trt.compose.solvers import SOLVERS, integrate
from gaf_trt.device import resolve_device
from gaf_trt.engine.base import BACKENDS, AnchorNetwork, LoadRequest, load_backend
from gaf_trt.engine.torch_backend import (
    best_compile_options,
    engine_from_model,
    precision_support,
)
from gaf_trt.errors import ConfigError, GAFError
from gaf_trt.enginedir import EngineDirError
from gaf_trt.model.checkpoint import load_model
from gaf_trt.model.config import DIT_PRESETS, GAFConfig, preset_config
from gaf_trt.model.gaf import GAF
from gaf_trt.precision import Precision

log = logging.getLogger(__name__)

#: backends a grid can name (``reference`` is always added); torch-compile = torch + compile
BENCH_BACKENDS = ("torch", "torch-compile", "ort", "trt", "auto")
#: inclusive bounds of the numeric options
LIMITS = {"batch": (1, 4096), "classes": (1, 64), "steps": (1, 1000), "repeats": (1, 1000),
          "warmup": (0, 100), "latent": (2, 256)}
#: spatial layout used for N composed classes (soft masks); more classes: uniform weights
LAYOUTS = {2: "horizontal_2", 3: "horizontal", 4: "horizontal_4"}
#: dense datasheet peaks in TFLOP/s (fp32 without TF32) for MFU; unknown GPUs get no MFU
GPU_PEAK_TFLOPS = {"H200": {"fp32": 66.9, "bf16": 989.4, "fp16": 989.4, "int8": 1978.9,
                            "fp8": 1978.9},
                   "H100": {"fp32": 66.9, "bf16": 989.4, "fp16": 989.4, "int8": 1978.9,
                            "fp8": 1978.9},
                   "A100": {"fp32": 19.5, "bf16": 312.0, "fp16": 312.0, "int8": 624.0}}
GRAPH_BACKENDS = ("torch", "torch-compile", "trt")


@dataclass(frozen=True)
class BenchGrid:
    """What to measure. Exactly one weight source: ``ckpt`` or ``preset`` (``S/2`` ...
    with random weights on a ``latent``-sized grid); ``engine`` (an exported engine
    directory) feeds the ``ort`` / ``trt`` rows and needs ``ckpt`` for the reference."""

    ckpt: str | None = None
    preset: str | None = None
    engine: str | None = None
    latent: int = 32
    channels: int = 4
    num_classes: int = 1000
    backends: tuple[str, ...] = ("torch",)
    precisions: tuple[Precision, ...] = (Precision.FP32,)
    batches: tuple[int, ...] = (4,)
    classes: tuple[int, ...] = (2,)
    steps: tuple[int, ...] = (20,)
    solvers: tuple[str, ...] = ("euler",)
    device: str = "auto"
    warmup: int = 1
    repeats: int = 5
    cuda_graph: bool = True
    seed: int = 0

    def validate(self) -> None:
        """Check every option once, with one clear error naming the bad value."""
        if self.ckpt is not None and self.preset is not None:
            raise ConfigError("give one of --ckpt or --preset, not both")
        if self.ckpt is None and self.preset is None and self.engine is None:
            raise ConfigError("give exactly one of --ckpt or --preset (or --engine DIR)")
        if self.preset is not None and self.engine is not None:
            raise ConfigError("--engine runs exported weights; a random-weight --preset "
                              "cannot be its reference: give --ckpt or the engine alone")
        if self.preset is not None:
            parse_preset(self.preset)
        for name, values in (("backend", self.backends), ("precision", self.precisions),
                             ("batch", self.batches), ("classes", self.classes),
                             ("steps", self.steps), ("solver", self.solvers)):
            if not values:
                raise ConfigError(f"--{name} needs at least one value")
            if len(set(values)) != len(values):
                raise ConfigError(f"--{name} lists a value twice: {list(values)}")
        for b in self.backends:
            if b not in BENCH_BACKENDS:
                raise ConfigError(f"unknown backend {b!r}; valid: {', '.join(BENCH_BACKENDS)} "
                                  "(the reference row is always included)")
        for s in self.solvers:
            SOLVERS.get(s)
        for name, values in (("batch", self.batches), ("classes", self.classes),
                             ("steps", self.steps), ("repeats", (self.repeats,)),
                             ("warmup", (self.warmup,)), ("latent", (self.latent,))):
            lo, hi = LIMITS[name]
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                    raise ConfigError(f"--{name} must be an integer in [{lo}, {hi}], got {v!r}")
        needs_dir = [b for b in self.backends if b in ("ort", "trt")]
        if needs_dir and self.engine is None:
            raise ConfigError(f"backend {needs_dir[0]!r} runs an engine directory: give "
                              "--engine DIR (written by gaf-trt export)")


@dataclass
class BenchRecord:
    """One measured row. Times in ms; ``*_p90`` the 90th percentile over timed repeats."""

    backend: str
    precision: str
    mode: str  # eager | graph (whole loop replayed from one CUDA graph)
    batch: int
    classes: int
    steps: int
    solver: str
    composition: str
    device: str
    device_name: str
    repeats: int
    loop_ms: float
    ms_per_image: float
    ms_per_image_p90: float
    ms_per_step: float
    ms_per_step_p90: float
    images_per_s: float
    evals_per_s: float  # network sample-forwards per second
    gflops: float  # achieved GFLOP/s (model FLOPs of the loop / median loop time)
    ceiling_gflops: float  # best GEMM GFLOP/s probed at the model's shapes
    ceiling_fraction: float
    mfu: float | None  # CUDA: gflops / datasheet peak; None elsewhere or for unknown GPUs
    peak_mem_mb: float
    peak_mem_kind: str  # cuda-allocated | process-rss-highwater
    max_rel_err_vs_fp32: float | None  # None when the output was not finite
    finite: bool
    speedup_vs_reference: float
    setup_s: float  # first call: compile and/or capture included
    compile_s: float  # torch.compile time alone (0 for eager)
    resolved_backend: str  # what ``auto`` picked; else the backend itself
    torch: str = torch.__version__
    ceiling_source: str = ""  # the GEMM provider (or device peak, or row) that set the ceiling
    skipped: str = ""  # why this cell did not run ("" when it ran)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_preset(name: str) -> tuple[str, int]:
    """``"XL/2"`` -> ``("XL", 2)``; a clear error for anything else."""
    size, _, patch = str(name).upper().partition("/")
    if size not in DIT_PRESETS or patch not in ("2", "4", "8"):
        raise ConfigError(f"unknown preset {name!r}; valid: "
                          + ", ".join(f"{s}/{p}" for s in DIT_PRESETS for p in (2, 4, 8)))
    return size, int(patch)


def macs_per_sample(model: GAF | GAFConfig) -> float:
    """Multiply-accumulates of one forward of one sample (linears, conv, attention)."""
    c = model if isinstance(model, GAFConfig) else model.config
    d, n, depth = c.hidden_size, c.num_tokens, c.depth
    inner = int(d * c.mlp_ratio)
    per_block = n * (3 * d * d + d * d + 2 * d * inner) + 2 * n * n * d + 6 * d * d
    heads = n * d * c.patch_dim * 2 + 2 * d * d
    embed = n * d * c.patch_dim + 256 * d + d * d
    return depth * per_block + heads + embed


def preset_model(preset: str, latent: int, channels: int, num_classes: int, seed: int,
                 device: str) -> GAF:
    """Random-weight fp32 model of a DiT preset: the published initialisation, then the
    zero-initialised adaLN and J-head weights drawn N(0, 0.02) so every block contributes
    (with adaLN-Zero the blocks would be identities and precision error would go unseen)."""
    size, patch = parse_preset(preset)
    if latent % patch:
        raise ConfigError(f"--latent {latent} is not a multiple of the preset's patch {patch}")
    cfg = preset_config(size, patch_size=patch, input_size=latent, in_channels=channels,
                        num_classes=num_classes)
    torch.manual_seed(seed)
    with torch.device(device):
        model = GAF(cfg)
    model.initialize_weights()
    with torch.no_grad():
        for mod in [*(b.adaLN_modulation for b in model.trunk.blocks),
                    model.trunk.ada_ln.adaLN_modulation]:
            mod[-1].weight.normal_(std=0.02)
        model.twins.J.linear.weight.normal_(std=0.02)
    return model.eval()


class ReferenceField:
    """The published sampler's composed velocity: one fp32 network call per class.

    ``x [B,C,S,S]``, ``t`` 0-d -> ``Σ_i c_i ⊙ (K_i − J_i)``; ``data_anchor`` / ``noise_anchor``
    blend K / J the same way (IER).
    """

    def __init__(self, model: GAF, composition: Composition) -> None:
        self.model = model
        self.composition = composition
        self._coef: Tensor | None = None
        self._labels: dict[tuple[int, int], Tensor] = {}

    def _per_class(self, x: Tensor, t: Tensor, pick: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        if self._coef is None:
            self._coef = self.composition.coefficients.to(x.device)
        out = torch.zeros_like(x)
        tb = t.reshape(-1).expand(x.shape[0])
        for i, c in enumerate(self.composition.classes):
            key = (c, x.shape[0])
            if key not in self._labels:
                self._labels[key] = torch.full((x.shape[0],), c, dtype=torch.long, device=x.device)
            j, k = self.model(x, tb, self._labels[key])
            out = out + self._coef[i] * pick(j, k)
        return out

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return self._per_class(x, t, lambda j, k: k - j)

    def data_anchor(self, x: Tensor, t: Tensor) -> Tensor:
        return self._per_class(x, t, lambda j, k: k)

    def noise_anchor(self, x: Tensor, t: Tensor) -> Tensor:
        return self._per_class(x, t, lambda j, k: j)


def bench_composition(n: int, size: int) -> tuple[Composition, str]:
    """The composition of ``n`` classes ``0..n-1`` benched, and its description: spatial
    soft masks for 2-4 classes (as in the paper's examples), uniform weights beyond."""
    if n == 1:
        return Composition.pure(0), "pure"
    if n in LAYOUTS:
        m = mask_lib.build(LAYOUTS[n], size, size)
        return Composition.build(list(range(n)), masks=m), f"spatial {LAYOUTS[n]}"
    return Composition.build(list(range(n)), weights=[1.0] * n), "weighted uniform"


# --- timing and probes ---------------------------------------------------------------------------

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


def peak_memory(device: str) -> tuple[float, str]:
    """(MiB, kind): CUDA peak allocated since the last reset, else the process's peak RSS."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda-allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process-rss-highwater"


def gpu_peak_tflops(device: str, precision: Precision) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in GPU_PEAK_TFLOPS.items():
        if key in name:
            return peaks.get(precision.value)
    return None


def max_rel_err(out: Tensor, ref: Tensor) -> float | None:
    """Max over images of ``||out - ref|| / ||ref||`` (None when ``out`` is not finite)."""
    if not bool(torch.isfinite(out).all()):
        return None
    d = (out.double() - ref.double()).flatten(1).norm(dim=1)
    return float((d / ref.double().flatten(1).norm(dim=1).clamp_min(1e-30)).max())


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({torch.get_num_threads()} threads)"


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else the platform's machine type."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --- the grid ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One point of the grid's shape axes."""

    batch: int
    classes: int
    steps: int
    solver: str

    def __str__(self) -> str:
        return f"B={self.batch} N={self.classes} {self.solver}-{self.steps}"


@dataclass
class _Context:
    grid: BenchGrid
    device: str
    model: GAF  # fp32 weights: the reference loop and the source of every torch engine
    models: dict[str, GAF] = field(default_factory=dict)  # by precision
    engines: dict[tuple[str, str], tuple[AnchorNetwork, str]] = field(default_factory=dict)
    probe_sessions: dict[Any, Any] = field(default_factory=dict)  # ONNX Runtime GEMM probes
    unusable: dict[tuple[str, str], str] = field(default_factory=dict)  # cell -> why not


def check_available(grid: BenchGrid, device: str) -> None:
    """Every requested backend and precision runs here, else one error listing what does."""
    from gaf_trt.engine.auto import register_optional_backends

    register_optional_backends()
    for b in grid.backends:
        name = "torch" if b in ("torch", "torch-compile") else b
        if name not in BACKENDS.names():
            raise ConfigError(f"backend {b!r} is not installed here; available: "
                              f"{', '.join(usable_backends())}")
        why = BACKENDS.get(name).available()
        if why is not None:
            raise ConfigError(f"backend {b!r} is not available here: {why}; available: "
                              f"{', '.join(usable_backends())}")
    row_pairs(grid, device)


def _engine_precision(grid: BenchGrid) -> str | None:
    if grid.engine is None:
        return None
    from gaf_trt.enginedir import read_manifest

    return str(read_manifest(grid.engine).get("precision", "fp32"))


def row_pairs(grid: BenchGrid, device: str
              ) -> tuple[list[tuple[str, Precision]], dict[tuple[str, str], str]]:
    """The ``(backend, precision)`` cells of the grid that can run here, and why each other
    cell cannot (keyed ``(backend, precision value)``). torch rows run the precisions torch
    runs natively here; ``ort`` / ``trt`` rows (and ``auto`` with ``--engine``) run the engine
    directory's precision. A cell that cannot run is skipped with its reason (``ort bf16`` on
    an fp32 engine directory); a grid in which no cell can run is an error."""
    built = _engine_precision(grid)
    on_dir = ("ort", "trt", "auto") if grid.engine is not None else ("ort", "trt")

    def why_not(b: str, p: Precision) -> str | None:
        if b in on_dir:
            return None if built == p.value else (
                f"engine directory {grid.engine} was exported at {built}; a {p.value} {b} row "
                f"needs an engine exported with --precision {p.value}")
        why = precision_support(device, p)
        return None if why is None else f"precision {p.value} on {device}: {why}"

    pairs, unusable = [], {}
    for b in grid.backends:
        for p in grid.precisions:
            why = why_not(b, p)
            if why is None:
                pairs.append((b, p))
            else:
                unusable[b, p.value] = why
    if not pairs:
        ok = [q.value for q in Precision if precision_support(device, q) is None]
        raise ConfigError(f"{next(iter(unusable.values()))}; available: {', '.join(ok)}"
                          + (f" (torch), {built} (--engine)" if built else ""))
    return pairs, unusable


def usable_backends() -> list[str]:
    """Bench backend names that can run here."""
    out = []
    for b in BENCH_BACKENDS:
        name = "torch" if b == "torch-compile" else b
        if name in BACKENDS.names() and BACKENDS.get(name).available() is None:
            out.append(b)
    return out


def _model_at(ctx: _Context, precision: Precision) -> GAF:
    if precision is Precision.FP32:
        return ctx.model
    if precision.value not in ctx.models:
        ctx.models[precision.value] = copy.deepcopy(ctx.model).to(precision.torch_dtype)
    return ctx.models[precision.value]


def _engine(ctx: _Context, backend: str, precision: Precision) -> tuple[AnchorNetwork, str]:
    """The engine of a row (built once per backend and precision) and its resolved name."""
    key = (backend, precision.value)
    if key in ctx.engines:
        return ctx.engines[key]
    g = ctx.grid
    name, options = backend, {}
    if backend == "auto":
        from gaf_trt.engine.auto import resolve_auto

        choice = resolve_auto(LoadRequest(g.engine or g.ckpt or "preset", device=ctx.device,
                                          precision=precision))
        name, options = choice.backend, dict(choice.options)
        resolved = choice.label
    else:
        if backend == "torch-compile":
            name, options = "torch", best_compile_options(ctx.device)
        resolved = backend
    if name == "torch":
        engine = engine_from_model(_model_at(ctx, precision), precision, options)
    else:
        engine = load_backend(name, LoadRequest(g.engine, device=ctx.device, precision=precision,
                                                options=options))
        built = getattr(engine, "manifest", {}).get("precision")
        if built is not None and built != precision.value:
            raise ConfigError(f"engine directory {g.engine} was exported at {built}; a "
                              f"{precision.value} {name} row needs an engine exported with "
                              f"--precision {precision.value}")
    ctx.engines[key] = (engine, resolved)
    return engine, resolved


def _runner(field_: Any, x: Tensor, case: Case, t_eps: float, graph: bool) -> Callable[[], Tensor]:
    """A no-argument call running the whole loop on ``x``; with ``graph`` the first call
    captures it (:class:`CapturedLoop`) and later calls replay."""
    kw = dict(steps=case.steps, solver=case.solver, t_eps=t_eps)
    loop: list[CapturedLoop] = []

    def run() -> Tensor:
        if not graph:
            with torch.no_grad():
                return integrate(field_, x, **kw)
        if not loop:
            loop.append(CapturedLoop(field_, x, **kw))
        return loop[0].run(x)[0]

    return run


@dataclass(frozen=True)
class _Row:
    backend: str
    precision: Precision
    mode: str
    resolved: str
    gemm_rows: int  # rows of the model's GEMMs per network call (ceiling probe shape)


@dataclass
class _Prepared:
    """A row after its first call and warm-up: the runner, output and set-up costs."""

    row: _Row
    run: Callable[[], Tensor]
    out: Tensor
    setup_s: float
    compile_s: float
    peak_mem: tuple[float, str]
    times: list[float] = field(default_factory=list)


def _prepare(ctx: _Context, row: _Row, run: Callable[[], Tensor],
             engine: AnchorNetwork | None) -> _Prepared:
    """First call (compile / capture happen here, timed as set-up), then the warm-up; peak
    memory covers both."""
    dev = ctx.device
    if dev.startswith("cuda"):
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    compiled_before = float(getattr(engine, "compile_seconds", 0.0))
    t0 = time.perf_counter()
    out = run()
    if dev.startswith("cuda"):
        torch.cuda.synchronize(dev)
    setup_s = time.perf_counter() - t0
    compile_s = float(getattr(engine, "compile_seconds", 0.0)) - compiled_before
    time_calls(run, dev, ctx.grid.warmup, 0)
    return _Prepared(row, run, out, setup_s, compile_s, peak_memory(dev))


def _achieved_gflops(ctx: _Context, case: Case, p: _Prepared) -> float:
    evals = case.steps * SOLVERS.get(case.solver).evals_per_step
    forwards = evals * case.batch * case.classes
    return 2.0 * macs_per_sample(ctx.model.config) * forwards / statistics.median(p.times) / 1e9


def _skipped(ctx: _Context, case: Case, comp: str, backend: str, precision: Precision,
             why: str) -> BenchRecord:
    """The record of a cell that cannot run here (zeros, ``skipped`` = the reason)."""
    return BenchRecord(
        backend=backend, precision=precision.value, mode="skipped", batch=case.batch,
        classes=case.classes, steps=case.steps, solver=case.solver, composition=comp,
        device=ctx.device, device_name=device_name(ctx.device), repeats=0, loop_ms=0.0,
        ms_per_image=0.0, ms_per_image_p90=0.0, ms_per_step=0.0, ms_per_step_p90=0.0,
        images_per_s=0.0, evals_per_s=0.0, gflops=0.0, ceiling_gflops=0.0,
        ceiling_fraction=0.0, mfu=None, peak_mem_mb=0.0, peak_mem_kind="",
        max_rel_err_vs_fp32=None, finite=False, speedup_vs_reference=0.0, setup_s=0.0,
        compile_s=0.0, resolved_backend=backend, skipped=why)


def _record(ctx: _Context, case: Case, comp: str, p: _Prepared, truth: Tensor | None,
            ref_ms: float | None, ceiling: tuple[float, str]) -> BenchRecord:
    """Summarise a prepared row's timed calls."""
    dev, cfg, row = ctx.device, ctx.model.config, p.row
    med, p90 = statistics.median(p.times), percentile(p.times, 90)
    evals = case.steps * SOLVERS.get(case.solver).evals_per_step
    forwards = evals * case.batch * case.classes
    gflops = 2.0 * macs_per_sample(cfg) * forwards / med / 1e9
    peak = gpu_peak_tflops(dev, row.precision)
    err = 0.0 if truth is None else max_rel_err(p.out, truth)
    ceiling, source = ceiling
    return BenchRecord(
        backend=row.backend, precision=row.precision.value, mode=row.mode, batch=case.batch,
        classes=case.classes, steps=case.steps, solver=case.solver, composition=comp, device=dev,
        device_name=device_name(dev), repeats=len(p.times), loop_ms=med * 1e3,
        ms_per_image=med * 1e3 / case.batch, ms_per_image_p90=p90 * 1e3 / case.batch,
        ms_per_step=med * 1e3 / case.steps, ms_per_step_p90=p90 * 1e3 / case.steps,
        images_per_s=case.batch / med, evals_per_s=forwards / med, gflops=gflops,
        ceiling_gflops=ceiling, ceiling_fraction=gflops / ceiling if ceiling else 0.0,
        mfu=None if peak is None else gflops / (peak * 1e3), peak_mem_mb=p.peak_mem[0],
        peak_mem_kind=p.peak_mem[1], max_rel_err_vs_fp32=err, finite=err is not None,
        speedup_vs_reference=1.0 if ref_ms is None else ref_ms / (med * 1e3),
        setup_s=p.setup_s, compile_s=p.compile_s, resolved_backend=row.resolved,
        ceiling_source=source)


def bench_case(ctx: _Context, case: Case,
               progress: Callable[[str], None] = lambda s: None) -> list[BenchRecord]:
    """The reference row and every backend x precision row of one case. Timed repeats are
    interleaved across rows (round-robin), so a load change on a shared machine hits every
    row alike and the ratios stay fair."""
    cfg, dev = ctx.model.config, ctx.device
    comp, desc = bench_composition(case.classes, cfg.input_size)
    gen = torch.Generator().manual_seed(ctx.grid.seed)
    x = torch.randn(case.batch, *cfg.sample_shape, generator=gen).to(dev)
    tokens = cfg.num_tokens
    progress(f"{case}: reference loop")
    ref_row = _Row("reference", Precision.FP32, "eager", "reference", case.batch * tokens)
    rows = [_prepare(ctx, ref_row, _runner(ReferenceField(ctx.model, comp), x, case,
                                           cfg.t_eps, graph=False), None)]
    skipped: list[BenchRecord] = []
    for backend in ctx.grid.backends:
        for precision in ctx.grid.precisions:
            progress(f"{case}: {backend} {precision.value}")
            why = ctx.unusable.get((backend, precision.value))
            if why is None:
                try:
                    engine, resolved = _engine(ctx, backend, precision)
                except EngineDirError:  # a broken directory is bad input, never a skipped cell
                    raise
                except GAFError as err:  # this cell cannot run here: say why, run the rest
                    why = ctx.unusable[backend, precision.value] = str(err)
            if why is not None:
                progress(f"{case}: {backend} {precision.value} skipped: {why}")
                skipped.append(_skipped(ctx, case, desc, backend, precision, why))
                continue
            graph = (dev.startswith("cuda") and ctx.grid.cuda_graph
                     and resolved in GRAPH_BACKENDS)
            row = _Row(backend, precision, "graph" if graph else "eager", resolved,
                       case.classes * case.batch * tokens)
            run = _runner(ComposedField(engine, comp), x, case, cfg.t_eps, graph)
            rows.append(_prepare(ctx, row, run, engine))
    progress(f"{case}: {ctx.grid.repeats} timed rounds over {len(rows)} rows")
    probes: dict[tuple[Precision, int], dict[str, float]] = {
        (_probe_precision(p.row.precision, dev), p.row.gemm_rows): {} for p in rows}
    inner = int(cfg.hidden_size * cfg.mlp_ratio)
    for _ in range(ctx.grid.repeats):  # rows and ceiling probes share every round's load
        for p in rows:
            p.times += time_calls(p.run, dev, 0, 1)
        for prec, m in probes:
            for name, gf in gemm_probes(dev, prec, m, cfg.hidden_size, inner,
                                        ctx.probe_sessions).items():
                probes[prec, m][name] = max(probes[prec, m].get(name, 0.0), gf)
    ceilings = assign_ceilings([(p.row.resolved, _probe_precision(p.row.precision, dev),
                                 p.row.gemm_rows,
                                 _achieved_gflops(ctx, case, p)) for p in rows], probes)
    ref = _record(ctx, case, desc, rows[0], None, None, ceilings[0])
    return [ref] + [_record(ctx, case, desc, p, rows[0].out, ref.loop_ms, c)
                    for p, c in zip(rows[1:], ceilings[1:], strict=True)] + skipped


def _probe_precision(precision: Precision, device: str) -> Precision:
    """The GEMM ceiling a row is compared to: int8 rows against the integer GEMMs (ONNX
    Runtime's MatMulInteger on the CPU, the datasheet peak on CUDA); fp8 rows, which run
    dequantised on the CPU, against the fp32 ceiling there and the fp8 peak on CUDA."""
    if precision is Precision.FP8 and not device.startswith("cuda"):
        return Precision.FP32
    return precision


def load_fp32_model(grid: BenchGrid, device: str) -> GAF:
    """The fp32 model the reference loop runs: the checkpoint, the PyTorch weights stored in
    the engine directory, or a random-weight preset."""
    if grid.ckpt is not None:
        return load_model(grid.ckpt, device=device)
    if grid.engine is not None:  # the whole directory verified before any work
        from gaf_trt.engine.loader import engine_weights
        from gaf_trt.enginedir import read_manifest, verify_files

        man = read_manifest(grid.engine)
        verify_files(grid.engine, man)
        return load_model(str(engine_weights(grid.engine, verify=False, man=man)), device=device)
    return preset_model(grid.preset, grid.latent, grid.channels, grid.num_classes, grid.seed,
                        device)


def run_bench(grid: BenchGrid,
              progress: Callable[[str], None] = lambda s: None) -> list[BenchRecord]:
    """Measure the whole grid; the records of each case start with its reference row."""
    grid.validate()
    device = resolve_device(grid.device)
    check_available(grid, device)
    model = load_fp32_model(grid, device)
    too_many = [c for c in grid.classes if c > model.config.num_classes]
    if too_many:
        raise ConfigError(f"--classes {too_many[0]} exceeds the model's "
                          f"{model.config.num_classes} classes")
    ctx = _Context(grid, device, model, unusable=row_pairs(grid, device)[1])
    records: list[BenchRecord] = []
    for batch in grid.batches:
        for classes in grid.classes:
            for steps in grid.steps:
                for solver in grid.solvers:
                    case = bench_case(ctx, Case(batch, classes, steps, solver), progress)
                    _record_cpu_choice(ctx, case, progress)
                    records += case
    return records


def _record_cpu_choice(ctx: _Context, records: list[BenchRecord],
                       progress: Callable[[str], None]) -> None:
    """On the CPU with an engine directory: the faster of its torch and ort rows, per
    precision, becomes what ``auto`` picks for engine directories on this CPU
    (:func:`gaf_trt.engine.auto.record_measured`)."""
    if ctx.device != "cpu" or ctx.grid.engine is None:
        return
    from gaf_trt.engine.auto import record_measured

    for prec in {r.precision for r in records}:
        ms = {r.backend: r.loop_ms for r in records
              if r.precision == prec and not r.skipped and r.backend != "reference"}
        best = record_measured(prec, ms, ctx.grid.engine)
        if best is not None:
            progress(f"auto on this CPU at {prec}: {best} (measured fastest)")
