"""Measuring a bench grid: per case the reference row and every backend x precision row,
timed in interleaved rounds with the ceiling probes, then summarised into records."""

from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from gaf_trt.compose.cache import CachedNetwork, check_cache_solver, parse_cache, reset_cache
from gaf_trt.compose.capture import CapturedLoop
from gaf_trt.compose.composition import ComposedField
from gaf_trt.compose.solvers import SOLVERS, integrate
from gaf_trt.device import device_name, gpu_peak_tflops, peak_memory, resolve_device
from gaf_trt.engine.base import AnchorNetwork
from gaf_trt.engine.torch_backend import best_compile_options, engine_from_model
from gaf_trt.enginedir import EngineDirError
from gaf_trt.errors import ConfigError, GAFError
from gaf_trt.model.flops import macs_per_sample
from gaf_trt.model.gaf import GAF
from gaf_trt.pipeline.bench.grid import (
    BenchGrid,
    BenchRecord,
    Case,
    check_available,
    row_pairs,
)
from gaf_trt.pipeline.bench.load import LoadReader, LoadSpan, read_load
from gaf_trt.pipeline.bench.probes import (
    assign_ceilings,
    gemm_probes,
    percentile,
    probe_precision,
    time_calls,
)
from gaf_trt.pipeline.bench.reference import (
    ReferenceField,
    bench_composition,
    load_fp32_model,
    max_rel_err,
)
from gaf_trt.pipeline.source import ModelSource, load_source
from gaf_trt.precision import Precision

log = logging.getLogger(__name__)

GRAPH_BACKENDS = ("torch", "torch-compile", "trt")


@dataclass
class _Context:
    grid: BenchGrid
    device: str
    model: GAF  # fp32 weights: the reference loop and the source of every torch engine
    models: dict[str, GAF] = field(default_factory=dict)  # by precision
    engines: dict[tuple[str, str], tuple[AnchorNetwork, str]] = field(default_factory=dict)
    probe_sessions: dict[Any, Any] = field(default_factory=dict)  # ONNX Runtime GEMM probes
    unusable: dict[tuple[str, str], str] = field(default_factory=dict)  # cell -> why not


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

        source = ModelSource(g.engine or g.ckpt or "preset", backend="auto",
                             device=ctx.device, precision=precision)
        choice = resolve_auto(source.load_request(ctx.device))
        name, options = choice.backend, dict(choice.options)
        resolved = choice.label
    else:
        if backend == "torch-compile":
            name, options = "torch", best_compile_options(ctx.device)
        resolved = backend
    if name == "torch":
        engine = engine_from_model(_model_at(ctx, precision), precision, options)
    else:
        source = ModelSource(g.engine, backend=name, device=ctx.device, precision=precision,
                             options=options)
        engine = load_source(source, decoder=False).network
        # the precision it runs at (openvino: bf16 on an fp32 directory, its bf16 hint)
        built = getattr(engine, "precision", None) if hasattr(engine, "manifest") else None
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
            reset_cache(getattr(field_, "network", None))  # each loop from an empty cache
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
    cache: str = "off"
    network: Any = None  # the CachedNetwork of a cached row (its share of reused trunks)


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
             why: str, cache: str = "off") -> BenchRecord:
    """The record of a cell that cannot run here (zeros, ``skipped`` = the reason)."""
    return BenchRecord(
        backend=backend, precision=precision.value, mode="skipped", batch=case.batch,
        classes=case.classes, steps=case.steps, solver=case.solver, composition=comp,
        device=ctx.device, device_name=device_name(ctx.device), repeats=0, loop_ms=0.0,
        ms_per_image=0.0, ms_per_image_p90=0.0, ms_per_step=0.0, ms_per_step_p90=0.0,
        images_per_s=0.0, evals_per_s=0.0, gflops=0.0, ceiling_gflops=0.0,
        ceiling_fraction=0.0, mfu=None, peak_mem_mb=0.0, peak_mem_kind="",
        max_rel_err_vs_fp32=None, finite=False, speedup_vs_reference=0.0, setup_s=0.0,
        compile_s=0.0, resolved_backend=backend, skipped=why, cache=cache)


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
        ceiling_source=source, cache=row.cache,
        trunk_saved=round(row.network.saved, 4) if row.network is not None else 0.0)


def _cell_rows(ctx: _Context, case: Case, comp: Any, desc: str, x: Tensor, backend: str,
               precision: Precision, progress: Callable[[str], None]
               ) -> tuple[list[_Prepared], list[BenchRecord]]:
    """The rows of one ``(backend, precision)`` cell, one per cache policy of the grid
    (prepared), and the records of those that cannot run here (with the reason)."""
    cfg, dev = ctx.model.config, ctx.device
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
        return [], [_skipped(ctx, case, desc, backend, precision, why, parse_cache(c).text)
                    for c in ctx.grid.caches]
    rows, skipped = [], []
    for text in ctx.grid.caches:
        policy = parse_cache(text)
        try:
            check_cache_solver(policy, case.solver)
            net = CachedNetwork(engine, policy) if policy.active else engine
        except GAFError as err:  # refused with this solver, or no split graphs
            skipped.append(_skipped(ctx, case, desc, backend, precision, str(err), policy.text))
            continue
        graph = (dev.startswith("cuda") and ctx.grid.cuda_graph and resolved in GRAPH_BACKENDS
                 and policy.capturable)
        row = _Row(backend, precision, "graph" if graph else "eager", resolved,
                   case.classes * case.batch * cfg.num_tokens, policy.text,
                   net if policy.active else None)
        run = _runner(ComposedField(net, comp), x, case, cfg.t_eps, graph)
        rows.append(_prepare(ctx, row, run, engine))
    return rows, skipped


def bench_case(ctx: _Context, case: Case,
               progress: Callable[[str], None] = lambda s: None) -> list[BenchRecord]:
    """The reference row and every backend x precision x cache row of one case. Timed
    repeats are interleaved across rows (round-robin), so a load change on a shared machine
    hits every row alike and the ratios stay fair."""
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
            more, not_run = _cell_rows(ctx, case, comp, desc, x, backend, precision, progress)
            rows += more
            skipped += not_run
    progress(f"{case}: {ctx.grid.repeats} timed rounds over {len(rows)} rows")
    probes: dict[tuple[Precision, int], dict[str, float]] = {
        (probe_precision(p.row.precision, dev), p.row.gemm_rows): {} for p in rows}
    inner = int(cfg.hidden_size * cfg.mlp_ratio)
    for _ in range(ctx.grid.repeats):  # rows and ceiling probes share every round's load
        for p in rows:
            p.times += time_calls(p.run, dev, 0, 1)
        for prec, m in probes:
            for name, gf in gemm_probes(dev, prec, m, cfg.hidden_size, inner,
                                        ctx.probe_sessions).items():
                probes[prec, m][name] = max(probes[prec, m].get(name, 0.0), gf)
    ceilings = assign_ceilings([(p.row.resolved, probe_precision(p.row.precision, dev),
                                 p.row.gemm_rows,
                                 _achieved_gflops(ctx, case, p)) for p in rows], probes)
    ref = _record(ctx, case, desc, rows[0], None, None, ceilings[0])
    return _vs_uncached([ref] + [_record(ctx, case, desc, p, rows[0].out, ref.loop_ms, c)
                                 for p, c in zip(rows[1:], ceilings[1:], strict=True)]) + skipped


def _vs_uncached(records: list[BenchRecord]) -> list[BenchRecord]:
    """Each cached row's speed-up over the ``off`` row of its backend and precision (when
    the grid measured one); ``off`` rows get 1.0."""
    off = {(r.backend, r.precision): r.loop_ms for r in records
           if r.cache == "off" and r.backend != "reference"}
    for r in records:
        base = off.get((r.backend, r.precision))
        if r.backend != "reference" and base is not None and r.loop_ms > 0:
            r.speedup_vs_uncached = base / r.loop_ms
    return records


def run_bench(grid: BenchGrid, progress: Callable[[str], None] = lambda s: None,
              load: LoadReader = read_load) -> list[BenchRecord]:
    """Measure the whole grid; the records of each case start with its reference row. Each
    record carries the machine's load before and after the run (``load`` reads it:
    :mod:`~gaf_trt.pipeline.bench.load`) and its label."""
    grid.validate()
    before = load()
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
    own = torch.get_num_threads() if device == "cpu" else 1
    span = LoadSpan(before, load(), own)
    for r in records:
        r.load_before, r.load_after, r.load_label = span.before, span.after, span.label
    return records


def _record_cpu_choice(ctx: _Context, records: list[BenchRecord],
                       progress: Callable[[str], None]) -> None:
    """On the CPU with an engine directory: the fastest of its torch, ort and openvino rows, per
    precision, becomes what ``auto`` picks for engine directories on this CPU
    (:func:`gaf_trt.engine.auto.record_measured`)."""
    if ctx.device != "cpu" or ctx.grid.engine is None:
        return
    from gaf_trt.engine.auto import record_measured

    for prec in {r.precision for r in records}:
        ms = {r.backend: r.loop_ms for r in records if r.precision == prec and not r.skipped
              and r.backend != "reference" and r.cache == "off"}
        best = record_measured(prec, ms, ctx.grid.engine)
        if best is not None:
            progress(f"auto on this CPU at {prec}: {best} (measured fastest)")
