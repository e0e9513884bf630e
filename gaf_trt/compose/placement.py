"""Where a network's rows go (docs/design.md §5, "Devices"): a network computes on its own
device, :func:`network_device`; every caller hands it rows through :func:`call_network` (a
fused composed step through :func:`call_fused`), which move the inputs to that device and the
results back to the device of the caller's state. When both agree nothing moves (no copy, no
host synchronisation), so a captured CUDA-graph solver loop stays capturable; the serving
scheduler keeps its solver states on the CPU and a CUDA network still gets CUDA rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from gaf_trt.engine.base import AnchorNetwork


def network_device(network: object) -> torch.device:
    """The device ``network`` computes on: its ``device`` attribute when it declares one, else
    the device of its first parameter (an ``nn.Module``), else the CPU."""
    device = getattr(network, "device", None)
    if device is None and isinstance(network, torch.nn.Module):
        param = next(network.parameters(), None)
        device = param.device if param is not None else None
    return torch.device(device) if device is not None else torch.device("cpu")


def _to(tensors: tuple[Tensor, ...], device: torch.device) -> tuple[Tensor, ...]:
    return tuple(a if a.device == device else a.to(device) for a in tensors)


def call_network(network: AnchorNetwork, x: Tensor, t: Tensor, y: Tensor,
                 device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """``network(x [M,C,S,S], t [M], y [M]) -> (J, K)`` run on the network's device
    (``device``: :func:`network_device`, given when the caller has it cached); ``J, K``
    ``[M,C,S,S]`` come back on ``x``'s device."""
    home = x.device
    device = network_device(network) if device is None else device
    if device == home:
        return network(x, t, y)
    j, k = network(*_to((x, t, y), device))
    return j.to(home), k.to(home)


def call_fused(method: Callable[..., Any], device: torch.device, x: Tensor,
               *args: Tensor) -> Any:
    """A :class:`FusedComposedStep` method (``composed_velocity`` / ``composed_anchors``) on
    ``x [B,C,S,S]`` and its other tensor arguments, run on ``device`` (the network's); the
    result (a tensor or a pair) comes back on ``x``'s device."""
    home = x.device
    if device == home:
        return method(x, *args)
    out = method(*_to((x, *args), device))
    return tuple(o.to(home) for o in out) if isinstance(out, tuple) else out.to(home)
