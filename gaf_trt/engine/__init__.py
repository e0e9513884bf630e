"""Networks behind the one contract (PyTorch, ONNX Runtime, OpenVINO, TensorRT) and their
registry.

This layer sits below ``compose/``: it never imports it.
"""

from gaf_trt.engine.base import (
    BACKENDS,
    AnchorNetwork,
    Backend,
    FusedComposedStep,
    LoadRequest,
    load_backend,
)
from gaf_trt.engine.torch_backend import TorchEngine
from gaf_trt.engine import ort_backend, openvino_backend, trt_backend  # noqa: F401,E402 - register
from gaf_trt.engine.loader import load_engine  # noqa: E402 - registers "auto" (after the others)

__all__ = ["BACKENDS", "AnchorNetwork", "Backend", "FusedComposedStep", "LoadRequest",
           "TorchEngine", "load_backend", "load_engine"]
