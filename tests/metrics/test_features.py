"""The metric formulas against closed forms and independent computations (scipy, loops)."""

from __future__ import annotations

import numpy as np
import pytest

from gaf_trt.errors import ConfigError
from gaf_trt.metrics import features as m


def rel(a: float, b: float) -> float:
    assert np.isfinite(a) and np.isfinite(b)
    return abs(a - b) / abs(b)


def spd(d: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).standard_normal((d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_frechet_closed_form_two_gaussians():
    """N(mu1, A) vs N(mu2, c²A): |mu1-mu2|² + tr(A)(1-c)² exactly."""
    a, c = spd(12, 0), 1.7
    mu1 = np.random.default_rng(1).standard_normal(12)
    mu2 = mu1 + 0.5
    want = 12 * 0.25 + np.trace(a) * (1 - c) ** 2
    assert rel(m.frechet(m.Stats(mu1, a), m.Stats(mu2, c * c * a)), want) < 1e-10


def test_frechet_closed_form_diagonal():
    """Diagonal covariances: sum of (sqrt(s1) - sqrt(s2))²."""
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    want = ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()
    assert rel(m.frechet(m.Stats(np.zeros(3), np.diag(s1)), m.Stats(np.zeros(3), np.diag(s2))),
               want) < 1e-12


def test_frechet_matches_scipy_sqrtm():
    from scipy import linalg

    rng = np.random.default_rng(2)
    fa = rng.standard_normal((200, 16)) @ rng.standard_normal((16, 16))
    fb = rng.standard_normal((150, 16)) * 1.3 + 0.2
    a, b = m.Stats.of(fa), m.Stats.of(fb)
    covmean = linalg.sqrtm(a.sigma @ b.sigma).real
    want = ((a.mu - b.mu) ** 2).sum() + np.trace(a.sigma + b.sigma - 2 * covmean)
    assert rel(m.frechet(a, b), want) < 1e-8


def test_frechet_matches_the_digits_implementation():
    from gaf_trt.metrics.digits import frechet_distance

    rng = np.random.default_rng(3)
    fa, fb = rng.standard_normal((80, 10)), rng.standard_normal((90, 10)) + 0.3
    assert rel(m.frechet(m.Stats.of(fa), m.Stats.of(fb)), frechet_distance(fa, fb)) < 1e-9


def test_frechet_of_few_rows_equals_the_full_formula():
    """N <= D rows: the N x N route gives the D x D formula's number (rows or statistics)."""
    rng = np.random.default_rng(6)
    fa = rng.standard_normal((7, 40))
    fb = rng.standard_normal((9, 40)) * 0.8 + 0.3
    want = m.frechet(m.Stats.of(fa), m.Stats.of(fb))
    # the D x D route takes roots of the ~1e-16 eigenvalues of a rank-deficient matrix
    # (round-off of order 1e-8 relative); the N x N route has none of them
    assert want > 1 and rel(m.frechet_features(fa, fb), want) < 1e-6
    big = m.Stats.of(rng.standard_normal((100, 40)) + 0.1)
    assert rel(m.frechet_features(fa, big), m.frechet(m.Stats.of(fa), big)) < 1e-6
    many = rng.standard_normal((60, 40))  # N > D: the plain formula
    assert rel(m.frechet_features(many, fb), m.frechet(m.Stats.of(many), m.Stats.of(fb))) < 1e-12


def test_inception_score_closed_forms():
    """Uniform predictions: 1. Confident, evenly spread over K classes: K."""
    assert rel(m.inception_score(np.zeros((40, 7)), splits=4)[0], 1.0) < 1e-12
    k = 5
    logits = np.full((50, k), -60.0)
    logits[np.arange(50), np.arange(50) % k] = 60.0
    mean, std = m.inception_score(logits, splits=5)
    assert rel(mean, k) < 1e-9 and std < 1e-9


def test_kid_matches_a_loop_implementation():
    """One subset of all rows: the unbiased polynomial MMD², written out by loops."""
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((12, 5)), rng.standard_normal((12, 5)) + 0.7
    d = 5

    def k(u, v):
        return (u @ v / d + 1) ** 3

    n = len(x)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(n)) / (n * n)
    mean, std = m.kid(x, y, subsets=1, subset_size=n)
    assert rel(mean, xx + yy - 2 * xy) < 1e-10 and std == 0.0
    big = rng.standard_normal((400, 5))
    same = abs(m.kid(big, rng.standard_normal((400, 5)), subsets=10)[0])
    shifted = m.kid(big, rng.standard_normal((400, 5)) + 0.7, subsets=10)[0]
    assert shifted > 10 * same


def test_precision_recall_extremes():
    rng = np.random.default_rng(5)
    real = rng.standard_normal((30, 4))
    assert m.precision_recall(real, real.copy()) == (1.0, 1.0)
    assert m.precision_recall(real, real + 100.0) == (0.0, 0.0)
    # the generated set covers half the real set's region: full precision, partial recall
    fake = real[real[:, 0] > 0]
    p, r = m.precision_recall(real, fake)
    assert p == 1.0 and 0.0 < r < 1.0
    assert m.precision_recall(real, fake, block=4) == (p, r)  # blocks change nothing


def test_too_few_samples_refused():
    with pytest.raises(ConfigError, match="at least 2"):
        m.Stats.of(np.ones((1, 3)))
    with pytest.raises(ConfigError, match="k=3"):
        m.precision_recall(np.ones((3, 2)), np.ones((10, 2)))
