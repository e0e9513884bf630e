"""The exportable graphs of a GAF network, as small ``nn.Module`` wrappers.

Split graphs (heads can be swapped or fine-tuned without rebuilding the trunk):

- ``trunk``:  ``x [M,C,S,S] f32, t [M] f32, y [M] i64 -> features [M,L,D] f32``
- ``j_head``: ``features, x, t -> J [M,C,S,S]`` (``J = (1-t) x + J_res``, arXiv 2511.22693 eq. 3)
- ``k_bank``: ``features, x, t, y -> K [M,C,S,S]`` (every class head in one graph, gathered by y)

Fused composed step (the fast path; the ``N·B`` repeat, trunk, heads and the coefficient sum
``Σ c_i ⊙ v_i`` all inside one graph):

- ``step_velocity``: ``x [B,C,S,S], t [B], classes [N] i64, coef [N,1,S,S] -> v [B,C,S,S]``
- ``step_anchors``:  same inputs ``-> (J_blend, K_blend)`` for the endpoint (IER) sampler.

``vae_decoder``: ``latent [B,4,h,w]`` (scaled) ``-> image [B,3,8h,8w]`` in ``[-1, 1]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gaf_trt.errors import ConfigError
from gaf_trt.model.gaf import GAF, unpatchify
from gaf_trt.registry import Registry


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, symbolic shape (str = dynamic axis) and dtype."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str  # "float32", "int64" (graph I/O is never reduced precision)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class GraphSpec:
    """How to export one graph: its wrapper module, I/O and dynamic axes.

    ``dynamic`` maps an axis symbol (``"M"``, ``"B"``, ``"N"``) to ``(min, max)``.
    """

    name: str
    group: str
    module: nn.Module
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dynamic: dict[str, tuple[int, int]]

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    def example_inputs(self, sizes: dict[str, int], num_classes: int,
                       generator: torch.Generator | None = None) -> tuple[Tensor, ...]:
        """Random inputs with the symbolic axes set to ``sizes`` (``t`` in ``(0, 1)``,
        class ids in range, coefficients positive)."""
        out = []
        for spec in self.inputs:
            shape = [sizes[d] if isinstance(d, str) else d for d in spec.shape]
            if spec.dtype == "int64":
                out.append(torch.randint(0, num_classes, shape, generator=generator))
            elif spec.name == "t":
                out.append(torch.rand(shape, generator=generator) * 0.98 + 0.01)
            elif spec.name == "coef":
                out.append(torch.rand(shape, generator=generator) + 0.1)
            else:
                out.append(torch.randn(shape, generator=generator))
        return tuple(out)


# --------------------------------------------------------------------------- wrappers


class TrunkGraph(nn.Module):
    def __init__(self, model: GAF) -> None:
        super().__init__()
        self.trunk = model.trunk

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        return self.trunk(x, t, y)


class JHeadGraph(nn.Module):
    """``J = (1 - t) x + unpatchify(f W_J^T)``."""

    def __init__(self, model: GAF) -> None:
        super().__init__()
        self.J = model.twins.J
        self.patch, self.channels = model.config.patch_size, model.config.in_channels

    def forward(self, features: Tensor, x: Tensor, t: Tensor) -> Tensor:
        res = unpatchify(self.J(features), self.patch, self.channels).to(x.dtype)
        return (1 - t.to(x.dtype).view(-1, 1, 1, 1)) * x + res


class KBankGraph(nn.Module):
    """``K = t x + unpatchify(f W_K[y] + b_K[y])``."""

    def __init__(self, model: GAF) -> None:
        super().__init__()
        self.K = model.twins.K
        self.patch, self.channels = model.config.patch_size, model.config.in_channels

    def forward(self, features: Tensor, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        res = unpatchify(self.K(features, y), self.patch, self.channels).to(x.dtype)
        return t.to(x.dtype).view(-1, 1, 1, 1) * x + res


class _ComposedBase(nn.Module):
    def __init__(self, model: GAF) -> None:
        super().__init__()
        self.model = model

    def per_class(self, x: Tensor, t: Tensor, classes: Tensor) -> tuple[Tensor, Tensor]:
        """Anchors of every class at ``x``: each ``[N, B, C, S, S]`` (class-major batch)."""
        n, b = classes.shape[0], x.shape[0]
        xn = x.unsqueeze(0).expand(n, *x.shape).reshape(n * b, *x.shape[1:])
        tn = t.unsqueeze(0).expand(n, b).reshape(n * b)
        yn = classes.unsqueeze(1).expand(n, b).reshape(n * b)
        dtype = next(self.model.parameters()).dtype
        j, k = self.model(xn.to(dtype), tn, yn)
        return j.float().view(n, b, *x.shape[1:]), k.float().view(n, b, *x.shape[1:])


class StepVelocityGraph(_ComposedBase):
    """``v = Σ_i coef_i ⊙ (K_i − J_i)`` (arXiv 2511.22693, transport algebra)."""

    def forward(self, x: Tensor, t: Tensor, classes: Tensor, coef: Tensor) -> Tensor:
        j, k = self.per_class(x, t, classes)
        return (coef.unsqueeze(1) * (k - j)).sum(0)


class StepAnchorsGraph(_ComposedBase):
    """``(Σ_i coef_i ⊙ J_i, Σ_i coef_i ⊙ K_i)`` for the endpoint sampler."""

    def forward(self, x: Tensor, t: Tensor, classes: Tensor,
                coef: Tensor) -> tuple[Tensor, Tensor]:
        j, k = self.per_class(x, t, classes)
        c = coef.unsqueeze(1)
        return (c * j).sum(0), (c * k).sum(0)


class VAEDecoderGraph(nn.Module):
    """``image = clamp(vae.decode(latent / scale), -1, 1)`` (diffusers ``AutoencoderKL``)."""

    def __init__(self, vae: nn.Module, scale: float) -> None:
        super().__init__()
        self.vae = vae
        self.scale = float(scale)

    def forward(self, latent: Tensor) -> Tensor:
        dtype = next(self.vae.parameters()).dtype
        img = self.vae.decode(latent.to(dtype) / self.scale).sample
        return img.float().clamp(-1, 1)


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class Limits:
    """Axis bounds: batch ``B`` in ``[1, max_batch]``, classes ``N`` in ``[1, max_classes]``;
    the split graphs see ``M = N·B``."""

    max_batch: int
    max_classes: int


def _f32(name: str, *shape: int | str) -> TensorSpec:
    return TensorSpec(name, tuple(shape), "float32")


def _i64(name: str, *shape: int | str) -> TensorSpec:
    return TensorSpec(name, tuple(shape), "int64")


def _split_specs(model: GAF, lim: Limits) -> list[GraphSpec]:
    c = model.config
    img = (c.in_channels, c.input_size, c.input_size)
    feat = _f32("features", "M", c.num_tokens, c.hidden_size)
    dyn = {"M": (1, lim.max_batch * lim.max_classes)}
    return [
        GraphSpec("trunk", "split", TrunkGraph(model),
                  (_f32("x", "M", *img), _f32("t", "M"), _i64("y", "M")), (feat,), dyn),
        GraphSpec("j_head", "split", JHeadGraph(model),
                  (feat, _f32("x", "M", *img), _f32("t", "M")), (_f32("J", "M", *img),), dyn),
        GraphSpec("k_bank", "split", KBankGraph(model),
                  (feat, _f32("x", "M", *img), _f32("t", "M"), _i64("y", "M")),
                  (_f32("K", "M", *img),), dyn),
    ]


def _fused_specs(model: GAF, lim: Limits) -> list[GraphSpec]:
    c = model.config
    img = (c.in_channels, c.input_size, c.input_size)
    ins = (_f32("x", "B", *img), _f32("t", "B"), _i64("classes", "N"),
           _f32("coef", "N", 1, c.input_size, c.input_size))
    dyn = {"B": (1, lim.max_batch), "N": (1, lim.max_classes)}
    return [
        GraphSpec("step_velocity", "fused", StepVelocityGraph(model), ins,
                  (_f32("v", "B", *img),), dyn),
        GraphSpec("step_anchors", "fused", StepAnchorsGraph(model), ins,
                  (_f32("J_blend", "B", *img), _f32("K_blend", "B", *img)), dyn),
    ]


def vae_spec(vae: nn.Module, scale: float, latent_shape: tuple[int, int, int],
             max_batch: int) -> GraphSpec:
    """The VAE decoder graph for latents of shape ``latent_shape = (C, h, w)``."""
    ch, h, w = latent_shape
    out_ch = int(getattr(getattr(vae, "config", None), "out_channels", 3))
    return GraphSpec("vae_decoder", "vae", VAEDecoderGraph(vae, scale),
                     (_f32("latent", "B", ch, h, w),),
                     (_f32("image", "B", out_ch, 8 * h, 8 * w),), {"B": (1, max_batch)})


#: Graph groups selectable with ``--graphs``: name -> spec builder over a GAF.
GRAPH_GROUPS: Registry[Callable[[GAF, Limits], list[GraphSpec]]] = Registry("graph group")
GRAPH_GROUPS.add("split", _split_specs)
GRAPH_GROUPS.add("fused", _fused_specs)
#: "vae" is a group too, but needs a VAE, so it is built by :func:`vae_spec`.
ALL_GROUPS = ("split", "fused", "vae")


def parse_groups(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"split,fused"`` -> ``("split", "fused")``; unknown names raise a ConfigError."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [s.strip() for s in items if s.strip()]
    if not names:
        raise ConfigError(f"--graphs is empty; choose from {', '.join(ALL_GROUPS)}")
    for n in names:
        if n not in ALL_GROUPS:
            raise ConfigError(f"unknown graph group {n!r}; valid: {', '.join(ALL_GROUPS)}")
    return tuple(dict.fromkeys(names))
