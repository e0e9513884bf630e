"""One generation request: its arguments, their validation, and its run through the sampling
pipeline (the same code path as ``gaf-trt sample``, on whatever network it is given).

A request is a composition (classes -- ids or names -- with weights, alpha, a mask preset,
AFHQ regions or a mask image; parsed by :class:`~gaf_trt.compose.spec.CompositionSpec`, as
``gaf-trt sample`` and ``gaf-trt generate`` parse theirs), a solver, a step count, a seed and
a batch. :func:`plan_request` validates it once against the model and the server's limits and
raises :class:`~gaf_trt.errors.ConfigError` naming the bad value;
:func:`run_request` draws the noise and integrates exactly as ``gaf-trt sample`` does
(``gaf_trt.pipeline.generation.generate``), so the result is that of ``gaf-trt sample`` with the
same arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from gaf_trt.checks import int_in
from gaf_trt.compose import masks as mask_lib
from gaf_trt.compose.cache import cache_forms, check_cache_solver
from gaf_trt.compose.composition import Composition
from gaf_trt.compose.spec import REQUEST, CompositionSpec
from gaf_trt.compose.solvers import SOLVERS, check_steps, check_t_eps
from gaf_trt.engine.base import AnchorNetwork
from gaf_trt.errors import ConfigError
from gaf_trt.io import images as img
from gaf_trt.model.config import GAFConfig
from gaf_trt.pipeline.generation import MAX_SEED, SamplePlan, generate
from gaf_trt.pipeline.sample import SampleConfig

OUTPUTS = ("images", "latents")


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for: steps, batch, classes; rows = classes x batch must fit
    the scheduler's row budget."""

    max_steps: int = 1000
    max_batch: int = 16
    max_classes: int = 8
    max_rows: int = 256
    max_mask_pixels: int = 4096 * 4096  # a mask image is resized to the latent grid anyway


@dataclass
class ServeRequest:
    """Arguments of one request (those of ``gaf-trt sample`` that shape a generation)."""

    classes: list[str | int]
    weights: list[float] | None = None
    alpha: float | None = None
    mask_type: str | None = None
    regions: list[str] | None = None
    sigma: float = mask_lib.DEFAULT_SIGMA
    steps: int = 20
    solver: str = "euler"
    seed: int = 0
    batch: int = 1
    t_eps: float | None = None
    output: str = "images"
    cache: str | None = None  # feature-cache policy (None: the server's --cache)
    mask_image: np.ndarray | None = None  # uint8 [H, W]: one region per gray level (custom)
    extra: dict[str, object] = field(default_factory=dict)  # unused keys, refused

    def sample_config(self) -> SampleConfig:
        """The ``gaf-trt sample`` arguments this request corresponds to."""
        mask_type = self.mask_type
        if mask_type is None and self.mask_image is not None:
            mask_type = "custom"
        return SampleConfig(classes=[str(c) for c in self.classes], weights=self.weights,
                            alpha=self.alpha, mask_type=mask_type, regions=self.regions,
                            sigma=self.sigma, steps=self.steps, solver=self.solver,
                            seed=self.seed, batch=self.batch, t_eps=self.t_eps,
                            cache=self.cache or "off",
                            skip=len(self.classes) > 1 or self._composing())

    def _composing(self) -> bool:
        return any(v is not None for v in (self.weights, self.alpha, self.mask_type,
                                           self.mask_image)) or bool(self.regions)




@dataclass(frozen=True)
class RequestPlan:
    """A validated request: its ``gaf-trt sample`` config and the composition it runs."""

    request: ServeRequest
    sample: SampleConfig
    classes: list[int]
    composition: Composition | None
    masks: Tensor | None

    @property
    def rows(self) -> int:
        """Rows of each of its network evaluations (classes x batch)."""
        n = self.composition.num_classes if self.composition is not None else 1
        return n * self.request.batch


SCALAR_FIELDS = ("steps", "seed", "batch", "alpha", "sigma", "t_eps")


def python_scalars(req: ServeRequest) -> ServeRequest:
    """``req`` with numpy scalars (``np.int32(8)``, ``np.float32(1.0)``) of its scalar fields
    as Python numbers, so in-process callers and decoded requests validate alike."""
    changes = {f: getattr(req, f).item() for f in SCALAR_FIELDS
               if isinstance(getattr(req, f), np.generic)}
    return replace(req, **changes) if changes else req


def request_spec(req: ServeRequest) -> CompositionSpec:
    """The composition of a request, validated by the one composition parser (a mask image
    comes as a uint8 array; a request never names a file)."""
    return CompositionSpec.validate(
        {"classes": req.classes, "weights": req.weights, "alpha": req.alpha,
         "mask_type": req.mask_type, "mask_image": req.mask_image, "regions": req.regions,
         "sigma": req.sigma}, source=REQUEST)


def plan_request(req: ServeRequest, config: GAFConfig, limits: ServeLimits,
                 decodes: bool = False, cache: str = "off") -> RequestPlan:
    """Validate every argument of ``req`` against the model and ``limits`` (``decodes``: a
    latent model's server has its decoder, so it can answer with images; ``cache``: the
    server's feature-cache policy, for a request that names none)."""
    req = python_scalars(req)
    if req.extra:
        raise ConfigError(f"unknown request field(s) {sorted(req.extra)}; valid: classes, "
                          "weights, alpha, mask_type, mask_image, regions, sigma, steps, "
                          "solver, seed, batch, t_eps, output, cache")
    req = request_cache(req, cache)
    spec = request_spec(req)
    int_in("classes (count)", len(spec.classes), 1, limits.max_classes)
    SOLVERS.get(req.solver)
    check_steps(req.steps, limits.max_steps)
    int_in("batch", req.batch, 1, limits.max_batch)
    int_in("seed", req.seed, 0, MAX_SEED)
    if req.output not in OUTPUTS:
        raise ConfigError(f"unknown output {req.output!r}; valid: {', '.join(OUTPUTS)}")
    if req.output == "images" and config.mode == "latent" and not decodes:
        raise ConfigError("this is a latent model served without its decoder: ask for output "
                          "'latents' (or serve it with --vae DIR)")
    if req.t_eps is not None:
        check_t_eps(req.t_eps)
    image = req.mask_image
    if image is not None and image.size > limits.max_mask_pixels:
        raise ConfigError(f"mask_image is {image.shape[1]}x{image.shape[0]} = {image.size:,} "
                          f"pixels; the server takes at most {limits.max_mask_pixels:,} (it is "
                          "resized to the model's grid anyway)")
    built = spec.build(config)  # composition None: one class, run pure
    spec.require_one_generation()
    plan = RequestPlan(req, req.sample_config(), built.classes, built.composition, built.masks)
    if plan.rows > limits.max_rows:
        raise ConfigError(f"{len(built.classes)} class(es) x batch {req.batch} = {plan.rows} "
                          f"rows per evaluation; the server's row budget is {limits.max_rows}")
    return plan


def request_cache(req: ServeRequest, default: str) -> ServeRequest:
    """``req`` with its feature-cache policy validated (with its solver) and spelled as
    records spell it; the server's ``default`` when it names none."""
    if req.cache is not None and not isinstance(req.cache, str):
        raise ConfigError(f"cache must be a policy name, got {req.cache!r}; valid: "
                          f"{', '.join(cache_forms())}")
    SOLVERS.get(req.solver)
    policy = check_cache_solver(default if req.cache is None else req.cache, req.solver)
    return replace(req, cache=policy.text)


def run_request(plan: RequestPlan, network: AnchorNetwork) -> Tensor:
    """Generate ``plan`` on ``network`` through the ``gaf-trt sample`` pipeline; returns the
    final state ``[B, C, S, S]`` (CPU float32): the composition's, or the pure class's."""
    sample_plan = SamplePlan(network, network.config, plan.classes, plan.composition,
                             plan.masks, None, "cpu")
    parts: list[Tensor] = []

    def keep(_start: int, pure: dict[int, Tensor], mixes: dict[tuple[int, ...], Tensor]) -> None:
        # every chunk (the pipeline's summary keeps only the first few samples)
        parts.append(mixes[plan.composition.classes] if plan.composition is not None
                     else pure[plan.classes[0]])

    generate(plan.sample, sample_plan, sink=keep)
    return torch.cat(parts).float().cpu()


def to_images(state: Tensor) -> np.ndarray:
    """State ``[B, C, S, S]`` in ``[-1, 1]`` -> uint8 ``[B, S, S, C]``: the rounding of the
    PNGs ``gaf-trt sample`` writes, before their upscaling
    (:func:`gaf_trt.io.images.to_uint8_hwc` with the channels as they are)."""
    return img.to_uint8_hwc(state, rgb=False)


def request_from_mapping(fields: dict[str, object]) -> ServeRequest:
    """A :class:`ServeRequest` from decoded request fields; unknown keys are kept in
    ``extra`` (and refused by :func:`plan_request`)."""
    known = {f for f in ServeRequest.__dataclass_fields__ if f != "extra"}
    args = {k: v for k, v in fields.items() if k in known}
    extra = {k: v for k, v in fields.items() if k not in known}
    if "classes" not in args:
        raise ConfigError("a request needs 'classes'")
    return ServeRequest(**args, extra=extra)  # type: ignore[arg-type]

