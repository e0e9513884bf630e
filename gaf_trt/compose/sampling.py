"""``gaf_trt.sample``: the one sampling entry — compose classes and integrate from noise.

Also the end-of-loop finiteness check: the solver loop never synchronises with the host;
one device-side reduction after it tells whether the state stayed finite.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gaf_trt.compose.cache import CachePolicy, reset_cache, with_cache
from gaf_trt.compose.composition import ClassBatchField, ComposedField, Composition
from gaf_trt.compose.solvers import T_EPS, StepCallback, integrate
from gaf_trt.engine.base import AnchorNetwork
from gaf_trt.errors import ConfigError, NonFiniteError


def check_noise(noise: Tensor, network: AnchorNetwork) -> None:
    """``noise`` must be ``[B, C, S, S]`` for the network's sample shape."""
    want = tuple(network.config.sample_shape)
    if not isinstance(noise, Tensor) or noise.dim() != 4 or tuple(noise.shape[1:]) != want:
        got = list(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
        raise ConfigError(f"noise must be [B, {', '.join(map(str, want))}], got {got}")
    if noise.shape[0] < 1:
        raise ConfigError("noise has an empty batch")


def composition_of(classes: Sequence[int] | Composition, *, weights: Sequence[float] | None,
                   alpha: float | None, masks: Tensor | None) -> Composition:
    """A :class:`Composition` as given, or built from classes and the weighting options."""
    if isinstance(classes, Composition):
        if weights is not None or alpha is not None or masks is not None:
            raise ConfigError("give weights / alpha / masks through the Composition, not both")
        return classes
    return Composition.build(classes, weights=weights, alpha=alpha, masks=masks)


def first_non_finite_step(field: object, noise: Tensor, *, steps: int, solver: str,
                          t_eps: float) -> int | None:
    """Re-run a loop that ended non-finite, checking after every step (a host sync per step:
    only on the failure path). Returns the 0-based step index, or None."""
    found: list[int] = []
    reset_cache(getattr(field, "network", None))  # the loop again from its start

    def watch(k: int, _n: int, x: Tensor) -> None:
        if not found and not bool(torch.isfinite(x).all()):
            found.append(k)

    integrate(field, noise, steps=steps, solver=solver, t_eps=t_eps, callback=watch)
    return found[0] if found else None


def check_finite(x: Tensor, what: str, *, field: object | None = None, noise: Tensor | None = None,
                 steps: int = 0, solver: str = "euler", t_eps: float = T_EPS) -> Tensor:
    """Raise :class:`NonFiniteError` naming ``what`` (and, when the loop's inputs are given,
    the first non-finite step) if ``x`` holds NaN or inf. One device-side reduction."""
    if bool(torch.isfinite(x).all()):
        return x
    where = ""
    if field is not None and noise is not None and steps:
        k = first_non_finite_step(field, noise, steps=steps, solver=solver, t_eps=t_eps)
        where = f" from step {k + 1} of {steps}" if k is not None else ""
    raise NonFiniteError(f"{what}: the state became NaN or infinite{where} ({solver}); "
                         "nothing was written. Reduced precision (fp16 overflow), extreme "
                         "weights or non-finite model weights are the usual causes")


@torch.no_grad()
def sample(model_or_engine: AnchorNetwork, classes: Sequence[int] | Composition, noise: Tensor, *,
           weights: Sequence[float] | None = None, alpha: float | None = None,
           masks: Tensor | None = None, steps: int = 20, solver: str = "euler",
           t_eps: float = T_EPS, callback: StepCallback | None = None,
           cache: str | CachePolicy | None = None) -> Tensor:
    """Generate from ``noise [B, C, S, S]`` with a composition of ``classes``.

    ``classes`` is a list of class ids (weighting rules of :meth:`Composition.build`;
    ``masks [N, 1, H, W]`` used as given, already softened) or a ready :class:`Composition`.
    ``cache``: reuse the trunk's features across evaluations (``off``, ``static:N``,
    ``adaptive:δ``, ``taylor:N``: :mod:`gaf_trt.compose.cache`). Returns the final state, same shape as
    ``noise``; raises :class:`NonFiniteError` when it is not finite.
    """
    check_noise(noise, model_or_engine)
    composition = composition_of(classes, weights=weights, alpha=alpha, masks=masks)
    field = ComposedField(with_cache(model_or_engine, cache, solver), composition)
    z = integrate(field, noise, steps=steps, solver=solver, t_eps=t_eps, callback=callback)
    return check_finite(z, f"classes {list(composition.classes)} ({composition.mode.value})",
                        field=field, noise=noise, steps=steps, solver=solver, t_eps=t_eps)


@torch.no_grad()
def sample_pure(model_or_engine: AnchorNetwork, classes: Sequence[int], noise: Tensor, *,
                steps: int = 20, solver: str = "euler", t_eps: float = T_EPS,
                callback: StepCallback | None = None,
                cache: str | CachePolicy | None = None) -> Tensor:
    """Each class of ``classes`` from the same ``noise [B, C, S, S]``, all in one batched
    solver loop (one network call of ``len(classes)·B`` per evaluation); ``cache`` as in
    :func:`sample`.

    Returns ``[len(classes), B, C, S, S]``.
    """
    check_noise(noise, model_or_engine)
    k, b = len(classes), noise.shape[0]
    if k == 0:
        raise ConfigError("at least one class is needed")
    labels = [int(c) for c in classes for _ in range(b)]
    field = ClassBatchField(with_cache(model_or_engine, cache, solver), labels)
    x = noise.unsqueeze(0).expand(k, *noise.shape).reshape(k * b, *noise.shape[1:])
    z = integrate(field, x, steps=steps, solver=solver, t_eps=t_eps, callback=callback)
    z = check_finite(z, f"pure classes {list(classes)}", field=field, noise=x, steps=steps,
                     solver=solver, t_eps=t_eps)
    return z.view(k, b, *noise.shape[1:])
