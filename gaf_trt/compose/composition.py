"""Transport algebra (docs/design.md §1): every composition is ``v = Σ c_i ⊙ v_i``.

A :class:`Composition` reduces pure, alpha, weighted, spatial and spatial+weighted modes to
coefficient maps ``c [N, 1, H|1, W|1]``. A :class:`ComposedField` binds one to an anchor
network and satisfies the velocity contract ``v(x, t)``; all ``N`` class passes of one
evaluation go through the network as one batch of ``N·B``.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gaf_trt.compose.placement import call_fused, call_network, network_device
from gaf_trt.engine.base import AnchorNetwork, FusedComposedStep
from gaf_trt.checks import int_text
from gaf_trt.errors import ConfigError
from gaf_trt.model.config import GAFConfig
from gaf_trt.model.gaf import broadcast_time


class Mode(str, enum.Enum):
    PURE = "pure"
    ALPHA = "alpha"
    WEIGHTED = "weighted"
    SPATIAL = "spatial"
    SPATIAL_WEIGHTED = "spatial+weighted"


@dataclass(frozen=True)
class Composition:
    """Classes and their coefficient maps, ``coefficients [N, 1, H|1, W|1]`` (float32)."""

    classes: tuple[int, ...]
    coefficients: Tensor
    mode: Mode

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_spatial(self) -> bool:
        return self.mode in (Mode.SPATIAL, Mode.SPATIAL_WEIGHTED)

    @classmethod
    def pure(cls, c: int) -> Composition:
        return cls((int(c),), torch.ones(1, 1, 1, 1), Mode.PURE)

    @classmethod
    def build(cls, classes: Sequence[int], *, weights: Sequence[float] | None = None,
              alpha: float | None = None, masks: Tensor | None = None) -> Composition:
        """Apply the weighting rules of docs/design.md §1 and validate the inputs.

        - one class and nothing else: pure; ``alpha`` (2 classes): ``a v1 + (1-a) v2``;
        - ``weights``: one per class, normalised to sum 1;
        - ``masks [N, 1, H, W]``: spatial; with ``weights`` too, ``w_i m_i`` (not normalised).
        """
        classes = tuple(int(c) for c in classes)
        n = len(classes)
        if n == 0:
            raise ConfigError("at least one class is needed")
        if alpha is not None and (weights is not None or masks is not None):
            raise ConfigError("--alpha cannot be combined with --weight or a mask")
        if alpha is not None:
            if n != 2:
                raise ConfigError(f"--alpha blends exactly 2 classes, got {n}: {list(classes)}")
            a = check_coefficient(alpha, "alpha")
            return cls(classes, torch.tensor([a, 1.0 - a]).view(2, 1, 1, 1), Mode.ALPHA)
        w = None
        if weights is not None:
            w = [check_coefficient(x, "weight") for x in weights]
            if len(w) != n:
                raise ConfigError(f"{len(w)} weight(s) {w} for {n} class(es) {list(classes)}: "
                                  "give one weight per class")
        if masks is not None:
            if masks.dim() != 4 or masks.shape[1] != 1:
                raise ConfigError(f"masks must be [N, 1, H, W], got {list(masks.shape)}")
            if masks.shape[0] != n:
                raise ConfigError(f"the mask has {masks.shape[0]} region(s) but {n} class(es) "
                                  f"{list(classes)} were given: give one class per region")
            if not torch.isfinite(masks).all():
                raise ConfigError("masks contain NaN or infinite values")
            coeffs = masks.float().clone()
            if w is not None and not any(w):
                raise ConfigError(f"weights {w} are all 0: every region would stay noise")
            if w is None:
                return cls(classes, coeffs, Mode.SPATIAL)
            return cls(classes, coeffs * torch.tensor(w).view(n, 1, 1, 1), Mode.SPATIAL_WEIGHTED)
        if w is not None:
            total = math.fsum(w)
            if total == 0:
                raise ConfigError(f"weights {w} sum to 0 and cannot be normalised")
            return cls(classes, torch.tensor([x / total for x in w]).view(n, 1, 1, 1),
                       Mode.WEIGHTED)
        if n == 1:
            return cls.pure(classes[0])
        raise ConfigError(f"{n} classes need a composition: give --weight, --alpha or a mask")

    def permuted(self, order: Sequence[int]) -> Composition:
        """The same coefficient maps with the classes reassigned: class ``order[i]`` of this
        composition takes coefficient map ``i``."""
        return Composition(tuple(self.classes[i] for i in order), self.coefficients, self.mode)

    def validate_for(self, config: GAFConfig) -> None:
        """Check class ids and the coefficient map size against a model."""
        check_class_ids(self.classes, config)
        h, w = self.coefficients.shape[-2:]
        s = config.input_size
        if (h, w) != (1, 1) and (h, w) != (s, s):
            raise ConfigError(f"mask size {h}x{w} does not match the model's {s}x{s} grid")


def check_class_ids(classes: Sequence[int], config: GAFConfig) -> None:
    """The one class-range check: every id in ``0 .. num_classes - 1``."""
    bad = [int(c) for c in classes if not 0 <= int(c) < config.num_classes]
    if bad:
        raise ConfigError(f"class id(s) {bad} out of range: the model has "
                          f"{config.num_classes} classes (0..{config.num_classes - 1})")


def resolve_classes(tokens: Sequence[str | int], config: GAFConfig) -> list[int]:
    """Class ids from indices or class names (case-insensitive), checked against the model."""
    names = {n.lower(): i for i, n in enumerate(config.class_names or ())}
    out = []
    for tok in tokens:
        s = str(tok).strip()
        as_int = int_text("class id", s)
        if as_int is not None:
            out.append(as_int)
        elif s.lower() in names:
            out.append(names[s.lower()])
        else:
            known = ", ".join(list(config.class_names or ())[:12]) or "none (this model has no names)"
            shown = s if len(s) <= 60 else f"{s[:60]}..."
            raise ConfigError(f"unknown class name {shown!r}; known names: {known}")
    check_class_ids(out, config)
    return out


def permutations(n: int) -> list[tuple[int, ...]]:
    """All orderings of ``range(n)``, identity first."""
    return list(itertools.permutations(range(n)))


#: Largest magnitude accepted for an alpha or a weight: beyond it the blend extrapolates so
#: far from the classes' fields that the state overflows (documented in the README).
MAX_COEFFICIENT = 100.0


def check_coefficient(x: float, what: str) -> float:
    """An alpha or a weight as a finite float of magnitude at most :data:`MAX_COEFFICIENT`
    (``what`` names it in the error)."""
    x = float(x)
    if not math.isfinite(x) or abs(x) > MAX_COEFFICIENT:
        raise ConfigError(f"{what} must be a finite number in [-{MAX_COEFFICIENT:g}, "
                          f"{MAX_COEFFICIENT:g}], got {x:g}")
    return x


def blend(coefficients: Tensor, per_class: Tensor) -> Tensor:
    """``Σ c_i ⊙ a_i``: per-class anchors ``per_class [N, B, C, S, S]`` blended with a
    composition's ``coefficients [N, 1, H|1, W|1]`` (on their device) -> ``[B, C, S, S]``."""
    return (coefficients.unsqueeze(1) * per_class).sum(0)


class ComposedField:
    """A composition bound to an anchor network: the velocity contract ``v(x, t)``.

    ``x [B, C, S, S]`` float32 state, ``t`` a 0-d tensor (or ``[B]``). The network sees one
    batch ``[N·B]`` laid out class-major — or, when it offers the whole composed step
    (:class:`~gaf_trt.engine.base.FusedComposedStep`, e.g. a fused ONNX / TensorRT graph), gets
    ``x, t, classes [N], coef [N,1,H|1,W|1]`` as plain tensors. Calls do no host
    synchronisation, so a whole solver loop over this field can be captured in a CUDA graph.
    """

    def __init__(self, network: AnchorNetwork, composition: Composition) -> None:
        composition.validate_for(network.config)
        self.network = network
        self.composition = composition
        self.fused = isinstance(network, FusedComposedStep)
        self.device = network_device(network)  # rows go there, results come back to x's
        self._labels: dict[tuple[int, torch.device], Tensor] = {}
        self._classes: dict[torch.device, Tensor] = {}
        self._coeffs: dict[torch.device, Tensor] = {}

    def _class_ids(self, device: torch.device) -> Tensor:
        if device not in self._classes:
            self._classes[device] = torch.tensor(self.composition.classes, dtype=torch.long,
                                                 device=device)  # [N]
        return self._classes[device]

    def _batch(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        n, b = self.composition.num_classes, x.shape[0]
        key = (b, x.device)
        if key not in self._labels:
            self._labels[key] = self._class_ids(x.device).repeat_interleave(b)  # [N*B]
        t = broadcast_time(t, b, x.device).float()  # [B]
        xn = x.unsqueeze(0).expand(n, *x.shape).reshape(n * b, *x.shape[1:])  # [N*B, C, S, S]
        return xn, t.repeat(n), self._labels[key]

    def _coefficients(self, device: torch.device) -> Tensor:
        if device not in self._coeffs:
            self._coeffs[device] = self.composition.coefficients.to(device)  # [N, 1, H|1, W|1]
        return self._coeffs[device]

    def anchors(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Per-class anchors ``(J, K)``, each ``[N, B, C, S, S]`` float32."""
        n, b = self.composition.num_classes, x.shape[0]
        j, k = call_network(self.network, *self._batch(x, t), device=self.device)
        return (j.float().view(n, b, *x.shape[1:]), k.float().view(n, b, *x.shape[1:]))

    def _blend(self, per_class: Tensor) -> Tensor:
        return blend(self._coefficients(per_class.device), per_class)

    def _fused_args(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (x, broadcast_time(t, x.shape[0], x.device).float(), self._class_ids(x.device),
                self._coefficients(x.device))

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        """Composed velocity ``Σ c_i ⊙ (K_i − J_i)``, ``[B, C, S, S]``."""
        if self.fused:
            return call_fused(self.network.composed_velocity, self.device,
                              *self._fused_args(x, t)).float()
        j, k = self.anchors(x, t)
        return self._blend(k - j)

    velocity = __call__

    def _blended_anchors(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        if self.fused:
            j, k = call_fused(self.network.composed_anchors, self.device, *self._fused_args(x, t))
            return j.float(), k.float()
        j, k = self.anchors(x, t)
        return self._blend(j), self._blend(k)

    def data_anchor(self, x: Tensor, t: Tensor) -> Tensor:
        """Blended data anchor ``Σ c_i ⊙ K_i`` (IER sampler), ``[B, C, S, S]``."""
        if self.fused:
            return self._blended_anchors(x, t)[1]
        return self._blend(self.anchors(x, t)[1])

    def noise_anchor(self, x: Tensor, t: Tensor) -> Tensor:
        """Blended noise anchor ``Σ c_i ⊙ J_i`` (reverse IER sampler), ``[B, C, S, S]``."""
        if self.fused:
            return self._blended_anchors(x, t)[0]
        return self._blend(self.anchors(x, t)[0])


class ClassBatchField:
    """Several pure classes in one network call: row ``r`` of the state follows class
    ``labels[r]``. ``x [M, C, S, S]`` (``M = len(labels)``) -> ``v [M, C, S, S]``; the same
    velocity contract (and anchors for IER) as :class:`ComposedField`."""

    def __init__(self, network: AnchorNetwork, labels: Sequence[int]) -> None:
        check_class_ids(labels, network.config)
        self.network = network
        self.labels = tuple(int(c) for c in labels)
        self.device = network_device(network)
        self._y: dict[torch.device, Tensor] = {}

    def anchors(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        if x.device not in self._y:
            self._y[x.device] = torch.tensor(self.labels, dtype=torch.long, device=x.device)
        j, k = call_network(self.network, x, broadcast_time(t, x.shape[0], x.device).float(),
                            self._y[x.device], device=self.device)
        return j.float(), k.float()

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        j, k = self.anchors(x, t)
        return k - j

    def data_anchor(self, x: Tensor, t: Tensor) -> Tensor:
        return self.anchors(x, t)[1]

    def noise_anchor(self, x: Tensor, t: Tensor) -> Tensor:
        return self.anchors(x, t)[0]
