"""What ``gaf-trt bench`` measures (:class:`BenchGrid`, validated once), which of its
``(backend, precision)`` cells can run here, and what a measured row records
(:class:`BenchRecord`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from gaf_trt.compose.cache import parse_cache
from gaf_trt.compose.solvers import SOLVERS
from gaf_trt.engine.base import BACKENDS
from gaf_trt.engine.torch_backend import precision_support
from gaf_trt.errors import ConfigError
from gaf_trt.model.presets import parse_preset
from gaf_trt.precision import Precision

#: backends a grid can name (``reference`` is always added); torch-compile = torch + compile
BENCH_BACKENDS = ("torch", "torch-compile", "ort", "openvino", "trt", "auto")
#: backends that run an engine directory (``--engine DIR``)
DIR_BACKENDS = ("ort", "openvino", "trt")
#: inclusive bounds of the numeric options
LIMITS = {"batch": (1, 4096), "classes": (1, 64), "steps": (1, 1000), "repeats": (1, 1000),
          "warmup": (0, 100), "latent": (2, 256)}


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
    caches: tuple[str, ...] = ("off",)  # feature-cache policies (gaf_trt.compose.cache)
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
        if not self.caches:
            raise ConfigError("--cache needs at least one value")
        texts = [parse_cache(c).text for c in self.caches]
        if len(set(texts)) != len(texts):
            raise ConfigError(f"--cache lists a policy twice: {list(self.caches)}")
        for name, values in (("batch", self.batches), ("classes", self.classes),
                             ("steps", self.steps), ("repeats", (self.repeats,)),
                             ("warmup", (self.warmup,)), ("latent", (self.latent,))):
            lo, hi = LIMITS[name]
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                    raise ConfigError(f"--{name} must be an integer in [{lo}, {hi}], got {v!r}")
        needs_dir = [b for b in self.backends if b in DIR_BACKENDS]
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
    cache: str = "off"  # feature-cache policy of the row
    trunk_saved: float = 0.0  # share of network evaluations that reused the trunk's features
    speedup_vs_uncached: float | None = None  # the same backend and precision's off row / this
    load_before: float | None = None  # 1-minute load average when the run started
    load_after: float | None = None  # ... and when it ended
    load_label: str = ""  # quiet (load a→b) | busy (load a→b) | load unknown

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Case:
    """One point of the grid's shape axes."""

    batch: int
    classes: int
    steps: int
    solver: str

    def __str__(self) -> str:
        return f"B={self.batch} N={self.classes} {self.solver}-{self.steps}"


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
    runs natively here; ``ort`` / ``openvino`` / ``trt`` rows (and ``auto`` with ``--engine``) run
    the engine directory's precision (``openvino`` also bf16 on an fp32 one: its bf16 hint). A cell that cannot run is skipped with its reason (``ort bf16`` on
    an fp32 engine directory); a grid in which no cell can run is an error."""
    built = _engine_precision(grid)
    on_dir = (*DIR_BACKENDS, "auto") if grid.engine is not None else DIR_BACKENDS

    def why_not(b: str, p: Precision) -> str | None:
        if b == "openvino" and built == "fp32" and p is Precision.BF16:
            return None  # the fp32 graphs with OpenVINO's bf16 inference-precision hint
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

