"""Step-level batching: packing, row budget, bit-identity whatever else is in flight,
cancellation, admission. The packing order is made certain by driving the scheduler by hand
(``wait_pending`` + ``step``), never by sleeping."""

from __future__ import annotations

import threading

import pytest
import torch

from gaf_trt.errors import ConfigError
from gaf_trt.serve import (
    Cancelled,
    GenerationService,
    Overloaded,
    ServeConfig,
    ServeLimits,
    ServeRequest,
    StepScheduler,
)
from gaf_trt.serve.curve import calibrate_call_rows
from gaf_trt.serve.scheduler import pad_call, padded_rows
from tests.helpers import rel_err
from tests.serve.refs import min_rows_reference, sample_reference

TIMEOUT = 120  # a hang fails one test, not the suite

# Mixed compositions, solvers, step counts and batch sizes (rows per evaluation in brackets).
MIX = [
    ServeRequest(classes=[3, 7], weights=[0.5, 0.5], steps=6, seed=1, batch=8),  # [16]
    ServeRequest(classes=["2"], steps=5, solver="ier", seed=2, batch=2),  # [2]
    ServeRequest(classes=[1, 4, 6], weights=[1, 2, 3], steps=4, solver="heun", seed=3),  # [3]
    ServeRequest(classes=[0, 9], alpha=0.3, steps=3, solver="rk4", seed=4, batch=2),  # [4]
    ServeRequest(classes=[5, 8], mask_type="vertical_2", steps=4, seed=5, batch=3),  # [6]
]


def drive(service: GenerationService, jobs, first: int) -> None:
    """Make the first call certainly pack ``first`` evaluations, then let the scheduler run."""
    assert service.scheduler.wait_pending(first, TIMEOUT)
    service.scheduler.step()
    service.start()
    for job in jobs:
        job.result(TIMEOUT)


@pytest.fixture(scope="module")
def references(digits):
    return [min_rows_reference(r) for r in MIX]


def test_padded_rows():
    assert [padded_rows(m, 16) for m in (0, 1, 15, 16, 17, 33)] == [16, 16, 16, 16, 17, 33]


def test_rows_do_not_depend_on_the_rest_of_the_call(digits):
    """The premise of bit-identity, measured: a row's anchors are the same in every padded
    call it can be part of (16 .. 256 rows, any offset)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, *digits.config.sample_shape, generator=g)
    t, y = torch.rand(256, generator=g), torch.randint(0, 10, (256,), generator=g)
    sched = StepScheduler(digits)
    with torch.no_grad():
        j_all, k_all = digits(x, t, y)
    for start, m in ((0, 1), (5, 3), (17, 16), (40, 37), (100, 156)):
        j, k = pad_call(sched.network, x[start:start + m], t[start:start + m],
                        y[start:start + m], 16)
        assert torch.equal(j, j_all[start:start + m]) and torch.equal(k, k_all[start:start + m])


def test_in_flight_requests_share_calls_and_match_sample(digits, references):
    """Five different requests in flight together: the first call packs all five; every
    result is bit-identical to the same request alone on the padded network, and to
    ``gaf-trt sample`` itself when its calls have >= min_rows rows."""
    service = GenerationService(digits)
    try:
        jobs = [service.submit(r) for r in MIX]
        drive(service, jobs, len(MIX))
        stats = service.scheduler.stats
        assert stats.requests_per_call[len(MIX)] >= 1
        for job, ref in zip(jobs, references):
            assert torch.equal(job.result(), ref)
        assert torch.equal(jobs[0].result(), sample_reference(MIX[0]))  # 16 rows per call
    finally:
        service.close()


def test_small_requests_match_sample_within_fp32_rounding(digits):
    """Calls of < ~11 rows take another CPU GEMM kernel in ``gaf-trt sample`` (documented):
    the served result then agrees to float32 rounding, not bit for bit."""
    service = GenerationService(digits).start()
    try:
        for req in MIX[1:3]:
            got = service.generate(req, TIMEOUT)
            assert rel_err(got, sample_reference(req)) < 1e-5
    finally:
        service.close()


@pytest.mark.parametrize("companions", [[], [0, 3], [4, 2, 3]])
def test_result_independent_of_companions(digits, references, companions):
    """The same request gives the same bits alone or with any companions in flight."""
    service = GenerationService(digits)
    try:
        jobs = [service.submit(MIX[1])] + [service.submit(MIX[i]) for i in companions]
        drive(service, jobs, len(jobs))
        assert torch.equal(jobs[0].result(), references[1])
        for i, job in zip(companions, jobs[1:]):
            assert torch.equal(job.result(), references[i])
    finally:
        service.close()


def test_row_budget_splits_calls(digits):
    """max_rows 16: of three waiting 8-row evaluations, one call takes the first two."""
    req = ServeRequest(classes=[1, 2], weights=[1, 1], steps=2, seed=0, batch=4)  # 8 rows
    service = GenerationService(digits, ServeConfig(limits=ServeLimits(max_rows=16)))
    try:
        jobs = [service.submit(req) for _ in range(3)]
        assert service.scheduler.wait_pending(3, TIMEOUT)
        assert service.scheduler.step() == 16
        assert service.scheduler.stats.requests_per_call == {2: 1}
        service.start()
        ref = min_rows_reference(req)
        assert all(torch.equal(j.result(TIMEOUT), ref) for j in jobs)
    finally:
        service.close()


def test_cancel_frees_rows_and_others_finish(digits, references):
    """A cancelled request (client gone) leaves the queue at once; its companion finishes
    with the right result and the slot is free again."""
    service = GenerationService(digits, ServeConfig(max_queue=2))
    try:
        gone, stays = service.submit(MIX[0]), service.submit(MIX[2])
        assert service.scheduler.wait_pending(2, TIMEOUT)
        gone.cancel()
        assert service.scheduler.pending_rows() == MIX[2].batch * 3
        with pytest.raises(Cancelled):
            gone.result(TIMEOUT)
        service.start()
        assert torch.equal(stays.result(TIMEOUT), references[2])
        again = service.submit(MIX[2])  # both slots free again
        assert torch.equal(again.result(TIMEOUT), references[2])
    finally:
        service.close()


def test_overload_refused_at_once(digits):
    """With max_queue requests in, the next is refused (not queued); closing cancels."""
    service = GenerationService(digits, ServeConfig(max_queue=2))
    jobs = [service.submit(MIX[1]) for _ in range(2)]
    assert service.scheduler.wait_pending(2, TIMEOUT)
    with pytest.raises(Overloaded, match="max-queue 2"):
        service.submit(MIX[1])
    service.close()
    for job in jobs:
        with pytest.raises(Cancelled):
            job.result(TIMEOUT)
    assert service.active == 0


def test_sequential_mode_same_bits(digits, references):
    """The sequential baseline (one request at a time) gives the same bits."""
    service = GenerationService(digits, ServeConfig(mode="sequential")).start()
    try:
        jobs = [service.submit(r) for r in MIX[:3]]
        for job, ref in zip(jobs, references[:3]):
            assert torch.equal(job.result(TIMEOUT), ref)
        assert service.scheduler.stats.requests_per_call == {1: service.scheduler.stats.calls}
    finally:
        service.close()


class _FailingOnce:
    """The digits network, failing its first call (a device fault)."""

    def __init__(self, network):
        self.network, self.config, self.failed = network, network.config, False

    def __call__(self, x, t, y):
        if not self.failed:
            self.failed = True
            raise RuntimeError("device fault")
        return self.network(x, t, y)


def test_network_fault_fails_only_that_call(digits, references):
    """A failing network call fails the requests in it; the next request is served."""
    service = GenerationService(_FailingOnce(digits))
    try:
        job = service.submit(MIX[1])
        assert service.scheduler.wait_pending(1, TIMEOUT)
        service.scheduler.step()
        with pytest.raises(RuntimeError, match="device fault"):
            job.result(TIMEOUT)
        service.start()
        assert torch.equal(service.generate(MIX[1], TIMEOUT), references[1])
    finally:
        service.close()


def test_request_mode_groups_wait_for_the_whole_group(digits, references):
    """Request-level batching: requests waiting when a group is done start together (at
    most group_size); a request arriving during a group waits for the whole group."""
    service = GenerationService(digits, ServeConfig(mode="request", group_size=2))
    try:
        first = [service.submit(MIX[2]), service.submit(MIX[1])]
        late = service.submit(MIX[3])
        service.start(run_scheduler=False)  # stepped by hand below: the order is certain
        assert service.scheduler.wait_pending(2, TIMEOUT)
        assert service.scheduler.pending_rows() == 3 + 2  # the group of 2, not the late one
        service.scheduler.step()
        assert not late.done() and service.scheduler.stats.requests_per_call == {2: 1}
        service.scheduler.start()
        for job, i in zip(first + [late], (2, 1, 3)):
            assert torch.equal(job.result(TIMEOUT), references[i])
    finally:
        service.close()


def test_request_mode_submit_all_is_one_group(digits, references):
    """Requests submitted together (one Triton batch) start as one group even when the
    dispatcher is already idle-waiting; admission is all or none."""
    service = GenerationService(digits, ServeConfig(mode="request", group_size=3, max_queue=3))
    try:
        service.start(run_scheduler=False)  # dispatcher waiting; scheduler stepped by hand
        with pytest.raises(Overloaded, match="max-queue 3"):
            service.submit_all([MIX[1]] * 4)
        with pytest.raises(ConfigError):
            service.submit_all([MIX[1], ServeRequest(classes=[12])])
        assert service.active == 0
        jobs = service.submit_all([MIX[2], MIX[1]])
        assert service.scheduler.wait_pending(2, TIMEOUT)
        assert service.scheduler.pending_rows() == 3 + 2  # both in the first group
        service.scheduler.start()
        for job, i in zip(jobs, (2, 1)):
            assert torch.equal(job.result(TIMEOUT), references[i])
    finally:
        service.close()


@pytest.mark.parametrize("mode,max_active", [("request", 0), ("step", 1)])
def test_close_racing_a_submit_never_strands_it(digits, mode, max_active):
    """close() landing while a request is being admitted (here: while its ticket is made)
    refuses it, or cancels it; it never waits in a line nobody reads."""
    service = GenerationService(digits, ServeConfig(mode=mode, max_active=max_active)).start()
    make_ticket = service.scheduler.ticket

    def ticket_then_close():
        service.close()
        return make_ticket()

    service.scheduler.ticket = ticket_then_close
    with pytest.raises(Overloaded, match="shutting down"):
        service.submit(MIX[1])
    assert service.active == 0 and not service._waiting


def test_cancel_a_waiting_request(digits):
    """In request mode a cancelled request leaves the waiting line at once."""
    service = GenerationService(digits, ServeConfig(mode="sequential", max_queue=2))
    try:
        job = service.submit(MIX[1])
        job.cancel()
        with pytest.raises(Cancelled):
            job.result(TIMEOUT)
        assert service.active == 0
    finally:
        service.close()


def test_step_mode_max_active_admits_as_slots_free(digits, references):
    """max_active 2: a third request waits in line and starts when one of the two finishes
    (continuous batching), with the same bits."""
    service = GenerationService(digits, ServeConfig(max_active=2))
    try:
        jobs = [service.submit(MIX[i]) for i in (1, 2, 3)]
        service.start(run_scheduler=False)  # stepped by hand: the order is certain
        assert service.scheduler.wait_pending(2, TIMEOUT)
        assert service.scheduler.pending_rows() == 2 + 3  # the third has not started
        service.scheduler.start()
        for job, i in zip(jobs, (1, 2, 3)):
            assert torch.equal(job.result(TIMEOUT), references[i])
    finally:
        service.close()


class _Worker:
    """A request's worker reduced to its network calls: ``evaluations`` evaluations of
    ``rows`` rows through the scheduler, pausing before the second one until ``go`` is set
    (a worker busy with its solver arithmetic), then :meth:`StepScheduler.leave`."""

    def __init__(self, sched: StepScheduler, rows: int, evaluations: int = 2) -> None:
        self.sched, self.ticket = sched, sched.ticket()
        g = torch.Generator().manual_seed(rows)
        self.x = torch.randn(rows, *sched.config.sample_shape, generator=g)
        self.t, self.y = torch.rand(rows, generator=g), torch.randint(0, 10, (rows,), generator=g)
        self.evaluations, self.go, self.error = evaluations, threading.Event(), None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        net = self.sched.network_for(self.ticket)
        try:
            for i in range(self.evaluations):
                if i == 1:
                    self.go.wait()
                net(self.x, self.t, self.y)
        except Cancelled as err:
            self.error = err
        finally:
            self.sched.leave(self.ticket)


def test_call_formed_when_every_running_request_is_parked(digits):
    """Iteration-level scheduling: after a call, no new call is formed while a request of
    that call is still busy (not parked on its next evaluation) -- unless ``call_rows`` rows
    already wait; leaving or being cancelled stops the scheduler from waiting for it."""
    sched = StepScheduler(digits, call_rows=4)
    a, b = _Worker(sched, 2), _Worker(sched, 1)
    assert sched.wait_pending(2, TIMEOUT) and sched.ready()
    assert sched.step() == 3 and sched.running() == 2
    b.go.set()  # b parks on its 2nd evaluation; a is busy (held before it)
    assert sched.wait_pending(1, TIMEOUT)
    assert not sched.ready()  # 1 row waits, a has not parked
    c = _Worker(sched, 3)  # a newcomer: 1 + 3 rows reach call_rows = 4
    assert sched.wait_pending(2, TIMEOUT) and sched.ready()
    assert sched.step(limit=sched.call_rows) == 4
    b.thread.join(TIMEOUT)  # b's second and last evaluation is done: it has left
    sched.cancel(c.ticket)  # c was busy between evaluations: no longer waited for
    a.go.set()
    assert sched.wait_pending(1, TIMEOUT) and sched.ready()
    sched.start()
    for w in (a, b, c):
        w.go.set()
        w.thread.join(TIMEOUT)
    assert isinstance(c.error, Cancelled) and a.error is None and b.error is None
    assert sched.running() == 0 and sched.pending_rows() == 0
    sched.stop()


def test_loop_keeps_calls_within_call_rows(digits, references):
    """With call_rows 8, the running loop splits the evaluations of five requests (31 rows
    per iteration) into calls of at most 8 rows (a 16-row evaluation goes alone); every
    result keeps its bits."""
    service = GenerationService(digits, ServeConfig(call_rows=8))
    try:
        jobs = [service.submit(r) for r in MIX]
        assert service.scheduler.wait_pending(len(MIX), TIMEOUT)
        service.start()
        for job, ref in zip(jobs, references):
            assert torch.equal(job.result(TIMEOUT), ref)
        sizes = service.scheduler.stats.rows_per_call
        assert max(m for m in sizes if m != 16) <= 8 and sizes[16] == MIX[0].steps  # euler
        assert service.scheduler.running() == 0
    finally:
        service.close()


def test_calibrated_call_rows(digits):
    """call_rows 0: measured from the network's rows-vs-time curve, within the bounds."""
    assert calibrate_call_rows(digits, max_rows=32, min_rows=16, repeats=1) in (16, 32)
    service = GenerationService(digits, ServeConfig(call_rows=0, limits=ServeLimits(max_rows=16)))
    assert service.scheduler.call_rows == 16
    service.close()
    with pytest.raises(ConfigError, match="call_rows"):
        ServeConfig(call_rows=-1).validate()


def test_half_of_a_large_iteration_forms_a_call(digits):
    """Two cohorts in a pipeline: once half of the running rows wait, and they make at
    least half a call_rows call, a call is formed without waiting for the rest."""
    sched = StepScheduler(digits, min_rows=2, call_rows=8)
    workers = [_Worker(sched, 2) for _ in range(3)]  # 6 running rows
    assert sched.wait_pending(3, TIMEOUT) and sched.step() == 6
    workers[0].go.set()
    assert sched.wait_pending(1, TIMEOUT) and not sched.ready()  # 2 of 6 rows wait
    workers[1].go.set()
    assert sched.wait_pending(2, TIMEOUT) and sched.ready()  # 4 of 6
    sched.start()
    workers[2].go.set()
    for w in workers:
        w.thread.join(TIMEOUT)
    assert sched.running() == 0 and all(w.error is None for w in workers)
    sched.stop()
