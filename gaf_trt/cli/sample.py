"""``gaf-trt sample``: pure classes and their composition."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gaf_trt.compose import masks as mask_lib
from gaf_trt.compose.solvers import SOLVERS
from gaf_trt.console.progress import progress_factory, shown
from gaf_trt.engine.base import BACKENDS
from gaf_trt.precision import Precision


def sample(
    classes: Optional[list[str]] = typer.Option(
        None, "--classes", "-c", help="Class indices or names; several after one flag: --classes 3 8"),
    ckpt: str = typer.Option("digits", "--ckpt", help="Checkpoint (.pt / .safetensors) or a bundled "
                             "model name (digits)."),
    engine: Optional[str] = typer.Option(None, "--engine", help="Engine directory from `gaf-trt "
                                         "export` (instead of --ckpt); runs on --backend auto "
                                         "(the fastest of trt, ort here) unless given."),
    vae: Optional[str] = typer.Option(None, "--vae", help="diffusers AutoencoderKL directory, for "
                                      "latent checkpoints."),
    weight: Optional[list[float]] = typer.Option(None, "--weight", "-w", help="One weight per class."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="Blend of 2 classes: a*v1 + (1-a)*v2."),
    mask_type: Optional[str] = typer.Option(None, "--mask-type", help="Spatial mask layout (see "
                                            "--list-masks)."),
    mask_img: Optional[Path] = typer.Option(None, "--mask-img", help="Grayscale mask image (custom)."),
    regions: Optional[list[str]] = typer.Option(None, "--regions", help="AFHQ face regions: ears eyes "
                                                "nose mouth."),
    sigma: float = typer.Option(mask_lib.DEFAULT_SIGMA, "--sigma", help="Mask softening (0 = hard, "
                                f"at most {mask_lib.MAX_SIGMA:g})."),
    steps: int = typer.Option(20, "--steps", help="Solver steps (1..10000)."),
    solver: str = typer.Option("euler", "--solver", help=f"One of: {', '.join(SOLVERS.names())}."),
    seed: int = typer.Option(0, "--seed", help="Noise seed (reproducible on one machine)."),
    permute: bool = typer.Option(False, "--permute", help="Also run every permutation of the classes."),
    gif: bool = typer.Option(False, "--gif", help="Save trajectory GIFs."),
    skip: bool = typer.Option(False, "--skip", help="Skip the pure-class images; compositions only."),
    batch: int = typer.Option(4, "--batch", "-b", help="Samples per composition (1..4096)."),
    chunk: int = typer.Option(256, "--chunk", help="At most this many samples per solver loop; "
                              "larger batches run in chunks (lower it when memory is short)."),
    max_runs: int = typer.Option(24, "--max-runs", help="Refuse jobs of more compositions than "
                                 "this (--permute with n classes runs n! of them)."),
    backend: Optional[str] = typer.Option(None, "--backend", help=f"One of: {', '.join(BACKENDS.names())} "
                                          "(default: torch; auto with --engine)."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto."),
    precision: Optional[Precision] = typer.Option(
        None, "--precision", case_sensitive=False,
        help="Network precision (default: an engine directory's own, else fp32); the solver "
             "state stays fp32."),
    compile_: bool = typer.Option(False, "--compile", help="torch backend: torch.compile the "
                                  "network (slow first call, cached across runs)."),
    heads: Optional[int] = typer.Option(None, "--heads", help="Attention heads, when the checkpoint "
                                        "does not say."),
    no_ema: bool = typer.Option(False, "--no-ema", help="Use the raw model weights, not the EMA."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow arbitrary unpickling "
                                      "(only for checkpoints you trust)."),
    out: str = typer.Option("samples", "--out", "-o", help="Output directory (written as a whole "
                            "at the end; run.json last)."),
    list_masks: bool = typer.Option(False, "--list-masks", help="List the mask types and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Generate pure classes and their composition (weights, alpha or spatial masks)."""
    if list_masks:
        for name, desc in mask_lib.list_masks():
            typer.echo(f"{name:<14}{desc}")
        return
    from gaf_trt.engine.loader import default_precision
    from gaf_trt.pipeline.sample import SampleConfig, prepare_sample, run_sample

    cfg = SampleConfig(
        classes=list(classes or []), ckpt=engine if engine is not None else ckpt, out=out, weights=weight, alpha=alpha,
        mask_type=mask_type, mask_img=str(mask_img) if mask_img else None, regions=regions,
        sigma=sigma, steps=steps, solver=solver, seed=seed, permute=permute, gif=gif, skip=skip,
        batch=batch, chunk=chunk, max_runs=max_runs, backend=default_backend(backend, engine),
        device=device, precision=default_precision(engine or ckpt, precision), vae=vae,
        num_heads=heads, use_ema=not no_ema, trust_pickle=trust_pickle,
        options={"compile": True} if compile_ else {})
    plan = prepare_sample(cfg)
    if quiet:
        result = run_sample(cfg, plan=plan)
    else:
        progress, factory = progress_factory()
        with shown(progress):
            result = run_sample(cfg, progress=factory, plan=plan)
    typer.echo(f"wrote {len(result.files)} files to {result.out_dir} "
               f"({backend_note(cfg.backend, result.record['backend'])}, "
               f"{result.record['device']})")


def default_backend(backend: Optional[str], engine: Optional[str]) -> str:
    """``--backend`` as given; else ``auto`` for an engine directory (only ort / trt can run
    one), ``torch`` for a checkpoint."""
    if backend is not None:
        return backend
    return "auto" if engine is not None else "torch"


def backend_note(asked: str, ran: str) -> str:
    """``backend ort (chosen by auto)`` when auto picked, else ``backend torch``."""
    return f"backend {ran} (chosen by auto)" if asked == "auto" else f"backend {ran}"
