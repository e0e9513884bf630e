"""Transport experiments (arXiv 2511.22693, "transport algebra" stress tests).

Pure functions on the velocity contract: each takes an :class:`AnchorNetwork`, class ids and
a start tensor, integrates with :func:`~gaf_trt.compose.solvers.integrate`, and returns a
result dataclass. No file I/O (the ``gaf-trt transport`` job in
:mod:`gaf_trt.pipeline.transport` writes pictures and records).

- :func:`cycle`: noise -> c1 -> noise -> c2 -> ... -> noise -> c1; the reverse legs use the
  class just generated. A lossless flow returns to the first c1 image.
- :func:`interpolation`: ``(1 - a) v_i + a v_j`` for ``n_interp`` alphas between consecutive
  classes, chained back to the first class; each frame is reached by inverting the previous
  frame with its own composition and integrating forward with the next one.
- :func:`barycentric`: a ``g x g`` grid of three-class blends from one noise.
- :func:`translate`: invert an image with the source class, generate with the target class.

Reverse legs (inversion to noise) use an ODE solver. IER's reverse pass refines a noise
estimate from fresh random noise, so it is not an inversion of the forward pass; a forward
``solver`` of that kind is allowed and its reverse legs use ``reverse_solver``
(default :data:`DEFAULT_REVERSE_SOLVER`). Asking for IER as the reverse solver is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from gaf_trt.compose.composition import AnchorNetwork, ComposedField, Composition
from gaf_trt.compose.sampling import check_finite
from gaf_trt.compose.solvers import SOLVERS, StepCallback, check_steps, check_t_eps, integrate
from gaf_trt.errors import ConfigError

#: Reverse-leg solver when the forward solver is not invertible (IER).
DEFAULT_REVERSE_SOLVER = "rk4"
#: Bounds on the experiment sizes (frames per transition, barycentric grid side).
MAX_INTERP = 256
MAX_GRID = 32
#: Barycentric cells integrated per batch (x3 classes per network call).
BARYCENTRIC_CHUNK = 64


# --------------------------------------------------------------------------- validation


def _invertible(solver: str) -> bool:
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
        return forward if _invertible(solver) else DEFAULT_REVERSE_SOLVER
    if not _invertible(_canonical(reverse_solver)):
        odes = [n for n in SOLVERS.names() if _invertible(n)]
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


class _Progress:
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
def _forward(network: AnchorNetwork, comp: Composition, x: Tensor, s: LegSettings,
             callback: StepCallback | None = None) -> Tensor:
    """Noise ``x [B, C, S, S]`` -> data with composition ``comp``; raises
    :class:`~gaf_trt.errors.NonFiniteError` (naming the first bad step) when the state is
    not finite, as :func:`~gaf_trt.compose.sampling.sample` does."""
    field_ = ComposedField(network, comp)
    z = integrate(field_, x, steps=s.steps, solver=s.solver, t_eps=s.t_eps, callback=callback)
    return check_finite(z, f"generating classes {list(comp.classes)} ({comp.mode.value})",
                        field=field_, noise=x, steps=s.steps, solver=s.solver, t_eps=s.t_eps)


@torch.no_grad()
def _reverse(network: AnchorNetwork, comp: Composition, x: Tensor, s: LegSettings,
             callback: StepCallback | None = None) -> Tensor:
    """Data ``x [B, C, S, S]`` -> noise by integrating ``comp``'s field backwards; raises
    :class:`~gaf_trt.errors.NonFiniteError` when the state is not finite."""
    z = integrate(ComposedField(network, comp), x, steps=s.steps, solver=s.reverse_solver,
                  t_eps=s.t_eps, reverse=True, callback=callback)
    return check_finite(z, f"inverting classes {list(comp.classes)} ({comp.mode.value})",
                        solver=s.reverse_solver)


def mse(a: Tensor, b: Tensor) -> float:
    """Mean squared error over every element (float64 accumulation)."""
    return float((a.double() - b.double()).pow(2).mean())


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

    ``noise [B, C, S, S]``; at least two distinct classes (``c1 ... cn c1`` is accepted too). ``callback(done, total, x)`` is
    called after every solver step of every leg.
    """
    classes = open_path(check_classes(classes, network))
    require_distinct(classes, "a cycle")
    check_start(noise, network)
    s = LegSettings.make(network, steps, solver, reverse_solver, t_eps)
    path = classes + classes[:1]
    progress = _Progress(callback, 2 * len(classes) + 1, steps)
    x = noise.float()
    stops, labels = [x], ["noise"]
    for i, c in enumerate(path):
        x = _forward(network, Composition.pure(c), x, s, progress.leg())
        stops.append(x)
        labels.append(f"class {c}")
        if i < len(classes):
            x = _reverse(network, Composition.pure(c), x, s, progress.leg())
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
    progress = _Progress(callback, 2 * len(chain) - 1, steps)
    z = noise.float()
    comp = blend(*chain[0])
    frames = [_forward(network, comp, z, s, progress.leg())]
    noises = [z]
    for step in chain[1:]:
        z = _reverse(network, comp, frames[-1], s, progress.leg())
        comp = blend(*step)
        frames.append(_forward(network, comp, z, s, progress.leg()))
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
        j, k = self.network(xn, tt.repeat(n), y)
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
    progress = _Progress(callback, len(starts), steps)
    out = []
    for lo in starts:
        wc = w[lo:lo + chunk]  # [cells, 3]
        cells = wc.shape[0]
        field_ = CellwiseField(network, classes, wc.t().repeat_interleave(b, dim=1))
        x = noise.float().repeat(cells, 1, 1, 1)  # cell-major: [cells*B, C, S, S]
        z = integrate(field_, x, steps=s.steps, solver=s.solver, t_eps=s.t_eps,
                      callback=progress.leg())
        z = check_finite(z, f"barycentric cells {lo}..{lo + cells - 1} of classes "
                         f"{list(classes)}", field=field_, noise=x, steps=s.steps,
                         solver=s.solver, t_eps=s.t_eps)
        out.append(z.view(cells, b, *noise.shape[1:]))
    cells_t = torch.cat(out).view(g, g, b, *noise.shape[1:])
    return BarycentricResult(classes, cells_t, w.view(g, g, 3), s)  # type: ignore[arg-type]


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
    b = x.shape[0]
    y = torch.full((b,), c, dtype=torch.long, device=x.device)
    j, k = network(x, torch.full((b,), t, dtype=torch.float32, device=x.device), y)
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
    ode = _invertible(solver)
    keep = _snapshot_steps(s.steps, snapshots)
    taken: list[tuple[float, Tensor]] = []

    def on_step(k: int, n: int, x: Tensor) -> None:
        if k in keep:
            t = grid[k + 1] if ode else grid[k]
            taken.append((t, x.clone() if ode else (1 - t) * x0 + t * x))
        if callback is not None:
            callback(k, n, x)

    comp = Composition.pure(c)
    out = (_reverse if reverse else _forward)(network, comp, x0, s, on_step)
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
    progress = _Progress(callback, 2, steps)
    x = image_latent.float()
    z, snaps_in = _tracked_leg(network, source, x, s, reverse=True, snapshots=snapshots,
                               callback=progress.leg())
    y, snaps_out = _tracked_leg(network, target, z, s, reverse=False, snapshots=snapshots,
                                callback=progress.leg())
    t1 = 1.0 - s.t_eps
    start = Snapshot("invert", t1, x, *_anchors(network, source, x, t1))
    return TranslationResult(source, target, x, z, y, [start] + snaps_in + snaps_out,
                             mse(x, y), s)
