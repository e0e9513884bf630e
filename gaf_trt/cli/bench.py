"""``gaf-trt bench``: composed sampling loops on every backend, against the reference loop.

Grid flags take several values (``--batch 1 8 32 --precision fp32 bf16``); register with
``app.command(cls=BenchCommand)(bench)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gaf_trt.cli.multivalue import MultiValueCommand
from gaf_trt.cli.options import DeviceOpt
from gaf_trt.compose.cache import cache_forms
from gaf_trt.compose.solvers import SOLVERS
from gaf_trt.precision import Precision

GRID_FLAGS = frozenset({"--backend", "--precision", "--batch", "-b", "--classes", "--steps",
                        "--solver", "--cache"})


class BenchCommand(MultiValueCommand):
    """``bench``'s grid flags accept several values after one flag."""

    multi_value = GRID_FLAGS


def bench(
    ckpt: Optional[str] = typer.Option(None, "--ckpt", help="Checkpoint (or 'digits') to run."),
    preset: Optional[str] = typer.Option(None, "--preset", help="DiT size with random weights: "
                                         "S/2, B/2, L/2, XL/2 (patch 4 and 8 too)."),
    latent: int = typer.Option(32, "--latent", help="Preset latent size (16, 32, 64)."),
    engine: Optional[str] = typer.Option(None, "--engine", help="Engine directory (gaf-trt "
                                         "export) for the ort / openvino / trt rows; "
                                         "needs --ckpt."),
    backend: list[str] = typer.Option(["torch"], "--backend", help="torch, torch-compile, ort, "
                                      "openvino, trt, auto; several allowed. The reference "
                                      "loop is always measured."),
    precision: list[Precision] = typer.Option([Precision.FP32], "--precision",
                                              case_sensitive=False, help="Network "
                                              "precisions (fp32, fp16, bf16, int8, fp8); "
                                              "several allowed."),
    batch: list[int] = typer.Option([4], "--batch", "-b", help="Samples per loop (B)."),
    classes: list[int] = typer.Option([2], "--classes", help="Classes composed (N): 2-4 "
                                      "use spatial soft masks, more use uniform weights."),
    steps: list[int] = typer.Option([20], "--steps", help="Solver steps per loop; several "
                                    "allowed."),
    solver: list[str] = typer.Option(["euler"], "--solver",
                                     help=f"One of: {', '.join(SOLVERS.names())}."),
    cache: list[str] = typer.Option(["off"], "--cache", metavar="POLICY",
                                    help=f"Feature-cache policies, several allowed: "
                                    f"{', '.join(cache_forms())} (a grid axis; each row's "
                                    "speed-up over the off row of its backend in the "
                                    "table's 'x off')."),
    device: DeviceOpt = "auto",
    repeats: int = typer.Option(5, "--repeats", help="Timed loops per row (1-1000)."),
    warmup: int = typer.Option(1, "--warmup", help="Untimed loops per row after the first "
                               "call (>= 0)."),
    no_cuda_graph: bool = typer.Option(False, "--no-cuda-graph", help="Run CUDA rows eagerly "
                                       "instead of replaying one captured graph per loop."),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise (and of a preset's random "
                             "weights)."),
    as_json: Optional[Path] = typer.Option(None, "--json", help="Write the records here."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG of images/s by "
                                        "backend and batch here."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
) -> None:
    """Time whole composed sampling loops per backend, precision and batch.

    Speeds are ratios to the reference loop measured in the same run. Progress goes to
    stderr (cleared when the run fails; --quiet hides it); the table goes to stdout, sized to
    the terminal."""
    from rich.console import Console

    from gaf_trt.console.command import check_output_file
    from gaf_trt.console.progress import shown, step_progress
    from gaf_trt.pipeline.bench import BenchGrid, run_bench
    from gaf_trt.pipeline.bench.report import (
        grid_artifacts,
        plot_png,
        rich_table,
        write_records,
    )

    grid = BenchGrid(ckpt=ckpt, preset=preset, engine=engine, latent=latent,
                     backends=tuple(backend), precisions=tuple(precision),
                     batches=tuple(batch), classes=tuple(classes), steps=tuple(steps),
                     solvers=tuple(solver), caches=tuple(cache), device=device,
                     warmup=warmup, repeats=repeats, cuda_graph=not no_cuda_graph, seed=seed)
    grid.validate()  # before any model is built: bad input fails fast
    if as_json is not None:  # writable before the run, not after it
        check_output_file(as_json, "--json")
    if plot is not None:
        check_output_file(plot, "--plot")
    if quiet:
        records = run_bench(grid)
    else:
        progress, say = step_progress(progress_steps(grid))
        with shown(progress):
            records = run_bench(grid, progress=say)
    Console().print(rich_table(records))
    if as_json is not None:
        write_records(as_json, records, grid_artifacts(grid.ckpt, grid.engine))
    if plot is not None:
        plot_png(plot, records)


def progress_steps(grid) -> int:
    """The progress messages :func:`~gaf_trt.pipeline.bench.run_bench` sends: per case, the
    reference loop, one per backend x precision, and the timed rounds."""
    cases = len(grid.batches) * len(grid.classes) * len(grid.steps) * len(grid.solvers)
    return cases * (2 + len(grid.backends) * len(grid.precisions))
