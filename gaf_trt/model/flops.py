"""Model FLOPs: multiply-accumulates of one forward of a GAF (``gaf-trt bench``'s achieved
GFLOP/s)."""

from __future__ import annotations

from gaf_trt.model.config import GAFConfig
from gaf_trt.model.gaf import GAF


def macs_per_sample(model: GAF | GAFConfig) -> float:
    """Multiply-accumulates of one forward of one sample (linears, conv, attention)."""
    c = model if isinstance(model, GAFConfig) else model.config
    d, n, depth = c.hidden_size, c.num_tokens, c.depth
    inner = int(d * c.mlp_ratio)
    per_block = n * (3 * d * d + d * d + 2 * d * inner) + 2 * n * n * d + 6 * d * d
    heads = n * d * c.patch_dim * 2 + 2 * d * d
    embed = n * d * c.patch_dim + 256 * d + d * d
    return depth * per_block + heads + embed


