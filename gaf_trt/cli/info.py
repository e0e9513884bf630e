"""``gaf-trt info``: describe a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def info(
    path: str = typer.Argument("digits", help="Checkpoint file or bundled model name."),
    heads: Optional[int] = typer.Option(None, "--heads"),
    trust_pickle: bool = typer.Option(False, "--trust-pickle"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Describe a checkpoint: architecture, classes, parameter count, hash."""
    from gaf_trt.io.files import file_sha256
    from gaf_trt.model.checkpoint import model_from_checkpoint, read_checkpoint

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
