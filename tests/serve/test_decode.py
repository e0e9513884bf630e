"""Decoding Triton requests into ``ServeRequest`` rows (``gaf-trt serve`` and the
``triton-repo`` solver model share it): malformed batches and parameters are one clear
``ConfigError``, never an internal error."""

from __future__ import annotations

import numpy as np
import pytest

from gaf_trt.errors import ConfigError
from gaf_trt.serve.wire import decode_request, split_rows


def test_rows_of_one_request_must_ask_the_same_batch():
    request = {"classes": np.array([[3], [7]], np.int32), "batch": np.array([[1], [2]], np.int32)}
    with pytest.raises(ConfigError, match=r"same batch .*got \[1, 2\]"):
        split_rows(request)
    same = {**request, "batch": np.array([[2], [2]], np.int32)}
    assert [int(r["classes"][0]) for r in split_rows(same)] == [3, 7]


def test_a_request_of_no_rows_is_refused():
    with pytest.raises(ConfigError, match="at least one row"):
        split_rows({"classes": np.zeros((0, 1), np.int32)})


@pytest.mark.parametrize("text", ["[" * 100_000, "{}", '"3"', "[true]", "not json"])
def test_bad_class_names_are_one_short_error(text):
    with pytest.raises(ConfigError, match="must be a JSON list of class names") as err:
        decode_request({"steps": np.array([2], np.int32)}, {"class_names": text})
    assert len(str(err.value)) < 400


def test_numpy_scalars_validate_like_python_numbers(digits):
    """An in-process caller may pass numpy scalars; they plan as the Python numbers do."""
    from gaf_trt.serve import ServeRequest
    from gaf_trt.serve.requests import ServeLimits, plan_request

    req = ServeRequest(classes=[3, 7], weights=[1.0, 2.0], steps=np.int32(4),
                       sigma=np.float32(1.0), seed=np.int64(5), batch=np.int32(2))
    plan = plan_request(req, digits.config, ServeLimits())
    assert (plan.sample.steps, plan.sample.seed, plan.sample.batch) == (4, 5, 2)
    assert type(plan.sample.steps) is int and plan.sample.sigma == 1.0
    with pytest.raises(ConfigError, match="steps must be an integer in 1..1000, got 0"):
        plan_request(ServeRequest(classes=[3], steps=np.int32(0)), digits.config, ServeLimits())
