"""The digits model's quality metric: a logistic-regression classifier trained on sklearn's
real digits taken through the model's size round trip (upscale to the model's size,
area-average back to 8x8); generated samples are reduced to the same 8x8 grid and scored by
its accuracy and by the Fréchet distance to the real digits in its feature space (its 10
logits). Used by ``gaf-trt evaluate --metric digits`` and the training quality gate
(``python -m gaf_trt.training evaluate``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gaf_trt.errors import ConfigError
from gaf_trt.io.images import resize_images
from gaf_trt.metrics.features import Stats, frechet


def load_digits_images() -> tuple[Tensor, Tensor]:
    """sklearn's 1,797 handwritten digits: ``[N, 1, 8, 8]`` in ``[0, 1]`` and labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ConfigError("the digits data needs scikit-learn: pip install 'gaf-trt[train]'") from None
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x, torch.tensor(d.target, dtype=torch.long)


@dataclass
class DigitsClassifier:
    """Logistic regression on 8x8 digits in ``[0, 1]`` (flattened)."""

    model: Any
    test_accuracy: float

    def logits(self, x01_8: Tensor) -> np.ndarray:
        return self.model.decision_function(x01_8.reshape(x01_8.shape[0], -1).numpy())

    def predict(self, x01_8: Tensor) -> np.ndarray:
        return self.model.predict(x01_8.reshape(x01_8.shape[0], -1).numpy())


def real_digits(size: int) -> tuple[Tensor, Tensor]:
    """The real digits through the model's size round trip: ``[N, 1, 8, 8]`` in ``[0, 1]``."""
    x, y = load_digits_images()
    return to_digit_grid(resize_images(x, size) * 2 - 1), y


def fit_classifier(size: int, seed: int = 0) -> DigitsClassifier:
    """Fit on the round-tripped real digits; the held-out accuracy (25 %) is reported."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x, y = real_digits(size)
    xf = x.reshape(x.shape[0], -1).numpy()
    xtr, xte, ytr, yte = train_test_split(xf, y.numpy(), test_size=0.25, random_state=seed,
                                          stratify=y.numpy())
    held = LogisticRegression(max_iter=5000, C=1.0).fit(xtr, ytr)
    test_acc = float((held.predict(xte) == yte).mean())
    full = LogisticRegression(max_iter=5000, C=1.0).fit(xf, y.numpy())
    return DigitsClassifier(full, test_acc)


def to_digit_grid(images: Tensor) -> Tensor:
    """``[B, 1, S, S]`` in ``[-1, 1]`` -> ``[B, 1, 8, 8]`` in ``[0, 1]`` (area average)."""
    x01 = ((images.float() + 1) / 2).clamp(0, 1)
    return F.adaptive_avg_pool2d(x01, 8)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature rows ``a [N, D]`` and ``b [M, D]``
    (:func:`gaf_trt.metrics.features.frechet`, the one implementation)."""
    return frechet(Stats.of(a), Stats.of(b))
