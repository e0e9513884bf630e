"""The network contract every backend satisfies, and the backend registry.

An :class:`AnchorNetwork` maps ``(x [M,C,S,S] float32, t [M], y [M] long) -> (J, K)``, each
``[M, C, S, S]`` (float32 or the engine's dtype), and carries the :class:`GAFConfig` it was
built from. The PyTorch :class:`~gaf_trt.model.GAF`, the ONNX Runtime and the TensorRT
engines all satisfy it, so compositions and solvers never know what they run on.

An engine that can run the whole composed step itself (a fused graph) also satisfies
:class:`FusedComposedStep` on plain tensors; :class:`~gaf_trt.compose.ComposedField` uses it
when present. This layer sits below ``compose/`` and never imports it.

Devices: a network computes on one device (its ``device`` attribute, else its parameters'
device, else the CPU) and may expect its inputs there. Callers hand it rows through
``gaf_trt.compose.placement`` (``call_network`` / ``call_fused``), which move the inputs to
that device and the results back to the device of the caller's state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from torch import Tensor

from gaf_trt.errors import ConfigError
from gaf_trt.model.config import GAFConfig
from gaf_trt.precision import Precision
from gaf_trt.registry import Registry

log = logging.getLogger(__name__)

#: The largest ``options["threads"]`` a backend takes (0: the runtime's default).
MAX_THREADS = 1024


def check_threads(value: object) -> int:
    """``options["threads"]`` (``--threads``): 0 (the runtime's default) or a positive integer
    up to :data:`MAX_THREADS`; else one :class:`~gaf_trt.errors.ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_THREADS:
        raise ConfigError(f"--threads must be 0 (the runtime's default) or a positive integer "
                          f"up to {MAX_THREADS}, got {value!r}")
    return value


@runtime_checkable
class AnchorNetwork(Protocol):
    """Anything that gives both anchors: ``(x [M,C,S,S], t [M], y [M]) -> (J, K)``.

    Devices: a network computes on one device (a ``device`` attribute when it declares
    one, else its parameters' device, else the CPU) and may expect its inputs there; it need
    not move them: every caller hands it rows through ``gaf_trt.compose.placement``, which
    moves ``x, t, y`` to that device and ``J, K`` back to the device of the caller's state.
    """

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
