"""The reference loop (the published sampler's way: fp32 eager, one network call per class
per velocity evaluation), the compositions benched and the error of a row against it."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from gaf_trt.compose import masks as mask_lib
from gaf_trt.compose.composition import Composition
from gaf_trt.model.checkpoint import load_model
from gaf_trt.model.gaf import GAF
from gaf_trt.model.presets import preset_model
from gaf_trt.pipeline.bench.grid import BenchGrid

#: spatial layout used for N composed classes (soft masks); more classes: uniform weights
LAYOUTS = {2: "horizontal_2", 3: "horizontal", 4: "horizontal_4"}


class ReferenceField:
    """The published sampler's composed velocity: one fp32 network call per class.

    ``x [B,C,S,S]``, ``t`` 0-d -> ``Σ_i c_i ⊙ (K_i − J_i)``; ``data_anchor`` / ``noise_anchor``
    blend K / J the same way (IER).
    """

    def __init__(self, model: GAF, composition: Composition) -> None:
        self.model = model
        self.composition = composition
        self._coef: Tensor | None = None
        self._labels: dict[tuple[int, int], Tensor] = {}

    def _per_class(self, x: Tensor, t: Tensor, pick: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        if self._coef is None:
            self._coef = self.composition.coefficients.to(x.device)
        out = torch.zeros_like(x)
        tb = t.reshape(-1).expand(x.shape[0])
        for i, c in enumerate(self.composition.classes):
            key = (c, x.shape[0])
            if key not in self._labels:
                self._labels[key] = torch.full((x.shape[0],), c, dtype=torch.long, device=x.device)
            j, k = self.model(x, tb, self._labels[key])
            out = out + self._coef[i] * pick(j, k)
        return out

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return self._per_class(x, t, lambda j, k: k - j)

    def data_anchor(self, x: Tensor, t: Tensor) -> Tensor:
        return self._per_class(x, t, lambda j, k: k)

    def noise_anchor(self, x: Tensor, t: Tensor) -> Tensor:
        return self._per_class(x, t, lambda j, k: j)


def bench_composition(n: int, size: int) -> tuple[Composition, str]:
    """The composition of ``n`` classes ``0..n-1`` benched, and its description: spatial
    soft masks for 2-4 classes (as in the paper's examples), uniform weights beyond."""
    if n == 1:
        return Composition.pure(0), "pure"
    if n in LAYOUTS:
        m = mask_lib.build(LAYOUTS[n], size, size)
        return Composition.build(list(range(n)), masks=m), f"spatial {LAYOUTS[n]}"
    return Composition.build(list(range(n)), weights=[1.0] * n), "weighted uniform"


def max_rel_err(out: Tensor, ref: Tensor) -> float | None:
    """Max over images of ``||out - ref|| / ||ref||`` (None when ``out`` is not finite)."""
    if not bool(torch.isfinite(out).all()):
        return None
    d = (out.double() - ref.double()).flatten(1).norm(dim=1)
    return float((d / ref.double().flatten(1).norm(dim=1).clamp_min(1e-30)).max())


def load_fp32_model(grid: BenchGrid, device: str) -> GAF:
    """The fp32 model the reference loop runs: the checkpoint, the PyTorch weights stored in
    the engine directory, or a random-weight preset."""
    if grid.ckpt is not None:
        return load_model(grid.ckpt, device=device)
    if grid.engine is not None:  # the whole directory verified before any work
        from gaf_trt.engine.loader import engine_weights
        from gaf_trt.enginedir import read_manifest, verify_files

        man = read_manifest(grid.engine)
        verify_files(grid.engine, man)
        return load_model(str(engine_weights(grid.engine, verify=False, man=man)), device=device)
    return preset_model(grid.preset, grid.latent, grid.channels, grid.num_classes, grid.seed,
                        device)


