"""Seed a GAF trunk from a DiT checkpoint (``DiT-XL-2-256x256.pt``, a bare state dict)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from gaf_trt.errors import CheckpointError
from gaf_trt.model.checkpoint import read_checkpoint
from gaf_trt.model.gaf import GAF

log = logging.getLogger(__name__)


def retrunk_from_dit(model: GAF, path: str | Path) -> dict[str, int]:
    """Copy ``x_embedder``, ``pos_embed``, ``t_embedder``, ``y_embedder`` and ``blocks`` into
    ``model.trunk``; skip ``final_layer.*``; copy the overlapping rows of a label table with
    another row count. Returns counts of copied, partial and skipped tensors."""
    sd = read_checkpoint(path).state_dict
    sd = {k[len("trunk."):] if k.startswith("trunk.") else k: v for k, v in sd.items()}
    own = model.trunk.state_dict()
    copied = partial = skipped = 0
    with torch.no_grad():
        for key, value in sd.items():
            if key.startswith("final_layer.") or key not in own:
                skipped += 1
                continue
            target = own[key]
            if key == "y_embedder.embedding_table.weight" and value.shape[1:] == target.shape[1:]:
                rows = min(value.shape[0], target.shape[0])
                target[:rows].copy_(value[:rows])
                partial += rows != target.shape[0] or rows != value.shape[0]
                copied += 1
                continue
            if value.shape != target.shape:
                raise CheckpointError(f"DiT tensor {key} has shape {list(value.shape)} but the GAF "
                                      f"trunk needs {list(target.shape)}; use a matching preset")
            target.copy_(value)
            copied += 1
    if copied == 0:
        raise CheckpointError(f"{path} has no DiT trunk tensors (x_embedder, blocks, …)")
    log.info("retrunk from %s: %d tensors copied (%d label table resized), %d skipped",
             path, copied, partial, skipped)
    return {"copied": copied, "partial": partial, "skipped": skipped}
