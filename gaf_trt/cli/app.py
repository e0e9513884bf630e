"""The ``gaf-trt`` command line (Typer). Commands parse, build a config and call the library;
bad input ends with one line on stderr and exit code 2."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, TypeVar

import typer

from gaf_trt.cli.multivalue import MultiValueCommand, OneLineErrorGroup
from gaf_trt.compose import masks as mask_lib
from gaf_trt.compose.solvers import SOLVERS
from gaf_trt.engine.backends import BACKENDS, Precision
from gaf_trt.errors import GAFError

app = typer.Typer(cls=OneLineErrorGroup, add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Fast inference for Generative Anchored Fields (GAF).")

F = TypeVar("F", bound=Callable[..., Any])
EXIT_BAD_INPUT = 2


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def user_errors(fn: F) -> F:
    """Turn library input errors into one stderr line and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GAFError as err:
            raise fail(str(err)) from None
        except OSError as err:
            raise fail(f"{err.strerror or err}: {err.filename or ''}".rstrip(": "), 1) from None

    return wrapper  # type: ignore[return-value]


def _progress_factory():
    """A rich progress bar (on stderr) over solver steps, one task per generation."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=Console(stderr=True))

    def factory(label: str, total: int):
        task = progress.add_task(label, total=total)

        def step(k: int, n: int, _x: Any) -> None:
            progress.update(task, completed=k + 1, total=n)

        return step

    return progress, factory


def _choices(names: list[str]) -> str:
    return ", ".join(names)


@app.command(cls=MultiValueCommand)
@user_errors
def sample(
    classes: Optional[list[str]] = typer.Option(
        None, "--classes", "-c", help="Class indices or names; several after one flag: --classes 3 8"),
    ckpt: str = typer.Option("digits", "--ckpt", help="Checkpoint (.pt / .safetensors) or a bundled "
                             "model name (digits)."),
    vae: Optional[str] = typer.Option(None, "--vae", help="diffusers AutoencoderKL directory, for "
                                      "latent checkpoints."),
    weight: Optional[list[float]] = typer.Option(None, "--weight", "-w", help="One weight per class."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="Blend of 2 classes: a*v1 + (1-a)*v2."),
    mask_type: Optional[str] = typer.Option(None, "--mask-type", help="Spatial mask layout (see "
                                            "--list-masks)."),
    mask_img: Optional[Path] = typer.Option(None, "--mask-img", help="Grayscale mask image (custom)."),
    regions: Optional[list[str]] = typer.Option(None, "--regions", help="AFHQ face regions: ears eyes "
                                                "nose mouth."),
    sigma: float = typer.Option(mask_lib.DEFAULT_SIGMA, "--sigma", help="Mask softening (0 = hard)."),
    steps: int = typer.Option(20, "--steps", help="Solver steps."),
    solver: str = typer.Option("euler", "--solver", help=f"One of: {_choices(SOLVERS.names())}."),
    seed: int = typer.Option(0, "--seed", help="Noise seed (reproducible on one machine)."),
    permute: bool = typer.Option(False, "--permute", help="Also run every permutation of the classes."),
    gif: bool = typer.Option(False, "--gif", help="Save trajectory GIFs."),
    skip: bool = typer.Option(False, "--skip", help="Skip the pure-class images; compositions only."),
    batch: int = typer.Option(4, "--batch", "-b", help="Samples per composition."),
    backend: str = typer.Option("torch", "--backend", help=f"One of: {_choices(BACKENDS.names())}."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto."),
    precision: Precision = typer.Option(Precision.FP32, "--precision", case_sensitive=False),
    heads: Optional[int] = typer.Option(None, "--heads", help="Attention heads, when the checkpoint "
                                        "does not say."),
    no_ema: bool = typer.Option(False, "--no-ema", help="Use the raw model weights, not the EMA."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow arbitrary unpickling "
                                      "(only for checkpoints you trust)."),
    out: Path = typer.Option(Path("samples"), "--out", "-o", help="Output directory."),
    list_masks: bool = typer.Option(False, "--list-masks", help="List the mask types and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Generate pure classes and their composition (weights, alpha or spatial masks)."""
    if list_masks:
        for name, desc in mask_lib.list_masks():
            typer.echo(f"{name:<14}{desc}")
        return
    from gaf_trt.pipeline.sample import SampleConfig, prepare_sample, run_sample

    cfg = SampleConfig(
        classes=list(classes or []), ckpt=ckpt, out=str(out), weights=weight, alpha=alpha,
        mask_type=mask_type, mask_img=str(mask_img) if mask_img else None, regions=regions,
        sigma=sigma, steps=steps, solver=solver, seed=seed, permute=permute, gif=gif, skip=skip,
        batch=batch, backend=backend, device=device, precision=precision, vae=vae,
        num_heads=heads, use_ema=not no_ema, trust_pickle=trust_pickle)
    plan = prepare_sample(cfg)
    if quiet:
        result = run_sample(cfg, plan=plan)
    else:
        progress, factory = _progress_factory()
        with progress:
            result = run_sample(cfg, progress=factory, plan=plan)
    typer.echo(f"wrote {len(result.files)} files to {result.out_dir}")


@app.command()
@user_errors
def info(
    path: str = typer.Argument("digits", help="Checkpoint file or bundled model name."),
    heads: Optional[int] = typer.Option(None, "--heads"),
    trust_pickle: bool = typer.Option(False, "--trust-pickle"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Describe a checkpoint: architecture, classes, parameter count, hash."""
    from gaf_trt.model.checkpoint import file_sha256, model_from_checkpoint, read_checkpoint

    ckpt = read_checkpoint(path, trust_pickle=trust_pickle)
    model = model_from_checkpoint(ckpt, num_heads=heads)
    cfg = model.config
    record = {
        "path": str(ckpt.path),
        "sha256": file_sha256(ckpt.path),
        "weights": ckpt.source,
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": cfg.to_dict(),
    }
    if as_json:
        typer.echo(json.dumps(record, indent=2))
        return
    typer.echo(f"checkpoint  {record['path']}")
    typer.echo(f"sha256      {record['sha256']}")
    typer.echo(f"weights     {ckpt.source}")
    typer.echo(f"network     D={cfg.hidden_size} depth={cfg.depth} heads={cfg.num_heads} "
               f"({cfg.heads_source}) patch={cfg.patch_size} mlp={cfg.mlp_ratio:g}")
    typer.echo(f"input       {cfg.in_channels}x{cfg.input_size}x{cfg.input_size} ({cfg.mode})")
    typer.echo(f"classes     {cfg.num_classes}"
               + (f": {', '.join(cfg.class_names[:10])}{' …' if cfg.num_classes > 10 else ''}"
                  if cfg.class_names else ""))
    typer.echo(f"parameters  {record['parameters']:,}")


@app.command()
@user_errors
def bench(
    ckpt: Optional[str] = typer.Option(None, "--ckpt", help="Checkpoint to benchmark."),
    preset: Optional[str] = typer.Option(None, "--preset", help="DiT size with random weights, "
                                         "e.g. XL/2 (32x32x4 latent, 1000 classes)."),
    classes: int = typer.Option(2, "--classes", help="Classes composed per evaluation (N)."),
    batch: int = typer.Option(4, "--batch", "-b", help="Samples per loop (B)."),
    steps: int = typer.Option(20, "--steps"),
    solver: str = typer.Option("euler", "--solver", help=f"One of: {_choices(SOLVERS.names())}."),
    device: str = typer.Option("auto", "--device"),
    precision: Precision = typer.Option(Precision.FP32, "--precision", case_sensitive=False),
    repeats: int = typer.Option(5, "--repeats", help="Timed loops per mode (median reported)."),
    warmup: int = typer.Option(1, "--warmup"),
    no_cuda_graph: bool = typer.Option(False, "--no-cuda-graph"),
    as_json: Optional[Path] = typer.Option(None, "--json", help="Also write the result here."),
) -> None:
    """Latency and throughput of whole composed sampling loops (eager vs CUDA graph)."""
    from gaf_trt.model.checkpoint import atomic_write
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
        atomic_write(as_json, lambda tmp: tmp.write_text(json.dumps(result.to_dict(), indent=2)))


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    app()
