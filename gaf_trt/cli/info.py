"""``gaf-trt info``: describe a checkpoint or an engine directory."""

from __future__ import annotations

import json
from typing import Optional

import typer


def info(
    path: str = typer.Argument("digits", help="Checkpoint file, bundled model name, or engine "
                               "directory written by `gaf-trt export`."),
    heads: Optional[int] = typer.Option(None, "--heads", help="Attention heads, when the "
                                        "checkpoint does not say."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow arbitrary unpickling "
                                      "(only for checkpoints you trust)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Describe a checkpoint (architecture, classes, parameters, hash) or an engine directory."""
    from gaf_trt.pipeline.info import describe_checkpoint, is_engine_dir

    if is_engine_dir(path):
        from gaf_trt.pipeline.info import describe_engine

        record = describe_engine(path)
        if as_json:
            typer.echo(json.dumps(record, indent=2))
        else:
            from gaf_trt.export.manifest import describe_lines

            typer.echo("\n".join(describe_lines(record)))
        return
    result = describe_checkpoint(path, num_heads=heads, trust_pickle=trust_pickle)
    typer.echo(json.dumps(result.to_dict(), indent=2) if as_json else "\n".join(result.lines()))
