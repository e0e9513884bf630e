"""``gaf-trt evaluate``: metrics of a generated dataset against a reference.

Metrics (registry :data:`METRICS`): ``fid``, ``kid``, ``pr`` (need ``--ref`` and the Inception
weights), ``is`` (Inception weights only) and ``digits`` (the bundled digits model's own
classifier accuracy and Fréchet distance, :mod:`gaf_trt.metrics.digits`; no weights).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gaf_trt.errors import ConfigError, NonFiniteError
from gaf_trt.evaluate.data import (
    Images,
    Reference,
    check_same_size,
    load_images,
    load_reference,
)
from gaf_trt.metrics import features as m
from gaf_trt.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Metric:
    """A registered metric: what it needs and how it is computed."""

    needs_inception: bool
    needs_ref: bool
    compute: Callable[[Features], dict[str, float]]
    min_samples: int = 2  # on each side (a covariance needs two)


@dataclass
class Features:
    """The inputs a metric may use (computed once, lazily)."""

    generated: Images
    reference: Reference | None
    pool: np.ndarray | None = None  # [N, 2048] generated
    logits: np.ndarray | None = None  # [N, 1008] generated
    ref_pool: np.ndarray | None = None  # [M, 2048] reference images (when given)


METRICS: Registry[Metric] = Registry("metric")
INCEPTION_METRICS = ("fid", "is", "kid", "pr")


def _fid(f: Features) -> dict[str, float]:
    ref = f.reference.stats if f.reference.stats is not None else f.ref_pool
    return {"fid": m.frechet_features(f.pool, ref)}


def _ref_pool(f: Features, name: str) -> np.ndarray:
    if f.ref_pool is None:
        raise ConfigError(f"{name} needs reference images; {f.reference.source} holds only "
                          "mu/sigma statistics")
    return f.ref_pool


def _kid(f: Features) -> dict[str, float]:
    mean, std = m.kid(f.pool, _ref_pool(f, "kid"))
    return {"kid_mean": mean, "kid_std": std}


def _pr(f: Features) -> dict[str, float]:
    precision, recall = m.precision_recall(_ref_pool(f, "pr"), f.pool)
    return {"precision": precision, "recall": recall}


def _is(f: Features) -> dict[str, float]:
    mean, std = m.inception_score(f.logits)
    return {"is_mean": mean, "is_std": std}


def _digits(f: Features) -> dict[str, float]:
    """The digits quality gate on the dataset's images and labels: the classifier's accuracy
    per class and the Fréchet distance to the real digits in its logit space."""
    import torch

    from gaf_trt.metrics.digits import (
        fit_classifier,
        frechet_distance,
        real_digits,
        to_digit_grid,
    )

    g = f.generated
    if g.labels is None:
        raise ConfigError(f"the digits metric needs the labels of {g.source} (samples.npz "
                          "'labels' or labels.txt)")
    if g.labels.min() < 0 or g.labels.max() > 9:
        raise ConfigError(f"{g.source}: labels outside 0..9 are not digits")
    size = g.size[0]
    grey = torch.from_numpy(g.images[..., 0].astype(np.float32) / 127.5 - 1)[:, None]
    grid = to_digit_grid(grey)
    clf = fit_classifier(size)
    pred = clf.predict(grid)
    out = {f"accuracy_{c}": float((pred[g.labels == c] == c).mean())
           for c in range(10) if (g.labels == c).any()}
    out["mean_accuracy"] = float(np.mean(list(out.values())))
    out["frechet_digits"] = frechet_distance(clf.logits(real_digits(size)[0]), clf.logits(grid))
    out["classifier_test_accuracy"] = clf.test_accuracy
    return out


METRICS.add("fid", Metric(True, True, _fid))
METRICS.add("is", Metric(True, False, _is, min_samples=1))
METRICS.add("kid", Metric(True, True, _kid))
METRICS.add("pr", Metric(True, True, _pr, min_samples=m.PR_K + 1))
METRICS.add("digits", Metric(False, False, _digits))


@dataclass
class EvaluateConfig:
    """Arguments of one evaluation."""

    dataset: str
    ref: str | None = None
    inception: str | None = None
    metrics: list[str] = field(default_factory=list)  # empty: every metric the inputs allow
    device: str = "auto"
    batch: int = 64
    allow_incomplete: bool = False  # score the finished shards of an incomplete dataset


def chosen_metrics(cfg: EvaluateConfig) -> list[str]:
    """The metrics to compute, validated against what was given."""
    names = [METRICS.canonical(n.strip().lower()) for n in cfg.metrics if n.strip()]
    if not names:
        if cfg.inception is None:
            raise ConfigError("give --inception PATH (FID, IS, KID, precision/recall) or "
                              "--metrics digits")
        names = ["fid", "is", "kid", "pr"] if cfg.ref is not None else ["is"]
    for n in names:
        if METRICS.get(n).needs_inception and cfg.inception is None:
            from gaf_trt.evaluate.inception import WEIGHTS_NAME

            raise ConfigError(f"metric {n!r} needs the Inception weights: --inception PATH "
                              f"(the file {WEIGHTS_NAME})")
        if METRICS.get(n).needs_ref and cfg.ref is None:
            raise ConfigError(f"metric {n!r} needs a reference: --ref PATH (images, an .npz "
                              "of images, or mu/sigma statistics)")
    if not 1 <= cfg.batch <= 4096 or isinstance(cfg.batch, bool):
        raise ConfigError(f"--batch must be an integer in 1..4096, got {cfg.batch!r}")
    return list(dict.fromkeys(names))


def run_evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Validate, read both sides, compute the chosen metrics; returns the report."""
    from gaf_trt.device import resolve_device

    names = chosen_metrics(cfg)
    device = resolve_device(cfg.device)
    if cfg.inception is not None:
        from gaf_trt.evaluate.inception import check_weights

        check_weights(cfg.inception)
    generated = load_images(cfg.dataset, allow_incomplete=cfg.allow_incomplete)
    reference = load_reference(cfg.ref) if cfg.ref is not None else None
    if reference is not None:
        check_same_size(generated, reference)
    check_inputs(names, generated, reference)
    feats = Features(generated, reference)
    if any(METRICS.get(n).needs_inception for n in names):
        from gaf_trt.evaluate.inception import Inception

        net = Inception(cfg.inception, device, cfg.batch)
        feats.pool, feats.logits = net.features(generated.images)
        if reference is not None and reference.images is not None and \
                any(METRICS.get(n).needs_ref for n in names):
            feats.ref_pool, _ = net.features(reference.images.images)
    report: dict[str, Any] = {"dataset": generated.source, "samples": len(generated.images),
                              "reference": None if reference is None else reference.source,
                              "metrics": {}}
    if generated.note:
        report["incomplete"] = generated.note
    for n in names:
        report["metrics"].update(METRICS.get(n).compute(feats))
    check_metrics(report["metrics"], generated.source)
    return report


def check_inputs(names: list[str], generated: Images, reference: Reference | None) -> None:
    """Before any work: enough samples on each side for every chosen metric, and reference
    statistics of the Inception pool's dimension."""
    for n in names:
        need = METRICS.get(n).min_samples
        sides = [("dataset", generated)]
        if METRICS.get(n).needs_ref and reference is not None and reference.images is not None:
            sides.append(("reference", reference.images))
        for what, side in sides:
            if len(side.images) < need:
                raise ConfigError(f"metric {n!r} needs at least {need} samples; the {what} "
                                  f"{side.source} holds {len(side.images)}")
    if reference is not None and reference.stats is not None and "fid" in names:
        from gaf_trt.evaluate.inception import POOL_FEATURES

        dim = reference.stats.mu.shape[0]
        if dim != POOL_FEATURES:
            raise ConfigError(f"{reference.source}: mu/sigma have dimension {dim}; FID "
                              f"statistics of the Inception pool have {POOL_FEATURES}")


def check_metrics(metrics: dict[str, float], source: str) -> None:
    """A metric on output is a finite number, and a distance is not negative (a NonFiniteError
    naming it otherwise: the inputs passed their checks, so this names what came out)."""
    for key, value in metrics.items():
        if not np.isfinite(value):
            raise NonFiniteError(f"metric {key} of {source} came out {value}; the inputs give "
                                 "no finite value")
        if (key == "fid" or key.startswith("frechet")) and value < 0:
            raise NonFiniteError(f"metric {key} of {source} came out negative ({value:.6g}); "
                                 "a distance is never negative: the statistics are not "
                                 "covariances")


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{report['dataset']}: {report['samples']} samples"
             + (f" vs {report['reference']}" if report.get("reference") else "")
             + (f" ({report['incomplete']})" if report.get("incomplete") else "")]
    lines += [f"  {k:<26}{v:.6g}" for k, v in report["metrics"].items()]
    return "\n".join(lines)
