"""DiT building blocks with the published checkpoint's key names (docs/design.md §2).

Written on ``torch.nn.functional.scaled_dot_product_attention``; no timm.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gaf_trt.model.config import GAFConfig

TIME_EMBED_DIM = 256
LN_EPS = 1e-6


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """``x * (1 + scale) + shift`` with per-sample ``shift, scale [B, D]`` over ``x [B, L, D]``."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def timestep_embedding(t: Tensor, dim: int = TIME_EMBED_DIM, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding ``[B] -> [B, dim]`` in ``[cos, sin]`` order."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period)
                      * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def sincos_pos_embed_2d(dim: int, grid: int) -> Tensor:
    """Fixed 2-D sin-cos position table ``[1, grid*grid, dim]`` (DiT / MAE layout).

    The first half of the channels encodes the column coordinate, the second half the row;
    each half is ``[sin, cos]`` of ``pos * omega`` with ``omega = 10000^(-k / (dim/4))``.
    """
    if dim % 4:
        raise ValueError(f"position embedding dim {dim} must be divisible by 4")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def encode(pos: Tensor) -> Tensor:  # [L] -> [L, dim/2]
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    table = torch.cat([encode(cols), encode(rows)], dim=1)
    return table.float().unsqueeze(0)


class PatchEmbed(nn.Module):
    """Conv ``k = s = p``: ``[B, C, S, S] -> [B, L, D]``."""

    def __init__(self, in_channels: int, hidden: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden, kernel_size=patch, stride=patch, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, D, h, w] -> [B, L, D]


class TimestepEmbedder(nn.Module):
    """``t [B] -> [B, D]``: sinusoidal embedding, Linear, SiLU, Linear."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(TIME_EMBED_DIM, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden))

    def forward(self, t: Tensor) -> Tensor:
        emb = timestep_embedding(t).to(self.mlp[0].weight.dtype)
        return self.mlp(emb)


class LabelEmbedder(nn.Module):
    """``y [B] -> [B, D]`` (no label dropout at inference)."""

    def __init__(self, rows: int, hidden: int) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(rows, hidden)

    def forward(self, y: Tensor) -> Tensor:
        return self.embedding_table(y)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, Hh, L, d/Hh]
        out = F.scaled_dot_product_attention(q, k, v)  # [B, Hh, L, d/Hh]
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """Linear, GELU (tanh approximation), Linear."""

    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden, inner)
        self.fc2 = nn.Linear(inner, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block conditioned on ``c [B, D]``."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.attn = Attention(hidden, heads)
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=1)
        d = x.shape[-1]
        h = F.layer_norm(x, (d,), eps=LN_EPS)
        x = x + gate1.unsqueeze(1) * self.attn(modulate(h, shift1, scale1))
        h = F.layer_norm(x, (d,), eps=LN_EPS)
        return x + gate2.unsqueeze(1) * self.mlp(modulate(h, shift2, scale2))


class FinalAdaLN(nn.Module):
    """Final LayerNorm (no affine) modulated by ``c``; shift first in the chunk."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return modulate(F.layer_norm(x, (x.shape[-1],), eps=LN_EPS), shift, scale)


class DiTTrunk(nn.Module):
    """Class-conditioned DiT trunk: ``(x [B,C,S,S], t [B], y [B]) -> features [B, L, D]``."""

    def __init__(self, cfg: GAFConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.x_embedder = PatchEmbed(cfg.in_channels, d, cfg.patch_size)
        self.register_buffer("pos_embed", sincos_pos_embed_2d(d, cfg.grid), persistent=True)
        self.t_embedder = TimestepEmbedder(d)
        self.y_embedder = LabelEmbedder(cfg.label_rows, d)
        self.blocks = nn.ModuleList(DiTBlock(d, cfg.num_heads, cfg.mlp_ratio)
                                    for _ in range(cfg.depth))
        self.ada_ln = FinalAdaLN(d)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        h = self.x_embedder(x) + self.pos_embed.to(x.dtype)  # [B, L, D]
        c = self.t_embedder(t) + self.y_embedder(y)  # [B, D]
        for block in self.blocks:
            h = block(h, c)
        return self.ada_ln(h, c)  # [B, L, D]
