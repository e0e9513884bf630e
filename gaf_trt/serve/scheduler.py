"""Step-level batching: one scheduler owns the network and packs the rows of every waiting
network evaluation of every in-flight request into one call.

Each request runs the unchanged solver loop (``gaf_trt.sample`` via the sampling pipeline)
in its own worker thread, on a :class:`TicketNetwork`: an :class:`AnchorNetwork` whose call
hands its rows ``(x [M,C,S,S], t [M], y [M])`` to the scheduler and blocks until their
anchors come back. A request is *running* from its first evaluation until its worker calls
:meth:`StepScheduler.leave` (or it is cancelled); it is *parked* while one of its evaluations
waits. The scheduler forms a call (iteration-level scheduling, as Orca / vLLM do for tokens)
when every running request is parked -- so one call carries one evaluation of every request
in flight, instead of whatever happened to be waiting the instant the previous call ended --
or, in a large iteration, as soon as half of its rows wait and make at least half a
``call_rows`` call (the two halves then alternate, one computing its solver step while
the other's call runs), or as
soon as the waiting rows reach ``call_rows``, the call size beyond which the network gets
slower per row (measured by :func:`~gaf_trt.serve.curve.calibrate_call_rows`); it takes the waiting
evaluations first come, first served, whole, up to ``call_rows`` rows, runs ONE network
call and hands each evaluation its slice of ``(J, K)``. A request that arrives joins at the
next call; one that finishes or is cancelled leaves at once (its waiting rows are dropped).

Minimum rows (bit-identity): on CPU, torch's fp32 GEMM takes a different kernel for a very
small number of rows (measured on the digits model: the time-embedder ``Linear`` of a call
with fewer than ~11 rows rounds differently from the same rows in a larger call; calls of
11 to 1,024 rows all agree), so a row's result would depend on what else was in the call.
Every call of fewer than ``min_rows`` rows (default 16) is therefore padded to ``min_rows``;
with that, a row's anchors do not depend on the other rows of the call, and a request's
result does not depend on what else was in flight. :class:`MinRowsNetwork` applies the same
padding to a plain network (the reference that serving results are bit-identical to;
``gaf-trt sample`` itself is bit-identical whenever its calls have at least ``min_rows``
rows, see README "Serving").
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from gaf_trt.checks import positive_int
from gaf_trt.compose.cache import FeatureState, grouped_call, split_problem
from gaf_trt.compose.placement import call_network, network_device
from gaf_trt.engine.base import AnchorNetwork
from gaf_trt.errors import ConfigError
from gaf_trt.model.config import GAFConfig

log = logging.getLogger(__name__)

DEFAULT_MIN_ROWS = 16
DEFAULT_MAX_ROWS = 256
PAD_T = 0.5  # time of padding rows (their outputs are discarded)


class Cancelled(Exception):
    """Raised in a request's worker when its request was cancelled (client gone)."""


def padded_rows(rows: int, min_rows: int) -> int:
    """Rows of the call that serves ``rows`` rows: at least ``min_rows``."""
    return max(rows, min_rows)


def pad_call(network: AnchorNetwork, x: Tensor, t: Tensor, y: Tensor,
             min_rows: int) -> tuple[Tensor, Tensor]:
    """Run ``network`` on ``x [M,C,S,S], t [M], y [M]`` padded to at least ``min_rows`` rows
    (zero state, ``t = 0.5``, class 0); returns the first ``M`` rows of ``(J, K)``."""
    m = x.shape[0]
    x, t, y = _pad(x, t, y, min_rows)
    j, k = call_network(network, x, t, y)
    return j[:m], k[:m]


def _pad(x: Tensor, t: Tensor, y: Tensor, min_rows: int) -> tuple[Tensor, Tensor, Tensor]:
    """``x [M,...], t [M], y [M]`` padded to at least ``min_rows`` rows (zero state,
    ``t = 0.5``, class 0)."""
    extra = padded_rows(x.shape[0], min_rows) - x.shape[0]
    if extra:
        x = torch.cat([x, x.new_zeros((extra, *x.shape[1:]))])
        t = torch.cat([t, t.new_full((extra,), PAD_T)])
        y = torch.cat([y, y.new_zeros((extra,))])
    return x, t, y


class MinRowsNetwork:
    """A network whose every call has at least ``min_rows`` rows (padded): the numerics of
    the scheduler for one request alone (``x [M,...], t [M], y [M] -> (J, K) [M,...]``)."""

    def __init__(self, network: AnchorNetwork, min_rows: int = DEFAULT_MIN_ROWS) -> None:
        self.network = network
        self.config: GAFConfig = network.config
        self.min_rows = positive_int("min_rows", min_rows)

    def __call__(self, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return pad_call(self.network, x, t, y, self.min_rows)

    # -- the trunk and the heads apart, each call padded (feature caching: compose/cache) --
    def split_unavailable(self) -> str | None:
        return split_problem(self.network)

    def features(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """The trunk's tokens ``f [M, L, D]`` of ``x [M,C,S,S], t [M], y [M]`` (padded)."""
        m, dev = x.shape[0], network_device(self.network)
        xp, tp, yp = _pad(x.to(dev), t.to(dev), y.to(dev), self.min_rows)
        return self.network.features(xp, tp, yp)[:m]  # type: ignore[attr-defined]

    def anchors_from(self, f: Tensor, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """``(J, K)`` of ``x [M,C,S,S], t [M], y [M]`` from ``f [M, L, D]`` (padded: zeros)."""
        m, dev = x.shape[0], network_device(self.network)
        xp, tp, yp = _pad(x.to(dev), t.to(dev), y.to(dev), self.min_rows)
        if xp.shape[0] > m:
            f = torch.cat([f, f.new_zeros((xp.shape[0] - m, *f.shape[1:]))])
        j, k = self.network.anchors_from(f, xp, tp, yp)  # type: ignore[attr-defined]
        return j[:m], k[:m]


@dataclass
class Ticket:
    """One request's identity in the scheduler; ``cancelled`` is set when it is cancelled."""

    id: int
    cancelled: bool = False


@dataclass
class _Evaluation:
    """Rows of one network evaluation of one request, waiting for their anchors."""

    ticket: Ticket
    x: Tensor  # [M, C, S, S]
    t: Tensor  # [M]
    y: Tensor  # [M] long
    done: threading.Event = field(default_factory=threading.Event)
    out: tuple[Tensor, Tensor] | None = None
    error: BaseException | None = None
    cache: FeatureState | None = None  # the request's feature cache (None: the whole network)


@dataclass
class SchedulerStats:
    """Counters of the calls made so far: calls, real rows, padded rows, how many requests
    shared each call (``requests_per_call[n]`` = calls that served ``n``), how many real
    rows each call had (``rows_per_call[m]`` = calls of ``m`` rows) and the calls' time."""

    calls: int = 0
    rows: int = 0
    padded: int = 0
    seconds: float = 0.0
    requests_per_call: collections.Counter = field(default_factory=collections.Counter)
    rows_per_call: collections.Counter = field(default_factory=collections.Counter)

    @property
    def mean_rows(self) -> float:
        return self.rows / self.calls if self.calls else 0.0


class StepScheduler:
    """Owns ``network``; packs waiting evaluations into calls of at most ``call_rows`` rows
    (an evaluation larger than that goes alone; none exceeds ``max_rows``), padded to at
    least ``min_rows``. Run it with :meth:`start` (a background thread) or drive it by hand
    with :meth:`step` (tests make the packing order certain that way)."""

    def __init__(self, network: AnchorNetwork, *, max_rows: int = DEFAULT_MAX_ROWS,
                 min_rows: int = DEFAULT_MIN_ROWS, call_rows: int | None = None) -> None:
        self.network = network
        self.config: GAFConfig = network.config
        self.max_rows = positive_int("max_rows", max_rows)
        self.min_rows = positive_int("min_rows", min_rows)
        self.call_rows = min(self.max_rows, positive_int("call_rows", call_rows)
                             if call_rows is not None else self.max_rows)
        self.stats = SchedulerStats()
        self._pending: collections.deque[_Evaluation] = collections.deque()
        self._pending_rows = 0
        self._running: dict[int, int] = {}  # ticket id -> rows per evaluation, until leave
        self._running_rows = 0
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # any change (wait_pending)
        self._work = threading.Condition(lock)  # a call can be formed (the loop)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._next_id = 0

    # -- request side -------------------------------------------------------------------
    def ticket(self) -> Ticket:
        """A new request identity."""
        with self._cond:
            self._next_id += 1
            return Ticket(self._next_id)

    def network_for(self, ticket: Ticket) -> TicketNetwork:
        """The :class:`AnchorNetwork` a request's solver runs on."""
        return TicketNetwork(self, ticket)

    def evaluate(self, ticket: Ticket, x: Tensor, t: Tensor, y: Tensor,
                 cache: FeatureState | None = None) -> tuple[Tensor, Tensor]:
        """Queue rows ``x [M,C,S,S], t [M], y [M]`` and block until their ``(J, K)`` are
        computed (with ``cache``, the request's feature cache, the call runs the trunk for
        them only when it is due); raises :class:`Cancelled` when the ticket is (or gets)
        cancelled."""
        if x.shape[0] > self.max_rows:
            raise ConfigError(f"an evaluation of {x.shape[0]} rows exceeds the row budget "
                              f"max_rows={self.max_rows}")
        ev = _Evaluation(ticket, x, t, y, cache=cache)
        with self._cond:
            if ticket.cancelled or self._stopping:
                raise Cancelled(f"request {ticket.id} cancelled")
            self._running_rows += x.shape[0] - self._running.get(ticket.id, 0)
            self._running[ticket.id] = x.shape[0]
            self._pending.append(ev)
            self._pending_rows += x.shape[0]
            self._changed()
        ev.done.wait()
        if ev.error is not None:
            raise ev.error
        assert ev.out is not None  # set together with done (internal invariant)
        return ev.out

    def cancel(self, ticket: Ticket) -> None:
        """Cancel a request: its waiting rows leave the queue at once, its worker gets
        :class:`Cancelled` at its current or next evaluation."""
        with self._cond:
            ticket.cancelled = True
            self._running_rows -= self._running.pop(ticket.id, 0)
            keep = collections.deque()
            for ev in self._pending:
                if ev.ticket is ticket:
                    ev.error = Cancelled(f"request {ticket.id} cancelled")
                    ev.done.set()
                    self._pending_rows -= ev.x.shape[0]
                else:
                    keep.append(ev)
            self._pending = keep
            self._changed()

    def leave(self, ticket: Ticket) -> None:
        """The request's worker is done with the network (finished, failed or cancelled):
        the scheduler stops waiting for its next evaluation. Every worker calls it."""
        with self._cond:
            self._running_rows -= self._running.pop(ticket.id, 0)
            self._changed()

    def ready(self) -> bool:
        """Whether the loop would form a call now (tests check the policy with it)."""
        with self._cond:
            return self._ready()

    def _ready(self) -> bool:
        """Whether to form a call now (caller holds the lock): rows wait, and every running
        request is parked, or ``call_rows`` rows wait, or half of the running rows wait and
        they make at least half a ``call_rows`` call (and ``min_rows``) -- then the other
        half does its solver arithmetic while this call runs (two cohorts in a pipeline)
        instead of the network idling until the last worker of a large iteration parks."""
        rows = self._pending_rows
        return bool(self._pending) and (
            len(self._pending) >= len(self._running) or rows >= self.call_rows
            or (2 * rows >= max(self._running_rows, self.call_rows) and rows >= self.min_rows))

    def _changed(self) -> None:
        """Wake the waiters after a change; the loop only when a call can be formed (caller
        holds the lock), so a worker parking wakes no one until the iteration is complete."""
        self._cond.notify_all()
        if self._ready() or self._stopping:
            self._work.notify()

    # -- scheduler side -----------------------------------------------------------------
    def pending_rows(self) -> int:
        """Rows waiting for a call."""
        with self._cond:
            return self._pending_rows

    def snapshot(self) -> tuple[SchedulerStats, int]:
        """A copy of :attr:`stats` and the pending rows, taken together (metrics read them
        from another thread while calls run)."""
        with self._cond:
            st = self.stats
            return (SchedulerStats(st.calls, st.rows, st.padded, st.seconds,
                                   collections.Counter(st.requests_per_call),
                                   collections.Counter(st.rows_per_call)), self._pending_rows)

    def running(self) -> int:
        """Requests between their first evaluation and :meth:`leave`."""
        with self._cond:
            return len(self._running)

    def wait_pending(self, evaluations: int, timeout: float | None = None) -> bool:
        """Block until at least ``evaluations`` evaluations wait (tests order events with
        it instead of sleeping). Returns False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._pending) >= evaluations, timeout)

    def _take(self, limit: int) -> list[_Evaluation]:
        """Waiting evaluations, first come first served, up to ``limit`` rows (always at
        least one). Caller holds the lock."""
        batch, rows = [], 0
        while self._pending and (not batch or rows + self._pending[0].x.shape[0] <= limit):
            ev = self._pending.popleft()
            batch.append(ev)
            rows += ev.x.shape[0]
        self._pending_rows -= rows
        return batch

    def step(self, limit: int | None = None) -> int:
        """Run one packed network call over the evaluations waiting now, up to ``limit``
        rows (default: the row budget ``max_rows``); returns the number of real rows served
        (0 when none waited). Tests drive the scheduler by hand with it."""
        with self._cond:
            batch = self._take(self.max_rows if limit is None else limit)
        if not batch:
            return 0
        self._run(batch)
        return sum(ev.x.shape[0] for ev in batch)

    def _run(self, batch: list[_Evaluation]) -> None:
        """One network call for ``batch``; each evaluation gets its rows (or the error)."""
        started = time.perf_counter()
        try:
            x = torch.cat([ev.x for ev in batch])
            t = torch.cat([ev.t.reshape(-1).to(x.dtype) for ev in batch])
            y = torch.cat([ev.y.reshape(-1) for ev in batch])
            with torch.no_grad():
                j, k = self._call(batch, x, t, y)
        except Exception as err:  # a failed call fails exactly the requests in it
            log.exception("network call of %d rows failed", sum(e.x.shape[0] for e in batch))
            for ev in batch:
                ev.error = err
                ev.done.set()
            return
        m = x.shape[0]
        with self._cond:  # counted under the lock: :meth:`snapshot` reads them
            self.stats.calls += 1
            self.stats.rows += m
            self.stats.padded += padded_rows(m, self.min_rows) - m
            self.stats.seconds += time.perf_counter() - started
            self.stats.requests_per_call[len({id(ev.ticket) for ev in batch})] += 1
            self.stats.rows_per_call[m] += 1
        start = 0
        for ev in batch:
            n = ev.x.shape[0]
            ev.out = (j[start:start + n], k[start:start + n])
            start += n
            ev.done.set()

    def _call(self, batch: list[_Evaluation], x: Tensor, t: Tensor,
              y: Tensor) -> tuple[Tensor, Tensor]:
        """The network call of ``batch``'s rows: whole, or -- when an evaluation carries a
        feature cache -- one trunk call on the rows that are due (an evaluation without a
        cache always is) and one heads call on all (:func:`grouped_call`), both padded."""
        if all(ev.cache is None for ev in batch):
            return pad_call(self.network, x, t, y, self.min_rows)
        groups = [(ev.cache, ev.x.shape[0]) for ev in batch]
        return grouped_call(MinRowsNetwork(self.network, self.min_rows), groups, x, t, y)

    def _loop(self) -> None:
        """Form a call whenever :meth:`_ready`, of at most ``call_rows`` rows."""
        while True:
            with self._cond:
                self._work.wait_for(lambda: self._stopping or self._ready())
                if self._stopping:
                    return
                batch = self._take(self.call_rows)
            self._run(batch)

    def start(self) -> StepScheduler:
        """Run the packing loop in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="gaf-scheduler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the loop; every waiting evaluation is cancelled."""
        with self._cond:
            self._stopping = True
            for ev in self._pending:
                ev.error = Cancelled("the scheduler stopped")
                ev.done.set()
            self._pending.clear()
            self._pending_rows = 0
            self._changed()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class TicketNetwork:
    """The network one request's solver sees: ``(x [M,C,S,S], t [M], y [M]) -> (J, K)``
    through the scheduler."""

    def __init__(self, scheduler: StepScheduler, ticket: Ticket) -> None:
        self.scheduler = scheduler
        self.ticket = ticket
        self.config: GAFConfig = scheduler.config

    def __call__(self, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.scheduler.evaluate(self.ticket, x, t, y)

    def call_cached(self, state: FeatureState, x: Tensor, t: Tensor,
                    y: Tensor) -> tuple[Tensor, Tensor]:
        """One evaluation under the request's feature cache ``state`` (what a
        :class:`~gaf_trt.compose.cache.CachedNetwork` over this network hands over)."""
        return self.scheduler.evaluate(self.ticket, x, t, y, cache=state)

    def split_unavailable(self) -> str | None:  # None: the served network splits
        return split_problem(self.scheduler.network)
