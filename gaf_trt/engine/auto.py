"""``auto``: the fastest available backend for a device, precision and artifact.

The order, fastest first:

- CPU (measured, benchmarks/RESULTS.md, DiT-S/2 batch 8, 2 classes, euler-20): ``torch``
  compiled (2.20x the reference loop at bf16, 1.18x at fp32) > ``torch`` eager (1.81x /
  1.09x); for engine directories ``ort`` (fp32: 1.19x vs torch-compile's 1.09x in one run);
- CUDA (not measured yet: set by the design, to be checked by benchmarks/gpu_check.sh):
  ``trt`` > ``ort`` (engine directories) > ``torch`` compiled > ``torch`` eager.

A checkpoint (or bundled name) can only run on ``torch``; an engine directory on the
runtimes that read it. Compilation costs time once per shape (cached across runs by torch's
FX-graph cache), so ``auto`` compiles only when ``LoadRequest.options`` does not say
``compile: False``.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, field

from gaf_trt.engine.base import (
    BACKENDS,
    AnchorNetwork,
    Backend,
    LoadRequest,
    load_backend,
    resolve_device,
)
from gaf_trt.engine.torch_backend import best_compile_options
from gaf_trt.errors import ConfigError

log = logging.getLogger(__name__)

#: (backend, options, needs an engine directory), fastest first.
ORDER: dict[str, tuple[tuple[str, dict[str, object], bool], ...]] = {
    "cuda": (("trt", {}, True), ("ort", {}, True), ("torch", best_compile_options("cuda"), False),
             ("torch", {}, False)),
    "cpu": (("torch", best_compile_options("cpu"), False), ("ort", {}, True),
            ("torch", {}, False)),
}

#: modules that register the optional runtimes (absent until they are installed / written)
OPTIONAL_BACKEND_MODULES = ("gaf_trt.engine.ort_backend", "gaf_trt.engine.trt_backend")


@dataclass(frozen=True)
class AutoChoice:
    """The resolved backend, its load options, a label and why it was chosen."""

    backend: str
    options: dict[str, object] = field(default_factory=dict)
    reason: str = ""

    @property
    def label(self) -> str:
        return "torch-compile" if self.options.get("compile") else self.backend


def register_optional_backends() -> None:
    """Import the optional runtime modules so they register themselves (if present)."""
    for name in OPTIONAL_BACKEND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # the module exists but a dependency of it is missing
                log.debug("backend module %s not importable: %s", name, err)


def resolve_auto(req: LoadRequest) -> AutoChoice:
    """Pick the first usable backend of :data:`ORDER` for ``req``'s device and artifact."""
    register_optional_backends()
    kind = "cuda" if resolve_device(req.device).startswith("cuda") else "cpu"
    is_engine_dir = os.path.isdir(req.artifact)
    skipped = []
    for name, options, needs_dir in ORDER[kind]:
        if needs_dir != is_engine_dir:
            continue
        if name not in BACKENDS.names():
            skipped.append(f"{name}: not installed")
            continue
        if options.get("compile") and req.options.get("compile") is False:
            continue
        why = BACKENDS.get(name).available()
        if why is not None:
            skipped.append(f"{name}: {why}")
            continue
        merged = {**options, **req.options}
        return AutoChoice(name, merged, f"fastest available on {kind} for "
                          f"{'an engine directory' if is_engine_dir else 'a checkpoint'}"
                          + (f" (skipped {'; '.join(skipped)})" if skipped else ""))
    raise ConfigError(f"no backend can run {req.artifact!r} on {kind}: "
                      + ("; ".join(skipped) or "an engine directory needs ort or trt"))


def load_auto(req: LoadRequest) -> AnchorNetwork:
    """Load with the backend :func:`resolve_auto` picks (logged at INFO)."""
    choice = resolve_auto(req)
    log.info("backend auto -> %s (%s)", choice.label, choice.reason)
    return load_backend(choice.backend, LoadRequest(
        req.artifact, device=req.device, precision=req.precision, num_heads=req.num_heads,
        use_ema=req.use_ema, trust_pickle=req.trust_pickle, options=choice.options))


if "auto" not in BACKENDS.names():
    BACKENDS.add("auto", Backend("auto", "the fastest available backend for the device",
                                 load_auto))
