"""``gaf-trt bench``: latency and throughput of composed sampling loops."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from gaf_trt.compose.solvers import SOLVERS
from gaf_trt.engine.base import Precision


def bench(
    ckpt: Optional[str] = typer.Option(None, "--ckpt", help="Checkpoint to benchmark."),
    preset: Optional[str] = typer.Option(None, "--preset", help="DiT size with random weights, "
                                         "e.g. XL/2 (32x32x4 latent, 1000 classes)."),
    classes: int = typer.Option(2, "--classes", help="Classes composed per evaluation (N)."),
    batch: int = typer.Option(4, "--batch", "-b", help="Samples per loop (B)."),
    steps: int = typer.Option(20, "--steps"),
    solver: str = typer.Option("euler", "--solver", help=f"One of: {', '.join(SOLVERS.names())}."),
    device: str = typer.Option("auto", "--device"),
    precision: Precision = typer.Option(Precision.FP32, "--precision", case_sensitive=False),
    repeats: int = typer.Option(5, "--repeats", help="Timed loops per mode (median reported)."),
    warmup: int = typer.Option(1, "--warmup"),
    no_cuda_graph: bool = typer.Option(False, "--no-cuda-graph"),
    as_json: Optional[Path] = typer.Option(None, "--json", help="Also write the result here."),
) -> None:
    """Latency and throughput of whole composed sampling loops (eager vs CUDA graph)."""
    from gaf_trt.io.files import write_json
    from gaf_trt.pipeline.bench import BenchConfig, run_bench

    result = run_bench(BenchConfig(ckpt=ckpt, preset=preset, classes=classes, batch=batch,
                                   steps=steps, solver=solver, device=device, precision=precision,
                                   repeats=repeats, warmup=warmup, cuda_graph=not no_cuda_graph))
    m = result.model
    typer.echo(f"model D={m['hidden_size']} depth={m['depth']} patch={m['patch_size']} "
               f"input {m['in_channels']}x{m['input_size']}x{m['input_size']} on "
               f"{result.device_name} ({result.precision}); N={result.classes} B={result.batch} "
               f"{result.solver}-{result.steps}; {result.gmac_per_eval:.1f} GMAC per evaluation")
    typer.echo(f"{'mode':<12}{'loop ms':>12}{'step ms':>12}{'images/s':>12}")
    for row in result.rows:
        typer.echo(f"{row.mode:<12}{row.loop_ms:>12.2f}{row.step_ms:>12.3f}{row.images_per_s:>12.2f}")
    if result.speedup_graph_vs_eager is not None:
        typer.echo(f"cuda-graph / eager speed-up: {result.speedup_graph_vs_eager:.2f}x")
    if as_json is not None:
        write_json(as_json, result.to_dict())
