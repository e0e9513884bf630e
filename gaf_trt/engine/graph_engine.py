"""What the ONNX Runtime and TensorRT engines share: an engine directory opened for one
device, the split-graph anchor network and the fused composed step on plain tensors.

A backend implements :meth:`GraphEngine._run` (one graph, named torch inputs -> outputs);
everything else — input preparation, the split pipeline ``trunk -> j_head, k_bank`` and the
fused ``step_velocity`` / ``step_anchors`` calls — lives here once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gaf_trt.enginedir import (
    EngineDirError,
    check_precision,
    files_of,
    read_manifest,
    verify_files,
)
from gaf_trt.errors import ConfigError
from gaf_trt.model.config import GAFConfig

log = logging.getLogger(__name__)

SPLIT = ("trunk", "j_head", "k_bank")
FUSED = ("step_velocity", "step_anchors")
GRAPH_MODES = ("auto", "split", "fused")


def open_engine_dir(folder: str | Path, mode: str, *, have: set[str] | None = None,
                    verify: bool = True, precision: Any = None
                    ) -> tuple[dict[str, Any], list[str]]:
    """Read the manifest and choose the graphs for ``mode`` (``auto``: fused and split when
    both exist); ``have`` restricts to graphs the backend can run (e.g. built plans);
    ``precision`` (when given) must be the one the engine was exported at.
    Returns ``(manifest, graph names)``."""
    if mode not in GRAPH_MODES:
        raise ConfigError(f"unknown graph mode {mode!r}; valid: {', '.join(GRAPH_MODES)}")
    man = read_manifest(folder)
    check_precision(man, precision, folder)
    present = set(man["graphs"]) if have is None else have
    has_split, has_fused = set(SPLIT) <= present, set(FUSED) <= present
    if mode == "split" and not has_split:
        raise EngineDirError(f"{folder} has no split graphs (trunk, j_head, k_bank); export "
                             "with --graphs split")
    if mode == "fused" and not has_fused:
        raise EngineDirError(f"{folder} has no fused graphs (step_velocity, step_anchors); "
                             "export with --graphs fused")
    if not (has_split or has_fused):
        raise EngineDirError(f"{folder} has neither split nor fused graphs")
    names = ([*SPLIT] if has_split and mode in ("auto", "split") else []) + \
            ([*FUSED] if has_fused and mode in ("auto", "fused") else [])
    return man, names


def verify_graph_files(folder: str | Path, man: dict[str, Any], graphs: list[str]) -> None:
    verify_files(folder, man, files_of(man, graphs=graphs))


class GraphEngine:
    """An :class:`~gaf_trt.engine.base.AnchorNetwork` over exported graphs.

    ``__call__(x [M,C,S,S], t [M] | scalar, y [M]) -> (J, K)`` runs ``trunk`` then both
    heads; needs the split graphs.
    """

    name = "graphs"

    def __init__(self, folder: Path, manifest: dict[str, Any], graphs: list[str],
                 device: str) -> None:
        self.folder = Path(folder)
        self.manifest = manifest
        self.graphs = list(graphs)
        self.device = torch.device(device)
        self.config = GAFConfig.from_dict(manifest["config"])
        self.precision = manifest.get("precision", "fp32")

    # -- to implement
    def _run(self, graph: str, inputs: dict[str, Tensor]) -> list[Tensor]:
        raise NotImplementedError

    # -- shared
    def _state(self, x: Tensor) -> Tensor:
        want = self.config.sample_shape
        if x.dim() != 4 or tuple(x.shape[1:]) != tuple(want):
            raise ConfigError(f"engine input must be [B, {', '.join(map(str, want))}], "
                              f"got {list(x.shape)}")
        return x.to(device=self.device, dtype=torch.float32).contiguous()

    def _time(self, t: Tensor | float, b: int) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float32, device=self.device)
        return (t.reshape(1).expand(b) if t.numel() == 1 else t.reshape(b)).contiguous()

    def split_unavailable(self) -> str | None:
        """None when the split graphs are open (trunk features can be reused), else why not."""
        if "trunk" in self.graphs:
            return None
        return (f"{self.describe()} was opened with the fused graphs only; export or open it "
                "with the split graphs (graphs='split' or 'auto')")

    def _check_split(self) -> None:
        if "trunk" not in self.graphs:
            raise ConfigError("this engine was opened with the fused graphs only; use "
                              "composed_velocity / composed_anchors or open it with "
                              "graphs='split'")

    def features(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """The ``trunk`` graph: ``f [M, L, D]`` (on the engine's device) for ``x [M,C,S,S]``,
        ``t [M] | scalar``, ``y [M]``."""
        self._check_split()
        x = self._state(x)
        y = y.to(device=self.device, dtype=torch.long).reshape(-1).contiguous()
        (features,) = self._run("trunk", {"x": x, "t": self._time(t, x.shape[0]), "y": y})
        return features

    def anchors_from(self, f: Tensor, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The ``j_head`` and ``k_bank`` graphs on trunk tokens ``f [M, L, D]`` and the
        current ``x [M,C,S,S]``, ``t``: ``(J, K)``, each ``[M, C, S, S]``."""
        self._check_split()
        x = self._state(x)
        t = self._time(t, x.shape[0])
        y = y.to(device=self.device, dtype=torch.long).reshape(-1).contiguous()
        (j,) = self._run("j_head", {"features": f, "x": x, "t": t})
        (k,) = self._run("k_bank", {"features": f, "x": x, "t": t, "y": y})
        return j, k

    def __call__(self, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.anchors_from(self.features(x, t, y), x, t, y)

    def describe(self) -> str:
        graphs = ", ".join(self.graphs)
        return f"{self.name} engine {self.folder} ({self.precision}, graphs {graphs})"


class FusedStepMixin:
    """:class:`~gaf_trt.engine.base.FusedComposedStep` through the fused graphs."""

    def _step_inputs(self, x: Tensor, t: Tensor, classes: Tensor,
                     coef: Tensor) -> dict[str, Tensor]:
        x = self._state(x)
        b, s = x.shape[0], self.config.input_size
        classes = classes.to(device=self.device, dtype=torch.long).reshape(-1).contiguous()
        n = classes.shape[0]
        coef = coef.to(device=self.device, dtype=torch.float32)
        if coef.dim() != 4 or coef.shape[0] != n or coef.shape[1] != 1:
            raise ConfigError(f"coef must be [{n}, 1, H|1, W|1], got {list(coef.shape)}")
        # Uniform weights are expanded on the host so one profile covers every mode.
        coef = coef.expand(n, 1, s, s).contiguous()
        return {"x": x, "t": self._time(t, b), "classes": classes, "coef": coef}

    def composed_velocity(self, x: Tensor, t: Tensor, classes: Tensor, coef: Tensor) -> Tensor:
        """``Σ_i coef_i ⊙ (K_i − J_i)``, ``[B, C, S, S]`` float32."""
        return self._run("step_velocity", self._step_inputs(x, t, classes, coef))[0]

    def composed_anchors(self, x: Tensor, t: Tensor, classes: Tensor,
                         coef: Tensor) -> tuple[Tensor, Tensor]:
        """``(Σ coef_i ⊙ J_i, Σ coef_i ⊙ K_i)``, each ``[B, C, S, S]`` float32."""
        j, k = self._run("step_anchors", self._step_inputs(x, t, classes, coef))
        return j, k


def output_shapes(record: dict[str, Any],
                  inputs: dict[str, Tensor]) -> dict[str, tuple[int, ...]]:
    """Concrete output shapes of a graph from its manifest I/O record and actual inputs."""
    sizes: dict[str, int] = {}
    for spec in record["inputs"]:
        t = inputs[spec["name"]]
        for d, n in zip(spec["shape"], t.shape, strict=True):
            if isinstance(d, str):
                sizes[d] = int(n)
    return {o["name"]: tuple(sizes[d] if isinstance(d, str) else int(d) for d in o["shape"])
            for o in record["outputs"]}


TORCH_DTYPES = {"float32": torch.float32, "int64": torch.int64, "float16": torch.float16,
                "bfloat16": torch.bfloat16, "int32": torch.int32}
