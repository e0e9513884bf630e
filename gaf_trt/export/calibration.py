"""Calibration inputs for quantised graphs, captured along solver trajectories of the FP32 model.

The activation ranges of a quantised graph must cover what the engine will see: every time
step of the sampler, every class and every way of composing classes. So calibration does not
draw random inputs; it runs the checkpoint's FP32 model through the real solvers
(:func:`gaf_trt.compose.integrate` over a :class:`~gaf_trt.compose.ComposedField`) with a
:class:`CapturingNetwork` around it — an :class:`~gaf_trt.engine.base.AnchorNetwork` that
records every call's inputs and passes it on. No second sampling loop exists here.

A calibration plan (:func:`calibration_plan`) is a seeded list of runs cycling through

- solvers ``euler``, ``heun`` (two evaluations per step) and ``ier`` (the endpoint sampler),
- compositions ``pure`` (one class), ``weighted`` (2-3 classes, random positive weights) and
  ``masked`` (2 classes, soft horizontal masks),

with random classes and noise. Every network call's rows ``(x_r, t_r, y_r)`` are kept; the
graphs' calibration items are cut from these rows at one fixed size (histogram calibrators
need equal shapes across items):

- split graphs (``trunk``): ``x [R,C,S,S]``, ``t [R]``, ``y [R]``;
- fused graphs (``step_velocity`` / ``step_anchors``): rows of one class,
  ``x [R,C,S,S]``, ``t [R]``, ``classes [1]``, ``coef`` ones ``[1,1,S,S]``. Inside the fused
  graph every quantised MatMul sees the same per-row trunk activations as in the composition
  the row came from (the class repeat only stacks rows; the coefficient blend after the heads
  stays FP32), so these items cover the fused graphs' quantised tensors exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import Tensor

from gaf_trt.compose import masks as mask_lib
from gaf_trt.compose.composition import ComposedField, Composition
from gaf_trt.compose.solvers import integrate
from gaf_trt.errors import NonFiniteError
from gaf_trt.model.config import GAFConfig

log = logging.getLogger(__name__)

#: Solvers and composition kinds a plan cycles through.
CALIB_SOLVERS = ("euler", "heun", "ier")
CALIB_KINDS = ("pure", "weighted", "masked")
#: Most classes composed in one calibration run.
MAX_CALIB_CLASSES = 3


@dataclass(frozen=True)
class CalibRun:
    """One trajectory batch of the plan."""

    solver: str
    kind: str
    classes: tuple[int, ...]
    weights: tuple[float, ...] | None
    batch: int


@dataclass
class CalibrationSet:
    """Captured network inputs (CPU): ``x [R,C,S,S]``, ``t [R]``, ``y [R]`` over all calls."""

    x: list[Tensor] = field(default_factory=list)
    t: list[Tensor] = field(default_factory=list)
    y: list[Tensor] = field(default_factory=list)
    runs: list[CalibRun] = field(default_factory=list)
    calls: int = 0

    @property
    def rows(self) -> int:
        return sum(int(v.shape[0]) for v in self.y)

    def _rows(self) -> tuple[Tensor, Tensor, Tensor]:
        return torch.cat(self.x), torch.cat(self.t), torch.cat(self.y)

    def split_items(self, rows: int) -> list[dict[str, Tensor]]:
        """Trunk items of ``rows`` rows each (the last one filled from the start)."""
        x, t, y = self._rows()
        return [{"x": x[i], "t": t[i], "y": y[i]} for i in _chunks(x.shape[0], rows)]

    def fused_items(self, rows: int, size: int) -> list[dict[str, Tensor]]:
        """Fused-graph items: ``rows`` rows of one class each, ``classes [1]``, unit ``coef``."""
        x, t, y = self._rows()
        out = []
        coef = torch.ones(1, 1, size, size)
        for c in torch.unique(y).tolist():
            idx = torch.nonzero(y == c).flatten()
            for i in _chunks(idx.shape[0], rows):
                out.append({"x": x[idx[i]], "t": t[idx[i]],
                            "classes": torch.tensor([c], dtype=torch.long), "coef": coef})
        return out

    def items_for(self, graph_inputs: list[str], rows: int, size: int) -> list[dict[str, Tensor]]:
        """The items of a graph with these input names (split trunk or fused step)."""
        if set(graph_inputs) == {"x", "t", "y"}:
            return self.split_items(rows)
        if set(graph_inputs) == {"x", "t", "classes", "coef"}:
            return self.fused_items(rows, size)
        raise ValueError(f"no calibration items for a graph with inputs {graph_inputs}")


def _chunks(n: int, rows: int) -> list[Tensor]:
    """Index sets of ``rows`` each covering ``0..n-1`` (the last wraps around)."""
    rows = max(1, min(rows, n))
    out = []
    for start in range(0, n, rows):
        out.append(torch.arange(start, start + rows) % n)
    return out


class CapturingNetwork:
    """An AnchorNetwork that records ``(x, t, y)`` of every call before passing it on."""

    def __init__(self, network, store: CalibrationSet) -> None:
        self.network = network
        self.config: GAFConfig = network.config
        self.store = store

    def __call__(self, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """``x [M,C,S,S]``, ``t [M]``, ``y [M]`` -> ``(J, K)`` of the wrapped network."""
        if not (torch.isfinite(x).all() and torch.isfinite(t).all()):
            raise NonFiniteError("calibration trajectory of the FP32 model is not finite: the "
                                 "checkpoint cannot be calibrated")
        self.store.x.append(x.detach().cpu().clone())
        self.store.t.append(t.detach().cpu().reshape(-1).expand(x.shape[0]).clone())
        self.store.y.append(y.detach().cpu().reshape(-1).clone())
        self.store.calls += 1
        return self.network(x, t, y)


def calibration_plan(samples: int, config: GAFConfig, seed: int) -> list[CalibRun]:
    """A seeded plan of ``samples`` trajectories in runs of at most 8, cycling solvers and
    composition kinds so each gets its share."""
    gen = torch.Generator().manual_seed(seed)
    n_cls = config.num_classes
    runs: list[CalibRun] = []
    left, i = samples, 0
    n_runs = max(len(CALIB_SOLVERS), -(-samples // 8))
    while left > 0:
        batch = max(1, min(left, -(-samples // n_runs)))
        solver = CALIB_SOLVERS[i % len(CALIB_SOLVERS)]
        kind = CALIB_KINDS[(i // len(CALIB_SOLVERS) + i) % len(CALIB_KINDS)]
        if n_cls < 2:
            kind = "pure"
        n = 1 if kind == "pure" else (2 if kind == "masked" else
                                      int(torch.randint(2, MAX_CALIB_CLASSES + 1, (1,),
                                                        generator=gen)))
        n = min(n, n_cls)
        classes = tuple(int(c) for c in torch.randperm(n_cls, generator=gen)[:n])
        weights = None
        if kind == "weighted":
            w = torch.rand(n, generator=gen) + 0.2
            weights = tuple(float(v) for v in w / w.sum())
        runs.append(CalibRun(solver, kind, classes, weights, batch))
        left -= batch
        i += 1
    return runs


def _composition(run: CalibRun, size: int) -> Composition:
    if run.kind == "pure":
        return Composition.pure(run.classes[0])
    if run.kind == "masked":
        return Composition.build(list(run.classes), masks=mask_lib.build("horizontal_2", size,
                                                                         size))
    return Composition.build(list(run.classes), weights=list(run.weights or ()))


def capture(model, samples: int, steps: int, seed: int) -> CalibrationSet:
    """Run the plan through the solvers with a :class:`CapturingNetwork` around ``model``
    (an FP32 AnchorNetwork); returns every call's inputs."""
    cfg: GAFConfig = model.config
    store = CalibrationSet(runs=calibration_plan(samples, cfg, seed))
    net = CapturingNetwork(model, store)
    gen = torch.Generator().manual_seed(seed + 1)
    for run in store.runs:
        comp = _composition(run, cfg.input_size)
        noise = torch.randn(run.batch, *cfg.sample_shape, generator=gen)
        with torch.no_grad():
            integrate(ComposedField(net, comp), noise, steps=steps, solver=run.solver,
                      t_eps=cfg.t_eps)
    log.info("calibration: %d runs, %d network calls captured", len(store.runs),
             store.calls)
    return store
