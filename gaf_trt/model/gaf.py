"""The GAF network: a DiT trunk and twin J / K heads (docs/design.md §1–2)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gaf_trt.model.config import GAFConfig
from gaf_trt.model.dit import DiTTrunk


def unpatchify(tokens: Tensor, patch: int, channels: int) -> Tensor:
    """``[B, L, p*p*C] -> [B, C, h*p, w*p]`` via ``[B, h, w, p, p, C]``."""
    b, n, _ = tokens.shape
    h = w = int(round(n ** 0.5))
    x = tokens.reshape(b, h, w, patch, patch, channels)
    x = x.permute(0, 5, 1, 3, 2, 4)  # [B, C, h, p, w, p]
    return x.reshape(b, channels, h * patch, w * patch)


class JHead(nn.Module):
    """Shared noise-anchor head: ``f [B, L, D] -> [B, L, P]`` (no bias)."""

    def __init__(self, hidden: int, patch_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, patch_dim, bias=False)

    def forward(self, f: Tensor) -> Tensor:
        return self.linear(f)


class KHeads(nn.Module):
    """Per-class data-anchor heads, weight ``[Nc, D, P]``, bias ``[Nc, P]``."""

    def __init__(self, num_classes: int, hidden: int, patch_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, hidden, patch_dim))
        self.bias = nn.Parameter(torch.zeros(num_classes, patch_dim))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, f: Tensor, y: Tensor) -> Tensor:
        """``f [B, L, D], y [B] -> [B, L, P]`` with ``f @ W[y] + b[y]``."""
        return torch.bmm(f, self.weight[y]) + self.bias[y].unsqueeze(1)


class TwinHeads(nn.Module):
    def __init__(self, cfg: GAFConfig) -> None:
        super().__init__()
        self.J = JHead(cfg.hidden_size, cfg.patch_dim)
        self.K = KHeads(cfg.num_classes, cfg.hidden_size, cfg.patch_dim)


class GAF(nn.Module):
    """Generative Anchored Field.

    ``forward(x, t, y) -> (J, K)`` with ``J = (1 - t) x + J_res`` (noise anchor) and
    ``K = t x + K_res`` (data anchor); ``velocity = K - J``. Shapes: ``x [B, C, S, S]``,
    ``t [B]`` (or a scalar, broadcast), ``y [B]`` long.
    """

    def __init__(self, config: GAFConfig) -> None:
        super().__init__()
        self.config = config
        self.trunk = DiTTrunk(config)
        self.twins = TwinHeads(config)

    def heads(self, f: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """``(J_res, K_res)`` from the trunk's tokens ``f [B, L, D]``, each ``[B, C, S, S]``."""
        cfg = self.config
        j_res = unpatchify(self.twins.J(f), cfg.patch_size, cfg.in_channels)
        k_res = unpatchify(self.twins.K(f, y), cfg.patch_size, cfg.in_channels)
        return j_res, k_res

    def residuals(self, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """``(J_res, K_res)``, each ``[B, C, S, S]``."""
        return self.heads(self.trunk(x, t, y), y)  # trunk: [B, L, D]

    def features(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """The trunk's tokens ``f [B, L, D]`` for ``x [B, C, S, S]``, ``t [B]`` (or a
        scalar), ``y [B]`` — all the cost of an evaluation (the heads are one linear each)."""
        return self.trunk(x, broadcast_time(t, x.shape[0], x.device), y)

    def anchors_from(self, f: Tensor, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """``(J, K)``, each ``[B, C, S, S]``, from given trunk tokens ``f [B, L, D]`` and the
        current ``x``, ``t``: ``J = (1 - t) x + J_lin(f)``, ``K = t x + K_lin[y](f)``."""
        t = broadcast_time(t, x.shape[0], x.device)  # [B]
        j_res, k_res = self.heads(f, y)
        tt = t.to(x.dtype).view(-1, 1, 1, 1)
        return (1 - tt) * x + j_res, tt * x + k_res

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.anchors_from(self.features(x, t, y), x, t, y)

    def velocity(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """``v = K - J``, ``[B, C, S, S]``."""
        j, k = self(x, t, y)
        return k - j

    def initialize_weights(self) -> None:
        """Published initialisation: Xavier linears, J zero, K ~ N(0, 0.02), adaLN outputs
        zero (every block starts as the identity)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        trunk = self.trunk
        w = trunk.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(trunk.x_embedder.proj.bias)
        nn.init.normal_(trunk.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(trunk.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(trunk.t_embedder.mlp[2].weight, std=0.02)
        for mod in [*(b.adaLN_modulation for b in trunk.blocks), trunk.ada_ln.adaLN_modulation]:
            nn.init.zeros_(mod[-1].weight)
            nn.init.zeros_(mod[-1].bias)
        nn.init.zeros_(self.twins.J.linear.weight)
        nn.init.normal_(self.twins.K.weight, std=0.02)
        nn.init.zeros_(self.twins.K.bias)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def extra_repr(self) -> str:
        c = self.config
        return (f"hidden={c.hidden_size}, depth={c.depth}, heads={c.num_heads}, "
                f"patch={c.patch_size}, size={c.input_size}, channels={c.in_channels}, "
                f"classes={c.num_classes}")


def broadcast_time(t: Tensor | float, batch: int, device: torch.device) -> Tensor:
    """Time as a ``[batch]`` tensor on ``device``: a scalar or 0-d / 1-element tensor is
    broadcast, a ``[batch]`` tensor passes through; integer times become float32. No host
    synchronisation (safe inside CUDA-graph capture)."""
    t = torch.as_tensor(t, device=device)
    if not t.is_floating_point():
        t = t.float()
    return t.reshape(-1).expand(batch) if t.numel() == 1 else t
