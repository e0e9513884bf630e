"""Backends that run the anchor network: one registry, one contract.

Every backend loads into an :class:`~gaf_trt.compose.AnchorNetwork`: ``(x, t, y) -> (J, K)``
with float32 ``x`` in and float J/K out, and a ``config``. Solvers and compositions never
know which backend they run on.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from gaf_trt.errors import ConfigError
from gaf_trt.model.checkpoint import load_model
from gaf_trt.model.config import GAFConfig
from gaf_trt.model.gaf import GAF
from gaf_trt.registry import Registry

log = logging.getLogger(__name__)


class Precision(str, enum.Enum):
    """Compute precision of an engine (the solver state stays float32)."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"

    @property
    def torch_dtype(self) -> torch.dtype:
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.value]


@dataclass(frozen=True)
class LoadRequest:
    """What a backend needs to load a model."""

    checkpoint: str
    device: str = "cpu"
    precision: Precision = Precision.FP32
    num_heads: int | None = None
    use_ema: bool = True
    trust_pickle: bool = False


class TorchEngine:
    """The PyTorch backend: a :class:`GAF` in eval mode at a given precision."""

    name = "torch"

    def __init__(self, model: GAF, precision: Precision = Precision.FP32) -> None:
        self.model = model
        self.precision = precision
        self.config: GAFConfig = model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def __call__(self, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """``x [M, C, S, S]`` float32, ``t [M]``, ``y [M]`` -> ``(J, K)`` in the engine dtype."""
        return self.model(x.to(self.precision.torch_dtype), t, y)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; validates explicit choices."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use cpu")
    try:
        torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from None
    return device


def _load_torch(req: LoadRequest) -> TorchEngine:
    device = resolve_device(req.device)
    if req.precision is Precision.FP16 and device == "cpu":
        log.warning("fp16 on the CPU is slow and less accurate; consider fp32 or bf16")
    model = load_model(req.checkpoint, num_heads=req.num_heads, use_ema=req.use_ema,
                       device=device, trust_pickle=req.trust_pickle,
                       dtype=req.precision.torch_dtype)
    return TorchEngine(model, req.precision)


@dataclass(frozen=True)
class Backend:
    name: str
    description: str
    load: Callable[[LoadRequest], object]


BACKENDS: Registry[Backend] = Registry("backend")
BACKENDS.add("torch", Backend("torch", "PyTorch eager (CPU or CUDA)", _load_torch))


def load_backend(name: str, request: LoadRequest) -> object:
    """Load ``request.checkpoint`` with backend ``name`` (an AnchorNetwork)."""
    return BACKENDS.get(name).load(request)
