"""The torch backend: precisions, torch.compile and ``auto`` on the CPU (tiny model).

Tolerances: bf16 residuals on the reference model measured ~2.5e-3 .. 5e-3 final-state
relative error over 3-6 steps (benchmarks/RESULTS.md); the bound below leaves 4x margin.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

from gaf_trt import ConfigError, sample
from gaf_trt.engine import LoadRequest, load_backend
from gaf_trt.engine.auto import resolve_auto
from gaf_trt.engine.torch_backend import (
    TorchEngine,
    available_precisions,
    engine_from_model,
    precision_support,
)
from gaf_trt.precision import Precision
from tests.helpers import rel_err

BF16_TOL = 2e-2

bf16_cpu = pytest.mark.skipif(
    precision_support("cpu", Precision.BF16) is not None,
    reason=f"bf16 is not native on this CPU: {precision_support('cpu', Precision.BF16)}")


def test_fp32_engine_is_the_model(ref_model, expected):
    engine = engine_from_model(ref_model, Precision.FP32)
    x, t, y = expected["forward.x"], expected["forward.t"], expected["forward.y"]
    j, k = engine(x, t, y)
    j0, k0 = ref_model(x, t, y)
    assert torch.equal(j, j0) and torch.equal(k, k0)


@bf16_cpu
@pytest.mark.parametrize("solver,steps", [("euler", 6), ("endpoint", 5)])
def test_bf16_same_images_as_fp32(ref_ckpt, expected, solver, steps):
    name = "euler_pure" if solver == "euler" else "endpoint_pure"
    engine = load_backend("torch", LoadRequest(str(ref_ckpt), precision=Precision.BF16))
    cls = [2] if solver == "euler" else [5]
    z = sample(engine, cls, expected[f"{name}.z0"], steps=steps, solver=solver)
    assert z.dtype == torch.float32
    err = rel_err(z, expected[f"{name}.z"])
    assert 0 < err < BF16_TOL, err  # > 0: the network really ran in bf16


@bf16_cpu
def test_bf16_anchors_are_float32_with_exact_skip(ref_model, expected):
    """Reduced precision rounds only the residuals: the (1 - t) x skip term is float32."""
    import copy

    engine = engine_from_model(copy.deepcopy(ref_model), Precision.BF16)
    x, t, y = expected["forward.x"], expected["forward.t"], expected["forward.y"]
    j, k = engine(x, t, y)
    assert j.dtype == k.dtype == torch.float32
    j_res, _ = engine.model.residuals(x.to(torch.bfloat16), t, y)
    skip = (1 - t.view(-1, 1, 1, 1)) * x
    assert torch.equal(j, skip + j_res.float())


def test_options_are_validated(ref_model):
    with pytest.raises(ConfigError, match="unknown torch backend option"):
        engine_from_model(ref_model, Precision.FP32, {"compiled": True})
    with pytest.raises(ConfigError, match="compile must be true or false"):
        engine_from_model(ref_model, Precision.FP32, {"compile": "yes"})
    with pytest.raises(ConfigError, match="freeze must be true or false"):
        engine_from_model(ref_model, Precision.FP32, {"freeze": 1})
    with pytest.raises(ConfigError, match="unknown compile_mode 'reduce-overhead'"):
        TorchEngine(ref_model, compile=True, compile_mode="reduce-overhead")


def test_fp16_on_cpu_is_flagged(ref_ckpt, caplog):
    assert "emulated" in precision_support("cpu", Precision.FP16)
    assert "fp16" not in available_precisions("cpu")
    with caplog.at_level(logging.WARNING):
        engine = load_backend("torch", LoadRequest(str(ref_ckpt), precision=Precision.FP16))
    assert engine.precision is Precision.FP16 and "fp16 on the CPU" in caplog.text


def test_auto_on_cpu_checkpoint(ref_ckpt):
    choice = resolve_auto(LoadRequest(str(ref_ckpt)))
    assert (choice.backend, choice.label) == ("torch", "torch-compile")
    eager = resolve_auto(LoadRequest(str(ref_ckpt), options={"compile": False}))
    assert (eager.backend, eager.label) == ("torch", "torch")
    engine = load_backend("auto", LoadRequest(str(ref_ckpt), options={"compile": False}))
    assert isinstance(engine, TorchEngine) and not engine.compiled


#: torch.compile on the CPU imports ``torch.utils.mkldnn`` (via inductor's pre-grad passes),
#: whose classes are still written with ``torch.jit.script_method``: 14 DeprecationWarnings
#: raised inside torch itself at import, not by gaf-trt or this test (gaf-trt never calls
#: torch.jit; ``test_no_torch_jit_in_gaf_trt`` holds that). Only that message from torch's
#: own ``torch.jit._script`` module is ignored; any other warning still shows.
TORCH_INTERNAL_JIT = ("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning:"
                      "torch.jit._script")


def test_no_torch_jit_in_gaf_trt():
    """What users run goes through torch.compile / eager only, never the deprecated jit."""
    import gaf_trt

    root = Path(gaf_trt.__file__).parent
    users = [str(p.relative_to(root)) for p in root.rglob("*.py") if "torch.jit" in p.read_text()]
    assert users == []


@pytest.mark.filterwarnings(TORCH_INTERNAL_JIT)
def test_compiled_matches_eager(ref_model, expected):
    """One small torch.compile run (inductor needs a C compiler)."""
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("torch.compile (inductor, CPU) needs a C compiler; none on PATH")
    engine = engine_from_model(ref_model, Precision.FP32, {"compile": True})
    z0 = expected["euler_pure.z0"]
    z = sample(engine, [2], z0, steps=6)
    first = engine.compile_seconds
    z2 = sample(engine, [2], z0, steps=6)
    assert first > 0 and engine.compile_seconds == first  # compiled once per shape
    assert torch.equal(z, z2)
    assert rel_err(z, expected["euler_pure.z"]) < 1e-5
