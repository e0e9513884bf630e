"""Capture a whole solver loop in one CUDA graph and replay it.

The solvers and :class:`~gaf_trt.compose.ComposedField` do no host synchronisation and no
data-dependent allocation, so the fixed-length loop ``integrate(field, x, ...)`` — every step,
every stage of heun / rk4, or the IER sampler — can be recorded once per
``(backend, batch, classes, steps, solver)`` and replayed for new noise at the cost of one
graph launch. Inside the graph, after the loop, one device-side reduction records whether the
final state is finite (:func:`final_state_check`); the host reads it once after the replay.

The same :class:`LoopProgram` runs uncaptured (``capture=False``, any device), so the logic
the graph records is exactly what the CPU tests execute. Networks must launch their work on
torch's current CUDA stream (the torch and TensorRT engines do). ONNX Runtime's CUDA graphs
synchronise on replay, so the ``ort`` engine replays its own graph per network call instead.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gaf_trt.compose.cache import reset_cache
from gaf_trt.compose.solvers import SOLVERS, T_EPS, check_steps, integrate
from gaf_trt.errors import ConfigError, NonFiniteError


def final_state_check(x: Tensor) -> Tensor:
    """``torch.isfinite(x).all()`` as a 0-d bool tensor on ``x``'s device: no host sync, so
    it can sit inside a captured graph; read it (``bool(flag)``) once afterwards."""
    return torch.isfinite(x).all()


@dataclass(frozen=True)
class LoopSpec:
    """What a loop is fixed to: solver, step count, time range and direction."""

    steps: int
    solver: str = "euler"
    t_eps: float = T_EPS
    reverse: bool = False

    def __post_init__(self) -> None:
        SOLVERS.get(self.solver)
        check_steps(self.steps)
        if self.reverse and SOLVERS.get(self.solver).needs_init_for_reverse:
            raise ConfigError("reverse IER sampling draws its start noise inside the loop; "
                              "a captured loop cannot: run it uncaptured")


class LoopProgram:
    """The loop body as one function of a static input: ``x [B,C,S,S] -> (state, finite)``.

    ``state`` is the final float32 state, ``finite`` a 0-d bool device tensor.
    """

    def __init__(self, field: Any, spec: LoopSpec) -> None:
        self.field = field
        self.spec = spec

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s = self.spec
        # a feature cache starts each loop empty: warm-up, capture and eager runs alike
        reset_cache(getattr(self.field, "network", None))
        with torch.no_grad():
            out = integrate(self.field, x, steps=s.steps, solver=s.solver, t_eps=s.t_eps,
                            reverse=s.reverse)
            return out, final_state_check(out)


class CapturedLoop:
    """``integrate`` over a fixed field, input shape and :class:`LoopSpec`, replayed.

    Lifecycle: construct (warm-up on a side stream, then capture; ``capture=False`` keeps the
    same static buffers but runs the program eagerly on each call) -> ``run(x)`` copies ``x``
    into the static input, replays, and returns ``(state, finite)`` device tensors without a
    host sync -> ``__call__(x)`` does the same, reads the flag once and raises
    :class:`NonFiniteError` (naming the composition) when the state is not finite.
    """

    def __init__(self, field: Any, example: Tensor, *, steps: int, solver: str = "euler",
                 t_eps: float = T_EPS, reverse: bool = False, warmup: int = 2,
                 capture: bool = True) -> None:
        if capture and not example.is_cuda:
            raise ConfigError("CUDA-graph capture needs a CUDA tensor (use capture=False to "
                              "run the same loop uncaptured)")
        if warmup < 1 and capture:
            raise ConfigError(f"warmup must be >= 1 before a capture, got {warmup}")
        self.spec = LoopSpec(steps, solver, float(t_eps), reverse)
        self.program = LoopProgram(field, self.spec)  # keeps the field's device caches alive
        self.captured = capture
        self.static_in = example.detach().float().clone()
        self.graph: torch.cuda.CUDAGraph | None = None
        if capture:
            self._capture(warmup)

    def _capture(self, warmup: int) -> None:
        side = torch.cuda.Stream(device=self.static_in.device)
        side.wait_stream(torch.cuda.current_stream(self.static_in.device))
        with torch.cuda.stream(side):
            for _ in range(warmup):  # fills the field's caches, cuBLAS workspaces, allocator
                self.program(self.static_in)
        torch.cuda.current_stream(self.static_in.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_out, self.static_finite = self.program(self.static_in)

    def _check_shape(self, x: Tensor) -> None:
        if x.shape != self.static_in.shape:
            raise ConfigError(f"the loop was captured for input {list(self.static_in.shape)}, "
                              f"got {list(x.shape)}")

    def run(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Replay on ``x`` (same shape): ``(state, finite)``, fresh tensors, no host sync."""
        self._check_shape(x)
        self.static_in.copy_(x)
        if self.graph is None:
            out, finite = self.program(self.static_in)
            return out, finite
        self.graph.replay()
        return self.static_out.clone(), self.static_finite.clone()

    def __call__(self, x: Tensor) -> Tensor:
        out, finite = self.run(x)
        if not bool(finite):
            raise NonFiniteError(
                f"{describe_field(self.program.field)}: the state became NaN or infinite "
                f"within {self.spec.steps} {self.spec.solver} steps (captured loop); re-run "
                "uncaptured to locate the step. Reduced precision (fp16 overflow) is the "
                "usual cause")
        return out


def describe_field(field: Any) -> str:
    """``classes [3, 8] (spatial)`` for a composed field, else the field's type."""
    comp = getattr(field, "composition", None)
    if comp is None:
        return type(field).__name__
    return f"classes {list(comp.classes)} ({comp.mode.value})"


@dataclass(frozen=True)
class LoopKey:
    """Identity of a captured loop: backend, network, input shape, composition and spec.

    ``composition`` digests the class ids and coefficient maps, which the graph reads from
    fixed device addresses: two compositions with equal classes but other masks differ.
    """

    backend: str
    network: int  # id() of the network; a cached loop keeps it alive, so ids stay unique
    shape: tuple[int, ...]
    device: str
    composition: str
    spec: LoopSpec

    @classmethod
    def of(cls, backend: str, field: Any, x: Tensor, spec: LoopSpec) -> LoopKey:
        comp = getattr(field, "composition", None)
        h = hashlib.sha256(repr(getattr(comp, "classes", id(field))).encode())
        if comp is not None:
            h.update(comp.coefficients.detach().float().cpu().contiguous().numpy().tobytes())
        network = id(getattr(field, "network", field))
        return cls(backend, network, tuple(x.shape), str(x.device), h.hexdigest()[:16], spec)


class LoopCache:
    """At most ``size`` captured loops, least recently used dropped first (each holds its
    graph's memory pool). ``get`` captures on a miss."""

    def __init__(self, size: int = 4) -> None:
        if size < 1:
            raise ConfigError(f"cache size must be >= 1, got {size}")
        self.size = size
        self._loops: OrderedDict[LoopKey, CapturedLoop] = OrderedDict()

    def get(self, backend: str, field: Any, x: Tensor, spec: LoopSpec) -> CapturedLoop:
        key = LoopKey.of(backend, field, x, spec)
        if key in self._loops:
            self._loops.move_to_end(key)
            return self._loops[key]
        loop = CapturedLoop(field, x, steps=spec.steps, solver=spec.solver, t_eps=spec.t_eps,
                            reverse=spec.reverse, capture=x.is_cuda)
        self._loops[key] = loop
        while len(self._loops) > self.size:
            self._loops.popitem(last=False)
        return loop

    def __len__(self) -> int:
        return len(self._loops)
