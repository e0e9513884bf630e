"""``python -m gaf_trt.training``: the training command line (Typer). Bad input: one
``error:`` line, exit 2 (see :mod:`gaf_trt.console.errors`)."""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer

from gaf_trt.console.command import GafCommand
from gaf_trt.console.errors import OneLineErrorGroup, run_app, user_errors

app = typer.Typer(cls=OneLineErrorGroup, add_completion=False, pretty_exceptions_enable=False,
                  no_args_is_help=True, help="Train and evaluate GAF models.")


@app.command("train", cls=GafCommand)
@user_errors
def train_cmd(
    preset: Optional[str] = typer.Option("digits", "--preset", help="cifar, celeb, afhq, "
                                         "imagenet or digits."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of TrainConfig fields."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset path (folder, CIFAR-10 "
                                       "folder or latent cache)."),
    out: Optional[str] = typer.Option(None, "--out", help="Run directory (locked while the "
                                      "run writes into it)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Checkpoint to continue from."),
    retrunk: Optional[Path] = typer.Option(None, "--retrunk", help="DiT state dict to seed the trunk."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Config field: key=value "
                                             "(repeatable)."),
    override: Optional[list[str]] = typer.Option(None, "--override", help="With --resume: "
                                                 "change a schedule field (lr, iters, warmup, "
                                                 "batch_size, seed, ...) from the "
                                                 "checkpoint's value: key=value (repeatable)."),
    stop_after: Optional[int] = typer.Option(None, "--stop-after", help="End early at this step "
                                             "(the schedule still spans iters)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also log every log_every "
                                 "steps, resumes and overrides (INFO lines on stderr)."),
) -> None:
    """Train a GAF model; checkpoints go to OUT/last.pt in the published format.

    A resumed run keeps the checkpoint's architecture and objective; schedule fields change
    only with --override, which the optimiser and scheduler apply and the checkpoint records.
    """
    from gaf_trt.training.config import build_config, parse_assignment
    from gaf_trt.training.trainer import train

    assignments = list(set_ or [])
    if data is not None:
        assignments.append(f"data_path={data}")
    if out is not None:
        assignments.append(f"outdir={out}")
    override_keys = tuple(parse_assignment(item, "--override")[0] for item in override or [])
    cfg = build_config(preset, config, assignments + list(override or []))
    if verbose:
        logging.getLogger("gaf_trt").setLevel(logging.INFO)
    run = functools.partial(train, cfg, resume=resume, retrunk=retrunk, override=override_keys,
                            stop_after=stop_after)
    result = run() if quiet else _train_with_progress(run, cfg.iters)
    if result.checkpoint is not None:
        typer.echo(f"checkpoint {result.checkpoint} ({len(result.history)} steps, "
                   f"{result.seconds:.1f} s)")


def _train_with_progress(run: Callable[..., Any], iters: int) -> Any:
    """``run(progress=...)`` under a progress bar on stderr."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]:.4f} vcos {task.fields[vcos]:.3f} "
                                   "{task.fields[ips]:.2f} it/s"), TimeRemainingColumn(),
                        console=Console(stderr=True))
    task = progress.add_task("train", total=iters, loss=float("nan"), vcos=float("nan"), ips=0.0)
    t0 = [time.perf_counter(), None]

    def on_step(state) -> None:
        if t0[1] is None:
            t0[1] = state.step - 1
        ips = (state.step - t0[1]) / max(1e-9, time.perf_counter() - t0[0])
        progress.update(task, completed=state.step, loss=state.loss, vcos=state.velocity_cos,
                        ips=ips)

    from gaf_trt.console.progress import shown

    with shown(progress):  # cleared if the run fails: the error line stands alone
        return run(progress=on_step)


@app.command("precompute", cls=GafCommand)
@user_errors
def precompute_cmd(
    images: Path = typer.Option(..., "--images", help="Image folder, one sub-folder per class."),
    vae: str = typer.Option(..., "--vae", help="diffusers AutoencoderKL directory."),
    out: Path = typer.Option(..., "--out", help="Latent cache file (.pt)."),
    size: int = typer.Option(256, "--size", help="Image size before encoding."),
    batch: int = typer.Option(16, "--batch"),
    scale: Optional[float] = typer.Option(None, "--scale", help="Latent scale (default: the "
                                          "VAE config's scaling_factor)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
) -> None:
    """Encode an image folder into a latent cache (latent mean x scale, labels, class names)."""
    from gaf_trt.device import resolve_device
    from gaf_trt.training.precompute import precompute

    info = precompute(images, vae, out, size=size, batch=batch, scale=scale,
                      device=resolve_device(device))
    typer.echo(f"wrote {info['count']} latents {info['shape']} to {out}"
               + (f" (skipped {info['skipped']} unreadable files)" if info["skipped"] else ""))


@app.command("evaluate", cls=GafCommand)
@user_errors
def evaluate_cmd(
    ckpt: str = typer.Option("digits", "--ckpt", help="A digits checkpoint or 'digits'."),
    per_class: int = typer.Option(100, "--per-class"),
    seed: int = typer.Option(0, "--seed"),
    no_ema: bool = typer.Option(False, "--no-ema", help="Evaluate the raw weights, not the EMA."),
    as_json: Optional[Path] = typer.Option(None, "--json", help="Also write the report here."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Quality gate of a digits model: classifier accuracy and Fréchet distance (samplers
    euler-20 and ier-8)."""
    from gaf_trt.console.command import check_output_file
    from gaf_trt.console.progress import progress_factory, shown
    from gaf_trt.training.evaluate import evaluate_digits, format_report

    if as_json is not None:
        check_output_file(as_json, "--json")
    run = functools.partial(evaluate_digits, ckpt, per_class=per_class, seed=seed,
                            use_ema=not no_ema)
    if quiet:
        report = run()
    else:
        progress, factory = progress_factory()
        with shown(progress):
            report = run(progress=factory)
    typer.echo(format_report(report))
    if as_json is not None:
        from gaf_trt.io.files import write_json

        write_json(as_json, report)


@app.command("bundle", cls=GafCommand)
@user_errors
def bundle_cmd(
    ckpt: Path = typer.Option(..., "--ckpt", help="Training checkpoint (EMA weights are used)."),
    out: Path = typer.Option(..., "--out", help="safetensors file to write."),
) -> None:
    """Write a checkpoint's EMA weights as gaf-trt safetensors (config in the metadata)."""
    from gaf_trt.console.command import check_output_file
    from gaf_trt.model.checkpoint import load_model, save_safetensors

    check_output_file(out, "--out")  # names the folder, before the checkpoint is read
    model = load_model(ckpt)
    save_safetensors(model, out)
    typer.echo(f"wrote {out}")


def main() -> None:
    # WARNING and above only: progress is the bar (cleared on failure), so a failed command
    # leaves its one error line alone on stderr; `train --verbose` adds the INFO lines
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    run_app(app)
