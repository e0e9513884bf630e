"""``gaf-trt bench``: latency and throughput of composed sampling loops.

Measures the whole solver loop (``steps`` evaluations of an ``N``-class composition on a
batch of ``B``) eagerly and, on CUDA, replayed from one captured CUDA graph; ratios are
taken within one run. Models come from a checkpoint or a DiT size preset with random
weights (``XL/2`` on a 32x32x4 latent, as DiT-XL/2 at 256 px).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from gaf_trt.compose.composition import ComposedField, Composition
from gaf_trt.compose.solvers import SOLVERS, check_steps, integrate
from gaf_trt.engine.base import LoadRequest, Precision, load_backend, resolve_device
from gaf_trt.engine.torch_backend import TorchEngine
from gaf_trt.errors import ConfigError
from gaf_trt.model.config import DIT_PRESETS, preset_config
from gaf_trt.model.gaf import GAF


@dataclass
class BenchConfig:
    ckpt: str | None = None
    preset: str | None = None  # e.g. "XL/2"
    input_size: int = 32
    in_channels: int = 4
    num_classes: int = 1000
    classes: int = 2
    batch: int = 4
    steps: int = 20
    solver: str = "euler"
    device: str = "auto"
    precision: Precision = Precision.FP32
    warmup: int = 1
    repeats: int = 5
    cuda_graph: bool = True
    seed: int = 0


@dataclass
class BenchRow:
    mode: str
    loop_ms: float  # median wall time of one whole solver loop
    step_ms: float
    images_per_s: float
    repeats: int


@dataclass
class BenchResult:
    model: dict[str, Any]
    device: str
    device_name: str
    precision: str
    classes: int
    batch: int
    steps: int
    solver: str
    gmac_per_eval: float
    rows: list[BenchRow] = field(default_factory=list)
    speedup_graph_vs_eager: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_preset(name: str) -> tuple[str, int]:
    size, _, patch = name.upper().partition("/")
    if size not in DIT_PRESETS or patch not in ("2", "4", "8"):
        raise ConfigError(f"unknown preset {name!r}; valid: "
                          + ", ".join(f"{s}/{p}" for s in DIT_PRESETS for p in (2, 4, 8)))
    return size, int(patch)


def _network(cfg: BenchConfig, device: str) -> TorchEngine:
    if (cfg.ckpt is None) == (cfg.preset is None):
        raise ConfigError("give exactly one of --ckpt or --preset")
    if cfg.ckpt is not None:
        return load_backend("torch", LoadRequest(cfg.ckpt, device=device, precision=cfg.precision))
    size, patch = parse_preset(cfg.preset)
    mcfg = preset_config(size, patch_size=patch, input_size=cfg.input_size,
                         in_channels=cfg.in_channels, num_classes=cfg.num_classes)
    torch.manual_seed(cfg.seed)
    with torch.device(device):
        model = GAF(mcfg)
        model.initialize_weights()  # finite activations at any depth and precision
    return TorchEngine(model.to(cfg.precision.torch_dtype).eval(), cfg.precision)


def macs_per_sample(model: GAF) -> float:
    """Multiply-accumulates of one forward of one sample (linears, conv, attention)."""
    c = model.config
    d, n, depth = c.hidden_size, c.num_tokens, c.depth
    inner = int(d * c.mlp_ratio)
    per_block = n * (3 * d * d + d * d + 2 * d * inner) + 2 * n * n * d + 6 * d * d
    heads = n * d * c.patch_dim * 2 + 2 * d * d
    embed = n * d * c.patch_dim + 256 * d + d * d
    return depth * per_block + heads + embed


def _time_loop(fn, device: str, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return out


def run_bench(cfg: BenchConfig) -> BenchResult:
    SOLVERS.get(cfg.solver)
    check_steps(cfg.steps)
    for name in ("classes", "batch", "repeats"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    device = resolve_device(cfg.device)
    engine = _network(cfg, device)
    mcfg = engine.config
    if cfg.classes > mcfg.num_classes:
        raise ConfigError(f"--classes {cfg.classes} exceeds the model's {mcfg.num_classes} classes")
    weights = [1.0] * cfg.classes
    comp = (Composition.pure(0) if cfg.classes == 1
            else Composition.build(list(range(cfg.classes)), weights=weights))
    field_ = ComposedField(engine, comp)
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(cfg.batch, *mcfg.sample_shape, generator=g).to(device)
    kw = dict(steps=cfg.steps, solver=cfg.solver, t_eps=mcfg.t_eps)
    evals = cfg.steps * SOLVERS.get(cfg.solver).evals_per_step

    def eager() -> None:
        with torch.no_grad():
            integrate(field_, x, **kw)

    for _ in range(cfg.warmup):
        eager()
    result = BenchResult(
        model=mcfg.to_dict(), device=device,
        device_name=torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
        precision=cfg.precision.value, classes=cfg.classes, batch=cfg.batch, steps=cfg.steps,
        solver=cfg.solver,
        gmac_per_eval=macs_per_sample(engine.model) * cfg.classes * cfg.batch / 1e9)
    modes = [("eager", eager)]
    if device.startswith("cuda") and cfg.cuda_graph:
        from gaf_trt.compose.capture import CapturedLoop

        loop = CapturedLoop(field_, x, **kw)
        modes.append(("cuda-graph", lambda: loop(x)))
        for _ in range(cfg.warmup):
            loop(x)
    for name, fn in modes:
        times = _time_loop(fn, device, cfg.repeats)
        med = statistics.median(times)
        result.rows.append(BenchRow(name, med * 1e3, med * 1e3 / evals, cfg.batch / med,
                                    cfg.repeats))
    if len(result.rows) == 2:
        result.speedup_graph_vs_eager = result.rows[0].loop_ms / result.rows[1].loop_ms
    return result
