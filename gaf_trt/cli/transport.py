"""``gaf-trt transport`` (cycle, interpolation, barycentric) and ``gaf-trt translate``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gaf_trt.compose.solvers import SOLVERS
from gaf_trt.console.progress import progress_factory, shown
from gaf_trt.engine.base import BACKENDS
from gaf_trt.precision import Precision

_CKPT_HELP = ("Checkpoint (.pt / .safetensors), bundled model name (digits), or an engine "
              "directory for --backend.")


def _model_source(ckpt: str, backend: Optional[str], device: str, precision: Optional[Precision],
                  vae: Optional[str], heads: Optional[int], no_ema: bool, trust_pickle: bool):
    """The model to load; without ``--backend`` an engine directory runs on ``auto`` (only
    ort / trt can run one), a checkpoint on ``torch``."""
    from gaf_trt.engine.loader import default_precision
    from gaf_trt.pipeline.transport import ModelSource

    if backend is None:
        backend = "auto" if Path(ckpt).is_dir() else "torch"
    return ModelSource(ckpt=ckpt, backend=backend, device=device,
                       precision=default_precision(ckpt, precision), vae=vae,
                       num_heads=heads, use_ema=not no_ema, trust_pickle=trust_pickle)


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
    from gaf_trt.cli.sample import backend_note

    rec = result.record
    return f"{backend_note(rec['backend_requested'], rec['backend'])}, {rec['device']}"


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
    ckpt: str = typer.Option("digits", "--ckpt", "--engine", help=_CKPT_HELP),
    vae: Optional[str] = typer.Option(None, "--vae", help="diffusers AutoencoderKL directory, for "
                                      "latent checkpoints."),
    backend: Optional[str] = typer.Option(None, "--backend", help=f"One of: "
                                          f"{', '.join(BACKENDS.names())} (default: torch; auto "
                                          "for an engine directory)."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto."),
    precision: Optional[Precision] = typer.Option(
        None, "--precision", case_sensitive=False,
        help="Default: an engine directory's own, else fp32."),
    heads: Optional[int] = typer.Option(None, "--heads", help="Attention heads, when the "
                                        "checkpoint does not say."),
    no_ema: bool = typer.Option(False, "--no-ema", help="Use the raw weights, not the EMA."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow arbitrary unpickling "
                                      "(only for checkpoints you trust)."),
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
        seed=seed, size=size, model=_model_source(ckpt, backend, device, precision, vae, heads,
                                                  no_ema, trust_pickle))
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
    ckpt: str = typer.Option("digits", "--ckpt", "--engine", help=_CKPT_HELP),
    vae: Optional[str] = typer.Option(None, "--vae", help="diffusers AutoencoderKL directory "
                                      "(required for latent checkpoints)."),
    backend: Optional[str] = typer.Option(None, "--backend", help=f"One of: "
                                          f"{', '.join(BACKENDS.names())} (default: torch; auto "
                                          "for an engine directory)."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto."),
    precision: Optional[Precision] = typer.Option(
        None, "--precision", case_sensitive=False,
        help="Default: an engine directory's own, else fp32."),
    heads: Optional[int] = typer.Option(None, "--heads"),
    no_ema: bool = typer.Option(False, "--no-ema"),
    trust_pickle: bool = typer.Option(False, "--trust-pickle"),
    out: Path = typer.Option(Path("translate"), "--out", "-o", help="Output directory."),
    size: Optional[int] = typer.Option(None, "--size", help="Long side of the images of each "
                                       "picture (px); label bands come on top."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Translate an image: invert it with the source class, generate with the target class."""
    from gaf_trt.pipeline.transport import (
        TranslateConfig,
        prepare_translate,
        run_translate,
    )

    cfg = TranslateConfig(
        image=str(image), source=source, target=target, out=str(out), steps=steps,
        solver=solver, reverse_solver=reverse_solver, snapshots=snapshots, size=size,
        model=_model_source(ckpt, backend, device, precision, vae, heads, no_ema, trust_pickle))
    result = _run(run_translate, cfg, prepare_translate(cfg), quiet)
    typer.echo(f"translate {source}->{target}: {_summary(result)}")
    typer.echo(f"wrote {len(result.files)} files to {result.out_dir} ({_backend(result)})")
