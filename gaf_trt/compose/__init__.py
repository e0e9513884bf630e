"""Transport algebra: compositions, masks and solvers."""

from gaf_trt.compose import masks
from gaf_trt.compose.composition import (
    AnchorNetwork,
    ComposedField,
    Composition,
    Mode,
    permutations,
)
from gaf_trt.compose.sampling import sample
from gaf_trt.compose.solvers import SOLVERS, Solver, integrate, time_grid

__all__ = ["masks", "AnchorNetwork", "ComposedField", "Composition", "Mode", "permutations",
           "sample", "SOLVERS", "Solver", "integrate", "time_grid"]
