"""The GAF training objective (arXiv 2511.22693): pair loss, residual penalty, time-swap
antisymmetry, with the EMA and the learning-rate schedule of the published runs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gaf_trt.model.gaf import GAF


@dataclass
class LossTerms:
    """Scalar tensors of one batch; ``total`` is what is optimised."""

    total: Tensor
    pair: Tensor
    residual: Tensor
    time_swap: Tensor
    velocity_cos: Tensor


def sample_t(n: int, t_eps: float, generator: torch.Generator | None = None,
             device: torch.device | str = "cpu") -> Tensor:
    """``t ~ U[t_eps, 1 - t_eps]``, ``[n]``."""
    u = torch.rand(n, generator=generator).to(device)
    return t_eps + (1 - 2 * t_eps) * u


def gaf_loss(net: torch.nn.Module, z_x: Tensor, y: Tensor, z_y: Tensor, t: Tensor, *,
             pair: bool = True, res_reg: float = 0.0, lam_time: float = 0.0) -> LossTerms:
    """Pair loss, residual penalty and time-swap antisymmetry.

    ``z_x [B, C, S, S]`` data, ``z_y`` noise of the same shape, ``t [B]``, ``y [B]``.
    ``net`` returns ``(J, K)`` (a :class:`GAF`, or one wrapped in DDP).
    """
    tt = t.view(-1, 1, 1, 1)
    x_t = (1 - tt) * z_y + tt * z_x
    J, K = net(x_t, t, y)
    J, K = J.float(), K.float()
    zero = torch.zeros((), device=z_x.device)
    pair_term = (((1 - tt) * (J - z_y) ** 2).mean() + (tt * (K - z_x) ** 2).mean()) if pair else zero
    j_res = J - (1 - tt) * x_t
    k_res = K - tt * x_t
    res_term = res_reg * ((1 - tt) * j_res ** 2 + tt * k_res ** 2).mean() if res_reg else zero
    if lam_time:
        Js, Ks = net(x_t, 1 - t, y)  # the swapped pass at 1 - t
        j_res_s = Js.float() - tt * x_t
        k_res_s = Ks.float() - (1 - tt) * x_t
        swap_term = lam_time * ((j_res + k_res_s) ** 2 + (k_res + j_res_s) ** 2).mean()
    else:
        swap_term = zero
    with torch.no_grad():
        v = (K - J).flatten(1)
        target = (z_x - z_y).flatten(1)
        vcos = torch.nn.functional.cosine_similarity(v, target, dim=1).mean()
    total = pair_term + res_term + swap_term
    return LossTerms(total, pair_term.detach(), res_term.detach(), swap_term.detach(), vcos)


class EMA:
    """Exponential moving average of a model's parameters and buffers, with a lower decay
    during warm-up."""

    def __init__(self, model: GAF, decay: float, warmup_decay: float, warmup: int) -> None:
        self.decay, self.warmup_decay, self.warmup = decay, warmup_decay, warmup
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    def decay_at(self, step: int) -> float:
        return self.warmup_decay if step < self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: GAF, step: int) -> None:
        d = self.decay_at(step)
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if v.is_floating_point():
                s.mul_(d).add_(v.detach().float(), alpha=1 - d)
            else:
                s.copy_(v)

    def state_dict(self) -> dict[str, Tensor]:
        return {k: v.clone() for k, v in self.shadow.items()}

    def load_state_dict(self, sd: dict[str, Tensor]) -> None:
        for k in self.shadow:
            self.shadow[k].copy_(sd[k])


def warmup_cosine(step: int, *, warmup: int, total: int, lr: float, min_lr: float) -> float:
    """Multiplier of ``lr``: linear warm-up to 1, then cosine down to ``min_lr / lr``."""
    import math

    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    floor = min_lr / lr if lr > 0 else 0.0
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
