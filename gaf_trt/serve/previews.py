"""Live previews of a request (the streaming model ``gaf_stream``): every ``preview_every``
network evaluations, the data anchor's estimate of the final image at that evaluation.

No second sampling loop: the request's solver loop runs unchanged on its scheduler network
(:class:`~gaf_trt.serve.scheduler.TicketNetwork`), wrapped in a :class:`PreviewNetwork` that
counts the request's evaluations and, on every ``preview_every``-th, hands the anchors the
solver has just received to the request's :class:`PreviewChannel`: the composed data anchor
``K = Σ c_i ⊙ K_i`` (:func:`~gaf_trt.compose.composition.blend`, as the solver's field
composes it; a pure class: its ``K``). Only that blend, on the request's own rows, runs in
the request's worker; making images of it (a latent model's VAE decode, the uint8 rounding)
is the consumer's work (the stream's sender), so the worker parks at its next evaluation at
once and the scheduler's calls, and so the other requests, do not wait for previews. A
request without previews gets no wrapper at all.
"""

from __future__ import annotations

import collections
import numbers
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from gaf_trt.checks import int_text
from gaf_trt.compose.composition import Composition, blend
from gaf_trt.compose.solvers import SOLVERS
from gaf_trt.errors import ConfigError
from gaf_trt.model.config import GAFConfig
from gaf_trt.serve.requests import RequestPlan

#: The request parameter of ``gaf_stream``: a preview every N network evaluations (0: none).
PREVIEW_PARAM = "preview_every"


def evaluations(plan: RequestPlan) -> int:
    """Network evaluations of a request's solver loop: steps x the solver's evaluations per
    step (IER: one per grid point, ``steps`` points)."""
    return SOLVERS.get(plan.request.solver).evals_per_step * plan.request.steps


def check_preview_every(value: object, total: int) -> int:
    """``preview_every`` as an ``int``: 0 or absent (``None``) means no previews, else
    ``1..total`` (the request's network evaluations). An integer, or its decimal text (some
    clients send every parameter as a string); anything else is refused naming the value."""
    if value is None:
        return 0
    number = int_text(PREVIEW_PARAM, value) if isinstance(value, str) else value
    if isinstance(number, bool) or not isinstance(number, numbers.Integral) \
            or not 0 <= number <= total:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:60] + "..."
        raise ConfigError(f"parameter {PREVIEW_PARAM} must be 0 (no previews) or an integer in "
                          f"1..{total} (this request's network evaluations: steps x the "
                          f"solver's evaluations per step), got {shown}")
    return int(number)


@dataclass(frozen=True)
class Preview:
    """One preview: after ``step`` of the request's ``total`` network evaluations, the
    composed data anchor ``state [B, C, S, S]`` (CPU float32, the solver's space: pixels in
    ``[-1, 1]`` or latents)."""

    step: int
    total: int
    state: Tensor


class PreviewChannel:
    """A request's previews, from its worker (:meth:`offer`, via :class:`PreviewNetwork`) to
    its consumer (:meth:`get`); :meth:`close` once the request is done. ``on_change`` (set by
    an asyncio consumer) is called in the worker's thread after every change."""

    def __init__(self, every: int, total: int, composition: Composition | None) -> None:
        self.every, self.total = every, total
        self._coefficients = None if composition is None else composition.coefficients
        self._count = 0
        self._items: collections.deque[Preview] = collections.deque()
        self._closed = False
        self._cond = threading.Condition()
        self.on_change: Callable[[], None] | None = None

    def offer(self, k: Tensor) -> None:
        """After one evaluation: its data anchors ``k [N*B, C, S, S]`` (class-major); every
        ``every``-th evaluation becomes a preview."""
        self._count += 1
        if self._count % self.every:
            return
        k = k.float()
        if self._coefficients is None:
            state = k.cpu().clone()
        else:
            n = self._coefficients.shape[0]
            per_class = k.view(n, k.shape[0] // n, *k.shape[1:])
            state = blend(self._coefficients.to(k.device), per_class).cpu()
        self._push(Preview(self._count, self.total, state))

    def _push(self, item: Preview | None) -> None:
        with self._cond:
            if item is None:
                self._closed = True
            elif not self._closed:
                self._items.append(item)
            self._cond.notify_all()
        if self.on_change is not None:
            self.on_change()

    def close(self) -> None:
        """The request is done (finished, failed or cancelled): no more previews."""
        self._push(None)

    def get(self, timeout: float | None = None) -> Preview | None:
        """The next preview; ``None`` once the channel is closed and drained;
        ``TimeoutError`` when neither happens within ``timeout``."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                raise TimeoutError("no preview yet")
            return self._items.popleft() if self._items else None

    def poll(self) -> tuple[list[Preview], bool]:
        """Without waiting: the previews ready now and whether the channel is closed."""
        with self._cond:
            items, self._items = list(self._items), collections.deque()
            return items, self._closed


class PreviewNetwork:
    """``network`` (a request's :class:`~gaf_trt.serve.scheduler.TicketNetwork`) that hands
    each evaluation's data anchors to ``channel``: ``(x [M,C,S,S], t [M], y [M]) -> (J, K)``,
    unchanged."""

    def __init__(self, network: Callable[..., tuple[Tensor, Tensor]],
                 channel: PreviewChannel) -> None:
        self.network = network
        self.channel = channel
        self.config: GAFConfig = network.config  # type: ignore[attr-defined]

    def __call__(self, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        j, k = self.network(x, t, y)
        self.channel.offer(k)
        return j, k

    def call_cached(self, state: Any, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """A feature-cached evaluation (the request's ``cache``), through the scheduler's
        :meth:`~gaf_trt.serve.scheduler.TicketNetwork.call_cached`, previewed alike."""
        j, k = self.network.call_cached(state, x, t, y)  # type: ignore[attr-defined]
        self.channel.offer(k)
        return j, k
