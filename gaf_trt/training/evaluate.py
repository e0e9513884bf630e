"""Quality gate of the bundled digits model.

Generates ``per_class`` samples per class (euler-20 and ier-8), reduces them to the
dataset's 8x8 grid (area average), classifies them with a logistic-regression classifier
trained on the real digits taken through the same size round trip (upscale to the model's
size, area-average back to 8x8), and reports per-class and mean accuracy plus a Fréchet
distance between real and generated samples in that classifier's feature space (its 10
logits).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gaf_trt.compose import sample
from gaf_trt.compose.solvers import StepCallback
from gaf_trt.errors import ConfigError
from gaf_trt.metrics.digits import (
    fit_classifier,
    frechet_distance,
    real_digits,
    to_digit_grid,
)
from gaf_trt.model.checkpoint import load_model

#: (name, solver, steps) of the reported samplers; names use the CLI's solver names
#: (``ier``, of which ``endpoint`` is an alias in :data:`~gaf_trt.compose.solvers.SOLVERS`).
SAMPLERS = (("euler-20", "euler", 20), ("ier-8", "ier", 8))


@torch.no_grad()
def generate_per_class(model: Any, per_class: int, solver: str, steps: int, seed: int,
                       chunk: int = 250, callback: StepCallback | None = None
                       ) -> tuple[Tensor, Tensor]:
    """``per_class`` samples of every class: images ``[N, C, S, S]`` and labels ``[N]``.
    ``callback(k, n, x)`` sees every solver step of the whole job (``n`` = all steps of all
    classes and chunks), for a progress bar."""
    g = torch.Generator().manual_seed(seed)
    shape = model.config.sample_shape
    loops = model.config.num_classes * -(-per_class // chunk)
    outs, labels = [], []
    for c in range(model.config.num_classes):
        for start in range(0, per_class, chunk):
            n = min(chunk, per_class - start)
            noise = torch.randn(n, *shape, generator=g)
            done = len(outs) * steps
            step = None if callback is None else (
                lambda k, _n, x, done=done: callback(done + k, loops * steps, x))
            outs.append(sample(model, [c], noise, steps=steps, solver=solver,
                               t_eps=model.config.t_eps, callback=step))
            labels.append(torch.full((n,), c))
    return torch.cat(outs), torch.cat(labels)


def evaluate_digits(ckpt: str = "digits", *, per_class: int = 100, seed: int = 0,
                    use_ema: bool = True,
                    progress: Callable[[str, int], StepCallback] | None = None) -> dict[str, Any]:
    """The report: classifier test accuracy, and per sampler accuracy and Fréchet distance.
    ``progress(label, total)`` returns the step callback of one sampler's bar (the CLI's)."""
    if per_class < 2:
        raise ConfigError(f"--per-class must be >= 2, got {per_class}")
    model = load_model(ckpt, use_ema=use_ema)
    cfg = model.config
    if cfg.num_classes != 10 or cfg.in_channels != 1 or cfg.mode != "pixel":
        raise ConfigError(f"{ckpt} is not a digits model (needs 10 classes, 1 channel, pixel "
                          f"space; got {cfg.num_classes} classes, {cfg.in_channels} channels)")
    clf = fit_classifier(cfg.input_size, seed)
    real_feats = clf.logits(real_digits(cfg.input_size)[0])
    report: dict[str, Any] = {"checkpoint": str(ckpt), "weights": "ema" if use_ema else "model",
                              "per_class": per_class,
                              "classifier_test_accuracy": clf.test_accuracy,
                              "samplers": {}}
    for name, solver, steps in SAMPLERS:
        t0 = time.perf_counter()
        bar = progress(name, steps) if progress is not None else None
        images, labels = generate_per_class(model, per_class, solver, steps, seed, callback=bar)
        gen8 = to_digit_grid(images)
        pred = clf.predict(gen8)
        lab = labels.numpy()
        per = {str(c): float((pred[lab == c] == c).mean()) for c in range(10)}
        report["samplers"][name] = {
            "accuracy_per_class": per,
            "mean_accuracy": float(np.mean(list(per.values()))),
            "frechet_distance": frechet_distance(real_feats, clf.logits(gen8)),
            "seconds": round(time.perf_counter() - t0, 2),
        }
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [f"classifier: held-out accuracy on real digits {report['classifier_test_accuracy']:.3f}"]
    for name, r in report["samplers"].items():
        per = " ".join(f"{c}:{a:.2f}" for c, a in r["accuracy_per_class"].items())
        lines.append(f"{name:<11} mean accuracy {r['mean_accuracy']:.3f}  Fréchet "
                     f"{r['frechet_distance']:.3f}  ({r['seconds']:.1f} s)")
        lines.append(f"{'':<11} {per}")
    return "\n".join(lines)
