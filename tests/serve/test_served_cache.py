"""Feature caching in serving (issue 26): a request's ``cache`` (or the server's default)
gives what ``gaf_trt.sample(..., cache=same)`` gives for the same request, with other
requests -- cached or not -- in the same network calls; each request keeps its own cache,
and a call runs the trunk only for the rows that are due. In-process, on the service, with
the helpers of ``test_served_equals_sampled.py``."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gaf_trt.errors import ConfigError
from gaf_trt.serve import GenerationService, MinRowsNetwork, ServeConfig, ServeRequest
from tests.serve.request_space import reference, serve_request
from tests.serve.test_served_equals_sampled import LIMITS, check_served
from tests.serve.test_served_equals_sampled import service  # noqa: F401  (the fixture)

POLICIES = ["static:2", "taylor:2", "static:3", "adaptive:0.1"]


@st.composite
def cached_request(draw, config):
    """A request serve admits, with a policy (or none: uncached), valid with its solver."""
    req = draw(serve_request(config, LIMITS))
    policy = draw(st.sampled_from([None, *POLICIES]))
    if req.solver in ("ier", "endpoint") and policy in ("static:2", "static:3", "taylor:2"):
        policy = "adaptive:0.1"  # a fixed schedule with IER is refused (test below)
    req.cache = policy
    return req


@settings(max_examples=4, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_served_with_cache_equals_sampled_with_cache(service, digits, data):  # noqa: F811
    """One to three requests together, each with its own policy or none (mixed calls)."""
    reqs = data.draw(st.lists(cached_request(digits.config), min_size=1, max_size=3))
    jobs = service.submit_all(reqs)
    for req, job in zip(reqs, jobs):
        check_served(job.result(timeout=300), req, digits)


class CountingTrunk:
    """The digits network, counting the real (non-padding) rows its trunk runs on."""

    def __init__(self, inner) -> None:
        self.inner, self.config, self.rows = inner, inner.config, 0

    def _count(self, x):
        self.rows += int((x.flatten(1).abs().sum(1) > 0).sum())

    def __call__(self, x, t, y):
        self._count(x)
        return self.inner(x, t, y)

    def features(self, x, t, y):
        self._count(x)
        return self.inner.features(x, t, y)

    def anchors_from(self, f, x, t, y):
        return self.inner.anchors_from(f, x, t, y)


def test_trunk_runs_only_for_due_rows_and_the_server_default_applies(digits):
    """The server's --cache static:2 for a request that names none, another request off:
    16 rows x 2 of 4 evaluations + 2 rows x 4 = 40 trunk rows, however the calls packed."""
    net = CountingTrunk(digits)
    svc = GenerationService(net, ServeConfig(limits=LIMITS, cache="static:2")).start()
    try:
        a = ServeRequest(classes=[4], steps=4, batch=16, seed=3)
        b = ServeRequest(classes=[1, 6], weights=[1.0, 2.0], steps=4, batch=1, seed=5,
                         cache="off")
        ja, jb = svc.submit_all([a, b])
        got_a, got_b = ja.result(timeout=300), jb.result(timeout=300)
    finally:
        svc.close()
    assert net.rows == 16 * 2 + 2 * 4
    a.cache = "static:2"
    check_served(got_a, a, digits)
    check_served(got_b, b, digits)
    assert not torch.equal(got_a, reference(ServeRequest(classes=[4], steps=4, batch=16,
                                                         seed=3), digits).min_rows)


def test_cache_is_validated_at_the_boundary(service, digits):  # noqa: F811
    with pytest.raises(ConfigError, match=r"unknown cache policy 'static:0'.*valid: off, "
                                          r"static:N, adaptive:δ, taylor:N"):
        service.submit(ServeRequest(classes=[1], cache="static:0"))
    with pytest.raises(ConfigError, match=r"taylor:2 with solver 'ier' is refused.*Fréchet"):
        service.submit(ServeRequest(classes=[1], solver="ier", cache="taylor:2"))
    with pytest.raises(ConfigError, match="cache must be a policy name, got 2"):
        service.submit(ServeRequest(classes=[1], cache=2))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown cache policy 'sometimes'"):
        ServeConfig(cache="sometimes").validate()


def test_a_network_without_split_refuses_cached_requests(digits):
    class Whole:
        config = digits.config

        def __call__(self, x, t, y):
            return digits(x, t, y)

    with pytest.raises(ConfigError, match="separate trunk.*Whole does not run"):
        GenerationService(Whole(), ServeConfig(cache="static:2"))
    svc = GenerationService(Whole(), ServeConfig()).start()
    try:
        with pytest.raises(ConfigError, match="separate trunk"):
            svc.submit(ServeRequest(classes=[1], cache="static:2"))
        assert svc.generate(ServeRequest(classes=[1], steps=1), timeout=300).shape[0] == 1
    finally:
        svc.close()
    assert isinstance(MinRowsNetwork(digits).split_unavailable(), type(None))
