"""The TensorRT builder's use of the API, against a recording stand-in of the ``tensorrt``
module (TensorRT itself cannot be installed here; tests/engine/test_trt_backend.py runs the
real thing on a GPU machine). Checks what 10.x and 11.x differ in: the strongly-typed network
flag, no FP16/BF16 builder flag ever, TF32 cleared for FP32 parity, the timing cache reused
and written back, profiles from the batch / class ranges, and failures reported."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from gaf_trt.errors import ConfigError


class _Enum:
    def __init__(self, **members):
        for k, v in members.items():
            setattr(self, k, v)


def fake_trt(version: str, calls: list, *, parse_ok: bool = True, build_ok: bool = True,
             inputs: tuple[str, ...] = ("x", "t")):
    """A minimal ``tensorrt`` module recording every call the builder makes."""
    major = int(version.split(".")[0])
    flags = dict(TF32=7, VERSION_COMPATIBLE=9)
    if major < 11:
        flags.update(FP16=0, BF16=1)
    creation = _Enum(STRONGLY_TYPED=5) if major >= 10 else _Enum()

    class Network:
        num_inputs = len(inputs)

        def get_input(self, i):
            return types.SimpleNamespace(name=inputs[i])

    class Parser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls.append(("parse", Path(path).name))
            return parse_ok

        def get_error(self, i):
            return "In node 3 (Split): unsupported attribute"

    class Cache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return b"cache:" + self.data

    class Config:
        def __init__(self):
            self.cache = None

        def set_flag(self, f):
            calls.append(("set_flag", f))

        def clear_flag(self, f):
            calls.append(("clear_flag", f))

        def set_memory_pool_limit(self, pool, size):
            calls.append(("pool", size))

        def create_timing_cache(self, data):
            calls.append(("timing_cache_in", bytes(data)))
            return Cache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

        def add_optimization_profile(self, p):
            calls.append(("profile", dict(p.shapes)))

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (lo, opt, hi)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            calls.append(("network_flags", flags))
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"PLAN" if build_ok else None

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    return types.SimpleNamespace(
        __version__=version, Logger=Logger, Builder=Builder, OnnxParser=Parser,
        NetworkDefinitionCreationFlag=creation, BuilderFlag=_Enum(**flags),
        MemoryPoolType=_Enum(WORKSPACE=0),
        HardwareCompatibilityLevel=_Enum(NONE=0, AMPERE_PLUS=1, SAME_COMPUTE_CAPABILITY=2))


@pytest.fixture()
def patched(monkeypatch, tmp_path):
    import sys

    from gaf_trt.export import tensorrt as builder
    from gaf_trt.export.manifest import RuntimeInfo

    def install(version, **kw):
        calls: list = []
        monkeypatch.setitem(sys.modules, "tensorrt", fake_trt(version, calls, **kw))
        monkeypatch.setattr(builder, "runtime_info",
                            lambda index=None: RuntimeInfo(version, "Fake GPU", "9.0"))
        return calls

    return builder, install


SHAPES = {"x": ((1, 3, 8, 8), (8, 3, 8, 8), (32, 3, 8, 8)), "t": ((1,), (8,), (32,))}


@pytest.mark.parametrize("version", ["10.13.0.35", "11.1.0.4"])
def test_build_plan_uses_the_documented_api(patched, tmp_path, version):
    builder, install = patched
    calls = install(version)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    rec = builder.build_plan(tmp_path / "trunk.onnx", tmp_path / "trunk.plan", SHAPES,
                             {"timing_cache": str(cache), "workspace_gb": 1})
    assert (tmp_path / "trunk.plan").read_bytes() == b"PLAN"
    assert ("network_flags", 1 << 5) in calls  # STRONGLY_TYPED (ignored, still valid, in 11)
    assert ("clear_flag", 7) in calls  # TF32 off: FP32 parity
    assert not [c for c in calls if c[0] == "set_flag"]  # never an FP16 / BF16 flag
    assert ("timing_cache_in", b"old") in calls and cache.read_bytes() == b"cache:old"
    assert ("profile", SHAPES) in calls and ("pool", 1 << 30) in calls
    assert rec["tensorrt"] == version and rec["gpu"]["compute_capability"] == "9.0"
    assert rec["strongly_typed"] and not rec["tf32"]
    assert rec["hardware_compatibility_level"] == "NONE"
    assert not list(tmp_path.glob("*.gaftmp"))  # atomic writes leave no temp files


def test_build_failures_are_reported(patched, tmp_path):
    builder, install = patched
    install("10.13.0.35", parse_ok=False)
    with pytest.raises(builder.PlanBuildError, match=r"cannot parse trunk.onnx: In node 3"):
        builder.build_plan(tmp_path / "trunk.onnx", tmp_path / "p.plan", SHAPES,
                           {"timing_cache": str(tmp_path / "c")})
    install("10.13.0.35", build_ok=False)
    with pytest.raises(builder.PlanBuildError, match="failed to build a plan"):
        builder.build_plan(tmp_path / "trunk.onnx", tmp_path / "p.plan", SHAPES,
                           {"timing_cache": str(tmp_path / "c")})
    assert not (tmp_path / "p.plan").exists()
    with pytest.raises(builder.PlanBuildError, match="'y' is not an input"):
        builder.build_plan(tmp_path / "trunk.onnx", tmp_path / "p.plan",
                           {**SHAPES, "y": ((1,), (1,), (1,))},
                           {"timing_cache": str(tmp_path / "c")})
    with pytest.raises(ConfigError, match="unknown hardware compatibility 'TURING'"):
        builder.build_plan(tmp_path / "trunk.onnx", tmp_path / "p.plan", SHAPES,
                           {"timing_cache": str(tmp_path / "c"),
                            "hardware_compatibility": "turing"})


def test_profiles_from_ranges_and_static_variant(patched, tmp_path):
    from gaf_trt.export.build import ProfileSpec

    builder, install = patched
    calls = install("11.1.0.4", inputs=("x", "t", "classes", "coef"))
    graph = {"group": "fused", "file": "step_velocity.onnx",
             "inputs": [{"name": "x", "shape": ["B", 3, 8, 8]}, {"name": "t", "shape": ["B"]},
                        {"name": "classes", "shape": ["N"]},
                        {"name": "coef", "shape": ["N", 1, 8, 8]}]}
    man = {"graphs": {"step_velocity": graph}, "plans": {}}
    prof = ProfileSpec(min_batch=1, opt_batch=4, max_batch=16, max_classes=4, static_batch=2)
    built = builder.build_all(man, tmp_path, prof, {"timing_cache": str(tmp_path / "c")},
                              lambda m: None)
    assert built == ["step_velocity", "step_velocity.b2n2"]
    dyn, static = [c[1] for c in calls if c[0] == "profile"]
    assert dyn["x"] == ((1, 3, 8, 8), (4, 3, 8, 8), (16, 3, 8, 8))
    assert dyn["classes"] == ((1,), (2,), (4,)) and dyn["coef"][2] == (4, 1, 8, 8)
    assert static["x"] == ((2, 3, 8, 8),) * 3 and static["classes"] == ((2,),) * 3
    assert man["plans"]["step_velocity.b2n2"]["static"] is True
    assert man["plans"]["step_velocity"]["file"] == "step_velocity.plan"
