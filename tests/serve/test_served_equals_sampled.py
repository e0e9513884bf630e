"""A served request equals ``gaf_trt.sample`` with the same arguments, over the whole space of
requests ``serve`` admits (hypothesis; ``request_space.py``), with other requests in flight.

What the README promises (Serving, "Same bits whatever else runs"): the served images are
bit-identical to ``gaf_trt.sample`` on the network padded to the scheduler's minimum rows
(``MinRowsNetwork``) whatever else runs; to ``gaf_trt.sample`` on the plain network when an
evaluation has at least ``min_rows`` rows (classes x batch >= 16), else within float32
rounding (relative error < 1e-5). The count is the request's batch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gaf_trt.serve import GenerationService, ServeConfig, ServeLimits, to_images
from gaf_trt.serve.scheduler import DEFAULT_MIN_ROWS
from tests.serve.request_space import reference, relative_error, serve_request

LIMITS = ServeLimits()


@pytest.fixture(scope="module")
def service(digits):
    svc = GenerationService(digits, ServeConfig(limits=LIMITS)).start()
    try:
        yield svc
    finally:
        svc.close()


def check_served(served: torch.Tensor, req, network) -> None:
    """``served [B, C, S, S]`` against ``gaf_trt.sample`` as the module docstring says."""
    ref = reference(req, network)
    assert type(served) is torch.Tensor and served.device.type == "cpu"
    assert served.shape == ref.plain.shape and served.shape[0] == req.batch
    assert torch.isfinite(served).all()
    assert torch.equal(served, ref.min_rows), "not the bits of the padded network's sample"
    images = to_images(served)
    assert images.shape == (req.batch, *served.shape[2:], served.shape[1])
    if ref.rows >= DEFAULT_MIN_ROWS:
        assert torch.equal(served, ref.plain)
        assert np.array_equal(images, to_images(ref.plain))
    else:
        assert relative_error(served, ref.plain) < 1e-5


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_served_equals_sampled_in_flight_together(service, digits, data):
    """One to three requests submitted together (they share network calls); each equals
    its own ``gaf_trt.sample``."""
    reqs = data.draw(st.lists(serve_request(digits.config, LIMITS), min_size=1, max_size=3))
    jobs = service.submit_all(reqs)
    for req, job in zip(reqs, jobs):
        check_served(job.result(timeout=300), req, digits)


def test_reference_can_tell_a_different_request_apart(service, digits):
    """The check is able to fail: another seed's sample is not the served result."""
    from gaf_trt.serve import ServeRequest

    req = ServeRequest(classes=[3, 7], weights=[1.0, 2.0], steps=2, seed=1, batch=8)
    served = service.generate(req, timeout=300)
    other = ServeRequest(classes=[3, 7], weights=[1.0, 2.0], steps=2, seed=2, batch=8)
    with pytest.raises(AssertionError):
        check_served(served, other, digits)
