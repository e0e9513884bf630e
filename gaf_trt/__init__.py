"""gaf-trt: fast inference for Generative Anchored Fields (GAF, arXiv 2511.22693).

Public API (docs/design.md; README)::

    model = gaf_trt.load_model("digits")            # or a published .pt / .safetensors
    m = gaf_trt.masks.build("horizontal_2", 16, 16)  # [N, 1, H, W] softened masks
    x = gaf_trt.sample(model, [3, 8], noise, masks=m, steps=20, solver="euler")
    x = gaf_trt.sample(model, [3], noise, cache="static:2")  # reuse the trunk every 2nd call
    x = gaf_trt.integrate(field, x, steps=20, solver="heun", reverse=True)
"""

from gaf_trt._version import __version__
from gaf_trt.compose import (
    SOLVERS,
    CachedNetwork,
    ComposedField,
    Composition,
    integrate,
    masks,
    sample,
    sample_pure,
)
from gaf_trt.compose.transport import barycentric, cycle, interpolation, translate
from gaf_trt.engine.loader import load_engine
from gaf_trt.errors import CheckpointError, ConfigError, GAFError, NonFiniteError
from gaf_trt.model import GAF, GAFConfig, load_model, save_safetensors
from gaf_trt.precision import Precision

__all__ = [
    "GAF",
    "GAFConfig",
    "load_model",
    "load_engine",
    "save_safetensors",
    "masks",
    "sample",
    "sample_pure",
    "integrate",
    "Precision",
    "cycle",
    "interpolation",
    "barycentric",
    "translate",
    "Composition",
    "ComposedField",
    "CachedNetwork",
    "SOLVERS",
    "GAFError",
    "CheckpointError",
    "ConfigError",
    "NonFiniteError",
    "__version__",
]
