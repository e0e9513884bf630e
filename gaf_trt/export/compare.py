"""One comparison of runtimes, through Polygraphy's comparator.

The same seeded inputs (a Polygraphy data loader: a list of feed dicts from a graph's
:meth:`~gaf_trt.export.graphs.GraphSpec.example_inputs`) go through every runner
(``export.runners``: PyTorch, ONNX Runtime, OpenVINO, TensorRT); ``Comparator.run`` runs them
and ``Comparator.compare_accuracy`` compares each runtime with the reference (runner 0) with
Polygraphy's ``SnrCompareFunc``: the signal-to-noise ratio of the runtime's output against the
reference's, ``SNR = 10 log10(mean(b²) / mean((a-b)²))``, so the relative error
``rel = ||a - b||_2 / ||b||_2 = 10^(-SNR/20)`` (NaN counts as infinite); a bound ``rel <= r``
is the SNR threshold ``-20 log10(r)`` dB, the pass/fail. The max abs error (recorded, not
bounded) is read from the same run's outputs: Polygraphy's ``SimpleCompareFunc`` gives it too,
but formats every output array for its (silenced) log first, which tripled the cost of a
parity check (50 ms a graph on the fixture model).

Polygraphy is optional (``pip install 'gaf-trt[compare]'``): it is imported in the functions
here, after :func:`require_polygraphy`. Its log goes nowhere (errors come back as results or
one-line :class:`~gaf_trt.errors.GAFError` s).
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gaf_trt.errors import ConfigError, GAFError

#: What to install for Polygraphy (the comparator of ``export`` parity and ``info --compare``).
POLYGRAPHY_MISSING = "polygraphy is not installed (pip install 'gaf-trt[compare]')"


def polygraphy_unavailable() -> str | None:
    """None when Polygraphy imports here, else what to install."""
    try:
        import polygraphy  # noqa: F401
    except ImportError:
        return POLYGRAPHY_MISSING
    return None


def require_polygraphy(what: str) -> None:
    """Raise a one-line :class:`~gaf_trt.errors.ConfigError` naming the extra when Polygraphy
    is missing (``what`` needs it)."""
    why = polygraphy_unavailable()
    if why is not None:
        raise ConfigError(f"{what} needs Polygraphy: {why}")


@dataclass(frozen=True)
class OutputError:
    """One output's worst errors against the reference: max abs, relative L2."""

    name: str
    max_abs: float
    rel: float

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "max_abs": self.max_abs, "rel": self.rel}


@dataclass
class PairResult:
    """One graph on one runtime against the reference runtime: each output's worst errors
    over the inputs, and Polygraphy's verdict against ``bound`` (relative)."""

    graph: str
    reference: str
    runtime: str
    bound: float
    outputs: list[OutputError] = field(default_factory=list)
    passed: bool = True

    @property
    def worst_rel(self) -> float:
        return max((o.rel for o in self.outputs), default=0.0)

    @property
    def worst_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    def to_dict(self) -> dict[str, object]:
        return {"graph": self.graph, "reference": self.reference, "runtime": self.runtime,
                "bound": self.bound, "ok": self.passed,
                "outputs": [o.to_dict() for o in self.outputs]}

    def line(self) -> str:
        """``trunk  openvino vs torch  max abs 2.4e-07  rel 1.3e-07  (bound 0.0001)  pass``"""
        verdict = "pass" if self.passed else "FAIL"
        return (f"{self.graph:<14}{self.runtime:>9} vs {self.reference:<9}max abs "
                f"{self.worst_abs:<9.2g} rel {self.worst_rel:<9.2g} (bound {self.bound:g})  "
                f"{verdict}")


def seeded_feeds(spec: Any, sizes_list: Sequence[dict[str, int]], num_classes: int,
                 seed: int = 0) -> list[OrderedDict]:
    """The data loader: one feed dict ``{input name: numpy array}`` per entry of
    ``sizes_list`` (the graph's symbolic axes, e.g. ``{"M": 5}``), drawn by
    ``spec.example_inputs`` from one seeded generator (``x [M,C,S,S]`` normal, ``t [M]`` in
    ``(0, 1)``, class ids in range, ``coef [N,1,S,S]`` positive)."""
    gen = torch.Generator().manual_seed(seed)
    feeds = []
    for sizes in sizes_list:
        args = spec.example_inputs(sizes, num_classes, gen)
        feeds.append(OrderedDict((n, a.numpy()) for n, a in zip(spec.input_names, args,
                                                                strict=True)))
    return feeds


@contextlib.contextmanager
def quiet_polygraphy() -> Iterator[None]:
    """Polygraphy's logger silent (it prints to stdout); its fatal errors (a
    ``PolygraphyException``) become one-line :class:`~gaf_trt.errors.GAFError` s."""
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    with G_LOGGER.verbosity(G_LOGGER.CRITICAL + 1):
        try:
            yield
        except PolygraphyException as err:
            text = " ".join(str(err).split())[:300]
            raise GAFError(f"Polygraphy's comparator failed: {text}") from None


def snr_threshold(bound: float) -> float:
    """The SNR (dB) a relative-error ``bound`` asks for: ``-20 log10(bound)``."""
    return -20.0 * math.log10(bound) if bound > 0 else math.inf


def rel_from_snr(snr: float) -> float:
    """``||a - b|| / ||b||`` from Polygraphy's SNR (dB); NaN -> infinite."""
    snr = float(snr)
    if math.isnan(snr):
        return math.inf
    return 0.0 if snr == math.inf else 10.0 ** (-snr / 20.0)


def compare_runners(graph: str, runners: Sequence[Any], feeds: Sequence[dict[str, np.ndarray]],
                    bound: float, reference: int = 0) -> list[PairResult]:
    """Run every runner (Polygraphy ``BaseRunner`` s with different names) on ``feeds`` (the
    data loader: ``[{input name: array}]``, e.g. ``x [M,C,S,S]``) and compare each with
    ``runners[reference]``: one :class:`PairResult` per other runner, each output's worst
    max abs and relative error over the feeds."""
    from polygraphy.comparator import Comparator
    from polygraphy.comparator.compare import SnrCompareFunc

    others = [i for i in range(len(runners)) if i != reference]
    with quiet_polygraphy():
        results = Comparator.run(list(runners), data_loader=list(feeds))
        (snr,) = Comparator.compare_accuracy(
            results, comparisons=[(reference, i) for i in others],
            compare_func=SnrCompareFunc(snr_threshold=snr_threshold(bound)))
    ref = runners[reference].name
    return [_pair(graph, ref, runners[i].name, bound, results, snr) for i in others]


def _max_abs(a: Any, b: Any) -> float:
    """``max |a - b|`` of two outputs (float64; NaN -> infinite)."""
    d = np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
    m = float(d.max()) if d.size else 0.0
    return m if math.isfinite(m) else math.inf


def _pair(graph: str, ref: str, name: str, bound: float, results: Any, snr: Any) -> PairResult:
    """The worst errors per output over the iterations of one runner pair: the relative
    error from Polygraphy's SNR, the max abs error from the two runners' outputs."""
    worst: dict[str, OutputError] = {}
    passed = True
    for k, it_snr in enumerate(snr[(ref, name)]):
        want, got = results[ref][k], results[name][k]
        for out, res in it_snr.items():
            rel = rel_from_snr(res.snr) if hasattr(res, "snr") else math.inf
            max_abs = _max_abs(got[out], want[out]) if hasattr(res, "snr") else math.inf
            if not (math.isfinite(rel) and math.isfinite(max_abs)):
                rel, max_abs = math.inf, math.inf
            passed = passed and bool(res) and math.isfinite(rel)
            old = worst.get(out)
            worst[out] = OutputError(out, max(max_abs, old.max_abs if old else 0.0),
                                     max(rel, old.rel if old else 0.0))
    return PairResult(graph, ref, name, bound, list(worst.values()), passed)
