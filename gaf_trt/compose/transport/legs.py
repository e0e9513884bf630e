"""Shared pieces of the transport experiments: bounds, class and start checks, leg settings,
one forward and one reverse leg on a composition, and an experiment-wide progress counter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gaf_trt.compose.cache import reset_cache
from gaf_trt.compose.composition import AnchorNetwork, ComposedField, Composition
from gaf_trt.compose.sampling import check_finite
from gaf_trt.compose.solvers import (
    SOLVERS,
    StepCallback,
    check_steps,
    check_t_eps,
    integrate,
)
from gaf_trt.errors import ConfigError

#: Reverse-leg solver when the forward solver is not invertible (IER).
DEFAULT_REVERSE_SOLVER = "rk4"
#: Bounds on the experiment sizes (frames per transition, barycentric grid side).
MAX_INTERP = 256
MAX_GRID = 32
#: Barycentric cells integrated per batch (x3 classes per network call).
BARYCENTRIC_CHUNK = 64


# --------------------------------------------------------------------------- validation


def invertible(solver: str) -> bool:
    """True for ODE solvers (deterministic inversion on the reversed grid)."""
    spec = SOLVERS.get(solver)
    return not spec.needs_init_for_reverse


def _canonical(solver: str) -> str:
    SOLVERS.get(solver)  # unknown name: ConfigError listing the valid ones
    return SOLVERS.canonical(solver) if hasattr(SOLVERS, "canonical") else solver


def resolve_reverse_solver(solver: str, reverse_solver: str | None) -> str:
    """The solver used for the reverse (data -> noise) legs; validates both names."""
    forward = _canonical(solver)
    if reverse_solver is None:
        return forward if invertible(solver) else DEFAULT_REVERSE_SOLVER
    if not invertible(_canonical(reverse_solver)):
        odes = [n for n in SOLVERS.names() if invertible(n)]
        raise ConfigError(f"reverse solver {reverse_solver!r} does not invert the forward pass "
                          f"(it starts from fresh noise); use one of: {', '.join(odes)}")
    return _canonical(reverse_solver)


def check_classes(classes: Sequence[int], network: AnchorNetwork) -> tuple[int, ...]:
    n = network.config.num_classes
    out = tuple(int(c) for c in classes)
    bad = [c for c in out if not 0 <= c < n]
    if bad:
        raise ConfigError(f"class id(s) {bad} out of range: the model has {n} classes "
                          f"(0..{n - 1})")
    return out


def require_distinct(classes: Sequence[int], what: str, *, at_least: int = 2,
                     exactly: int | None = None) -> None:
    """The class-count rule of an experiment: ``exactly`` distinct classes when given, else
    at least ``at_least`` distinct ones (a cycle or chain may revisit a class)."""
    classes = list(classes)
    distinct = len(set(classes))
    if exactly is not None and (len(classes) != exactly or distinct != exactly):
        raise ConfigError(f"{what} needs exactly {exactly} distinct classes, got {classes}")
    if distinct < at_least:
        raise ConfigError(f"{what} needs at least {at_least} distinct classes, got {classes}")


def open_path(classes: tuple[int, ...]) -> tuple[int, ...]:
    """``(c1, ..., cn, c1)`` -> ``(c1, ..., cn)``: a chain given already closed (the reference
    sampler's ``0 1 2 0``) is the same chain as ``0 1 2``."""
    return classes[:-1] if len(classes) > 2 and classes[-1] == classes[0] else classes


def check_start(x: Tensor, network: AnchorNetwork, what: str = "noise") -> None:
    want = tuple(network.config.sample_shape)
    if x.dim() != 4 or tuple(x.shape[1:]) != want:
        raise ConfigError(f"{what} must be [B, {', '.join(map(str, want))}], got {list(x.shape)}")
    if not torch.isfinite(x).all():
        raise ConfigError(f"{what} contains NaN or infinite values")


def check_range(value: int, lo: int, hi: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{what} must be an integer in {lo}..{hi}, got {value!r}")
    return value


# --------------------------------------------------------------------------- legs


@dataclass(frozen=True)
class LegSettings:
    """How every leg of one experiment integrates."""

    steps: int
    solver: str
    reverse_solver: str
    t_eps: float

    @classmethod
    def make(cls, network: AnchorNetwork, steps: int, solver: str, reverse_solver: str | None,
             t_eps: float | None) -> LegSettings:
        check_steps(steps)
        rev = resolve_reverse_solver(solver, reverse_solver)
        eps = check_t_eps(network.config.t_eps if t_eps is None else t_eps)
        return cls(steps, solver, rev, eps)


class Progress:
    """Maps every leg's per-step callback onto one experiment-wide ``(done, total, x)``."""

    def __init__(self, callback: StepCallback | None, legs: int, steps: int) -> None:
        self.callback, self.total, self.done = callback, legs * steps, 0

    def leg(self) -> StepCallback | None:
        if self.callback is None:
            return None

        def on_step(_k: int, _n: int, x: Tensor) -> None:
            self.callback(self.done, self.total, x)
            self.done += 1

        return on_step


@torch.no_grad()
def forward_leg(network: AnchorNetwork, comp: Composition, x: Tensor, s: LegSettings,
                callback: StepCallback | None = None) -> Tensor:
    """Noise ``x [B, C, S, S]`` -> data with composition ``comp``; raises
    :class:`~gaf_trt.errors.NonFiniteError` (naming the first bad step) when the state is
    not finite, as :func:`~gaf_trt.compose.sampling.sample` does. A feature cache
    (:class:`~gaf_trt.compose.cache.CachedNetwork`) starts the leg empty."""
    reset_cache(network)
    field_ = ComposedField(network, comp)
    z = integrate(field_, x, steps=s.steps, solver=s.solver, t_eps=s.t_eps, callback=callback)
    return check_finite(z, f"generating classes {list(comp.classes)} ({comp.mode.value})",
                        field=field_, noise=x, steps=s.steps, solver=s.solver, t_eps=s.t_eps)


@torch.no_grad()
def reverse_leg(network: AnchorNetwork, comp: Composition, x: Tensor, s: LegSettings,
                callback: StepCallback | None = None) -> Tensor:
    """Data ``x [B, C, S, S]`` -> noise by integrating ``comp``'s field backwards; raises
    :class:`~gaf_trt.errors.NonFiniteError` when the state is not finite. A feature cache
    starts the leg empty."""
    reset_cache(network)
    z = integrate(ComposedField(network, comp), x, steps=s.steps, solver=s.reverse_solver,
                  t_eps=s.t_eps, reverse=True, callback=callback)
    return check_finite(z, f"inverting classes {list(comp.classes)} ({comp.mode.value})",
                        solver=s.reverse_solver)


def mse(a: Tensor, b: Tensor) -> float:
    """Mean squared error over every element (float64 accumulation)."""
    return float((a.double() - b.double()).pow(2).mean())
