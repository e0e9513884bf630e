"""The digits quality gate: its classifier and its Fréchet distance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gaf_trt.metrics.digits import (
    fit_classifier,
    frechet_distance,
    real_digits,
    to_digit_grid,
)


def test_frechet_known_answers():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    a -= a.mean(0)  # zero mean, so scaling keeps the mean
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, -2.0, 0.5])
    # same covariance, mean shifted: the distance is |shift|^2
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    # same mean, covariance scaled by 4 (std x2): trace(S + 4S - 2*2S) = trace(S) ~ 3
    assert frechet_distance(a, 2 * a) == pytest.approx(np.trace(np.cov(a, rowvar=False)), rel=1e-6)


def test_classifier_on_real_digits():
    clf = fit_classifier(16)
    assert clf.test_accuracy > 0.93
    x, y = real_digits(16)
    assert x.shape == (1797, 1, 8, 8) and 0 <= x.min() and x.max() <= 1
    assert (clf.predict(x) == y.numpy()).mean() > 0.95


def test_digit_grid_area_average():
    img = torch.zeros(1, 1, 16, 16) - 1
    img[..., :2, :2] = 1
    g = to_digit_grid(img)
    assert g.shape == (1, 1, 8, 8) and g[0, 0, 0, 0] == 1 and g[0, 0, 1, 1] == 0
