"""Transport algebra: :func:`cycle` through noise, pairwise :func:`interpolation` and the
:func:`barycentric` grid of three-class blends (pure functions on the velocity contract)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from gaf_trt.compose.composition import AnchorNetwork, Composition
from gaf_trt.compose.cache import reset_cache
from gaf_trt.compose.placement import call_network, network_device
from gaf_trt.compose.sampling import check_finite
from gaf_trt.compose.solvers import StepCallback, integrate
from gaf_trt.compose.transport.legs import (
    BARYCENTRIC_CHUNK,
    MAX_GRID,
    MAX_INTERP,
    LegSettings,
    Progress,
    check_classes,
    check_range,
    check_start,
    forward_leg,
    mse,
    open_path,
    require_distinct,
    reverse_leg,
)
from gaf_trt.errors import ConfigError

# --------------------------------------------------------------------------- cycle


@dataclass
class CycleResult:
    """Every stop of a cycle, each ``[B, C, S, S]`` on the input's device.

    ``stops`` alternates ``noise, image(c1), noise, image(c2), ..., noise, image(c1)``;
    ``labels`` names each stop (``"noise"`` / ``"class 3"``). ``latent_mse`` compares the
    first and last c1 images, ``noise_mse`` the start noise and the last inverted noise.
    """

    classes: tuple[int, ...]
    path: tuple[int, ...]
    stops: list[Tensor]
    labels: list[str]
    latent_mse: float
    noise_mse: float
    settings: LegSettings

    @property
    def first(self) -> Tensor:
        return self.stops[1]

    @property
    def last(self) -> Tensor:
        return self.stops[-1]

    def images(self) -> list[Tensor]:
        return self.stops[1::2]


def cycle(network: AnchorNetwork, classes: Sequence[int], noise: Tensor, *, steps: int = 50,
          solver: str = "rk4", reverse_solver: str | None = None, t_eps: float | None = None,
          callback: StepCallback | None = None) -> CycleResult:
    """noise -> c1 -> (reverse c1) noise -> c2 -> ... -> cn -> (reverse cn) noise -> c1.

    ``noise [B, C, S, S]``; at least two distinct classes (``c1 ... cn c1`` is accepted
    too). ``callback(done, total, x)`` is called after every solver step of every leg.
    """
    classes = open_path(check_classes(classes, network))
    require_distinct(classes, "a cycle")
    check_start(noise, network)
    s = LegSettings.make(network, steps, solver, reverse_solver, t_eps)
    path = classes + classes[:1]
    progress = Progress(callback, 2 * len(classes) + 1, steps)
    x = noise.float()
    stops, labels = [x], ["noise"]
    for i, c in enumerate(path):
        x = forward_leg(network, Composition.pure(c), x, s, progress.leg())
        stops.append(x)
        labels.append(f"class {c}")
        if i < len(classes):
            x = reverse_leg(network, Composition.pure(c), x, s, progress.leg())
            stops.append(x)
            labels.append("noise")
    return CycleResult(classes, path, stops, labels, mse(stops[1], stops[-1]),
                       mse(stops[0], stops[-2]), s)


# --------------------------------------------------------------------------- interpolation


def blend(ci: int, cj: int, a: float) -> Composition:
    """``(1 - a) v_i + a v_j``; the ends are the pure classes."""
    if a == 0.0:
        return Composition.pure(ci)
    if a == 1.0:
        return Composition.pure(cj)
    return Composition.build([ci, cj], alpha=1.0 - a)  # build: alpha*v1 + (1-alpha)*v2


@dataclass
class InterpolationResult:
    """Frames ``[F, B, C, S, S]`` along the chain; ``steps[f] = (ci, cj, a)`` made frame f.

    ``F = 1 + T (n_interp - 1)`` for ``T`` transitions (the shared ends are not repeated);
    the first frame is the pure first class from the noise, the last one the first class
    again after the whole chain. ``closure_mse`` compares them.
    """

    classes: tuple[int, ...]
    frames: Tensor
    steps: list[tuple[int, int, float]]
    closure_mse: float
    settings: LegSettings
    noises: list[Tensor] = field(default_factory=list)


def interpolation(network: AnchorNetwork, classes: Sequence[int], noise: Tensor, *,
                  n_interp: int = 5, steps: int = 50, solver: str = "rk4",
                  reverse_solver: str | None = None, t_eps: float | None = None,
                  callback: StepCallback | None = None) -> InterpolationResult:
    """Chain ``c1 -> c2 -> ... -> cn -> c1`` in ``n_interp`` alphas per transition
    (``linspace(0, 1, n_interp)``), each frame the forward pass of the noise obtained by
    inverting the previous frame with the previous composition. ``noise [B, C, S, S]``.

    Unlike the reference script, the frame shared by two transitions (pure ``c_j`` at the end
    of one, start of the next) is computed once."""
    classes = open_path(check_classes(classes, network))
    require_distinct(classes, "interpolation")
    check_range(n_interp, 2, MAX_INTERP, "n_interp")
    check_start(noise, network)
    s = LegSettings.make(network, steps, solver, reverse_solver, t_eps)
    alphas = torch.linspace(0.0, 1.0, n_interp, dtype=torch.float64).tolist()
    alphas[0], alphas[-1] = 0.0, 1.0
    pairs = list(zip(classes, classes[1:] + classes[:1]))
    chain = [(classes[0], classes[1], 0.0)] + [(ci, cj, a) for ci, cj in pairs for a in alphas[1:]]
    progress = Progress(callback, 2 * len(chain) - 1, steps)
    z = noise.float()
    comp = blend(*chain[0])
    frames = [forward_leg(network, comp, z, s, progress.leg())]
    noises = [z]
    for step in chain[1:]:
        z = reverse_leg(network, comp, frames[-1], s, progress.leg())
        comp = blend(*step)
        frames.append(forward_leg(network, comp, z, s, progress.leg()))
        noises.append(z)
    return InterpolationResult(classes, torch.stack(frames), chain,
                               mse(frames[0], frames[-1]), s, noises)


# --------------------------------------------------------------------------- barycentric


def barycentric_weights(grid_size: int) -> Tensor:
    """``[g(j), g(i), 3]`` float64: ``(u(1-v), (1-u)(1-v), v)`` normalised, ``u = i/(g-1)``,
    ``v = j/(g-1)``. Corners: ``(i, j) = (g-1, 0)`` class 1, ``(0, 0)`` class 2, ``j = g-1``
    class 3."""
    g = grid_size
    r = torch.arange(g, dtype=torch.float64) / (g - 1)
    v, u = torch.meshgrid(r, r, indexing="ij")  # [j, i]
    w = torch.stack([u * (1 - v), (1 - u) * (1 - v), v], dim=-1)
    return w / w.sum(-1, keepdim=True)


class CellwiseField:
    """A composition whose class weights differ per batch element: ``weights [N, B]``.

    ``v(x [B, C, S, S], t) = Σ_i w_i[b] (K_i − J_i)``; the ``N`` class passes go through the
    network as one batch of ``N·B`` (class-major). Also gives ``data_anchor``/``noise_anchor``
    (blended K / J) for the IER sampler.
    """

    def __init__(self, network: AnchorNetwork, classes: Sequence[int], weights: Tensor) -> None:
        self.network = network
        self.device = network_device(network)
        self.classes = check_classes(classes, network)
        if weights.dim() != 2 or weights.shape[0] != len(self.classes):
            raise ConfigError(f"weights must be [N={len(self.classes)}, B], "
                              f"got {list(weights.shape)}")
        self.weights = weights.float()

    def anchors(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        n, b = len(self.classes), x.shape[0]
        if b != self.weights.shape[1]:
            raise ConfigError(f"state batch {b} does not match {self.weights.shape[1]} weight rows")
        y = torch.tensor(self.classes, dtype=torch.long, device=x.device).repeat_interleave(b)
        tt = torch.as_tensor(t, dtype=torch.float32, device=x.device).reshape(-1).expand(b)
        xn = x.unsqueeze(0).expand(n, *x.shape).reshape(n * b, *x.shape[1:])
        j, k = call_network(self.network, xn, tt.repeat(n), y, device=self.device)
        shape = (n, b, *x.shape[1:])
        return j.float().view(shape), k.float().view(shape)

    def _blend(self, per_class: Tensor) -> Tensor:
        w = self.weights.to(per_class.device).view(*self.weights.shape, 1, 1, 1)
        return (w * per_class).sum(0)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        j, k = self.anchors(x, t)
        return self._blend(k - j)

    def data_anchor(self, x: Tensor, t: Tensor) -> Tensor:
        return self._blend(self.anchors(x, t)[1])

    def noise_anchor(self, x: Tensor, t: Tensor) -> Tensor:
        return self._blend(self.anchors(x, t)[0])


@dataclass
class BarycentricResult:
    """``cells [g(j), g(i), B, C, S, S]`` and ``weights [g, g, 3]`` (see
    :func:`barycentric_weights`)."""

    classes: tuple[int, int, int]
    cells: Tensor
    weights: Tensor
    settings: LegSettings


@torch.no_grad()
def barycentric(network: AnchorNetwork, classes: Sequence[int], noise: Tensor, *,
                grid_size: int = 5, steps: int = 50, solver: str = "rk4",
                t_eps: float | None = None, chunk: int = BARYCENTRIC_CHUNK,
                callback: StepCallback | None = None) -> BarycentricResult:
    """Every cell of the ``g x g`` barycentric grid of three distinct classes from the same
    ``noise [B, C, S, S]``; cells are integrated together, ``chunk`` cells per batch."""
    classes = check_classes(classes, network)
    require_distinct(classes, "barycentric", exactly=3)
    g = check_range(grid_size, 2, MAX_GRID, "grid_size")
    check_range(chunk, 1, 1 << 20, "chunk")
    check_start(noise, network)
    s = LegSettings.make(network, steps, solver, None, t_eps)
    w = barycentric_weights(g).view(g * g, 3)
    b = noise.shape[0]
    starts = list(range(0, g * g, chunk))
    progress = Progress(callback, len(starts), steps)
    out = []
    for lo in starts:
        wc = w[lo:lo + chunk]  # [cells, 3]
        cells = wc.shape[0]
        field_ = CellwiseField(network, classes, wc.t().repeat_interleave(b, dim=1))
        reset_cache(network)  # each chunk's loop starts with an empty feature cache
        x = noise.float().repeat(cells, 1, 1, 1)  # cell-major: [cells*B, C, S, S]
        z = integrate(field_, x, steps=s.steps, solver=s.solver, t_eps=s.t_eps,
                      callback=progress.leg())
        z = check_finite(z, f"barycentric cells {lo}..{lo + cells - 1} of classes "
                         f"{list(classes)}", field=field_, noise=x, steps=s.steps,
                         solver=s.solver, t_eps=s.t_eps)
        out.append(z.view(cells, b, *noise.shape[1:]))
    cells_t = torch.cat(out).view(g, g, b, *noise.shape[1:])
    return BarycentricResult(classes, cells_t, w.view(g, g, 3), s)  # type: ignore[arg-type]
