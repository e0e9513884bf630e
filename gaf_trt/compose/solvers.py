"""Fixed-grid solvers (SPEC §5) as pure functions of ``(field, x, grid)``.

Each ODE step is a few lines; the time grid is explicit data (a 1-D float32 tensor on the
state's device). Loops index the grid with tensors only: no ``.item()``, no host sync, no
data-dependent allocation, so a whole loop can be captured in a CUDA graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from gaf_trt.errors import ConfigError
from gaf_trt.registry import Registry

#: ``v(x, t)``: ``x [B, ...]`` float32, ``t`` a 0-d tensor -> ``[B, ...]``.
VelocityFn = Callable[[Tensor, Tensor], Tensor]
#: Called after each step with ``(step_index, total_steps, state)``.
StepCallback = Callable[[int, int, Tensor], None]

T_EPS = 1e-3
IER_ALPHA = 0.95


class AnchoredField(Protocol):
    """A velocity field that also gives its blended anchors (needed by the endpoint sampler)."""

    def __call__(self, x: Tensor, t: Tensor) -> Tensor: ...
    def data_anchor(self, x: Tensor, t: Tensor) -> Tensor: ...
    def noise_anchor(self, x: Tensor, t: Tensor) -> Tensor: ...


def time_grid(steps: int, *, t_eps: float = T_EPS, reverse: bool = False, points: int | None = None,
              device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """``linspace(t_eps, 1 - t_eps, points or steps + 1)``, reversed for data -> noise."""
    n = steps + 1 if points is None else points
    grid = torch.linspace(t_eps, 1.0 - t_eps, n, dtype=dtype, device=device)
    return grid.flip(0) if reverse else grid


def euler_step(f: VelocityFn, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
    return x + (t1 - t0) * f(x, t0)


def heun_step(f: VelocityFn, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
    h = t1 - t0
    v0 = f(x, t0)
    v1 = f(x + h * v0, t1)
    return x + h / 2 * (v0 + v1)


def rk4_step(f: VelocityFn, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
    h = t1 - t0
    tm = t0 + h / 2
    k1 = f(x, t0)
    k2 = f(x + h / 2 * k1, tm)
    k3 = f(x + h / 2 * k2, tm)
    k4 = f(x + h * k3, t1)
    return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def odeint(step: Callable[[VelocityFn, Tensor, Tensor, Tensor], Tensor], f: VelocityFn, x: Tensor,
           grid: Tensor, callback: StepCallback | None = None) -> Tensor:
    """Integrate ``dx/dt = f(x, t)`` over ``grid`` with a one-step method."""
    n = grid.shape[0] - 1
    for k in range(n):
        x = step(f, x, grid[k], grid[k + 1])
        if callback is not None:
            callback(k, n, x)
    return x


def ier(anchor: VelocityFn, z0: Tensor, grid: Tensor, *, init: Tensor | None = None,
        alpha: float = IER_ALPHA, callback: StepCallback | None = None) -> Tensor:
    """Iterative endpoint refinement: refine the far endpoint ``e`` of the bridge from ``z0``.

    Forward: ``anchor = K``, ``e`` starts at ``z0``; at each ``t``,
    ``x_t = (1 - t) z0 + t e`` and ``e = (1 - alpha) e + alpha K(x_t, t)``.
    Reverse (data -> noise): ``anchor = J``, ``e`` starts at ``init`` (noise) and the bridge
    is ``x_t = (1 - t) e + t z0`` on the reversed grid.
    """
    reverse = init is not None
    e = init.clone() if reverse else z0.clone()
    n = grid.shape[0]
    for k in range(n):
        t = grid[k]
        xt = (1 - t) * e + t * z0 if reverse else (1 - t) * z0 + t * e
        e = (1 - alpha) * e + alpha * anchor(xt, t)
        if callback is not None:
            callback(k, n, e)
    return e


@dataclass(frozen=True)
class Solver:
    """A registered solver: its order, velocity evaluations per step and the runner."""

    name: str
    order: int
    evals_per_step: int
    step: Callable[[VelocityFn, Tensor, Tensor, Tensor], Tensor] | None  # None: endpoint

    @property
    def is_endpoint(self) -> bool:
        return self.step is None

    def grid(self, steps: int, *, t_eps: float = T_EPS, reverse: bool = False,
             device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        points = steps if self.is_endpoint else None
        return time_grid(steps, t_eps=t_eps, reverse=reverse, points=points, device=device,
                         dtype=dtype)


SOLVERS: Registry[Solver] = Registry("solver")
SOLVERS.add("euler", Solver("euler", 1, 1, euler_step))
SOLVERS.add("heun", Solver("heun", 2, 2, heun_step))
SOLVERS.add("rk4", Solver("rk4", 4, 4, rk4_step))
SOLVERS.add("endpoint", Solver("endpoint", 0, 1, None))


def check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
    return steps


def check_t_eps(t_eps: float) -> float:
    if not 0.0 <= float(t_eps) < 0.5:
        raise ConfigError(f"t_eps must be in [0, 0.5), got {t_eps}")
    return float(t_eps)


def integrate(velocity_fn: VelocityFn | AnchoredField, x: Tensor, *, steps: int,
              solver: str = "euler", t_eps: float = T_EPS, reverse: bool = False,
              callback: StepCallback | None = None, generator: torch.Generator | None = None,
              init: Tensor | None = None) -> Tensor:
    """Integrate from noise to data (or back with ``reverse``); returns the final state.

    ``x [B, ...]`` is the start state, integrated in float32 (float64 stays float64, for
    reference computations). ``solver="endpoint"`` needs a field
    with ``data_anchor`` (and ``noise_anchor`` when reversing, starting from ``init`` or
    from ``randn`` drawn with ``generator``).
    """
    spec = SOLVERS.get(solver)
    check_steps(steps)
    t_eps = check_t_eps(t_eps)
    x = x if x.dtype == torch.float64 else x.float()
    grid = spec.grid(steps, t_eps=t_eps, reverse=reverse, device=x.device, dtype=x.dtype)
    if not spec.is_endpoint:
        return odeint(spec.step, velocity_fn, x, grid, callback)
    anchor_name = "noise_anchor" if reverse else "data_anchor"
    anchor = getattr(velocity_fn, anchor_name, None)
    if anchor is None:
        raise ConfigError(f"solver 'endpoint' needs a field with {anchor_name}() (a composed "
                          "GAF field), not a plain velocity function")
    if reverse and init is None:
        init = torch.randn(x.shape, generator=generator, device="cpu").to(x.device)
    return ier(anchor, x, grid, init=init, callback=callback)
