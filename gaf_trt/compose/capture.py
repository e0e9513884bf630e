"""Capture a whole solver loop in one CUDA graph and replay it.

The solvers and :class:`~gaf_trt.compose.ComposedField` do no host synchronisation and no
data-dependent allocation, so the loop ``integrate(field, x, ...)`` can be recorded once and
replayed for new noise at the cost of a single graph launch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gaf_trt.compose.solvers import T_EPS, integrate
from gaf_trt.errors import ConfigError


class CapturedLoop:
    """``integrate`` over a fixed field, batch shape, solver and step count, as a CUDA graph.

    Lifecycle: construct (warm-up + capture) -> ``__call__(x)`` replays on new input ``x``
    (same shape) and returns a fresh tensor with the final state.
    """

    def __init__(self, field: Any, example: Tensor, *, steps: int, solver: str = "euler",
                 t_eps: float = T_EPS, reverse: bool = False, warmup: int = 2) -> None:
        if not example.is_cuda:
            raise ConfigError("CUDA-graph capture needs a CUDA tensor")
        if solver == "endpoint" and reverse:
            raise ConfigError("reverse endpoint sampling draws noise; capture it with init fixed")
        self.kwargs = dict(steps=steps, solver=solver, t_eps=t_eps, reverse=reverse)
        self.field = field  # keeps the field and its cached device tensors alive for replays
        self.static_in = example.detach().float().clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(warmup):  # fills the field's caches, cuBLAS workspaces, allocator
                integrate(field, self.static_in, **self.kwargs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.static_out = integrate(field, self.static_in, **self.kwargs)

    def __call__(self, x: Tensor) -> Tensor:
        if x.shape != self.static_in.shape:
            raise ConfigError(f"captured for input {list(self.static_in.shape)}, got {list(x.shape)}")
        self.static_in.copy_(x)
        self.graph.replay()
        return self.static_out.clone()
