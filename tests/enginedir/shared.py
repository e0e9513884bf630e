"""Helpers of the engine-directory tests."""

from __future__ import annotations

from typing import Any


def plan_record(**kw: Any) -> dict[str, Any]:
    """A manifest plan record built on an H100 with TensorRT 10.13 (``kw`` overrides)."""
    rec = {"file": "trunk.plan", "tensorrt": "10.13.0.35",
           "gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"},
           "hardware_compatibility_level": "NONE", "version_compatible": False}
    rec.update(kw)
    return rec
