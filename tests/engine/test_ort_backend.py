"""The ONNX Runtime backend reproduces the fixture's reference runs, split and fused."""

from __future__ import annotations

import pytest
import torch

from gaf_trt import ComposedField, Composition, masks, sample
from gaf_trt.engine.base import AnchorNetwork, FusedComposedStep
from tests.helpers import rel_err
from tests.export.shared import need_onnx, ref_engine_dir

need_onnx()

RUNS = {
    "euler_pure": dict(classes=[2], solver="euler", steps=6),
    "heun_weighted": dict(classes=[1, 4, 7], weights=[0.5, 0.3, 0.2], solver="heun", steps=4),
    "rk4_spatial_h2": dict(classes=[3, 8], mask="horizontal_2", solver="rk4", steps=3),
    "endpoint_pure": dict(classes=[5], solver="ier", steps=5),
    "euler_alpha": dict(classes=[0, 6], alpha=0.6, solver="euler", steps=5),
}


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory):
    return ref_engine_dir(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def engines(engine_dir):
    from gaf_trt.engine.loader import load_engine

    return {g: load_engine(engine_dir, backend="ort", device="cpu", graphs=g)
            for g in ("split", "fused")}


def test_engine_kinds(engines):
    split, fused = engines["split"], engines["fused"]
    assert isinstance(split, AnchorNetwork) and not isinstance(split, FusedComposedStep)
    assert isinstance(fused, FusedComposedStep)
    assert split.config.num_classes == 10 and split.config.hidden_size == 64


def test_split_forward_matches_reference(engines, expected):
    j, k = engines["split"](expected["forward.x"], expected["forward.t"], expected["forward.y"])
    assert rel_err(j, expected["forward.J"]) < 1e-5
    assert rel_err(k, expected["forward.K"]) < 1e-5
    assert rel_err(k - j, expected["forward.v"]) < 1e-5


@pytest.mark.parametrize("graphs", ["split", "fused"])
@pytest.mark.parametrize("run", sorted(RUNS))
def test_sample_reproduces_reference_runs(engines, expected, graphs, run):
    kw = dict(RUNS[run])
    mask = kw.pop("mask", None)
    if mask:
        kw["masks"] = masks.build(mask, 8, 8, sigma=1.25)
    z = sample(engines[graphs], kw.pop("classes"), expected[f"{run}.z0"], t_eps=1e-3, **kw)
    assert z.dtype == torch.float32
    assert rel_err(z, expected[f"{run}.z"]) < 1e-4


@pytest.mark.parametrize("graphs", ["split", "fused"])
def test_reverse_run(engines, expected, graphs):
    from gaf_trt import integrate

    field = ComposedField(engines[graphs], Composition.pure(4))
    with torch.no_grad():
        z = integrate(field, expected["euler_reverse.z0"], steps=5, solver="euler", reverse=True)
    assert rel_err(z, expected["euler_reverse.z"]) < 1e-4


def test_fused_step_matches_composed_field(engines, ref_model):
    """composed_velocity / composed_anchors against ComposedField on the PyTorch model."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 3, 8, 8, generator=gen)
    t = torch.tensor(0.37)
    m = torch.rand(2, 1, 8, 8, generator=gen)
    comp = Composition.build([3, 8], masks=m / m.sum(0, keepdim=True))
    ref = ComposedField(ref_model, comp)
    classes = torch.tensor(comp.classes)
    fused = engines["fused"]
    with torch.no_grad():
        v = fused.composed_velocity(x, t, classes, comp.coefficients)
        jb, kb = fused.composed_anchors(x, t, classes, comp.coefficients)
        assert rel_err(v, ref(x, t)) < 1e-5
        assert rel_err(kb, ref.data_anchor(x, t)) < 1e-5
        assert rel_err(jb, ref.noise_anchor(x, t)) < 1e-5
        uni = Composition.build([1, 4, 7], weights=[0.5, 0.3, 0.2])  # [N,1,1,1]: expanded
        v3 = fused.composed_velocity(x, t.expand(3), torch.tensor(uni.classes), uni.coefficients)
        assert rel_err(v3, ComposedField(ref_model, uni)(x, t)) < 1e-5


def test_load_engine_auto_and_torch(engine_dir, expected):
    from gaf_trt.engine.loader import load_engine
    from gaf_trt.engine.torch_backend import TorchEngine

    auto = load_engine(engine_dir, device="cpu")
    assert auto.name == "ort" and isinstance(auto, FusedComposedStep)
    torch_engine = load_engine(engine_dir, backend="torch", device="cpu")
    assert isinstance(torch_engine, TorchEngine)
    z = sample(torch_engine, [2], expected["euler_pure.z0"], steps=6)
    assert rel_err(z, expected["euler_pure.z"]) < 1e-4


def test_registered_backend_loads_engine_dir(engine_dir, expected):
    from gaf_trt.engine import BACKENDS, LoadRequest, load_backend

    assert "ort" in BACKENDS.names() and BACKENDS.get("ort").available() is None
    net = load_backend("ort", LoadRequest(str(engine_dir), options={"graphs": "split"}))
    z = sample(net, [0, 6], expected["euler_alpha.z0"], alpha=0.6, steps=5)
    assert rel_err(z, expected["euler_alpha.z"]) < 1e-4


def test_ort_backend_bad_input(engine_dir, engines):
    from gaf_trt.engine.loader import load_engine
    from gaf_trt.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown graph mode 'fast'; valid: auto, split, fused"):
        load_engine(engine_dir, backend="ort", device="cpu", graphs="fast")
    with pytest.raises(ConfigError, match=r"engine input must be \[B, 3, 8, 8\]"):
        engines["split"](torch.zeros(2, 3, 4, 4), torch.zeros(2), torch.zeros(2, dtype=torch.long))
    fused_only = load_engine(engine_dir, backend="ort", device="cpu", graphs="fused")
    with pytest.raises(ConfigError, match="opened with the fused graphs only"):
        fused_only(torch.zeros(2, 3, 8, 8), torch.zeros(2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ConfigError, match=r"coef must be \[2, 1, H\|1, W\|1\]"):
        fused_only.composed_velocity(torch.zeros(1, 3, 8, 8), torch.tensor(0.5),
                                     torch.tensor([1, 2]), torch.ones(3, 1, 1, 1))
