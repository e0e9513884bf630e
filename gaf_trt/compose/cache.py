"""Reusing the trunk's features across solver evaluations (issue 26): a network wrapper.

GAF's heads are one linear layer each, ``J = (1 − t) x + J_lin(f)``, ``K = t x + K_lin[y](f)``
with ``f = trunk(x, t, y)``; all the cost is the trunk. :class:`CachedNetwork` wraps a network
that exposes its trunk and heads separately (:class:`TrunkSplit`: the PyTorch ``GAF``, the
torch backend, the ONNX Runtime and TensorRT engines opened with their split graphs) and
satisfies the :class:`~gaf_trt.engine.base.AnchorNetwork` contract itself, so the solvers stay
pure: they never know that a call reused ``f``. The heads and the skip terms always run with
the current ``x`` and ``t``.

Policies (one registry, :data:`CACHE_POLICIES`; the CLI's ``--cache``):

- ``off`` (the default): every call runs the whole network;
- ``static:N``: the trunk runs on every N-th evaluation, the heads on every one (FORA-style);
  a fixed schedule decided on the host without reading the device, so a captured loop stays
  one graph. ``static:1`` gives the numbers of ``off``;
- ``adaptive:δ``: the trunk runs again when the relative L1 change of its input ``x`` since
  the last recompute, ``mean|x − x₀| / mean|x₀|`` (or the change of ``t``, ``mean|t − t₀|``),
  exceeds ``δ`` (TeaCache / FBCache-style, measured on the trunk's input rather than the first
  block's modulated input, the same on every backend). Decided per call — all the rows of
  one composition together — with one host read per call, so it is not CUDA-graph
  capturable. ``adaptive:0`` gives the numbers of ``off``;
- ``taylor:N``: the schedule of ``static:N``, but between recomputes the features are
  extrapolated to first order, ``f(t) ≈ f(t_k) + (t − t_k)·(f(t_k) − f(t_{k−1}))/(t_k −
  t_{k−1})`` per row (TaylorSeer-style), from the last two recomputes (plain reuse until two
  exist, and for a row whose two recompute times coincide). A fixed schedule and device-side
  arithmetic: capturable. ``taylor:1`` gives the numbers of ``off``.

What is kept between evaluations lives in a :class:`FeatureState`, one per group of rows
(one solver loop): keyed by the rows it serves, so a call whose shape or labels ``y`` differ
from the cached ones recomputes. A :class:`CachedNetwork` serves one solver loop at a time
(:meth:`CachedNetwork.reset` at the start of each loop; ``gaf_trt.sample`` / ``sample_pure``
do). :func:`grouped_call` serves the rows of several groups in one trunk call and one heads
call -- the trunk only for the groups that are due: serving packs the evaluations of many
requests into one call, each request with its own state (a network with ``call_cached``, such
as serving's per-request network, receives the wrapper's state instead of being called).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from gaf_trt.compose.placement import network_device
from gaf_trt.compose.solvers import SOLVERS
from gaf_trt.errors import ConfigError
from gaf_trt.model.config import GAFConfig
from gaf_trt.model.gaf import broadcast_time
from gaf_trt.registry import Registry

log = logging.getLogger(__name__)

#: What supports caching, named when a network without the split is refused.
SPLIT_BACKENDS = ("torch (a GAF checkpoint or bundled model)",
                  "ort / trt engines opened with their split graphs (trunk, j_head, k_bank)")


@runtime_checkable
class TrunkSplit(Protocol):
    """A network whose trunk and heads can run separately.

    ``features(x [M,C,S,S], t [M], y [M]) -> f [M, L, D]`` (the trunk's tokens, on the
    network's device) and ``anchors_from(f, x, t, y) -> (J, K)``, each ``[M, C, S, S]``, with
    ``network(x, t, y) == anchors_from(features(x, t, y), x, t, y)``.
    """

    config: GAFConfig

    def features(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor: ...

    def anchors_from(self, f: Tensor, x: Tensor, t: Tensor,
                     y: Tensor) -> tuple[Tensor, Tensor]: ...


@dataclass(frozen=True)
class CachePolicy:
    """A parsed policy: ``kind`` (``off`` / ``static`` / ``adaptive`` / ``taylor``), the
    interval ``every`` of ``static`` and ``taylor`` and the threshold ``delta`` of
    ``adaptive``."""

    kind: str = "off"
    every: int = 1
    delta: float = 0.0

    @property
    def text(self) -> str:
        """The policy as the CLI spells it (what records store)."""
        if self.kind in ("static", "taylor"):
            return f"{self.kind}:{self.every}"
        if self.kind == "adaptive":
            return f"adaptive:{self.delta:g}"
        return "off"

    @property
    def active(self) -> bool:
        """False for ``off`` (every call runs the whole network); ``static:1``,
        ``taylor:1`` and ``adaptive:0`` run trunk and heads separately on every call (the
        same numbers)."""
        return self.kind != "off"

    @property
    def scheduled(self) -> bool:
        """Whether the trunk runs on a fixed schedule (``static`` / ``taylor``)."""
        return self.kind in ("static", "taylor")

    @property
    def capturable(self) -> bool:
        """Whether a solver loop over the wrapper can be captured as one CUDA graph."""
        return self.kind != "adaptive"


@dataclass(frozen=True)
class CacheKind:
    """A registered policy kind: its form (``static:N``) and the parser of its argument."""

    name: str
    form: str
    parse: Callable[[str | None], CachePolicy]


def _no_arg(arg: str | None) -> CachePolicy:
    if arg is not None:
        raise ValueError("takes no argument")
    return CachePolicy()


def _every(kind: str) -> Callable[[str | None], CachePolicy]:
    def parse(arg: str | None) -> CachePolicy:
        try:
            every = int(arg or "")
        except ValueError:
            every = 0
        if not 1 <= every <= 1000:
            raise ValueError("N must be an integer in 1..1000")
        return CachePolicy(kind, every=every)

    return parse


def _adaptive(arg: str | None) -> CachePolicy:
    try:
        delta = float(arg or "")
    except ValueError:
        delta = -1.0
    if not 0.0 <= delta <= 10.0:  # also refuses nan
        raise ValueError("δ must be a number in [0, 10]")
    return CachePolicy("adaptive", delta=delta)


CACHE_POLICIES: Registry[CacheKind] = Registry("cache policy")
CACHE_POLICIES.add("off", CacheKind("off", "off", _no_arg))
CACHE_POLICIES.add("static", CacheKind("static", "static:N", _every("static")))
CACHE_POLICIES.add("adaptive", CacheKind("adaptive", "adaptive:δ", _adaptive))
CACHE_POLICIES.add("taylor", CacheKind("taylor", "taylor:N", _every("taylor")))


def cache_forms() -> list[str]:
    """The valid spellings, for help texts and errors: ``off``, ``static:N``, ``adaptive:δ``,
    ``taylor:N``."""
    return [CACHE_POLICIES.get(n).form for n in CACHE_POLICIES.names()]


def parse_cache(policy: str | CachePolicy | None) -> CachePolicy:
    """``off`` (or None), ``static:N`` / ``taylor:N`` (N ≥ 1) or ``adaptive:δ`` (δ ≥ 0) -> a
    :class:`CachePolicy`; anything else is one :class:`ConfigError` naming the bad value and
    the valid forms."""
    if policy is None:
        return CachePolicy()
    if isinstance(policy, CachePolicy):
        return policy
    text = str(policy).strip()
    name, sep, arg = text.partition(":")
    valid = ", ".join(cache_forms())
    try:
        kind = CACHE_POLICIES.get(name.strip().lower())
        return kind.parse(arg.strip() if sep else None)
    except (ConfigError, ValueError) as err:
        why = f" ({err})" if isinstance(err, ValueError) else ""
        raise ConfigError(f"unknown cache policy {text!r}{why}; valid: {valid} (e.g. static:2, "
                          "adaptive:0.05, taylor:2)") from None


def split_problem(network: object) -> str | None:
    """None when ``network`` can serve cached evaluations (a :class:`TrunkSplit` whose split
    is available, or a network taking the state itself: ``call_cached``), else why not."""
    why = getattr(network, "split_unavailable", lambda: None)()
    if not isinstance(network, TrunkSplit) and not callable(getattr(network, "call_cached",
                                                                    None)):
        why = f"{type(network).__name__} does not run its trunk and heads separately"
    return why


def check_split(network: object) -> None:
    """Refuse a network whose trunk and heads cannot run separately, naming those that can."""
    why = split_problem(network)
    if why is not None:
        raise ConfigError(f"feature caching needs a network with a separate trunk: {why}; "
                          f"supported: {'; '.join(SPLIT_BACKENDS)} (or use --cache off)")


class FeatureState:
    """What one group of rows (one solver loop) keeps between evaluations under ``policy``:
    the trunk's tokens ``f [M, L, D]`` of its last recompute, the rows they belong to, the
    evaluations since, and what the policy needs (``adaptive``: the input of the last
    recompute; ``taylor``: the per-row slope ``df/dt`` of the last two recomputes).

    ``calls`` and ``trunk_calls`` count the evaluations and the recomputes since creation.
    """

    def __init__(self, policy: CachePolicy) -> None:
        self.policy = policy
        self.calls = 0
        self.trunk_calls = 0
        self.reset()

    def reset(self) -> None:
        """Forget the cached tokens (the start of a new solver loop); the counters stay."""
        self._f: Tensor | None = None
        self._y: Tensor | None = None
        self._shape: tuple[int, ...] = ()
        self._since = 0
        self._x0: Tensor | None = None
        self._t0: Tensor | None = None
        self._slope: Tensor | None = None

    @property
    def saved(self) -> float:
        """The share of evaluations that reused the trunk's tokens (0 before any call)."""
        return 1.0 - self.trunk_calls / self.calls if self.calls else 0.0

    def _same_rows(self, x: Tensor, y: Tensor) -> bool:
        if self._f is None or tuple(x.shape) != self._shape or self._y is None:
            return False
        if y is self._y:
            return True
        return y.shape == self._y.shape and y.device == self._y.device and \
            bool(torch.equal(y, self._y))

    def due(self, x: Tensor, t: Tensor, y: Tensor) -> bool:
        """Whether the evaluation of ``x [M,C,S,S]``, ``t [M]`` (float32), ``y [M]`` needs
        the trunk (other rows, the schedule, or the input moved more than ``δ``)."""
        if not self._same_rows(x, y):
            return True
        p = self.policy
        if p.scheduled:
            return self._since >= p.every
        x0, t0 = self._x0, self._t0
        if x0 is None or t0 is None:
            return True
        change = ((x - x0).abs().mean() / x0.abs().mean().clamp_min(1e-12)).item()
        return change > p.delta or (t - t0).abs().mean().item() > p.delta

    def keep(self, f: Tensor, x: Tensor, t: Tensor, y: Tensor) -> None:
        """Store the recomputed tokens ``f [M, L, D]`` of the evaluation ``(x, t, y)``."""
        kind = self.policy.kind
        if kind == "taylor":
            if self._same_rows(x, y) and self._t0 is not None:
                dt = t - self._t0  # [M]; a row whose two times coincide keeps slope 0
                ok = dt.abs() > 1e-6
                scale = torch.where(ok, 1.0 / torch.where(ok, dt, torch.ones_like(dt)),
                                    torch.zeros_like(dt))
                self._slope = (f.float() - self._f.float()) * scale.view(-1, 1, 1)
            else:
                self._slope = None
            self._t0 = t.clone()
        elif kind == "adaptive":
            self._x0, self._t0 = x.clone(), t.clone()
        self._f, self._since, self._shape, self._y = f, 0, tuple(x.shape), y
        self.trunk_calls += 1

    def features(self, t: Tensor) -> Tensor:
        """The tokens of this evaluation at ``t [M]``: the kept ones, or (``taylor``, once
        two recomputes exist) extrapolated to ``t``. Counts the evaluation."""
        self._since += 1
        self.calls += 1
        f = self._f
        assert f is not None  # due() is True until keep() ran (internal invariant)
        if self._slope is None or self._since == 1 or self._t0 is None:
            return f
        step = (t - self._t0).view(-1, 1, 1)
        return torch.addcmul(f.float(), step, self._slope).to(f.dtype)


def grouped_call(network: object, groups: Sequence[tuple[FeatureState | None, int]],
                 x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """``(J, K)``, each ``[M, C, S, S]``, for the rows ``x [M,C,S,S]``, ``t [M]``, ``y [M]``
    of consecutive groups ``(state, rows)`` (rows summing to ``M``): ONE trunk call on the
    rows of the groups that are due (a group without a state always is) and ONE heads call
    on all rows, each group's rows with its own tokens (kept, extrapolated or new).
    ``network`` is a :class:`TrunkSplit`."""
    t = broadcast_time(t, x.shape[0], x.device).float()
    spans, start = [], 0
    for _state, n in groups:
        spans.append((start, start + n))
        start += n
    if start != x.shape[0]:
        raise ConfigError(f"the groups hold {start} rows, the call {x.shape[0]}")
    due = [s is None or s.due(x[a:b], t[a:b], y[a:b]) for (s, _), (a, b) in zip(groups, spans)]
    fresh: Tensor | None = None
    if all(due):
        fresh = network.features(x, t, y)  # type: ignore[attr-defined]
    elif any(due):
        rows = [torch.arange(a, b, device=x.device) for d, (a, b) in zip(due, spans) if d]
        idx = torch.cat(rows)
        fresh = network.features(x[idx], t[idx], y[idx])  # type: ignore[attr-defined]
    parts, used = [], 0
    for (state, _), (a, b), d in zip(groups, spans, due):
        if d:
            assert fresh is not None
            f = fresh if len(groups) == 1 else fresh[used:used + b - a]
            used += b - a
            if state is not None:
                state.keep(f, x[a:b], t[a:b], y[a:b])
        if state is not None:
            f = state.features(t[a:b])
        parts.append(f)
    f = parts[0] if len(parts) == 1 else torch.cat(parts)
    return network.anchors_from(f, x, t, y)  # type: ignore[attr-defined]


class CachedNetwork:
    """``(x [M,C,S,S], t [M], y [M]) -> (J, K)`` through ``network``, reusing its trunk's
    tokens between calls by ``policy`` (a :class:`CachePolicy` or its text).

    ``calls`` and ``trunk_calls`` count the evaluations and the trunk runs since creation
    (for a network that takes the state itself, ``call_cached``, as its calls complete).
    """

    def __init__(self, network: object, policy: str | CachePolicy | None = "off") -> None:
        self.policy = parse_cache(policy)
        if self.policy.active:
            check_split(network)
        self.network = network
        self.config: GAFConfig = network.config  # type: ignore[attr-defined]
        self.device = network_device(network)
        self.state = FeatureState(self.policy)

    def reset(self) -> None:
        """Forget the cached tokens (the start of a new solver loop)."""
        self.state.reset()

    @property
    def name(self) -> str:
        """The wrapped network's backend name (what records show as the backend)."""
        return str(getattr(self.network, "name", type(self.network).__name__))

    @property
    def calls(self) -> int:
        return self.state.calls

    @property
    def trunk_calls(self) -> int:
        return self.state.trunk_calls

    @property
    def saved(self) -> float:
        """The share of evaluations that reused the trunk's tokens (0 before any call)."""
        return self.state.saved

    def __call__(self, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if not self.policy.active:
            self.state.calls += 1
            self.state.trunk_calls += 1
            return self.network(x, t, y)  # type: ignore[operator]
        keyed = getattr(self.network, "call_cached", None)
        if keyed is not None:  # the network packs this state's rows with others itself
            return keyed(self.state, x, t, y)
        return grouped_call(self.network, [(self.state, x.shape[0])], x, t, y)


def reset_cache(network: object) -> None:
    """Reset ``network``'s cache when it is a :class:`CachedNetwork` (a new solver loop
    starts on it); any other network is left alone."""
    if isinstance(network, CachedNetwork):
        network.reset()


def uncached(network: object) -> object:
    """The network a :class:`CachedNetwork` wraps (``network`` itself otherwise): for calls
    outside the solver loop that must see exact anchors."""
    return network.network if isinstance(network, CachedNetwork) else network


#: Solvers whose steps are too large for a fixed reuse schedule (``static:N`` / ``taylor:N``),
#: with the measured reason (docs/results.md, "Feature caching": digits model, 100 samples per
#: class).
STATIC_REFUSED = {"ier": "IER-8 measured a Fréchet distance 20x the uncached one with static:2 "
                         "(0.135 -> 2.743), 29x with static:3, 3.8x with taylor:2 and 8.5x "
                         "with taylor:3 (the samples lose their variety)"}


def check_cache_solver(policy: str | CachePolicy | None, solver: str) -> CachePolicy:
    """The parsed policy, refused for a solver in :data:`STATIC_REFUSED` when it is a static
    schedule that reuses features (``static:N`` or ``taylor:N``, N ≥ 2): one error with the measured reason
    and what works instead."""
    p = parse_cache(policy)
    solver = SOLVERS.canonical(solver)
    why = STATIC_REFUSED.get(solver) if p.scheduled and p.every > 1 else None
    if why is not None:
        raise ConfigError(f"cache policy {p.text} with solver {solver!r} is refused: {why}; "
                          "use --cache adaptive:δ (it recomputes when the steps are large) "
                          "or off")
    return p


def with_cache(network: object, policy: str | CachePolicy | None, solver: str) -> object:
    """``network`` itself when ``policy`` is inactive (``off``), else a fresh
    :class:`CachedNetwork` (checked against ``solver``: :func:`check_cache_solver`); a
    :class:`CachedNetwork` given as the network is reset (its own policy kept, and ``policy``
    must then be inactive; a static one with a refused solver only logs a warning: a wrapper
    built by hand is an experiment)."""
    p = check_cache_solver(policy, solver)
    if isinstance(network, CachedNetwork):
        if p.active:
            raise ConfigError("the network is already a CachedNetwork; give the policy once")
        try:
            check_cache_solver(network.policy, solver)
        except ConfigError as err:
            log.warning("%s", err)
        network.reset()
        return network
    return CachedNetwork(network, p) if p.active else network
