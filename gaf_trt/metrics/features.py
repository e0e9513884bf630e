"""Sample-quality metrics on feature rows (float64 numpy).

- FID: Fréchet distance of Gaussians ``(mu, sigma)`` fitted to Inception pool features;
- Inception Score: ``exp(E[KL(p(y|x) || p(y))])`` over splits, from the unbiased logits;
- KID: unbiased MMD² with the cubic polynomial kernel ``(x·y / d + 1)³``, over subsets;
- precision / recall: k-NN manifolds (Kynkäänniemi et al. 2019).

Conventions follow torch-fidelity's defaults (10 IS splits, 100 KID subsets of 1000, k = 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gaf_trt.errors import ConfigError

IS_SPLITS = 10
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
PR_K = 3
#: A Fréchet distance this far below 0 (relative to its terms) is round-off, reported as 0.
FRECHET_RTOL = 1e-6


def _distance(diff2: float, tr_a: float, tr_b: float, tr_covmean: float) -> float:
    """``diff2 + tr_a + tr_b - 2 tr_covmean`` with round-off below 0 reported as 0 (a larger
    negative value is returned as it is: the callers' inputs were not covariances)."""
    value = float(diff2 + tr_a + tr_b - 2 * tr_covmean)
    if value < 0 and -value <= FRECHET_RTOL * (abs(diff2) + abs(tr_a) + abs(tr_b) + 1.0):
        return 0.0
    return value


@dataclass(frozen=True)
class Stats:
    """A Gaussian fitted to feature rows: ``mu [D]``, ``sigma [D, D]``."""

    mu: np.ndarray
    sigma: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray) -> Stats:
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[0] < 2:
            raise ConfigError(f"statistics need at least 2 feature rows, got {f.shape[0]}")
        return cls(f.mean(0), np.cov(f, rowvar=False))


def frechet(a: Stats, b: Stats) -> float:
    """``|mu_a - mu_b|² + tr(S_a + S_b - 2 (S_a S_b)^½)``; the trace of the root is the sum of
    the square roots of the eigenvalues of the symmetric ``S_a^½ S_b S_a^½`` (no complex
    parts, no sqrtm iteration)."""
    if a.mu.shape != b.mu.shape or a.sigma.shape != b.sigma.shape:
        raise ConfigError(f"statistics of different dimensions: {a.mu.shape[0]} and "
                          f"{b.mu.shape[0]}")
    w, v = np.linalg.eigh((a.sigma + a.sigma.T) / 2)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root @ b.sigma @ root)
    tr_covmean = np.sqrt(np.clip(cross, 0, None)).sum()
    diff = a.mu - b.mu
    return _distance(diff @ diff, np.trace(a.sigma), np.trace(b.sigma), tr_covmean)


def frechet_features(a: np.ndarray, b: np.ndarray | Stats) -> float:
    """FID between feature rows ``a [N, D]`` and rows ``b [M, D]`` or statistics ``b``.

    With ``N <= D`` the covariance of ``a`` has rank below ``N``, and the nonzero eigenvalues
    of ``S_a^½ S_b S_a^½`` are those of the ``N x N`` matrix ``X_a S_b X_a^T / (N-1)``
    (``X_a`` the centred rows): the same number, without a ``D x D`` eigendecomposition."""
    a = np.asarray(a, dtype=np.float64)
    n, d = a.shape
    if n > d or n < 2:
        return frechet(Stats.of(a), b if isinstance(b, Stats) else Stats.of(b))
    mu_a = a.mean(0)
    xa = a - mu_a
    if isinstance(b, Stats):
        if b.mu.shape != (d,):
            raise ConfigError(f"statistics of different dimensions: {d} and {b.mu.shape[0]}")
        mu_b, tr_b = b.mu, float(np.trace(b.sigma))
        inner = xa @ b.sigma @ xa.T
    else:
        b = np.asarray(b, dtype=np.float64)
        if b.ndim != 2 or b.shape[1] != d or b.shape[0] < 2:
            raise ConfigError(f"feature rows of different shapes: {list(a.shape)} and "
                              f"{list(b.shape)}")
        mu_b = b.mean(0)
        xb = b - mu_b
        tr_b = float((xb * xb).sum() / (b.shape[0] - 1))
        cross = xa @ xb.T
        inner = cross @ cross.T / (b.shape[0] - 1)
    inner = inner / (n - 1)
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    diff = mu_a - mu_b
    return _distance(diff @ diff, (xa * xa).sum() / (n - 1), tr_b, tr_covmean)


def inception_score(logits: np.ndarray, splits: int = IS_SPLITS) -> tuple[float, float]:
    """Mean and std over ``splits`` of ``exp(mean KL(p(y|x) || p(y)))``; ``logits [N, K]``."""
    n = logits.shape[0]
    splits = max(1, min(splits, n))
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    logp = np.log(np.clip(p, 1e-300, None))
    scores = []
    for part in np.array_split(np.arange(n), splits):
        py = p[part].mean(0)
        kl = (p[part] * (logp[part] - np.log(np.clip(py, 1e-300, None)))).sum(1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


def _poly_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² of rows ``x [m, D]`` and ``y [m, D]`` with ``k = (x·y/D + 1)³``."""
    d, m = x.shape[1], x.shape[0]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(sxx + syy - 2 * kxy.mean())


def kid(a: np.ndarray, b: np.ndarray, subsets: int = KID_SUBSETS,
        subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> tuple[float, float]:
    """Mean and std of the unbiased polynomial MMD² over random equal-size subsets."""
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ConfigError(f"KID needs at least 2 samples on each side, got {a.shape[0]} and "
                          f"{b.shape[0]}")
    rng = np.random.default_rng(seed)
    vals = [_poly_mmd2(a[rng.choice(a.shape[0], m, replace=False)],
                       b[rng.choice(b.shape[0], m, replace=False)]) for _ in range(subsets)]
    return float(np.mean(vals)), float(np.std(vals))


#: Rows per block of the k-NN distance matrices (memory: block x samples doubles).
PR_BLOCK = 512


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances ``[len(a), len(b)]``."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(sq, 0, None))


def _radii(f: np.ndarray, k: int, block: int) -> np.ndarray:
    """Distance of each row to its k-th nearest other row (block by block)."""
    out = np.empty(len(f))
    for s in range(0, len(f), block):
        d = _distances(f[s:s + block], f)
        out[s:s + block] = np.partition(d, k, axis=1)[:, k]  # column k: k-th other row
    return out


def _covered(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, block: int) -> float:
    """Share of ``points`` within ``radii`` of some centre."""
    hit = np.zeros(len(points), dtype=bool)
    for s in range(0, len(points), block):
        hit[s:s + block] = (_distances(points[s:s + block], centres) <= radii[None, :]).any(1)
    return float(hit.mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = PR_K,
                     block: int = PR_BLOCK) -> tuple[float, float]:
    """Precision: share of ``fake`` rows inside the real k-NN manifold; recall: share of
    ``real`` rows inside the generated one. Distances in blocks of ``block`` rows."""
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ConfigError(f"precision/recall with k={k} needs more than {k} samples on each "
                          f"side, got {real.shape[0]} and {fake.shape[0]}")
    r_real, r_fake = _radii(real, k, block), _radii(fake, k, block)
    return _covered(fake, real, r_real, block), _covered(real, fake, r_fake, block)
