"""The ``gaf-trt info`` job: describe a checkpoint (or an engine directory) as a record."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gaf_trt.io.files import file_sha256
from gaf_trt.model.checkpoint import model_from_checkpoint, read_checkpoint, resolve_path
from gaf_trt.model.config import GAFConfig


@dataclass
class CheckpointInfo:
    """What ``info`` reports about a checkpoint."""

    path: str
    sha256: str
    weights: str  # "ema", "model", "state_dict" or "safetensors"
    parameters: int
    config: GAFConfig

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["config"] = self.config.to_dict()
        return d

    def lines(self) -> list[str]:
        """The human-readable description, one field per line."""
        cfg = self.config
        names = ""
        if cfg.class_names:
            more = " …" if cfg.num_classes > 10 else ""
            names = f": {', '.join(cfg.class_names[:10])}{more}"
        return [
            f"checkpoint  {self.path}",
            f"sha256      {self.sha256}",
            f"weights     {self.weights}",
            f"network     D={cfg.hidden_size} depth={cfg.depth} heads={cfg.num_heads} "
            f"({cfg.heads_source}) patch={cfg.patch_size} mlp={cfg.mlp_ratio:g}",
            f"input       {cfg.in_channels}x{cfg.input_size}x{cfg.input_size} ({cfg.mode})",
            f"classes     {cfg.num_classes}{names}",
            f"parameters  {self.parameters:,}",
        ]


def describe_checkpoint(path: str, *, num_heads: int | None = None,
                        trust_pickle: bool = False) -> CheckpointInfo:
    """Read and build the model once (shapes and finiteness checked) and describe it."""
    ckpt = read_checkpoint(path, trust_pickle=trust_pickle)
    model = model_from_checkpoint(ckpt, num_heads=num_heads)
    return CheckpointInfo(str(ckpt.path), file_sha256(ckpt.path), ckpt.source,
                          sum(p.numel() for p in model.parameters()), model.config)


def is_engine_dir(path: str) -> bool:
    """A folder: an engine directory written by ``gaf-trt export`` (its manifest is checked
    when it is described)."""
    return Path(resolve_path(path)).is_dir()


def describe_engine(path: str) -> dict[str, Any]:
    """The manifest summary of an engine directory, every file checked against its sha256,
    and ``backends``: each backend that reads engine directories -> None when it is usable
    here, else why not (``torch`` needs the directory's PyTorch weights)."""
    from gaf_trt.engine import BACKENDS
    from gaf_trt.engine.loader import ENGINE_BACKENDS
    from gaf_trt.enginedir import describe, read_manifest

    record = describe(str(path), verify=True)
    backends: dict[str, str | None] = {}
    for name in ENGINE_BACKENDS:
        if name == "auto" or name not in BACKENDS.names():
            continue
        backends[name] = BACKENDS.get(name).available()
    if "torch" in backends and not read_manifest(path).get("weights"):
        backends["torch"] = "exported without PyTorch weights"
    record["backends"] = backends
    return record
