"""``gaf-trt transport`` (cycle, interpolation, barycentric) and ``gaf-trt translate``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gaf_trt.cli import options as mo
from gaf_trt.compose.solvers import SOLVERS
from gaf_trt.console.progress import progress_factory, shown


def _run(job, cfg, plan, quiet: bool):
    if quiet:
        return job(cfg, plan=plan)
    progress, factory = progress_factory()
    with shown(progress):
        return job(cfg, progress=factory, plan=plan)


def _summary(result) -> str:
    m = result.record["metrics"]
    parts = [f"{k}={v:.3e}" for k, v in m.items() if k.endswith("mse") and v is not None]
    lp = [f"{k}={v:.4f}" for k, v in m.items() if k.endswith("lpips") and v is not None]
    return " ".join(parts + lp)


def _backend(result) -> str:
    rec = result.record
    return f"{mo.backend_note(rec['backend_requested'], rec['backend'])}, {rec['device']}"


def transport(
    mode: str = typer.Option(..., "--mode", help="cycle, interpolation or barycentric."),
    classes: Optional[list[str]] = typer.Option(
        None, "--classes", "-c",
        help="Class indices or names; several after one flag: --classes 3 8"),
    steps: int = typer.Option(50, "--steps", help="Solver steps per leg."),
    solver: str = typer.Option("rk4", "--solver", help=f"One of: {', '.join(SOLVERS.names())}."),
    reverse_solver: Optional[str] = typer.Option(
        None, "--reverse-solver", help="Solver of the inversion legs (default: --solver; rk4 "
        "when --solver is ier, whose reverse pass is not an inversion)."),
    n_interp: int = typer.Option(5, "--n-interp", help="Frames per transition (interpolation, "
                                 "2..256)."),
    grid_size: int = typer.Option(5, "--grid-size", help="Barycentric grid side (2..32)."),
    batch: int = typer.Option(1, "--batch", "-b", help="Noises run side by side (1..64)."),
    cache: mo.CacheOpt = "off",
    ckpt: mo.Artifact = mo.DEFAULT_ARTIFACT,
    vae: mo.VaeOpt = None,
    backend: mo.BackendOpt = None,
    device: mo.DeviceOpt = "auto",
    precision: mo.PrecisionOpt = None,
    heads: mo.HeadsOpt = None,
    no_ema: mo.NoEmaOpt = False,
    trust_pickle: mo.TrustPickleOpt = False,
    threads: mo.ThreadsOpt = 0,
    out: Path = typer.Option(Path("transport"), "--out", "-o", help="Output directory."),
    size: Optional[int] = typer.Option(None, "--size", help="Long side of the images of each "
                                       "picture in pixels (16..8192; default: cells of at "
                                       "least 128 px); label bands come on top."),
    seed: int = typer.Option(0, "--seed", help="Noise seed."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Transport experiments: class cycles, interpolation chains, barycentric grids."""
    from gaf_trt.pipeline.transport import (
        TransportConfig,
        prepare_transport,
        run_transport,
    )

    cfg = TransportConfig(
        mode=mode, classes=list(classes or []), out=str(out), steps=steps, solver=solver,
        reverse_solver=reverse_solver, n_interp=n_interp, grid_size=grid_size, batch=batch,
        seed=seed, size=size, cache=cache,
        model=mo.model_source_from_cli(ckpt, backend, device, precision, vae, heads, no_ema,
                                       trust_pickle, threads=threads))
    result = _run(run_transport, cfg, prepare_transport(cfg), quiet)
    typer.echo(f"{mode}: {_summary(result)}".rstrip(": "))
    typer.echo(f"wrote {len(result.files)} files to {result.out_dir} ({_backend(result)})")


def translate(
    image: Path = typer.Option(..., "--image", help="Image file to translate (PNG, JPEG, ...)."),
    source: str = typer.Option(..., "--source", help="Class of the image (index or name)."),
    target: str = typer.Option(..., "--target", help="Class to translate to (index or name)."),
    steps: int = typer.Option(50, "--steps", help="Solver steps per leg."),
    solver: str = typer.Option("rk4", "--solver", help=f"One of: {', '.join(SOLVERS.names())}."),
    reverse_solver: Optional[str] = typer.Option(
        None, "--reverse-solver", help="Solver of the inversion leg (default: --solver; rk4 "
        "when --solver is ier)."),
    snapshots: int = typer.Option(6, "--snapshots", help="Trajectory points per leg (1..64)."),
    cache: mo.CacheOpt = "off",
    ckpt: mo.Artifact = mo.DEFAULT_ARTIFACT,
    vae: mo.VaeOpt = None,
    backend: mo.BackendOpt = None,
    device: mo.DeviceOpt = "auto",
    precision: mo.PrecisionOpt = None,
    heads: mo.HeadsOpt = None,
    no_ema: mo.NoEmaOpt = False,
    trust_pickle: mo.TrustPickleOpt = False,
    threads: mo.ThreadsOpt = 0,
    out: Path = typer.Option(Path("translate"), "--out", "-o", help="Output directory."),
    size: Optional[int] = typer.Option(None, "--size", help="Long side of the images of each "
                                       "picture (px); label bands come on top."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Translate an image: invert it with the source class, generate with the target class."""
    from gaf_trt.pipeline.translate import (
        TranslateConfig,
        prepare_translate,
        run_translate,
    )

    cfg = TranslateConfig(
        image=str(image), source=source, target=target, out=str(out), steps=steps,
        solver=solver, reverse_solver=reverse_solver, snapshots=snapshots, size=size,
        cache=cache, model=mo.model_source_from_cli(ckpt, backend, device, precision, vae,
                                                    heads, no_ema, trust_pickle,
                                                    threads=threads))
    result = _run(run_translate, cfg, prepare_translate(cfg), quiet)
    typer.echo(f"translate {source}->{target}: {_summary(result)}")
    typer.echo(f"wrote {len(result.files)} files to {result.out_dir} ({_backend(result)})")
