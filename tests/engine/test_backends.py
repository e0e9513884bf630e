"""Backend registry, precision and the torch engine."""

from __future__ import annotations

import pytest
import torch

from gaf_trt import ConfigError, sample
from gaf_trt.device import resolve_device
from gaf_trt.engine import BACKENDS, LoadRequest, load_backend
from gaf_trt.precision import Precision
from tests.helpers import rel_err


def test_registry_lists_torch():
    assert "torch" in BACKENDS.names()
    with pytest.raises(ConfigError, match="unknown backend 'onnx9'; valid: .*torch"):
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


@pytest.mark.parametrize("cuda", [False, True], ids=["no-cuda", "cuda"])
def test_device_resolution(monkeypatch, cuda):
    """The same assertions on every machine: CUDA availability is monkeypatched."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2 if cuda else 0)
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if cuda else "cpu")
    if cuda:
        assert resolve_device("cuda:1") == "cuda:1"
        with pytest.raises(ConfigError, match="only 2 CUDA device"):
            resolve_device("cuda:2")
    else:
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    for bad in ("gpu0", "banana", ""):
        with pytest.raises(ConfigError, match="device"):
            resolve_device(bad)
    with pytest.raises(ConfigError, match="unsupported device 'meta'"):
        resolve_device("meta")
