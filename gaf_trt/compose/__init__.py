"""Transport algebra: compositions, masks, solvers and the one sampling entry."""

from gaf_trt.compose import masks, transport
from gaf_trt.compose.cache import CACHE_POLICIES, CachedNetwork, CachePolicy, parse_cache
from gaf_trt.compose.capture import CapturedLoop, final_state_check
from gaf_trt.compose.composition import (
    ClassBatchField,
    ComposedField,
    Composition,
    Mode,
    check_class_ids,
    permutations,
    resolve_classes,
)
from gaf_trt.compose.sampling import check_finite, sample, sample_pure
from gaf_trt.compose.solvers import SOLVERS, Solver, integrate, time_grid
from gaf_trt.compose.spec import BuiltComposition, CompositionSpec, Source

__all__ = ["masks", "transport", "CACHE_POLICIES", "CachedNetwork", "CachePolicy", "parse_cache", "CapturedLoop", "final_state_check", "ClassBatchField",
           "ComposedField", "Composition", "Mode", "check_class_ids", "permutations",
           "resolve_classes", "check_finite", "sample", "sample_pure", "SOLVERS", "Solver",
           "integrate", "time_grid", "BuiltComposition", "CompositionSpec", "Source"]
