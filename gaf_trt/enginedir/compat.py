"""Whether an engine directory can run here: the precision it was exported at, and a
TensorRT plan's TensorRT version and GPU against this machine's."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gaf_trt.enginedir.schema import (
    REBUILD_HINT,
    EngineCompatibilityError,
    EngineDirError,
)

log = logging.getLogger(__name__)


def check_precision(man: dict[str, Any], requested: Any, folder: str | Path) -> None:
    """An engine runs at the precision it was exported at: a request for another one is
    refused (a record must never claim a precision that did not run)."""
    if requested is None:
        return
    want = getattr(requested, "value", requested)
    if want != man["precision"]:
        raise EngineDirError(f"engine directory {folder} was exported at {man['precision']}; "
                             f"--precision {want} needs an engine exported with `gaf-trt export "
                             f"--precision {want}` (or run --precision {man['precision']})")



def trt_refusal(man: dict[str, Any]) -> str | None:
    """Why TensorRT cannot run this directory's graphs (None when it can): TensorRT takes only
    static, symmetric S8S8 Q/DQ, not U8S8 or dynamic INT8 graphs (``--int8-scheme``,
    ``--quant``; a directory written before the scheme was recorded is S8S8)."""
    q = man.get("quantization")
    if man.get("precision") != "int8" or not isinstance(q, dict):
        return None
    mode, scheme = q.get("mode", "static"), q.get("scheme") or "s8s8"
    if mode == "static" and scheme == "s8s8":
        return None
    return (f"its int8 graphs are {scheme.upper()} {mode} quantisation, and TensorRT takes "
            "only static, symmetric S8S8 Q/DQ graphs; run it with backend ort or openvino, "
            "or re-export with `gaf-trt export --precision int8 --quant static "
            "--int8-scheme s8s8`")


@dataclass(frozen=True)
class RuntimeInfo:
    """The machine a plan is about to be loaded on."""

    tensorrt: str
    gpu_name: str
    compute_capability: str  # "9.0"


def _major_minor(version: str) -> tuple[int, ...]:
    parts = []
    for p in str(version).split(".")[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_plan_compatible(plan: dict[str, Any], here: RuntimeInfo, folder: str | Path) -> None:
    """Refuse a plan built for another TensorRT version or GPU, before deserialising it.

    Plans are tied to the exact TensorRT version unless built version-compatible (then a
    runtime of the same major version, not older, may load them), and to the compute
    capability unless built with a hardware-compatibility level (``AMPERE_PLUS``: any
    compute capability >= 8.0). The GPU name only warns when the capability matches.
    """
    hint = REBUILD_HINT.format(dir=folder)
    built_trt, built_gpu = str(plan.get("tensorrt", "?")), plan.get("gpu") or {}
    name = plan.get("file", "plan")
    if plan.get("version_compatible"):
        same_major = _major_minor(built_trt)[:1] == _major_minor(here.tensorrt)[:1]
        if not same_major or _major_minor(here.tensorrt) < _major_minor(built_trt):
            raise EngineCompatibilityError(
                f"{name} was built with TensorRT {built_trt} (version-compatible) and cannot "
                f"run on TensorRT {here.tensorrt}; {hint}")
    elif built_trt != here.tensorrt:
        raise EngineCompatibilityError(f"{name} was built with TensorRT {built_trt}, this "
                                       f"machine has TensorRT {here.tensorrt}; {hint}")
    level = str(plan.get("hardware_compatibility_level", "NONE")).upper()
    built_cc = str(built_gpu.get("compute_capability", "?"))
    if level == "AMPERE_PLUS":
        if _major_minor(here.compute_capability) < (8, 0):
            raise EngineCompatibilityError(
                f"{name} needs an Ampere or newer GPU (compute capability >= 8.0); "
                f"{here.gpu_name} is {here.compute_capability}; {hint}")
    elif built_cc != here.compute_capability:
        raise EngineCompatibilityError(
            f"{name} was built for {built_gpu.get('name', '?')} (compute capability "
            f"{built_cc}), this GPU is {here.gpu_name} ({here.compute_capability}); {hint}")
    elif built_gpu.get("name") and built_gpu.get("name") != here.gpu_name:
        log.warning("%s was built on %s and runs on %s (same compute capability %s)", name,
                    built_gpu.get("name"), here.gpu_name, built_cc)

