"""Runtimes that evaluate the anchor network (PyTorch; ONNX Runtime and TensorRT later)."""

from gaf_trt.engine.backends import (
    BACKENDS,
    LoadRequest,
    Precision,
    TorchEngine,
    load_backend,
    resolve_device,
)

__all__ = ["BACKENDS", "LoadRequest", "Precision", "TorchEngine", "load_backend",
           "resolve_device"]
