"""``gaf-trt sample``: pure classes and their composition."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gaf_trt.cli import options as mo
from gaf_trt.compose import masks as mask_lib
from gaf_trt.compose.solvers import SOLVERS
from gaf_trt.console.progress import progress_factory, shown


def sample(
    classes: Optional[list[str]] = typer.Option(
        None, "--classes", "-c", help="Class indices or names; several after one flag: --classes 3 8"),
    ckpt: mo.Artifact = mo.DEFAULT_ARTIFACT,
    vae: mo.VaeOpt = None,
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
    cache: mo.CacheOpt = "off",
    seed: int = typer.Option(0, "--seed", help="Noise seed (reproducible on one machine)."),
    permute: bool = typer.Option(False, "--permute", help="Also run every permutation of the classes."),
    gif: bool = typer.Option(False, "--gif", help="Save trajectory GIFs."),
    skip: bool = typer.Option(False, "--skip", help="Skip the pure-class images; compositions only."),
    batch: int = typer.Option(4, "--batch", "-b", help="Samples per composition (1..4096)."),
    chunk: int = typer.Option(256, "--chunk", help="At most this many samples per solver loop; "
                              "larger batches run in chunks (lower it when memory is short)."),
    max_runs: int = typer.Option(24, "--max-runs", help="Refuse jobs of more compositions than "
                                 "this (--permute with n classes runs n! of them)."),
    backend: mo.BackendOpt = None,
    device: mo.DeviceOpt = "auto",
    precision: mo.PrecisionOpt = None,
    compile_: bool = typer.Option(False, "--compile", help="torch backend: torch.compile the "
                                  "network (slow first call, cached across runs)."),
    heads: mo.HeadsOpt = None,
    no_ema: mo.NoEmaOpt = False,
    trust_pickle: mo.TrustPickleOpt = False,
    threads: mo.ThreadsOpt = 0,
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
    from gaf_trt.pipeline.sample import SampleConfig, prepare_sample, run_sample

    model = mo.model_source_from_cli(ckpt, backend, device, precision, vae, heads, no_ema,
                                     trust_pickle, {"compile": True} if compile_ else None,
                                     threads=threads)
    cfg = SampleConfig(
        classes=list(classes or []), out=out, weights=weight, alpha=alpha,
        mask_type=mask_type, mask_img=str(mask_img) if mask_img else None, regions=regions,
        sigma=sigma, steps=steps, solver=solver, cache=cache, seed=seed, permute=permute, gif=gif, skip=skip,
        batch=batch, chunk=chunk, max_runs=max_runs, model=model)
    plan = prepare_sample(cfg)
    if quiet:
        result = run_sample(cfg, plan=plan)
    else:
        progress, factory = progress_factory()
        with shown(progress):
            result = run_sample(cfg, progress=factory, plan=plan)
    typer.echo(f"wrote {len(result.files)} files to {result.out_dir} "
               f"({mo.backend_note(model.backend, result.record['backend'])}, "
               f"{result.record['device']})")

