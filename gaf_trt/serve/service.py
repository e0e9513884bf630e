"""The generation service: admits requests (bounded queue), runs each one's solver in a
worker thread on the shared :class:`~gaf_trt.serve.scheduler.StepScheduler`, and hands back
results; cancelling a job frees its rows at once.

Modes (``ServeConfig.mode``), all on the same scheduler and so with the same bits:

- ``step``: step-level batching; a request starts at once (or, with ``max_active``, as soon
  as fewer than that many run) and its evaluations share network calls with whatever else
  is in flight, in calls of up to ``call_rows`` rows (0: measured at start from the
  network's rows-vs-time curve, :func:`~gaf_trt.serve.curve.calibrate_call_rows`);
- ``request``: request-level batching (what a dynamic batcher in front of a whole-request
  model does): the requests waiting when the previous group has finished start together as
  one group of at most ``group_size``; each call carries one evaluation of every unfinished
  member (as one batched sampling loop would, here even across solvers and step counts),
  finished members leave, and newcomers wait until the whole group is done;
- ``sequential``: one request at a time (``request`` with groups of one).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import Tensor

from gaf_trt.checks import positive_int
from gaf_trt.compose.cache import check_split, parse_cache
from gaf_trt.engine.base import AnchorNetwork
from gaf_trt.errors import ConfigError, GAFError
from gaf_trt.serve.metrics import ServiceMetrics
from gaf_trt.serve.previews import (
    PreviewChannel,
    PreviewNetwork,
    check_preview_every,
    evaluations,
)
from gaf_trt.serve.requests import (
    RequestPlan,
    ServeLimits,
    ServeRequest,
    plan_request,
    run_request,
)
from gaf_trt.serve.curve import calibrate_call_rows
from gaf_trt.serve.scheduler import DEFAULT_MIN_ROWS, Cancelled, StepScheduler, Ticket

log = logging.getLogger(__name__)

MODES = ("step", "request", "sequential")


class Overloaded(GAFError):
    """The service already holds ``max_queue`` requests; the caller should retry later."""


@dataclass(frozen=True)
class ServeConfig:
    """Service settings: admission bound, row budget and minimum, request limits, mode."""

    max_queue: int = 32
    min_rows: int = DEFAULT_MIN_ROWS
    limits: ServeLimits = field(default_factory=ServeLimits)
    mode: str = "step"
    group_size: int = 8  # ``request`` mode: requests started together
    max_active: int = 0  # ``step`` mode: requests running at once (0: all admitted)
    call_rows: int | None = None  # rows per call aimed at (None: max_rows; 0: calibrated)
    decodes: bool = False  # a latent model with its decoder: requests may ask for images
    cache: str = "off"  # feature-cache policy of requests that name none (gaf_trt.compose.cache)

    def validate(self) -> ServeConfig:
        positive_int("max_queue", self.max_queue, 100_000)
        positive_int("min_rows", self.min_rows, 4096)
        positive_int("max_rows", self.limits.max_rows, 1 << 20)
        positive_int("group_size", self.group_size, 100_000)
        if self.max_active != 0:
            positive_int("max_active", self.max_active, 100_000)
        if self.call_rows not in (None, 0):
            positive_int("call_rows", self.call_rows, 1 << 20)
        if self.mode not in MODES:
            raise ConfigError(f"unknown serving mode {self.mode!r}; valid: {', '.join(MODES)}")
        parse_cache(self.cache)
        return self


def check_request_cache(plan: RequestPlan, network: AnchorNetwork) -> RequestPlan:
    """``plan``, refused when it caches features on a network that cannot run its trunk
    apart (one error naming what can)."""
    if parse_cache(plan.sample.cache).active:
        check_split(network)
    return plan


class Job:
    """One admitted request: wait for it with :meth:`result`, or :meth:`cancel` it."""

    def __init__(self, service: GenerationService, plan: RequestPlan, ticket: Ticket) -> None:
        self.plan = plan
        self.ticket = ticket
        self._service = service
        self._done = threading.Event()
        self._state: Tensor | None = None
        self._error: BaseException | None = None
        self.admitted_at = time.monotonic()
        self.started_at: float | None = None  # when its solver started (None: never)
        self.previews: PreviewChannel | None = None  # gaf_stream: its previews (None: none)

    def _finish(self, state: Tensor | None, error: BaseException | None) -> None:
        self._state, self._error = state, error
        outcome = ("ok" if error is None else
                   "cancelled" if isinstance(error, Cancelled) else "failed")
        self._service.metrics.finished(outcome, None if self.started_at is None
                                       else time.monotonic() - self.started_at)
        self._done.set()
        if self.previews is not None:
            self.previews.close()

    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float | None = None) -> Tensor:
        """The final state ``[B, C, S, S]``; re-raises the request's error (``Cancelled``
        when it was cancelled). ``TimeoutError`` when not done within ``timeout``."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.ticket.id} not done within {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._state is not None  # set together with done (internal invariant)
        return self._state

    def cancel(self) -> None:
        """Stop the request (client gone): it leaves the waiting line, or its rows leave
        the scheduler, at once."""
        self._service._cancel(self)


class GenerationService:
    """Owns one network through a :class:`StepScheduler`; thread-safe :meth:`submit`."""

    def __init__(self, network: AnchorNetwork, config: ServeConfig | None = None) -> None:
        self.config = (config or ServeConfig()).validate()
        if parse_cache(self.config.cache).active:
            check_split(network)
        call_rows = self.config.call_rows
        if call_rows == 0:
            call_rows = calibrate_call_rows(network, self.config.limits.max_rows,
                                            self.config.min_rows)
        self.scheduler = StepScheduler(network, max_rows=self.config.limits.max_rows,
                                       min_rows=self.config.min_rows, call_rows=call_rows)
        self._lock = threading.Lock()
        self._active = 0
        self._closed = False
        self._waiting: collections.deque[Job] = collections.deque()  # request / sequential
        self._group_cond = threading.Condition(self._lock)
        self._running = 0  # started and not finished (request / sequential)
        self._dispatcher: threading.Thread | None = None
        self.metrics = ServiceMetrics()  # per-request counters (the scheduler's: per call)

    @property
    def active(self) -> int:
        """Requests admitted and not finished."""
        with self._lock:
            return self._active

    def start(self, run_scheduler: bool = True) -> GenerationService:
        """Start the scheduler (``run_scheduler=False``: the caller steps it by hand) and,
        for ``request`` / ``sequential``, the group dispatcher."""
        if run_scheduler:
            self.scheduler.start()
        if self._queued and self._dispatcher is None:
            self._dispatcher = threading.Thread(target=self._dispatch, name="gaf-groups",
                                                daemon=True)
            self._dispatcher.start()
        return self

    @property
    def _queued(self) -> bool:
        """Whether requests wait in line for the dispatcher (else they start at once)."""
        return self.config.mode != "step" or self.config.max_active > 0

    def _free_slots(self) -> int:
        """Requests the dispatcher may start now (caller holds the lock)."""
        if self.config.mode == "step":
            return self.config.max_active - self._running
        if self._running:  # request / sequential: the whole group must be done first
            return 0
        return 1 if self.config.mode == "sequential" else self.config.group_size

    def _dispatch(self) -> None:
        """Start waiting requests: a new group once the previous one is done (request /
        sequential), or whenever fewer than ``max_active`` run (step)."""
        while True:
            with self._group_cond:
                self._group_cond.wait_for(lambda: self._closed or (
                    self._waiting and self._free_slots() > 0))
                if self._closed:
                    return
                group = [self._waiting.popleft()
                         for _ in range(min(self._free_slots(), len(self._waiting)))]
                self._running += len(group)
            for job in group:
                self._launch(job)

    def _launch(self, job: Job) -> None:
        threading.Thread(target=self._work, args=(job,), name=f"gaf-req-{job.ticket.id}",
                         daemon=True).start()

    def plan(self, request: ServeRequest) -> RequestPlan:
        """Validate ``request`` (raises ``ConfigError`` naming the bad value)."""
        plan = plan_request(request, self.scheduler.config, self.config.limits,
                            self.config.decodes, self.config.cache)
        return check_request_cache(plan, self.scheduler.network)

    def submit(self, request: ServeRequest) -> Job:
        """Validate and admit ``request``; raises ``ConfigError`` for a bad request and
        :class:`Overloaded` when ``max_queue`` requests are already in."""
        return self.submit_all([request])[0]

    def submit_all(self, requests: Sequence[ServeRequest]) -> list[Job]:
        """Validate and admit ``requests`` together (all or none): in ``request`` mode they
        enter the waiting line at once, so an idle dispatcher starts them as one group (a
        Triton batch is one group). Raises as :meth:`submit`."""
        plans = [self.plan(r) for r in requests]
        return self._admit([Job(self, plan, self.scheduler.ticket()) for plan in plans])

    def submit_streamed(self, request: ServeRequest, preview_every: object) -> Job:
        """:meth:`submit` with live previews: ``preview_every`` (0 or ``None``: none; else
        1 .. the request's network evaluations, checked here) sets ``job.previews``, whose
        items are the composed data anchor ``[B, C, S, S]`` every that many evaluations
        (:mod:`gaf_trt.serve.previews`); the final result is :meth:`Job.result`, the same
        bits as without previews. Raises as :meth:`submit`."""
        plan = self.plan(request)
        every = check_preview_every(preview_every, evaluations(plan))
        job = Job(self, plan, self.scheduler.ticket())
        if every:
            job.previews = PreviewChannel(every, evaluations(plan), plan.composition)
        return self._admit([job])[0]

    def _admit(self, jobs: list[Job]) -> list[Job]:
        """Admit validated jobs together (all or none) and start them or put them in line."""
        plans = [job.plan for job in jobs]
        with self._group_cond:  # admitted and in line in one hold: close() sees them
            if self._closed:
                raise Overloaded("the service is shutting down")
            if self._active + len(plans) > self.config.max_queue:
                raise Overloaded(f"server busy: {self._active} requests in flight "
                                 f"(--max-queue {self.config.max_queue}); retry later")
            self._active += len(plans)
            self.metrics.admitted(len(plans))
            if self._queued:
                self._waiting.extend(jobs)
                self._group_cond.notify_all()
        if not self._queued:  # a closed scheduler cancels them at their first evaluation
            for job in jobs:
                self._launch(job)
        return jobs

    def _cancel(self, job: Job) -> None:
        with self._group_cond:
            waiting = job in self._waiting
            if waiting:
                self._waiting.remove(job)
                self._active -= 1
        if waiting:
            job._finish(None, Cancelled(f"request {job.ticket.id} cancelled"))
        self.scheduler.cancel(job.ticket)

    def _work(self, job: Job) -> None:
        state, error = None, None
        job.started_at = time.monotonic()
        self.metrics.started(job.started_at - job.admitted_at)
        try:
            network = self.scheduler.network_for(job.ticket)
            if job.previews is not None:  # only requests that asked pay for previews
                network = PreviewNetwork(network, job.previews)
            state = run_request(job.plan, network)
        except (Cancelled, GAFError) as err:
            error = err
        except Exception as err:  # an internal fault fails this request only
            log.exception("request %d failed", job.ticket.id)
            error = err
        finally:
            self.scheduler.leave(job.ticket)
            with self._group_cond:
                self._active -= 1
                if self._queued:
                    self._running -= 1
                    self._group_cond.notify_all()
            job._finish(state, error)

    def generate(self, request: ServeRequest, timeout: float | None = None) -> Tensor:
        """Submit and wait: the final state ``[B, C, S, S]``."""
        return self.submit(request).result(timeout)

    def close(self) -> None:
        """Refuse new requests, cancel the waiting ones, stop the scheduler."""
        with self._group_cond:
            self._closed = True
            waiting, self._waiting = list(self._waiting), collections.deque()
            self._active -= len(waiting)
            self._group_cond.notify_all()
        for job in waiting:
            job._finish(None, Cancelled(f"request {job.ticket.id} cancelled: shutting down"))
        self.scheduler.stop()
        if self._dispatcher is not None:
            self._dispatcher.join()
            self._dispatcher = None
