"""The PyTorch backend: a :class:`~gaf_trt.model.GAF` in eval mode at one precision."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from gaf_trt.engine.base import BACKENDS, Backend, LoadRequest, Precision, resolve_device
from gaf_trt.model.checkpoint import load_model
from gaf_trt.model.config import GAFConfig
from gaf_trt.model.gaf import GAF

log = logging.getLogger(__name__)


class TorchEngine:
    """``(x [M,C,S,S] float32, t [M], y [M]) -> (J, K)`` in the engine dtype, through a GAF.

    The state stays float32 in the solver; only the network runs at ``precision``.
    """

    name = "torch"

    def __init__(self, model: GAF, precision: Precision = Precision.FP32) -> None:
        self.model = model.eval()
        self.precision = precision
        self.config: GAFConfig = model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def __call__(self, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.model(x.to(self.precision.torch_dtype), t, y)


def load_torch(req: LoadRequest) -> TorchEngine:
    """Load a checkpoint file or bundled model name into a :class:`TorchEngine`."""
    device = resolve_device(req.device)
    if req.precision is Precision.FP16 and device == "cpu":
        log.warning("fp16 on the CPU is slow and less accurate; consider fp32 or bf16")
    model = load_model(req.artifact, num_heads=req.num_heads, use_ema=req.use_ema,
                       device=device, trust_pickle=req.trust_pickle,
                       dtype=req.precision.torch_dtype)
    return TorchEngine(model, req.precision)


BACKENDS.add("torch", Backend("torch", "PyTorch eager (CPU or CUDA)", load_torch))
