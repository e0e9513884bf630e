"""Backend registry, precision and the torch engine."""

from __future__ import annotations

import pytest
import torch

from gaf_trt import ConfigError, sample
from gaf_trt.engine import BACKENDS, LoadRequest, Precision, load_backend, resolve_device
from tests.conftest import rel_err


def test_registry_lists_torch():
    assert "torch" in BACKENDS.names()
    with pytest.raises(ConfigError, match="unknown backend 'onnx9'; valid: torch"):
        BACKENDS.get("onnx9")


def test_torch_engine_matches_model(ref_ckpt, ref_model, expected):
    engine = load_backend("torch", LoadRequest(str(ref_ckpt)))
    z0 = expected["heun_weighted.z0"]
    a = sample(engine, [1, 4, 7], z0, weights=[0.5, 0.3, 0.2], steps=4, solver="heun")
    assert rel_err(a, expected["heun_weighted.z"]) < 1e-4


def test_bf16_engine_close_to_fp32(ref_ckpt, expected):
    engine = load_backend("torch", LoadRequest(str(ref_ckpt), precision=Precision.BF16))
    z = sample(engine, [2], expected["euler_pure.z0"], steps=6)
    assert z.dtype == torch.float32  # the solver state stays float32
    err = rel_err(z, expected["euler_pure.z"])
    assert 0 < err < 5e-2


def test_precision_enum():
    assert Precision("fp16").torch_dtype is torch.float16
    with pytest.raises(ValueError):
        Precision("fp64")


def test_device_resolution():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
