"""What ``evaluate`` accepts (issue 23 item 5), in-process: reference statistics, labels, the
metrics on output; a Fréchet distance of identical sets is 0, never a round-off negative."""

from __future__ import annotations

import numpy as np
import pytest

from gaf_trt.errors import ConfigError, NonFiniteError
from gaf_trt.evaluate.data import check_labels, check_stats
from gaf_trt.evaluate.run import check_metrics
from gaf_trt.metrics.features import Stats, frechet, frechet_features


def test_statistics_are_checked():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6))
    good = check_stats(x.mean(0), np.cov(x, rowvar=False), "ref")
    assert good.sigma.shape == (6, 6)
    eye = np.eye(6)
    for mu, sigma, match in [(np.zeros(6), -eye, "positive semi-definite"),
                             (np.full(6, np.nan), eye, "mu holds NaN"),
                             (np.zeros(6), np.where(eye > 0, np.inf, 0.0), "sigma holds NaN or infinite"),
                             (np.zeros(6), np.triu(np.ones((6, 6))), "not symmetric"),
                             (np.zeros(5), eye, r"mu \[5\] and sigma \[6, 6\]"),
                             (np.zeros((6, 1)), eye, "not a mean")]:
        with pytest.raises(ConfigError, match=match):
            check_stats(mu, sigma, "ref")


def test_labels_are_checked():
    assert check_labels(np.array([0.0, 3.0]), 2, "x").dtype == np.int64
    assert check_labels(np.array([1, 2], np.uint8), 2, "x").tolist() == [1, 2]
    for labels, match in [(np.array([1.0, np.nan]), "label 1 is nan"),
                          (np.array([0.5, 1.0]), "label 0 is 0.5"),
                          (np.array([1, -2]), "label 1 is -2"),
                          (np.array(["a", "b"]), "dtype"),
                          (np.array([1, 2, 3]), "one label per image"),
                          (np.array([1, 2**40]), "0..2147483647")]:
        with pytest.raises(ConfigError, match=match):
            check_labels(labels, 2, "x")


def test_no_nan_infinite_or_negative_distance_on_output():
    check_metrics({"fid": 0.0, "is_mean": 1.0}, "ds")
    for metrics in ({"fid": float("nan")}, {"kid_mean": float("inf")}, {"fid": -1.0},
                    {"frechet_digits": -0.5}):
        with pytest.raises(NonFiniteError, match=next(iter(metrics))):
            check_metrics(metrics, "ds")


def test_frechet_of_identical_sets_is_not_negative():
    rng = np.random.default_rng(1)
    for n in (3, 40):
        x = rng.normal(size=(n, 8)) * 1e3
        assert frechet_features(x, x) >= 0.0
        assert frechet(Stats.of(x), Stats.of(x)) >= 0.0
