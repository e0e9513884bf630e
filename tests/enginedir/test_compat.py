"""A TensorRT plan's compatibility with this machine, checked before it is deserialised."""

from __future__ import annotations

import pytest

from tests.enginedir.shared import plan_record


def test_compatibility_check_before_deserialising():
    from gaf_trt.enginedir import (
        EngineCompatibilityError,
        RuntimeInfo,
        check_plan_compatible,
    )

    here = RuntimeInfo("10.13.0.35", "NVIDIA H100 80GB HBM3", "9.0")
    check_plan_compatible(plan_record(), here, "eng")  # same machine: fine
    other_gpu = plan_record(gpu={"name": "NVIDIA A100-SXM4-40GB", "compute_capability": "8.0"})
    with pytest.raises(EngineCompatibilityError,
                       match=r"built for NVIDIA A100-SXM4-40GB \(compute capability 8.0\), this "
                             r"GPU is NVIDIA H100 80GB HBM3 \(9.0\); rebuild the plans on this "
                             r"machine with `gaf-trt export --from-onnx eng`"):
        check_plan_compatible(other_gpu, here, "eng")
    with pytest.raises(EngineCompatibilityError, match="built with TensorRT 11.1.0.1, this "
                                                       "machine has TensorRT 10.13.0.35"):
        check_plan_compatible(plan_record(tensorrt="11.1.0.1"), here, "eng")
    # hardware-compatible plans run on any Ampere+ GPU; version-compatible on newer 10.x
    check_plan_compatible(dict(other_gpu, hardware_compatibility_level="AMPERE_PLUS"), here, "e")
    check_plan_compatible(plan_record(tensorrt="10.8.0.43", version_compatible=True), here, "e")
    with pytest.raises(EngineCompatibilityError, match="version-compatible"):
        check_plan_compatible(plan_record(tensorrt="10.14.1", version_compatible=True), here, "e")
    turing = RuntimeInfo("10.13.0.35", "Tesla T4", "7.5")
    with pytest.raises(EngineCompatibilityError, match="needs an Ampere or newer GPU"):
        check_plan_compatible(plan_record(hardware_compatibility_level="AMPERE_PLUS"), turing, "e")
