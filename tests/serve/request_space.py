"""The space of requests ``serve`` admits, as hypothesis strategies, and what ``gaf_trt.sample``
gives for each: the reference of the served-equals-sampled property tests (in-process in
``test_served_equals_sampled.py``, through a real server in ``test_triton_server.py``).

Every drawn request is valid by construction (one composition: classes by id or name, with
weights, an alpha, a mask preset, AFHQ regions or a custom mask image; every solver; steps,
batch, seed and t_eps within the limits). Real numbers are drawn on a grid of 1/64 so that a
request survives the wire's FP32 tensors unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import strategies as st

import gaf_trt
from gaf_trt.compose import masks as mask_lib
from gaf_trt.compose.solvers import SOLVERS
from gaf_trt.model.config import GAFConfig
from gaf_trt.pipeline.generation import MAX_SEED
from gaf_trt.serve import MinRowsNetwork, ServeLimits, ServeRequest

#: Presets whose region count is fixed (custom and afhq are drawn apart).
FIXED_PRESETS = [n for n, _ in mask_lib.list_masks() if n not in ("custom", "afhq")]
#: Steps drawn (each solver's cost grows with them; the numerics do not change in kind).
MAX_DRAWN_STEPS = 4


def grid_float(lo: float, hi: float) -> st.SearchStrategy[float]:
    """A multiple of 1/64 in ``[lo, hi]``: exact in float32, so it crosses the wire unchanged."""
    return st.integers(int(np.ceil(lo * 64)), int(np.floor(hi * 64))).map(lambda k: k / 64)


@st.composite
def _classes(draw, n: int, config: GAFConfig) -> list[int | str]:
    """``n`` distinct classes, each by id or (when the model has names) by name."""
    ids = draw(st.lists(st.integers(0, config.num_classes - 1), min_size=n, max_size=n,
                        unique=True))
    names = config.class_names
    return [names[i] if names and draw(st.booleans()) else i for i in ids]


@st.composite
def _mask_image(draw, max_classes: int, size: int) -> np.ndarray:
    """A uint8 ``[H, W]`` image of 2..max_classes gray levels in horizontal bands, each at
    least one latent row tall (so every level survives the nearest resize to ``size``)."""
    levels = draw(st.lists(st.integers(0, 255), min_size=2, max_size=max_classes, unique=True))
    rows_per_band = draw(st.integers(1, 3)) * -(-size // len(levels))
    width = draw(st.integers(1, 3 * size))
    column = np.repeat(np.asarray(levels, np.uint8), rows_per_band)
    return np.ascontiguousarray(np.broadcast_to(column[:, None], (column.size, width)))


@st.composite
def composition(draw, config: GAFConfig, limits: ServeLimits, regions: bool = True) -> dict:
    """The composition fields of one request (``classes``, ``weights``, ``alpha``,
    ``mask_type``, ``regions``, ``mask_image``, ``sigma``)."""
    top = min(limits.max_classes, config.num_classes)
    modes = ["pure", "weights", "alpha", "preset", "image"] + (["regions"] if regions else [])
    mode = draw(st.sampled_from(modes))
    out: dict = {}
    if mode == "preset":
        presets = [p for p in FIXED_PRESETS if mask_lib.region_count(p) <= top]
        out["mask_type"] = draw(st.sampled_from(presets))
        n = mask_lib.region_count(out["mask_type"])
    elif mode == "regions":
        out["regions"] = draw(st.lists(st.sampled_from(mask_lib.AFHQ_REGIONS), min_size=1,
                                       max_size=len(mask_lib.AFHQ_REGIONS), unique=True))
        n = mask_lib.region_count("afhq", regions=out["regions"])
    elif mode == "image":
        out["mask_image"] = draw(_mask_image(top, config.input_size))
        n = mask_lib.region_count("custom", image=out["mask_image"],
                                  height=config.input_size, width=config.input_size)
    else:
        n = {"pure": 1, "alpha": 2}.get(mode) or draw(st.integers(2, top))
    out["classes"] = draw(_classes(n, config))
    if mode == "alpha":
        out["alpha"] = draw(grid_float(-2.0, 3.0))
    if mode == "weights" or (mode in ("preset", "regions", "image") and draw(st.booleans())):
        out["weights"] = draw(st.lists(grid_float(0.25, 4.0), min_size=n, max_size=n))
    if mode in ("preset", "regions", "image"):
        out["sigma"] = draw(grid_float(0.0, 3.0))
    return out


@st.composite
def serve_request(draw, config: GAFConfig, limits: ServeLimits, regions: bool = True
                  ) -> ServeRequest:
    """One request serve admits: a composition, a solver, steps, a batch within the row
    budget, a seed and perhaps a t_eps."""
    comp = draw(composition(config, limits, regions))
    n = len(comp["classes"])
    batch = draw(st.integers(1, min(limits.max_batch, limits.max_rows // n)))
    t_eps = draw(st.one_of(st.none(), grid_float(0.0, 0.25)))
    return ServeRequest(**comp, solver=draw(st.sampled_from(SOLVERS.names())),
                        steps=draw(st.integers(1, min(MAX_DRAWN_STEPS, limits.max_steps))),
                        seed=draw(st.integers(0, MAX_SEED)), batch=batch, t_eps=t_eps)


@dataclass
class Reference:
    """What ``gaf_trt.sample`` gives for a request: on the network as it is, and on the
    network padded to the scheduler's minimum rows (the served numerics)."""

    plain: torch.Tensor  # [B, C, S, S]
    min_rows: torch.Tensor  # [B, C, S, S]
    rows: int  # network rows per evaluation: classes x batch


def sample_args(req: ServeRequest, config: GAFConfig) -> tuple[list[int], dict]:
    """The class ids and keyword arguments of ``gaf_trt.sample`` for ``req``, built with the
    public API (``gaf_trt.masks.build``), not with serve's parser."""
    names = list(config.class_names or ())
    classes = [c if isinstance(c, int) else names.index(c) for c in req.classes]
    masks = None
    mask_type = req.mask_type or ("custom" if req.mask_image is not None
                                  else "afhq" if req.regions else None)
    if mask_type is not None:
        s = config.input_size
        masks = gaf_trt.masks.build(mask_type, s, s, sigma=req.sigma, image=req.mask_image,
                                    regions=req.regions)
    t_eps = config.t_eps if req.t_eps is None else req.t_eps
    return classes, {"weights": req.weights, "alpha": req.alpha, "masks": masks,
                     "steps": req.steps, "solver": req.solver, "t_eps": t_eps,
                     "cache": req.cache}


def reference(req: ServeRequest, network) -> Reference:
    """``gaf_trt.sample`` with ``req``'s arguments and its noise (``randn`` of its seed)."""
    config = network.config
    classes, kwargs = sample_args(req, config)
    c, s = config.in_channels, config.input_size
    noise = torch.randn(req.batch, c, s, s, generator=torch.Generator().manual_seed(req.seed))
    with torch.no_grad():
        plain = gaf_trt.sample(network, classes, noise, **kwargs)
        padded = gaf_trt.sample(MinRowsNetwork(network), classes, noise, **kwargs)
    return Reference(plain, padded, len(classes) * req.batch)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``|a - b| / |b|`` in float64 (Frobenius norms); NaN anywhere gives NaN."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())
