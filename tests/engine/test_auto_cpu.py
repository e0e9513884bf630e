"""``auto`` for an engine directory on the CPU: the runtime measured fastest on this CPU
(recorded by ``gaf-trt bench``), else the rule measured on the project's machines."""

from __future__ import annotations

import json

import pytest
import torch

from gaf_trt.engine.base import LoadRequest
from tests.export.shared import need_onnx, ref_engine_dir

need_onnx()


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory):
    return ref_engine_dir(tmp_path_factory.getbasetemp())


@pytest.fixture()
def cache(monkeypatch, tmp_path):
    from gaf_trt.engine import auto

    path = tmp_path / "auto_cpu.json"
    monkeypatch.setattr(auto, "measured_cache", lambda: path)
    return path


def test_rule_without_a_measurement(engine_dir, cache):
    from gaf_trt.engine.auto import CPU_ENGINE_DIR_RULE, resolve_auto

    choice = resolve_auto(LoadRequest(str(engine_dir), device="cpu"))
    assert choice.backend == CPU_ENGINE_DIR_RULE["fp32"] == "ort"
    assert "rule" in choice.reason and not cache.exists()


def test_measured_choice_is_recorded_and_taken(engine_dir, cache, ref_model):
    from gaf_trt.engine.auto import cpu_key, record_measured, resolve_auto
    from gaf_trt.engine.base import load_backend

    assert record_measured("fp32", {"ort": 120.0}, str(engine_dir)) is None  # nothing to compare
    assert record_measured("fp32", {"ort": 120.0, "torch": 80.0, "auto": 1.0},
                           str(engine_dir)) == "torch"
    rec = json.loads(cache.read_text())[cpu_key()]["fp32"]
    assert rec["backend"] == "torch" and rec["loop_ms"] == {"ort": 120.0, "torch": 80.0}
    choice = resolve_auto(LoadRequest(str(engine_dir), device="cpu"))
    assert choice.backend == "torch" and "measured fastest" in choice.reason
    assert "model.safetensors" in choice.reason
    eng = load_backend("auto", LoadRequest(str(engine_dir), device="cpu"))
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([0.3, 0.6]), torch.tensor([1, 5])
    with torch.no_grad():
        j, k = eng(x, t, y)
        j_ref, k_ref = ref_model(x, t, y)
    assert torch.equal(j, j_ref) and torch.equal(k, k_ref)  # the directory's own weights
    record_measured("fp32", {"ort": 50.0, "torch": 80.0}, str(engine_dir))
    assert resolve_auto(LoadRequest(str(engine_dir), device="cpu")).backend == "ort"


def test_a_checkpoint_still_runs_on_torch(ref_ckpt, cache):
    from gaf_trt.engine.auto import resolve_auto

    choice = resolve_auto(LoadRequest(str(ref_ckpt), device="cpu"))
    assert choice.backend == "torch"
