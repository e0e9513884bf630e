"""Networks behind the one contract (PyTorch, ONNX Runtime, TensorRT) and their registry.

This layer sits below ``compose/``: it never imports it.
"""

from gaf_trt.engine.base import (
    BACKENDS,
    AnchorNetwork,
    Backend,
    FusedComposedStep,
    LoadRequest,
    Precision,
    load_backend,
    resolve_device,
)
from gaf_trt.engine.torch_backend import TorchEngine

__all__ = ["BACKENDS", "AnchorNetwork", "Backend", "FusedComposedStep", "LoadRequest",
           "Precision", "TorchEngine", "load_backend", "resolve_device"]
