"""The OpenVINO backend against ONNX Runtime on the same engine directories (the digits model,
split and fused graphs, fp32; the fixture checkpoint at int8), its bf16 hint, the CLI, the
verification before loading, the contract and the device rule."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch

from tests.export.shared import REF_CKPT, need_onnx
from tests.helpers import rel_err

need_onnx()
ov = pytest.importorskip("openvino", reason="openvino is not installed "
                         "(pip install 'gaf-trt[openvino]')")

#: OpenVINO fp32 against ONNX Runtime fp32, same graphs (measured ~1.3e-7)
FP32_BOUND = 1e-5
#: OpenVINO int8 against ONNX Runtime int8, same QDQ graphs (measured ~1e-7: both run the
#: same integer GEMMs; the int8-vs-fp32 error itself is ~1.3e-3 here)
INT8_BOUND = 1e-4
#: the bf16 inference hint on an fp32 directory against ONNX Runtime fp32 (measured ~2e-3)
BF16_BOUND = 2e-2


def _export(out, ckpt, **kw):
    from gaf_trt.export.build import ExportConfig, export_engine

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        export_engine(ExportConfig(ckpt=str(ckpt), out=str(out), onnx_only=True, parity=False,
                                   **kw))
    finally:
        torch.set_num_threads(before)
    return out


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    """The bundled digits model exported (split + fused graphs, fp32, ONNX only)."""
    return _export(tmp_path_factory.mktemp("ov") / "digits", "digits")


@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory):
    """The fixture checkpoint at int8 (S8S8 QDQ, split graphs, a tiny calibration)."""
    from gaf_trt.export import quantize as q
    from gaf_trt.precision import Precision

    return _export(tmp_path_factory.mktemp("ov") / "int8", REF_CKPT, graphs=("split",),
                   precision=Precision.INT8, quant=q.QuantConfig(samples=6, steps=3, rows=8))


def _load(folder, backend, **kw):
    from gaf_trt.engine.loader import load_engine

    return load_engine(folder, backend=backend, device="cpu", **kw)


def _inputs(cfg, m=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(m, *cfg.sample_shape, generator=gen), torch.rand(m, generator=gen),
            torch.randint(0, cfg.num_classes, (m,), generator=gen))


def test_split_matches_ort_and_contract(digits_dir):
    from gaf_trt.compose.placement import network_device
    from gaf_trt.engine.base import AnchorNetwork, FusedComposedStep

    ovn, ortn = _load(digits_dir, "openvino", graphs="split"), _load(digits_dir, "ort",
                                                                     graphs="split")
    assert isinstance(ovn, AnchorNetwork) and not isinstance(ovn, FusedComposedStep)
    assert ovn.name == "openvino" and ovn.config == ortn.config
    assert ovn.config.num_classes == 10 and network_device(ovn) == torch.device("cpu")
    assert "openvino engine" in ovn.describe()
    x, t, y = _inputs(ovn.config)
    (j, k), (jr, kr) = ovn(x, t, y), ortn(x, t, y)
    assert j.dtype == torch.float32 and j.shape == x.shape
    assert rel_err(j, jr) < FP32_BOUND and rel_err(k, kr) < FP32_BOUND
    j2, _ = ovn(x, t, y)  # the reused infer request writes new tensors, not the old ones
    assert torch.equal(j, j2) and j2.data_ptr() != j.data_ptr()


def test_fused_matches_ort(digits_dir):
    from gaf_trt.engine.base import FusedComposedStep

    ovn, ortn = _load(digits_dir, "openvino", graphs="fused"), _load(digits_dir, "ort",
                                                                     graphs="fused")
    assert isinstance(ovn, FusedComposedStep)
    x, t, _ = _inputs(ovn.config, m=3)
    classes, coef = torch.tensor([3, 8]), torch.rand(2, 1, 16, 16)
    v = ovn.composed_velocity(x, t, classes, coef / coef.sum(0))
    assert rel_err(v, ortn.composed_velocity(x, t, classes, coef / coef.sum(0))) < FP32_BOUND
    uni = torch.tensor([[[[0.7]]], [[[0.3]]]])
    jb, kb = ovn.composed_anchors(x, t[0], classes, uni)
    jr, kr = ortn.composed_anchors(x, t[0], classes, uni)
    assert rel_err(jb, jr) < FP32_BOUND and rel_err(kb, kr) < FP32_BOUND


def test_shapes_past_the_static_cache_run_dynamic(digits_dir, monkeypatch):
    from gaf_trt.engine import openvino_backend

    monkeypatch.setattr(openvino_backend, "MAX_STATIC_SHAPES", 1)
    ovn, ortn = _load(digits_dir, "openvino", graphs="split"), _load(digits_dir, "ort",
                                                                     graphs="split")
    for m in (2, 3, 2, 7):
        x, t, y = _inputs(ovn.config, m=m, seed=m)
        assert rel_err(ovn(x, t, y)[1], ortn(x, t, y)[1]) < FP32_BOUND
    assert len(ovn.compiled["trunk"].requests) == 1 and ovn.compiled["trunk"].dynamic


def test_device_rule_through_placement(digits_dir):
    """Inputs of another dtype / layout go through compose.placement; CUDA is refused."""
    from gaf_trt.compose.placement import call_network
    from gaf_trt.errors import ConfigError

    ovn = _load(digits_dir, "openvino", graphs="split")
    x, t, y = _inputs(ovn.config)
    xt = x.double().transpose(2, 3).contiguous().transpose(2, 3)  # not contiguous, float64
    j, k = call_network(ovn, xt, t, y)
    assert j.device.type == "cpu" and rel_err(k, ovn(x, t, y)[1]) < 1e-6
    from gaf_trt.engine.base import LoadRequest
    from gaf_trt.engine.openvino_backend import load_openvino

    with pytest.raises(ConfigError, match="runs on the CPU, not cuda"):
        load_openvino(LoadRequest(str(digits_dir), device="cuda"))


def test_int8_and_bf16_bounds(int8_dir, digits_dir):
    ovn, ortn = _load(int8_dir, "openvino"), _load(int8_dir, "ort")
    assert ovn.precision == "int8"
    x, t, y = _inputs(ovn.config)
    (j, k), (jr, kr) = ovn(x, t, y), ortn(x, t, y)
    assert rel_err(j, jr) < INT8_BOUND and rel_err(k, kr) < INT8_BOUND
    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no BF16: the bf16 hint is refused (tested by the message)")
    bf = _load(digits_dir, "openvino", precision="bf16", graphs="split")
    assert bf.precision == "bf16" and "bf16 inference hint" in bf.describe()
    x, t, y = _inputs(bf.config)
    (j, k), (jr, kr) = bf(x, t, y), _load(digits_dir, "ort", graphs="split")(x, t, y)
    assert rel_err(j, jr) < BF16_BOUND and rel_err(k, kr) < BF16_BOUND


def test_tampered_directory_refused_before_loading(digits_dir, tmp_path, monkeypatch):
    from gaf_trt.enginedir import EngineDirError

    bad = tmp_path / "bad"
    shutil.copytree(digits_dir, bad)
    with open(bad / "j_head.onnx", "ab") as f:
        f.write(b"\0")
    read = []
    monkeypatch.setattr(ov.Core, "read_model", lambda *a, **k: read.append(a))
    with pytest.raises(EngineDirError, match="altered since export"):
        _load(bad, "openvino", graphs="split")
    assert not read  # nothing reached OpenVINO
    with pytest.raises(EngineDirError, match="exported at fp32"):
        _load(digits_dir, "openvino", precision="int8")


def test_auto_takes_openvino_when_measured_fastest(digits_dir, tmp_path, monkeypatch):
    from gaf_trt.engine import auto

    monkeypatch.setattr(auto, "measured_cache", lambda: tmp_path / "auto_cpu.json")
    assert auto.record_measured("fp32", {"torch": 80.0, "ort": 60.0, "openvino": 40.0},
                                str(digits_dir)) == "openvino"
    assert _load(digits_dir, "auto").name == "openvino"
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino fails: not installed
    assert _load(digits_dir, "auto").name == "ort"  # openvino measured but not installed


def test_cli_sample_and_info(digits_dir, tmp_path):
    from typer.testing import CliRunner

    from gaf_trt.cli import app

    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["sample", "--engine", str(digits_dir), "--backend", "openvino",
                                 "--classes", "3", "8", "--steps", "2", "--batch", "2", "-q",
                                 "--device", "cpu", "--out", str(out)])
    assert r.exit_code == 0, r.output
    record = json.loads((out / "run.json").read_text())
    assert record["backend"] == "openvino" and (out / "pure_3.png").is_file()
    r = CliRunner().invoke(app, ["info", str(digits_dir)])
    assert r.exit_code == 0 and "openvino" in r.output.splitlines()[-1], r.output
