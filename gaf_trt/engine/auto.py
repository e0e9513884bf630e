"""``auto``'s policy: the fastest available backend for a device, precision and artifact
(loading with it, and registering ``auto``: :mod:`gaf_trt.engine.loader`).

The order, fastest first:

- CPU (measured, benchmarks/RESULTS.md, DiT-S/2 batch 8, 2 classes, euler-20): ``torch``
  compiled (2.20x the reference loop at bf16, 1.18x at fp32) > ``torch`` eager (1.81x /
  1.09x); for engine directories ``ort`` (fp32: 1.19x vs torch-compile's 1.09x in one run);
- CUDA (not measured yet: set by the design, to be checked by benchmarks/gpu_check.sh):
  ``trt`` > ``ort`` (engine directories) > ``torch`` compiled > ``torch`` eager.

A checkpoint (or bundled name) can only run on ``torch``; an engine directory on the
runtimes that read it, and on ``torch`` through its ``model.safetensors``. Compilation costs
time once per shape (cached across runs by torch's FX-graph cache), so ``auto`` compiles only
when ``LoadRequest.options`` does not say ``compile: False``.

An engine directory on the CPU: what was measured fastest on this machine. ``gaf-trt bench``
with an engine directory, a torch row and an ``ort`` or ``openvino`` row of one precision
records the fastest of them (median loop time, same run, interleaved rounds) per CPU model,
thread count and precision in ``~/.cache/gaf-trt/auto_cpu.json``; ``auto`` takes that choice
(falling back to ``ort`` when openvino is not installed) when it exists, else the rule :data:`CPU_ENGINE_DIR_RULE` measured on the project's machines
(fp32: ``ort`` — 1.7x torch eager on a 2-core AMD EPYC; 1.96x torch eager and 1.90x
torch-compile on a 2-core Intel Xeon with AMX, DiT-S/2 1000 classes 32x32x4, batch 4, 2
classes, euler-4, one ``gaf-trt bench`` run; bf16: ``torch``, as ONNX Runtime's CPU provider
has no BF16 kernels; fp16: ``ort``, as torch emulates fp16 matmuls on the CPU).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from gaf_trt.device import cpu_model, resolve_device
from gaf_trt.engine.base import BACKENDS, LoadRequest
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

#: CPU, engine directory: the runtime measured fastest per precision when this machine has
#: no measurement of its own (see the module docstring).
CPU_ENGINE_DIR_RULE = {"fp32": "ort", "fp16": "ort", "bf16": "torch"}
#: bench labels a measured CPU choice can name -> (backend, options)
MEASURED_LABELS = ("torch", "torch-compile", "ort", "openvino")
#: the engine-directory runtimes among them (a measurement compares one with another row)
MEASURED_RUNTIMES = ("ort", "openvino")

#: modules that register the optional runtimes (absent until they are installed / written)
OPTIONAL_BACKEND_MODULES = ("gaf_trt.engine.ort_backend", "gaf_trt.engine.openvino_backend",
                            "gaf_trt.engine.trt_backend")


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


def measured_cache() -> Path:
    """Where ``gaf-trt bench`` records the CPU runtime it measured fastest."""
    return Path.home() / ".cache" / "gaf-trt" / "auto_cpu.json"


def cpu_key() -> str:
    """This CPU for the measured choice: model name and torch's thread count."""
    import torch

    return f"{cpu_model()} x{torch.get_num_threads()}"


def read_measured(precision: str) -> dict[str, object] | None:
    """The recorded fastest CPU runtime for ``precision`` on this CPU, or None."""
    try:
        data = json.loads(measured_cache().read_text())
        rec = data.get(cpu_key(), {}).get(precision)
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(rec, dict) and rec.get("backend") in MEASURED_LABELS:
        return rec
    return None


def record_measured(precision: str, loop_ms: dict[str, float], engine: str) -> str | None:
    """Record the fastest of ``loop_ms`` (bench label -> median loop ms, one run, one
    engine directory) for ``precision`` on this CPU; returns the label recorded."""
    from gaf_trt.io.files import write_json

    loop_ms = {k: v for k, v in loop_ms.items() if k in MEASURED_LABELS and v > 0}
    if not set(MEASURED_RUNTIMES) & set(loop_ms) or len(loop_ms) < 2:
        return None
    best = min(loop_ms, key=loop_ms.get)
    try:
        data = json.loads(measured_cache().read_text())
        data = data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        data = {}
    data.setdefault(cpu_key(), {})[precision] = {
        "backend": best, "loop_ms": loop_ms, "engine": str(engine)}
    measured_cache().parent.mkdir(parents=True, exist_ok=True)
    write_json(measured_cache(), data)
    return best


def _engine_dir_cpu(req: LoadRequest) -> AutoChoice | None:
    """The measured (or ruled) fastest runtime for an engine directory on the CPU."""
    from gaf_trt.enginedir import read_manifest

    man = read_manifest(req.artifact)
    precision = str(man.get("precision", "fp32"))
    rec = read_measured(precision)
    label = str(rec["backend"]) if rec else CPU_ENGINE_DIR_RULE.get(precision, "ort")
    why = (f"measured fastest at {precision} on this CPU ({rec['loop_ms']})" if rec
           else f"the CPU rule for {precision} engine directories")
    if label == "torch-compile" and req.options.get("compile") is False:
        label = "torch"
    if label == "openvino":
        if "openvino" in BACKENDS.names() and BACKENDS.get("openvino").available() is None:
            return AutoChoice("openvino", dict(req.options), why)
        label, why = "ort", "openvino is not installed"
    if label == "ort":
        if "ort" in BACKENDS.names() and BACKENDS.get("ort").available() is None:
            return AutoChoice("ort", dict(req.options), why)
        label, why = "torch", "onnxruntime is not installed"
    if not man.get("weights"):
        return None
    options = {**(best_compile_options("cpu") if label == "torch-compile" else {}),
               **{k: v for k, v in req.options.items() if k != "graphs"}}
    return AutoChoice("torch", options,
                      f"{why}; PyTorch weights {man['weights']} of the engine directory")


def resolve_auto(req: LoadRequest) -> AutoChoice:
    """Pick the first usable backend of :data:`ORDER` for ``req``'s device and artifact
    (an engine directory on the CPU: what was measured fastest, see the module docstring)."""
    register_optional_backends()
    kind = "cuda" if resolve_device(req.device).startswith("cuda") else "cpu"
    is_engine_dir = os.path.isdir(req.artifact)
    if kind == "cpu" and is_engine_dir:
        choice = _engine_dir_cpu(req)
        if choice is not None:
            return choice
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
