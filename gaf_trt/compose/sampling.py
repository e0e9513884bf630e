"""``gaf_trt.sample``: compose classes and integrate from a given noise."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gaf_trt.compose.composition import AnchorNetwork, ComposedField, Composition
from gaf_trt.compose.solvers import T_EPS, StepCallback, integrate
from gaf_trt.errors import ConfigError


def check_noise(noise: Tensor, network: AnchorNetwork) -> None:
    want = tuple(network.config.sample_shape)
    if noise.dim() != 4 or tuple(noise.shape[1:]) != want:
        raise ConfigError(f"noise must be [B, {', '.join(map(str, want))}], "
                          f"got {list(noise.shape)}")


@torch.no_grad()
def sample(model_or_engine: AnchorNetwork, classes: Sequence[int], noise: Tensor, *,
           weights: Sequence[float] | None = None, alpha: float | None = None,
           masks: Tensor | None = None, steps: int = 20, solver: str = "euler",
           t_eps: float = T_EPS, callback: StepCallback | None = None) -> Tensor:
    """Generate from ``noise [B, C, S, S]`` with the composition of ``classes``.

    Weighting rules as SPEC §1 (see :meth:`Composition.build`); ``masks [N, 1, H, W]`` are
    used as given (already softened). Returns the final state, same shape as ``noise``.
    """
    check_noise(noise, model_or_engine)
    composition = Composition.build(classes, weights=weights, alpha=alpha, masks=masks)
    field = ComposedField(model_or_engine, composition)
    return integrate(field, noise, steps=steps, solver=solver, t_eps=t_eps, callback=callback)
