"""Fixed-grid solvers as pure functions of ``(field, x, grid)`` (docs/design.md).

Every registered solver is one ``run(field, x, grid, callback) -> x``; the time grid is
explicit data (a 1-D tensor on the state's device, increasing from noise to data, decreasing
for inversion). Loops index the grid with tensors only: no ``.item()``, no host sync, no
data-dependent allocation, so a whole loop can be captured in a CUDA graph.
"""

from __future__ import annotations

import functools
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
#: A one-step method ``(f, x, t0, t1) -> x(t1)``.
Step = Callable[[VelocityFn, Tensor, Tensor, Tensor], Tensor]
#: A solver loop ``(field, x, grid, callback) -> final state``.
Run = Callable[..., Tensor]

T_EPS = 1e-3
IER_ALPHA = 0.95
MAX_STEPS = 10_000


class AnchoredField(Protocol):
    """A velocity field that also gives its blended anchors (needed by the IER sampler)."""

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


def odeint(step: Step, f: VelocityFn, x: Tensor, grid: Tensor,
           callback: StepCallback | None = None) -> Tensor:
    """Integrate ``dx/dt = f(x, t)`` over ``grid`` (``[steps + 1]``) with a one-step method."""
    n = grid.shape[0] - 1
    for k in range(n):
        x = step(f, x, grid[k], grid[k + 1])
        if callback is not None:
            callback(k, n, x)
    return x


def _anchor(field: object, name: str) -> VelocityFn:
    fn = getattr(field, name, None)
    if fn is None:
        raise ConfigError(f"solver 'ier' needs a field with {name}() (a composed GAF field), "
                          "not a plain velocity function")
    return fn


def _refine(anchor: VelocityFn, e: Tensor, bridge: Callable[[Tensor, Tensor], Tensor],
            grid: Tensor, callback: StepCallback | None, alpha: float) -> Tensor:
    """``e = (1 - alpha) e + alpha anchor(bridge(e, t), t)`` at every grid point."""
    n = grid.shape[0]
    for k in range(n):
        t = grid[k]
        e = (1 - alpha) * e + alpha * anchor(bridge(e, t), t)
        if callback is not None:
            callback(k, n, e)
    return e


def ier(field: AnchoredField, z0: Tensor, grid: Tensor, callback: StepCallback | None = None, *,
        alpha: float = IER_ALPHA) -> Tensor:
    """Iterative endpoint refinement towards data (``grid`` = ``steps`` points).

    The data endpoint ``e`` starts at the noise ``z0``; at each ``t``,
    ``x_t = (1 - t) z0 + t e`` and ``e = (1 - alpha) e + alpha K(x_t, t)``.
    """
    return _refine(_anchor(field, "data_anchor"), z0.clone(),
                   lambda e, t: (1 - t) * z0 + t * e, grid, callback, alpha)


def ier_reverse(field: AnchoredField, x1: Tensor, grid: Tensor,
                callback: StepCallback | None = None, *, init: Tensor,
                alpha: float = IER_ALPHA) -> Tensor:
    """IER towards noise: refine a noise estimate ``e`` (from ``init``) with J on the reversed
    grid, bridge ``x_t = (1 - t) e + t x1``."""
    return _refine(_anchor(field, "noise_anchor"), init.clone(),
                   lambda e, t: (1 - t) * e + t * x1, grid, callback, alpha)


@dataclass(frozen=True)
class Solver:
    """A registered solver: order, velocity evaluations per step, grid length, its loops.

    ``run(field, x, grid, callback)`` integrates forward; ``run_reverse`` (same signature)
    inverts data to noise — the ODE solvers use ``run`` on the reversed grid.
    """

    name: str
    order: int
    evals_per_step: int
    run: Run
    run_reverse: Run | None = None
    extra_point: int = 1  # grid points: steps + 1 (ODE solvers) or steps (IER)
    needs_init_for_reverse: bool = False

    def grid(self, steps: int, *, t_eps: float = T_EPS, reverse: bool = False,
             device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        return time_grid(steps, t_eps=t_eps, reverse=reverse, points=steps + self.extra_point,
                         device=device, dtype=dtype)


def _ode(name: str, order: int, evals: int, step: Step) -> Solver:
    run = functools.partial(odeint, step)
    return Solver(name, order, evals, run)


SOLVERS: Registry[Solver] = Registry("solver")
SOLVERS.add("euler", _ode("euler", 1, 1, euler_step))
SOLVERS.add("heun", _ode("heun", 2, 2, heun_step))
SOLVERS.add("rk4", _ode("rk4", 4, 4, rk4_step))
SOLVERS.add("ier", Solver("ier", 0, 1, ier, ier_reverse, extra_point=0,
                          needs_init_for_reverse=True))
SOLVERS.alias("endpoint", "ier")  # the reference sampler's name for IER


def check_steps(steps: int, max_steps: int = MAX_STEPS) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= max_steps:
        raise ConfigError(f"steps must be an integer in 1..{max_steps}, got {steps!r}")
    return steps


def check_t_eps(t_eps: float) -> float:
    try:
        value = float(t_eps)
    except (TypeError, ValueError):
        raise ConfigError(f"t_eps must be a number in [0, 0.5), got {t_eps!r}") from None
    if not 0.0 <= value < 0.5:
        raise ConfigError(f"t_eps must be in [0, 0.5), got {t_eps}")
    return value


def integrate(velocity_fn: VelocityFn | AnchoredField, x: Tensor, *, steps: int,
              solver: str = "euler", t_eps: float = T_EPS, reverse: bool = False,
              callback: StepCallback | None = None, generator: torch.Generator | None = None,
              init: Tensor | None = None) -> Tensor:
    """Integrate from noise to data (or back with ``reverse``); returns the final state.

    ``x [B, ...]`` is the start state, integrated in float32 (float64 stays float64, for
    reference computations). ``solver="ier"`` needs a field with ``data_anchor`` (and
    ``noise_anchor`` when reversing, starting from ``init`` or from ``randn`` drawn with
    ``generator``).
    """
    spec = SOLVERS.get(solver)
    check_steps(steps)
    t_eps = check_t_eps(t_eps)
    x = x if x.dtype == torch.float64 else x.float()
    grid = spec.grid(steps, t_eps=t_eps, reverse=reverse, device=x.device, dtype=x.dtype)
    run = spec.run_reverse if reverse and spec.run_reverse is not None else spec.run
    if reverse and spec.needs_init_for_reverse:
        if init is None:
            init = torch.randn(x.shape, generator=generator, device="cpu").to(x.device, x.dtype)
        run = functools.partial(run, init=init)
    return run(velocity_fn, x, grid, callback)
