"""gaf_trt.checks: one bounds vocabulary for CLI options, request fields and JSON files."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gaf_trt.checks import choice, int_in, number_in, numbers_list, positive_int
from gaf_trt.errors import ConfigError


@given(st.integers(-1000, 1000))
def test_int_in_accepts_exactly_the_range(v):
    if 0 <= v <= 10:
        assert int_in("--n", v, 0, 10) == v
        assert int_in("--n", np.int64(v), 0, 10) == v and type(int_in("--n", np.int64(v), 0, 10)) is int
    else:
        with pytest.raises(ConfigError, match=rf"--n must be an integer in 0\.\.10, got {v}"):
            int_in("--n", v, 0, 10)


@pytest.mark.parametrize("bad", [True, False, 1.0, "3", None, [1]])
def test_int_in_refuses_non_integers(bad):
    with pytest.raises(ConfigError, match="must be an integer"):
        int_in("seed", bad, 0, 10)


def test_positive_int():
    assert positive_int("--max-rows", 5) == 5
    with pytest.raises(ConfigError, match="1..8"):
        positive_int("--max-rows", 0, 8)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_number_in_refuses_nan_inf_and_out_of_range(v):
    if math.isfinite(v) and 0 <= v <= 16:
        assert number_in("sigma", v, 0, 16) == v
    else:
        with pytest.raises(ConfigError, match=r"sigma must be in \[0, 16\]"):
            number_in("sigma", v, 0, 16)


def test_number_in_types():
    assert number_in("alpha", np.float32(0.5)) == 0.5
    assert number_in("alpha", 2) == 2.0
    for bad in (True, "0.5", None):
        with pytest.raises(ConfigError, match="alpha must be a finite number"):
            number_in("alpha", bad)


def test_numbers_list():
    assert numbers_list("weights", (1, np.float64(2.5))) == [1.0, 2.5]
    for bad in ([1, True], [float("nan")], "1,2", [1, "2"], 3):
        with pytest.raises(ConfigError, match="weights must be a list of finite numbers"):
            numbers_list("weights", bad)


def test_choice_lists_the_valid_keys():
    assert choice("output", "images", ("images", "latents")) == "images"
    with pytest.raises(ConfigError, match="unknown output 'png'; valid: images, latents"):
        choice("output", "png", ("images", "latents"))
