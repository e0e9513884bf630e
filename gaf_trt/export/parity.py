"""The parity check built into export: every graph through ONNX Runtime (CPU) against
PyTorch FP32 on the same seeded inputs, through Polygraphy's comparator
(:mod:`gaf_trt.export.compare`: Polygraphy's ``OnnxrtRunner`` against our
:class:`~gaf_trt.export.runners.TorchRunner`), with per-output max abs / relative error.

Relative error is ``||a - b||_2 / ||b||_2`` (NaN counts as infinite). FP32 graphs must agree
to 1e-4; the reduced-precision bounds are the measured ones in benchmarks/EXPORT.md with
headroom. BF16 graphs cannot run on ONNX Runtime's CPU provider (no BF16 kernels for Conv /
MatMul); their check is recorded as not run, with the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from gaf_trt.errors import GAFError
from gaf_trt.export.compare import OutputError
from gaf_trt.export.graphs import GraphSpec
from gaf_trt.precision import Precision

log = logging.getLogger(__name__)

#: Relative-error bound of each precision against PyTorch FP32.
PARITY_BOUNDS = {Precision.FP32: 1e-4, Precision.FP16: 2e-2, Precision.BF16: 6e-2}


class ParityError(GAFError):
    """An exported graph does not reproduce PyTorch within the bound."""


@dataclass
class ParityResult:
    """Worst errors of one graph over the checked sizes (``ran`` False: not run, ``reason``)."""

    graph: str
    precision: str
    bound: float
    sizes: list[dict[str, int]] = field(default_factory=list)
    outputs: list[OutputError] = field(default_factory=list)
    ran: bool = True
    reason: str = ""
    passed: bool = True  # Polygraphy's verdict (an output it could not compare fails)

    @property
    def worst_rel(self) -> float:
        return max((o.rel for o in self.outputs), default=0.0)

    @property
    def ok(self) -> bool:
        return not self.ran or (self.passed and self.worst_rel <= self.bound)

    def to_dict(self) -> dict[str, object]:
        return {"graph": self.graph, "precision": self.precision, "bound": self.bound,
                "ran": self.ran, "reason": self.reason, "sizes": self.sizes,
                "outputs": [o.to_dict() for o in self.outputs], "ok": self.ok}

    def describe(self) -> str:
        errs = ", ".join(f"{o.name}: max abs {o.max_abs:.3g}, rel {o.rel:.3g}"
                         for o in self.outputs)
        return f"{self.graph} ({self.precision}, bound {self.bound:g} rel): {errs}"


def cpu_session(path: Path, threads: int | None = None):
    """An ONNX Runtime CPU session (the parity reference runtime)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def check_graph(spec: GraphSpec, path: Path, precision: Precision, num_classes: int,
                sizes_list: list[dict[str, int]], *, seed: int = 0) -> ParityResult:
    """Run ``path`` on ONNX Runtime (Polygraphy's ``OnnxrtRunner``) and ``spec.module`` (FP32,
    :class:`~gaf_trt.export.runners.TorchRunner`) on the same seeded inputs, one per entry of
    ``sizes_list``, compared by Polygraphy's comparator against the precision's bound."""
    from gaf_trt.export.compare import compare_runners, require_polygraphy, seeded_feeds

    require_polygraphy("the export parity check (or give --no-parity)")
    bound = PARITY_BOUNDS[precision]
    result = ParityResult(spec.name, precision.value, bound)
    try:
        session = cpu_session(path)
    except Exception as err:  # noqa: BLE001 - ORT raises its own hierarchy
        if precision is Precision.BF16:
            result.ran, result.reason = False, ("onnxruntime (CPU) cannot run BF16 graphs: "
                                                f"{str(err).splitlines()[0][:160]}")
            log.warning("parity of %s not run: %s", spec.name, result.reason)
            return result
        raise
    from gaf_trt.export.runners import TorchRunner, ort_runner

    runners = [TorchRunner(spec.module, spec.inputs, spec.output_names, name="torch"),
               ort_runner(session, name="ort")]
    (pair,) = compare_runners(spec.name, runners,
                              seeded_feeds(spec, sizes_list, num_classes, seed), bound)
    result.sizes = [dict(s) for s in sizes_list]
    result.outputs, result.passed = pair.outputs, pair.passed
    return result


def parity_sizes(spec: GraphSpec) -> list[dict[str, int]]:
    """The smallest shape and one larger shape within the graph's bounds."""
    small = {sym: lo for sym, (lo, _) in spec.dynamic.items()}
    big_base = {"M": 5, "B": 3, "N": 3}
    big = {sym: max(lo, min(hi, big_base.get(sym, 2))) for sym, (lo, hi) in spec.dynamic.items()}
    return [small, big] if big != small else [small]


def require(results: list[ParityResult]) -> None:
    """Raise a :class:`ParityError` listing every graph over its bound."""
    bad = [r for r in results if not r.ok]
    if bad:
        raise ParityError("export parity check failed against PyTorch FP32: "
                          + "; ".join(r.describe() for r in bad))
