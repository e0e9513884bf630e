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

The package: :mod:`~gaf_trt.pipeline.bench.grid` (what to measure, what a row records),
:mod:`~gaf_trt.pipeline.bench.reference` (the reference loop and the benched compositions),
:mod:`~gaf_trt.pipeline.bench.probes` (timing and the GEMM ceilings),
:mod:`~gaf_trt.pipeline.bench.run` (the measurement) and
:mod:`~gaf_trt.pipeline.bench.report` (table, JSON, plot).
"""

from gaf_trt.pipeline.bench.grid import BenchGrid, BenchRecord
from gaf_trt.pipeline.bench.run import run_bench

__all__ = ["BenchGrid", "BenchRecord", "run_bench"]
