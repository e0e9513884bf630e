"""Inception-v3 features for FID / IS / KID / precision-recall, with weights from a local file.

The network is torch-fidelity's ``FeatureExtractorInceptionV3`` (the TensorFlow FID Inception,
ported with its TF-compatible resize to 299x299): 2048 pool features and the 1008 unbiased
logits. Nothing is downloaded: the weights file is the user's (``--inception PATH``).

torch-fidelity's package ``__init__`` imports every extractor, and some of them import
torchvision; PyPI's torchvision wheel is linked against CUDA torch and fails to import beside
the CPU torch build. Only the Inception module (and the helpers it imports) is needed, so it is
loaded from the installed torch-fidelity without running the package ``__init__`` when the
package itself cannot be imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gaf_trt.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

#: The file to obtain (torch-fidelity's conversion of the TF FID Inception, 2015-12-05).
WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
               + WEIGHTS_NAME)
POOL = "2048"
#: Features per image of the pool output (the dimension of FID statistics).
POOL_FEATURES = 2048
LOGITS = "logits_unbiased"
#: Shapes that identify the file's format (checked before the network is built).
EXPECTED = {"fc.weight": (1008, 2048), "fc.bias": (1008,),
            "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3)}


def _extractor_class() -> Any:
    """torch-fidelity's ``FeatureExtractorInceptionV3`` class."""
    name = "torch_fidelity.feature_extractor_inceptionv3"
    if name in sys.modules:
        return sys.modules[name].FeatureExtractorInceptionV3
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("evaluate needs torch-fidelity: pip install 'gaf-trt[eval]' (on a "
                          "CPU-only torch: pip install --no-deps torch-fidelity)")
    if "torch_fidelity" not in sys.modules:  # a bare package: its __init__ needs torchvision
        pkg = types.ModuleType("torch_fidelity")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = spec
        sys.modules["torch_fidelity"] = pkg
    return importlib.import_module(name).FeatureExtractorInceptionV3


def check_weights(path: str | Path) -> Path:
    """The weights file exists, loads with ``weights_only=True`` and has the Inception
    shapes; raises a one-line error naming the file to obtain otherwise."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Inception weights not found: {p}; download {WEIGHTS_URL} once and "
                          "pass it with --inception PATH (nothing is downloaded for you)")
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{p} is not a torch weights file ({type(err).__name__}); "
                              f"expected {WEIGHTS_NAME}") from None
    if not isinstance(sd, dict):
        raise CheckpointError(f"{p} holds a {type(sd).__name__}, not a state dict; expected "
                              f"{WEIGHTS_NAME}")
    for key, shape in EXPECTED.items():
        t = sd.get(key)
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
            raise CheckpointError(f"{p} is not the FID Inception-v3 ({key} should be "
                                  f"{list(shape)}); expected {WEIGHTS_NAME}")
    return p


class Inception:
    """``features(images)``: uint8 ``[N, H, W, 3]`` -> pool ``[N, 2048]`` and unbiased
    logits ``[N, 1008]`` (float64 numpy)."""

    def __init__(self, weights: str | Path, device: str = "cpu", batch: int = 64) -> None:
        path = check_weights(weights)
        cls = _extractor_class()
        try:
            self.net = cls("inception-v3-compat", [POOL, LOGITS],
                           feature_extractor_weights_path=str(path)).to(device)
        except RuntimeError as err:  # missing / unexpected keys
            raise CheckpointError(f"{path}: {str(err).splitlines()[0]}; expected "
                                  f"{WEIGHTS_NAME}") from None
        self.device, self.batch = device, batch

    @torch.no_grad()
    def features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pools, logits = [], []
        for s in range(0, len(images), self.batch):
            x = torch.from_numpy(np.ascontiguousarray(images[s:s + self.batch]))
            x = x.permute(0, 3, 1, 2).contiguous().to(self.device)  # [B, 3, H, W] uint8
            pool, logit = self.net(x)
            pools.append(pool.double().cpu().numpy())
            logits.append(logit.double().cpu().numpy())
        return np.concatenate(pools), np.concatenate(logits)
