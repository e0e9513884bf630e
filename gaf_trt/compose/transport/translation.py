"""Image-to-image translation: invert with the source class, generate with the target class,
with the J/K anchors of a few snapshots along both legs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gaf_trt.compose.composition import AnchorNetwork, Composition
from gaf_trt.compose.cache import uncached
from gaf_trt.compose.placement import call_network
from gaf_trt.compose.sampling import check_finite
from gaf_trt.compose.solvers import SOLVERS, StepCallback
from gaf_trt.compose.transport.legs import (
    LegSettings,
    Progress,
    check_classes,
    check_range,
    check_start,
    forward_leg,
    invertible,
    mse,
    reverse_leg,
)

# --------------------------------------------------------------------------- translation


@dataclass
class Snapshot:
    """One point of a trajectory: ``x``, and the class's anchors ``J``, ``K`` there
    (each ``[B, C, S, S]``), at time ``t``, on the ``leg`` ``"invert"`` or ``"generate"``."""

    leg: str
    t: float
    x: Tensor
    j: Tensor
    k: Tensor


@dataclass
class TranslationResult:
    """``source [B, C, S, S]`` -> ``noise`` (inverted with ``source_class``) -> ``result``
    (generated with ``target_class``), plus trajectory snapshots of both legs."""

    source_class: int
    target_class: int
    source: Tensor
    noise: Tensor
    result: Tensor
    snapshots: list[Snapshot]
    latent_mse: float  # result vs source
    settings: LegSettings


def _snapshot_steps(steps: int, count: int) -> set[int]:
    """Indices of the solver steps (0..steps-1) to snapshot: ``count`` evenly spaced, last
    one included."""
    count = max(1, min(count, steps))
    return {round((i + 1) * steps / count) - 1 for i in range(count)}


def _anchors(network: AnchorNetwork, c: int, x: Tensor, t: float) -> tuple[Tensor, Tensor]:
    """The exact anchors of a snapshot (outside the loop: never from a feature cache)."""
    network = uncached(network)  # type: ignore[assignment]
    b = x.shape[0]
    y = torch.full((b,), c, dtype=torch.long, device=x.device)
    j, k = call_network(network, x, torch.full((b,), t, dtype=torch.float32, device=x.device), y)
    what = f"anchors of class {c} at t={t:.3f}"
    return check_finite(j.float(), what), check_finite(k.float(), what)


@torch.no_grad()
def _tracked_leg(network: AnchorNetwork, c: int, x0: Tensor, s: LegSettings, *, reverse: bool,
                 snapshots: int, callback: StepCallback | None) -> tuple[Tensor, list[Snapshot]]:
    """One leg with the pure class ``c``, snapshotting ``(x_t, J, K)`` at a few steps. For the
    IER forward sampler the state is its data estimate ``e``; the snapshot shows the bridge
    point ``(1 - t) x0 + t e`` it refines from."""
    solver = s.reverse_solver if reverse else s.solver
    grid = SOLVERS.get(solver).grid(s.steps, t_eps=s.t_eps, reverse=reverse).tolist()
    ode = invertible(solver)
    keep = _snapshot_steps(s.steps, snapshots)
    taken: list[tuple[float, Tensor]] = []

    def on_step(k: int, n: int, x: Tensor) -> None:
        if k in keep:
            t = grid[k + 1] if ode else grid[k]
            taken.append((t, x.clone() if ode else (1 - t) * x0 + t * x))
        if callback is not None:
            callback(k, n, x)

    comp = Composition.pure(c)
    out = (reverse_leg if reverse else forward_leg)(network, comp, x0, s, on_step)
    leg = "invert" if reverse else "generate"
    snaps = [Snapshot(leg, t, x, *_anchors(network, c, x, t)) for t, x in taken]
    return out, snaps


def translate(network: AnchorNetwork, image_latent: Tensor, source: int, target: int, *,
              steps: int = 50, solver: str = "rk4", reverse_solver: str | None = None,
              t_eps: float | None = None, snapshots: int = 6,
              callback: StepCallback | None = None) -> TranslationResult:
    """Invert ``image_latent [B, C, S, S]`` (the model's data space: pixels in [-1, 1] or
    scaled VAE latents) to noise with ``source``, then generate with ``target``. Takes
    ``snapshots`` trajectory points per leg (the last is the leg's end)."""
    source, target = check_classes([source, target], network)
    check_start(image_latent, network, "image latent")
    check_range(snapshots, 1, 64, "snapshots")
    s = LegSettings.make(network, steps, solver, reverse_solver, t_eps)
    progress = Progress(callback, 2, steps)
    x = image_latent.float()
    z, snaps_in = _tracked_leg(network, source, x, s, reverse=True, snapshots=snapshots,
                               callback=progress.leg())
    y, snaps_out = _tracked_leg(network, target, z, s, reverse=False, snapshots=snapshots,
                                callback=progress.leg())
    t1 = 1.0 - s.t_eps
    start = Snapshot("invert", t1, x, *_anchors(network, source, x, t1))
    return TranslationResult(source, target, x, z, y, [start] + snaps_in + snaps_out,
                             mse(x, y), s)
