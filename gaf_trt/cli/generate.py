"""``gaf-trt generate``: a class-conditional dataset in deterministic, resumable shards."""

from __future__ import annotations

from typing import Optional

import typer

from gaf_trt.cli import options as mo
from gaf_trt.compose.solvers import SOLVERS


def generate(
    ckpt: mo.Artifact = mo.DEFAULT_ARTIFACT,
    classes: Optional[list[str]] = typer.Option(None, "--classes", "-c", help="'all' (default), "
                                                "or class ids / names: --classes 3 8"),
    per_class: Optional[int] = typer.Option(None, "--per-class", help="Samples per class (or "
                                            "per composition), class-major order."),
    num: Optional[int] = typer.Option(None, "--num", help="Samples in all; each one's class is "
                                      "drawn uniformly from the seed and its index."),
    compositions: Optional[str] = typer.Option(
        None, "--compositions", help="JSON file: a list of {classes, weights | alpha | "
        "mask_type | regions | mask_image, sigma} (as gaf-trt sample takes them; mask_image "
        "is a grayscale image's path relative to the file)."),
    solver: str = typer.Option("euler", "--solver", help=f"One of: {', '.join(SOLVERS.names())}."),
    steps: int = typer.Option(20, "--steps", help="Solver steps (1..10000)."),
    cache: mo.CacheOpt = "off",
    seed: int = typer.Option(0, "--seed", help="Sample i's noise and class depend only on "
                             "(seed, i)."),
    batch: int = typer.Option(64, "--batch", "-b", help="Samples per solver loop, aligned to "
                              "sample indices (part of the dataset's identity)."),
    shard_size: Optional[int] = typer.Option(None, "--shard-size", help="Samples per shard (a "
                                             "multiple of --batch; default: the smallest one "
                                             ">= 1024): the unit of work, resume and retry."),
    fmt: str = typer.Option("npz", "--format", help="npz (samples.npz: arr_0 uint8 NxHxWx3 + "
                            "labels), png (png/NNN/IIIIII.png + labels.txt) or both."),
    backend: mo.BackendOpt = None,
    device: mo.DeviceOpt = "auto",
    precision: mo.PrecisionOpt = None,
    vae: mo.VaeOpt = None,
    heads: mo.HeadsOpt = None,
    no_ema: mo.NoEmaOpt = False,
    trust_pickle: mo.TrustPickleOpt = False,
    threads: mo.ThreadsOpt = 0,
    runner: str = typer.Option("local", "--runner", help="local (in-process), torchrun (start "
                               "with torchrun --nproc_per_node K -m gaf_trt.cli generate ...) "
                               "or ray."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Run on Ray: 'auto' starts a local "
                                      "cluster, HOST:PORT joins one (implies --runner ray)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Ray actors (default: one "
                                          "per GPU, else 2 on CPU)."),
    out: str = typer.Option("dataset", "--out", "-o", help="Dataset folder (dataset.json, "
                            "shards; a rerun resumes it)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
) -> None:
    """Generate a dataset for evaluation: deterministic shards, resumable, the same bytes on
    any runner and any number of workers."""
    from gaf_trt.generate import GenerateConfig, Hooks, RunOptions, run_generate

    model = mo.model_source_from_cli(ckpt, backend, device, precision, vae, heads, no_ema,
                                     trust_pickle, threads=threads)
    cfg = GenerateConfig(
        out=out, classes=list(classes) if classes else ["all"], per_class=per_class, num=num,
        compositions=compositions, solver=solver, cache=cache, steps=steps, seed=seed, batch=batch,
        shard_size=shard_size, format=fmt, model=model)

    def on_shard(done: int, total: int, samples: int) -> None:
        if not quiet:
            typer.echo(f"shard {done}/{total} done ({samples} samples)", err=True)

    if ray is not None:
        runner = "ray"
    opts = RunOptions(ray_address=ray or "auto", workers=workers, hooks=Hooks(on_shard=on_shard))
    result = run_generate(cfg, runner, opts)
    if result.files:  # torchrun: only rank 0 reports
        typer.echo(f"{result.num_samples} samples in {result.out} ({result.shards} shards, "
                   f"{result.resumed} resumed; {result.generated} generated in "
                   f"{result.seconds:.1f} s = {result.images_per_s:.1f} images/s, "
                   f"{result.images_per_s / max(result.workers, 1):.1f} per worker; "
                   f"{result.workers} worker(s), {result.runner}, "
                   f"{mo.backend_note(model.backend, result.backend)})")
