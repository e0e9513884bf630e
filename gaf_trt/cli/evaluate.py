"""``gaf-trt evaluate``: FID / IS / KID / precision-recall and the digits metric of a dataset;
``--compare A B`` for engine against engine."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gaf_trt.compose.solvers import SOLVERS


def evaluate(
    dataset: Optional[str] = typer.Argument(None, help="Generated dataset: a `gaf-trt "
                                            "generate` folder, a folder of images or an .npz."),
    ref: Optional[str] = typer.Option(None, "--ref", help="Reference: images (folder / .npz) "
                                      "or an .npz with mu/sigma statistics."),
    inception: Optional[str] = typer.Option(None, "--inception", help="Local Inception-v3 "
                                            "weights (weights-inception-2015-12-05-6726825d.pth"
                                            "); never downloaded."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Comma list of fid, is, kid, "
                                          "pr, digits (default: all the inputs allow)."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto."),
    batch: int = typer.Option(64, "--batch", "-b", help="Images per Inception batch."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Also write the report here."),
    allow_incomplete: bool = typer.Option(False, "--allow-incomplete", help="Score the "
                                          "finished shards of an incomplete generate folder "
                                          "(refused by default, naming the missing shards)."),
    compare: Optional[tuple[str, str]] = typer.Option(
        None, "--compare", help="Two ARTIFACT[:BACKEND[:PRECISION]] (e.g. digits "
        "digits:torch:bf16): generate both on the same noise and compare."),
    classes: Optional[list[str]] = typer.Option(None, "--classes", "-c", help="--compare: "
                                                "classes to generate ('all' by default)."),
    per_class: Optional[int] = typer.Option(None, "--per-class", help="--compare: samples per "
                                            "class."),
    num: Optional[int] = typer.Option(None, "--num", help="--compare: samples in all."),
    solver: str = typer.Option("euler", "--solver", help=f"--compare: {', '.join(SOLVERS.names())}."),
    steps: int = typer.Option(20, "--steps", help="--compare: solver steps."),
    seed: int = typer.Option(0, "--seed", help="--compare: noise seed."),
    out: str = typer.Option("compare", "--out", "-o", help="--compare: folder for the two "
                            "datasets (OUT/a, OUT/b; resumable)."),
) -> None:
    """Sample-quality metrics of a generated dataset, or two networks compared on the same
    noise (--compare A B)."""
    from gaf_trt.errors import ConfigError
    from gaf_trt.evaluate import EvaluateConfig, format_report, run_evaluate
    from gaf_trt.io.files import write_json

    names = [n for n in (metrics or "").split(",") if n.strip()]
    if json_out is not None and (not json_out.strip() or Path(json_out).is_dir()):
        raise ConfigError(f"--json {json_out!r} must name a file to write, not a folder")
    if compare is not None:
        from gaf_trt.evaluate.compare import format_compare, run_compare
        from gaf_trt.generate import GenerateConfig
        from gaf_trt.pipeline.source import ModelSource

        if dataset is not None:
            raise ConfigError("--compare generates its own datasets; drop the DATASET argument")
        ecfg = (EvaluateConfig("", ref, inception, names, device, batch)
                if names or inception is not None else None)
        base = GenerateConfig(out=out, classes=list(classes) if classes else ["all"],
                              per_class=per_class, num=num, solver=solver, steps=steps,
                              seed=seed, model=ModelSource(device=device))
        report = run_compare(compare[0], compare[1], base, ecfg)
        text = format_compare(report)
    else:
        if dataset is None:
            raise ConfigError("give the DATASET to evaluate (or --compare A B)")
        report = run_evaluate(EvaluateConfig(dataset, ref, inception, names, device, batch,
                                             allow_incomplete))
        text = format_report(report)
    if json_out is not None:
        write_json(json_out, report)
    typer.echo(text)
