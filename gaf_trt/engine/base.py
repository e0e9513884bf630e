"""The network contract every backend satisfies, and the backend registry.

An :class:`AnchorNetwork` maps ``(x [M,C,S,S] float32, t [M], y [M] long) -> (J, K)``, each
``[M, C, S, S]`` (float32 or the engine's dtype), and carries the :class:`GAFConfig` it was
built from. The PyTorch :class:`~gaf_trt.model.GAF`, the ONNX Runtime and the TensorRT
engines all satisfy it, so compositions and solvers never know what they run on.

An engine that can run the whole composed step itself (a fused graph) also satisfies
:class:`FusedComposedStep` on plain tensors; :class:`~gaf_trt.compose.ComposedField` uses it
when present. This layer sits below ``compose/`` and never imports it.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from gaf_trt.errors import ConfigError
from gaf_trt.model.config import GAFConfig
from gaf_trt.registry import Registry

log = logging.getLogger(__name__)


class Precision(str, enum.Enum):
    """Compute precision of an engine (the solver state stays float32). ``int8`` / ``fp8``
    are quantised engines (Q/DQ graphs, ``gaf_trt.export.quantize``): exported engine
    directories only, no torch dtype."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"
    FP8 = "fp8"

    @property
    def quantized(self) -> bool:
        return self in (Precision.INT8, Precision.FP8)

    @property
    def torch_dtype(self) -> torch.dtype:
        if self.quantized:
            raise ConfigError(f"precision {self.value} is a quantised engine (gaf-trt export "
                              f"--precision {self.value}), run with --backend ort or trt; "
                              "the torch backend runs fp32, bf16 or fp16")
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.value]


@runtime_checkable
class AnchorNetwork(Protocol):
    """Anything that gives both anchors: ``(x [M,C,S,S], t [M], y [M]) -> (J, K)``."""

    config: GAFConfig

    def __call__(self, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]: ...


@runtime_checkable
class FusedComposedStep(Protocol):
    """An engine that runs a whole composed evaluation on plain tensors.

    ``x [B,C,S,S]`` float32, ``t [B]``, ``classes [N]`` long, ``coef [N,1,H|1,W|1]`` float32:

    - ``composed_velocity`` -> ``Σ_i coef_i ⊙ (K_i − J_i)``, ``[B, C, S, S]``;
    - ``composed_anchors`` -> ``(Σ_i coef_i ⊙ J_i, Σ_i coef_i ⊙ K_i)`` (endpoint sampler).
    """

    config: GAFConfig

    def composed_velocity(self, x: Tensor, t: Tensor, classes: Tensor,
                          coef: Tensor) -> Tensor: ...

    def composed_anchors(self, x: Tensor, t: Tensor, classes: Tensor,
                         coef: Tensor) -> tuple[Tensor, Tensor]: ...


def resolve_device(device: str) -> str:
    """The one device resolution (sampling, bench, training): ``auto`` -> ``cuda`` when
    available else ``cpu``; explicit choices are validated."""
    if not isinstance(device, str) or not device.strip():
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto")
    device = device.strip()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA "
                              "device(s) are visible")
    elif dev.type != "cpu":
        raise ConfigError(f"unsupported device {device!r}; use cpu, cuda, cuda:N or auto")
    return device


@dataclass(frozen=True)
class LoadRequest:
    """What a backend needs to load a network.

    ``artifact`` is a checkpoint file, a bundled model name (``digits``) or an engine
    directory written by ``gaf-trt export``; each backend says which it accepts.
    """

    artifact: str
    device: str = "cpu"
    precision: Precision = Precision.FP32
    num_heads: int | None = None
    use_ema: bool = True
    trust_pickle: bool = False
    options: dict[str, object] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Backend:
    """A registered backend: its loader and a one-line description."""

    name: str
    description: str
    load: Callable[[LoadRequest], AnchorNetwork]
    available: Callable[[], str | None] = lambda: None  # None: usable here, else why not


BACKENDS: Registry[Backend] = Registry("backend")


def load_backend(name: str, request: LoadRequest) -> AnchorNetwork:
    """Load ``request.artifact`` with backend ``name``."""
    backend = BACKENDS.get(name)
    why_not = backend.available()
    if why_not is not None:
        usable = [n for n in BACKENDS.names() if BACKENDS.get(n).available() is None]
        raise ConfigError(f"backend {name!r} is not available here: {why_not}; available: "
                          f"{', '.join(usable)}")
    return backend.load(request)
