"""The TensorRT builder's use of the API, against the stand-in ``tensorrt`` module of
tests/trt_standin.py (TensorRT itself cannot be installed here; tests/engine/test_trt_backend.py
runs the real thing on a GPU machine). Checks what 10.x and 11.x differ in (the strongly-typed
network flag, no FP16/BF16 builder flag ever, TF32 cleared for FP32 parity), that every result
TensorRT can refuse with (None, -1, False) is checked and reported in one line with TensorRT's
own reason (nothing printed), the timing cache keyed by GPU and replaced when TensorRT refuses
it, the version floor, weight-stripped plans, and profiles from the batch / class ranges."""

from __future__ import annotations

import logging

import pytest

from gaf_trt.engine import trt_runtime
from gaf_trt.errors import ConfigError
from tests.export.shared import need_onnx
from tests.trt_standin import install, make_trt, tiny_onnx

need_onnx()

SHAPES = {"x": ((1, 3, 8, 8), (8, 3, 8, 8), (32, 3, 8, 8)), "t": ((1,), (8,), (32,))}


@pytest.fixture()
def builder():
    from gaf_trt.export import tensorrt as builder

    return builder


@pytest.fixture()
def graph(tmp_path):
    return tiny_onnx(tmp_path / "trunk.onnx")


def _build(builder, graph, tmp_path, **opts):
    opts.setdefault("timing_cache", str(tmp_path / "timing.cache"))
    return builder.build_plan(graph, tmp_path / "trunk.plan", SHAPES, opts)


@pytest.mark.parametrize("version,strong", [("10.13.0.35", 1 << 1), ("11.1.0.4", 1 << 0)])
def test_build_plan_uses_the_documented_api(monkeypatch, builder, graph, tmp_path, capsys,
                                            version, strong):
    trt = install(monkeypatch, version)
    calls = trt.state.calls
    rec = _build(builder, graph, tmp_path, workspace_gb=1)
    plan = (tmp_path / "trunk.plan").read_bytes()
    assert ("network_flags", strong) in calls  # STRONGLY_TYPED (deprecated, still valid, 11)
    assert ("clear_flag", "TF32") in calls  # TF32 off: FP32 parity
    assert not [c for c in calls if c[0] == "set_flag"]  # never an FP16 / BF16 flag
    assert ("profile", SHAPES) in calls and ("pool", 1 << 30) in calls
    assert (tmp_path / "timing.cache").read_bytes() == b"cache:Fake GPU 9.0"
    # the IHostMemory went to disk whole, and the runtime takes it back
    runtime = trt.Runtime(trt_runtime.make_logger(trt))
    assert runtime.deserialize_cuda_engine(plan) is not None
    assert rec["tensorrt"] == version and rec["gpu"]["compute_capability"] == "9.0"
    assert rec["strongly_typed"] and not rec["tf32"] and not rec["weights_stripped"]
    assert rec["hardware_compatibility_level"] == "NONE"
    assert not list(tmp_path.glob("*.gaftmp"))  # atomic writes leave no temp files
    assert capsys.readouterr().out == ""  # TensorRT's log is captured, never printed


def test_host_memory_is_not_bytes():
    import numpy as np

    trt = make_trt("11.1.0.4")

    hm = np.frombuffer(b"PLAN", np.uint8).copy().view(trt.IHostMemory)
    assert bytes(memoryview(hm)) == b"PLAN" and hm.nbytes == 4
    with pytest.raises(TypeError):
        len(hm)
    with pytest.raises(TypeError):
        hm[:2]  # noqa: B018


def test_failures_carry_tensorrt_reason_and_print_nothing(monkeypatch, builder, graph,
                                                          tmp_path, capsys):
    install(monkeypatch, "10.13.0.35", build_fails=True)
    with pytest.raises(builder.PlanBuildError,
                       match=r"failed to build a plan from trunk.onnx: .*Could not find any "
                             r"implementation for node /blocks.0/Attention"):
        _build(builder, graph, tmp_path)
    assert not (tmp_path / "trunk.plan").exists()
    install(monkeypatch, "10.13.0.35", network_none=True)
    with pytest.raises(builder.PlanBuildError,
                       match="could not create a network for trunk.onnx: .*out of host memory"):
        _build(builder, graph, tmp_path)
    install(monkeypatch, "10.13.0.35", profile_refused=True)
    with pytest.raises(builder.PlanBuildError, match="refused the optimisation profile"):
        _build(builder, graph, tmp_path)
    install(monkeypatch, "10.13.0.35")
    with pytest.raises(builder.PlanBuildError, match=r"cannot parse missing.onnx: "
                                                     r"ModelImporter.cpp"):
        builder.build_plan(tmp_path / "missing.onnx", tmp_path / "p.plan", SHAPES,
                           {"timing_cache": str(tmp_path / "c")})
    with pytest.raises(builder.PlanBuildError, match="'y' is not an input"):
        builder.build_plan(graph, tmp_path / "p.plan", {**SHAPES, "y": ((1,), (1,), (1,))},
                           {"timing_cache": str(tmp_path / "c")})
    with pytest.raises(ConfigError, match="unknown hardware compatibility 'TURING'"):
        _build(builder, graph, tmp_path, hardware_compatibility="turing")
    assert capsys.readouterr().out == ""


def test_timing_cache_of_another_gpu_is_replaced(monkeypatch, builder, graph, tmp_path,
                                                 caplog):
    trt = install(monkeypatch, "11.1.0.4")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"cache:Another GPU 9.0")  # TensorRT says False: not this device's
    with caplog.at_level(logging.WARNING, logger="gaf_trt.export.tensorrt"):
        _build(builder, graph, tmp_path)
    assert ("set_timing_cache", False) in trt.state.calls
    assert ("set_timing_cache", True) in trt.state.calls  # a fresh one was used instead
    assert cache.read_bytes() == b"cache:Fake GPU 9.0"
    assert "refused the timing cache" in caplog.text


def test_timing_cache_is_keyed_by_gpu_not_only_capability(monkeypatch, builder):
    h100 = builder.timing_cache_name("10.13.0.35", "NVIDIA H100 80GB HBM3", "9.0", "GPU-1a2b")
    h200 = builder.timing_cache_name("10.13.0.35", "NVIDIA H200", "9.0", "GPU-3c4d")
    assert h100 != h200 and "H200" in h200 and "10.13.0.35" in h200
    install(monkeypatch, "10.13.0.35")
    assert "Fake_GPU_9.0" in builder.default_timing_cache().name


def test_version_floor_is_one_clear_line(monkeypatch, builder, graph, tmp_path):
    install(monkeypatch, "10.8.0.43")
    assert "too old" in trt_runtime.unavailable() and "tensorrt>=10.9" in trt_runtime.unavailable()
    with pytest.raises(trt_runtime.TensorRTVersionError,
                       match=r"^TensorRT 10.8.0.43 is too old: .*install tensorrt>=10.9"):
        _build(builder, graph, tmp_path, hardware_compatibility="same_compute_capability")
    install(monkeypatch, "10.13.0.35")  # opset-23 Attention needs the 10.14 parser
    with pytest.raises(trt_runtime.TensorRTVersionError, match="opset-23 Attention.*>=10.14"):
        builder.build_plan(graph, tmp_path / "p.plan", SHAPES,
                           {"timing_cache": str(tmp_path / "c")}, opset=23)
    install(monkeypatch, "10.14.1.48")
    builder.build_plan(graph, tmp_path / "p.plan", SHAPES,
                       {"timing_cache": str(tmp_path / "c")}, opset=23)


def test_compatibility_flags_and_stripped_plans(monkeypatch, builder, graph, tmp_path):
    trt = install(monkeypatch, "11.1.0.4")
    full = _build(builder, graph, tmp_path)
    full_size = (tmp_path / "trunk.plan").stat().st_size
    rec = _build(builder, graph, tmp_path, version_compatible=True,
                 hardware_compatibility="same_compute_capability", strip_plan=True)
    calls = trt.state.calls
    assert ("set_flag", "VERSION_COMPATIBLE") in calls
    assert ("hardware_compatibility_level", "SAME_COMPUTE_CAPABILITY") in calls
    assert ("set_flag", "STRIP_PLAN") in calls and ("set_flag", "REFIT_IDENTICAL") in calls
    assert rec["weights_stripped"] and rec["version_compatible"] and not full["weights_stripped"]
    assert rec["hardware_compatibility_level"] == "SAME_COMPUTE_CAPABILITY"
    assert (tmp_path / "trunk.plan").stat().st_size < full_size  # the weights stayed out


def test_profiles_from_ranges_and_static_variant(monkeypatch, builder, tmp_path):
    from gaf_trt.export.build import ProfileSpec

    trt = install(monkeypatch, "11.1.0.4")
    tiny_onnx(tmp_path / "step_velocity.onnx",
              extra={"classes": ["N"], "coef": ["N", 1, 8, 8]})
    graph = {"group": "fused", "file": "step_velocity.onnx",
             "inputs": [{"name": "x", "shape": ["B", 3, 8, 8]}, {"name": "t", "shape": ["B"]},
                        {"name": "classes", "shape": ["N"]},
                        {"name": "coef", "shape": ["N", 1, 8, 8]}]}
    man = {"graphs": {"step_velocity": graph}, "plans": {}, "opset": 18}
    prof = ProfileSpec(min_batch=1, opt_batch=4, max_batch=16, max_classes=4, static_batch=2)
    built = builder.build_all(man, tmp_path, prof, {"timing_cache": str(tmp_path / "c")},
                              lambda m: None)
    assert built == ["step_velocity", "step_velocity.b2n2"]
    dyn, static = [c[1] for c in trt.state.calls if c[0] == "profile"]
    assert dyn["x"] == ((1, 3, 8, 8), (4, 3, 8, 8), (16, 3, 8, 8))
    assert dyn["classes"] == ((1,), (2,), (4,)) and dyn["coef"][2] == (4, 1, 8, 8)
    assert static["x"] == ((2, 3, 8, 8),) * 3 and static["classes"] == ((2,),) * 3
    assert man["plans"]["step_velocity.b2n2"]["static"] is True
    assert man["plans"]["step_velocity"]["file"] == "step_velocity.plan"


def test_captured_logger_reason_since_a_mark():
    from gaf_trt.engine.trt_runtime import make_logger

    trt = make_trt("11.1.0.4")
    logger = make_logger(trt, keep=4)
    sev = trt.ILogger.Severity
    assert logger.reason() == "no TensorRT error was logged"
    for i in range(10):  # more errors than it keeps
        logger.log(sev.ERROR, f"error {i}\n  detail")
    mark = logger.mark()
    logger.log(sev.WARNING, "only a warning")
    assert logger.reason(mark) == "no TensorRT error was logged"
    logger.log(sev.INTERNAL_ERROR, "the reason")
    assert logger.reason(mark) == "the reason" and logger.reason() == "the reason"
    assert list(logger.errors)[0] == "error 7 detail"  # one line each, the last ones kept
