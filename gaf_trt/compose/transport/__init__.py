"""Transport experiments (arXiv 2511.22693, "transport algebra" stress tests).

Pure functions on the velocity contract: each takes an :class:`AnchorNetwork`, class ids and
a start tensor, integrates with :func:`~gaf_trt.compose.solvers.integrate`, and returns a
result dataclass. No file I/O (the ``gaf-trt transport`` job in
:mod:`gaf_trt.pipeline.transport` writes pictures and records).

- :func:`cycle`: noise -> c1 -> noise -> c2 -> ... -> noise -> c1; the reverse legs use the
  class just generated. A lossless flow returns to the first c1 image.
- :func:`interpolation`: ``(1 - a) v_i + a v_j`` for ``n_interp`` alphas between consecutive
  classes, chained back to the first class; each frame is reached by inverting the previous
  frame with its own composition and integrating forward with the next one.
- :func:`barycentric`: a ``g x g`` grid of three-class blends from one noise.
- :func:`translate`: invert an image with the source class, generate with the target class.

Reverse legs (inversion to noise) use an ODE solver. IER's reverse pass refines a noise
estimate from fresh random noise, so it is not an inversion of the forward pass; a forward
``solver`` of that kind is allowed and its reverse legs use ``reverse_solver``
(default :data:`DEFAULT_REVERSE_SOLVER`). Asking for IER as the reverse solver is refused.
"""


from gaf_trt.compose.transport.algebra import (
    BarycentricResult,
    CellwiseField,
    CycleResult,
    InterpolationResult,
    barycentric,
    barycentric_weights,
    blend,
    cycle,
    interpolation,
)
from gaf_trt.compose.transport.legs import (
    BARYCENTRIC_CHUNK,
    DEFAULT_REVERSE_SOLVER,
    MAX_GRID,
    MAX_INTERP,
    LegSettings,
    check_classes,
    check_range,
    check_start,
    mse,
    open_path,
    require_distinct,
    resolve_reverse_solver,
)
from gaf_trt.compose.transport.translation import Snapshot, TranslationResult, translate

__all__ = [
    "BARYCENTRIC_CHUNK", "DEFAULT_REVERSE_SOLVER", "MAX_GRID", "MAX_INTERP",
    "BarycentricResult", "CellwiseField", "CycleResult", "InterpolationResult", "LegSettings",
    "Snapshot", "TranslationResult", "barycentric", "barycentric_weights", "blend",
    "check_classes", "check_range", "check_start", "cycle", "interpolation", "mse", "open_path",
    "require_distinct", "resolve_reverse_solver", "translate",
]
