"""The ``gaf-trt sample`` job: pure classes, compositions, strips, summary, GIFs, run.json.

Everything is validated before anything is written: a bad class, weight count, mask,
output folder or checkpoint raises a :class:`~gaf_trt.errors.GAFError`. The files are
written into a staging folder beside ``--out`` and moved in at the end, ``run.json`` last
(:class:`~gaf_trt.io.files.OutputDir`), so the folder never mixes two runs; a lock makes a
concurrent run into the same folder fail at once.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from gaf_trt.compose import masks as mask_lib
from gaf_trt.compose.cache import check_cache_solver, check_split, parse_cache
from gaf_trt.compose.spec import CLI, CompositionSpec
from gaf_trt.compose.solvers import SOLVERS, check_steps, check_t_eps
from gaf_trt.errors import ConfigError
from gaf_trt.io.files import OutputDir, check_output_dir, write_json
from gaf_trt.pipeline.generation import MAX_SEED, ProgressFactory, SamplePlan, generate
from gaf_trt.pipeline.sample_writer import SampleWriter, run_record
from gaf_trt.pipeline.source import ModelSource, flat_args, load_decoder, load_source
from gaf_trt.records import SAMPLE

log = logging.getLogger(__name__)

MAX_BATCH = 4096  # samples per composition (each gets its own strip PNG)
DEFAULT_CHUNK = 256  # samples per solver loop; larger batches run in chunks
DEFAULT_MAX_RUNS = 24  # compositions per job (--permute with 4 classes = 24)


@dataclass
class SampleConfig:
    """Arguments of one sampling job (serialised into ``run.json``)."""

    classes: list[str]
    out: str = "samples"
    weights: list[float] | None = None
    alpha: float | None = None
    mask_type: str | None = None
    mask_img: str | None = None
    regions: list[str] | None = None
    sigma: float = mask_lib.DEFAULT_SIGMA
    steps: int = 20
    solver: str = "euler"
    cache: str = "off"  # feature-cache policy (gaf_trt.compose.cache)
    seed: int = 0
    permute: bool = False
    gif: bool = False
    skip: bool = False
    batch: int = 4
    chunk: int = DEFAULT_CHUNK
    max_runs: int = DEFAULT_MAX_RUNS
    t_eps: float | None = None
    model: ModelSource = field(default_factory=ModelSource)  # backend options in its options

    def to_dict(self) -> dict[str, Any]:
        """The record's ``args`` (the model source in its flat keys)."""
        return flat_args(self)

@dataclass
class SampleResult:
    """What a job produced: files written, timings in seconds, and the final states of the
    samples ``summary.png`` shows (the whole batch was streamed to disk chunk by chunk)."""

    out_dir: Path
    files: list[Path]
    timings: dict[str, float]
    pure: dict[int, Tensor] = field(default_factory=dict)
    mixes: dict[tuple[int, ...], Tensor] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)



def composition_spec(cfg: SampleConfig) -> CompositionSpec:
    """The composition of ``cfg`` (``--classes --weight --alpha --mask-type --mask-img
    --regions --sigma``), validated by the one composition parser."""
    return CompositionSpec.validate(
        {"classes": cfg.classes, "weights": cfg.weights, "alpha": cfg.alpha,
         "mask_type": cfg.mask_type, "mask_image": cfg.mask_img, "regions": cfg.regions,
         "sigma": cfg.sigma}, source=CLI)


def _check_bounds(cfg: SampleConfig) -> CompositionSpec:
    """Every option with a bound, checked before any work; returns the composition."""
    spec = composition_spec(cfg)
    SOLVERS.get(cfg.solver)
    check_cache_solver(cfg.cache, cfg.solver)
    cfg.model.check()
    check_steps(cfg.steps)
    if cfg.t_eps is not None:
        check_t_eps(cfg.t_eps)
    for name, value, lo, hi in (("--batch", cfg.batch, 1, MAX_BATCH),
                                ("--seed", cfg.seed, 0, MAX_SEED),
                                ("--chunk", cfg.chunk, 1, MAX_BATCH),
                                ("--max-runs", cfg.max_runs, 1, 100_000)):
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
    runs = math.factorial(len(cfg.classes)) if cfg.permute else 1
    if runs > cfg.max_runs:
        raise ConfigError(f"--permute with {len(cfg.classes)} classes is {runs:,} compositions; "
                          f"the limit is --max-runs {cfg.max_runs} (raise it to run them all)")
    if cfg.skip and not spec.composing:  # several classes, no weighting: the pure rows only
        raise ConfigError("--skip without a composition generates nothing; drop --skip or "
                          "give a composition (--weight, --alpha, --mask-type, --mask-img or "
                          "--regions)")
    check_output_dir(cfg.out, command=SAMPLE.command)
    return spec


def prepare_sample(cfg: SampleConfig) -> SamplePlan:
    """Validate every option and load the model; raises before anything is written."""
    t0 = time.perf_counter()
    spec = _check_bounds(cfg)
    loaded = load_source(cfg.model, decoder=False)
    network, config, device = loaded.network, loaded.config, loaded.device
    if parse_cache(cfg.cache).active:
        check_split(network)
    built = spec.build(config)
    decoder = load_decoder(loaded.source, config, device)
    return SamplePlan(network, config, built.classes, built.composition, built.masks, decoder,
                      device, time.perf_counter() - t0)


def run_sample(cfg: SampleConfig, progress: ProgressFactory | None = None,
               plan: SamplePlan | None = None) -> SampleResult:
    """Validate, load, generate and write every output of one sampling job (``plan`` from
    :func:`prepare_sample` when the caller validated first). Each chunk's pictures are
    written into the staging folder as soon as it is integrated, then dropped; the result
    keeps the samples ``summary.png`` shows (the first :data:`SUMMARY_COLUMNS`)."""
    plan = plan if plan is not None else prepare_sample(cfg)
    with OutputDir(cfg.out, record=SAMPLE.record) as od:
        writer = SampleWriter(od.staging, cfg, plan)
        gen = generate(cfg, plan, progress, sink=writer.chunk)
        names = writer.finish(gen)
        record = run_record(cfg, plan, gen.timings, [*names, SAMPLE.record])
        write_json(od.staging / SAMPLE.record, record)
        files = od.commit()
    return SampleResult(od.out, files, gen.timings, gen.pure, gen.mixes, record)
