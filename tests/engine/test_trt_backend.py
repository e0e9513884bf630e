"""The TensorRT backend (needs ``tensorrt`` and a CUDA GPU; skipped with the reason
otherwise). Builds the fixture's plans once, then: the reference runs through split and fused
plans (FP32, TF32 off), TensorRT vs ONNX Runtime through Polygraphy, the static-batch plan,
capture of a whole solver loop over the engine, and the compatibility check on a real plan."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.helpers import rel_err
from tests.export.shared import REF_CKPT, need_onnx

need_onnx()


def _why_not() -> str | None:
    from gaf_trt.export.tensorrt import unavailable

    return unavailable()


if _why_not() is not None:
    pytest.skip(f"TensorRT tests need tensorrt and a CUDA GPU: {_why_not()}",
                allow_module_level=True)


@pytest.fixture(scope="module")
def trt_dir(tmp_path_factory):
    from gaf_trt.export.build import ExportConfig, ProfileSpec, export_engine

    out = tmp_path_factory.mktemp("trt") / "engine"
    res = export_engine(ExportConfig(str(REF_CKPT), str(out),
                                     profile=ProfileSpec(max_batch=8, max_classes=4,
                                                         static_batch=2)))
    assert len(res.plans_built) == 10  # 5 graphs x (dynamic, static)
    return out


def test_manifest_records_plans(trt_dir):
    import tensorrt as trt

    man = json.loads((trt_dir / "manifest.json").read_text())
    plan = man["plans"]["trunk"]
    assert plan["tensorrt"] == trt.__version__
    assert plan["gpu"]["name"] == torch.cuda.get_device_name()
    major, minor = torch.cuda.get_device_capability()
    assert plan["gpu"]["compute_capability"] == f"{major}.{minor}"
    assert plan["shapes"]["x"] == [[1, 3, 8, 8], [8, 3, 8, 8], [32, 3, 8, 8]]
    assert plan["tf32"] is False and plan["hardware_compatibility_level"] == "NONE"
    assert man["plans"]["trunk.b2n2"]["static"] is True
    assert "trunk.plan" in man["sha256"]


@pytest.mark.parametrize("graphs", ["split", "fused"])
def test_reference_runs_on_trt(trt_dir, expected, graphs):
    from gaf_trt import sample
    from gaf_trt.engine.loader import load_engine

    eng = load_engine(trt_dir, backend="trt", device="cuda", graphs=graphs)
    z = sample(eng, [1, 4, 7], expected["heun_weighted.z0"].cuda(), weights=[0.5, 0.3, 0.2],
               steps=4, solver="heun")
    assert rel_err(z.cpu(), expected["heun_weighted.z"]) < 1e-4
    z = sample(eng, [5], expected["endpoint_pure.z0"].cuda(), steps=5, solver="ier")
    assert rel_err(z.cpu(), expected["endpoint_pure.z"]) < 1e-4


def test_trt_matches_ort_through_polygraphy(trt_dir):
    pytest.importorskip("polygraphy", reason="polygraphy is not installed")
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner
    from polygraphy.comparator import Comparator, CompareFunc

    g = torch.Generator().manual_seed(0)
    feed = {"x": torch.randn(3, 3, 8, 8, generator=g).numpy(),
            "t": (torch.rand(3, generator=g) * 0.9 + 0.05).numpy(),
            "classes": torch.tensor([2, 7]).numpy(),
            "coef": torch.full((2, 1, 8, 8), 0.5).numpy()}
    runners = [OnnxrtRunner(SessionFromOnnx(str(trt_dir / "step_velocity.onnx"),
                                            providers=["CPUExecutionProvider"])),
               TrtRunner(EngineFromBytes(BytesFromPath(str(trt_dir / "step_velocity.plan"))))]
    results = Comparator.run(runners, data_loader=[feed])
    assert bool(Comparator.compare_accuracy(
        results, compare_func=CompareFunc.simple(rtol=1e-4, atol=1e-4)))


def test_static_plan_and_captured_loop(trt_dir, expected):
    from gaf_trt import ComposedField, Composition, sample
    from gaf_trt.compose.capture import CapturedLoop
    from gaf_trt.engine.loader import load_engine

    z0 = expected["euler_alpha.z0"].cuda()
    dyn = load_engine(trt_dir, backend="trt", device="cuda", graphs="fused")
    static = load_engine(trt_dir, backend="trt", device="cuda", graphs="fused", static=True)
    want = sample(dyn, [0, 6], z0, alpha=0.6, steps=5)
    assert rel_err(want.cpu(), expected["euler_alpha.z"]) < 1e-4
    assert rel_err(sample(static, [0, 6], z0, alpha=0.6, steps=5).cpu(), want.cpu()) < 1e-5
    loop = CapturedLoop(ComposedField(static, Composition.build([0, 6], alpha=0.6)), z0,
                        steps=5, solver="euler")
    assert rel_err(loop(z0).cpu(), want.cpu()) < 1e-5


def test_plan_from_other_gpu_refused_before_deserialising(trt_dir, tmp_path):
    from gaf_trt.engine.loader import load_engine
    from gaf_trt.export.manifest import EngineCompatibilityError

    dst = tmp_path / "copy"
    shutil.copytree(trt_dir, dst)
    man = json.loads((dst / "manifest.json").read_text())
    for rec in man["plans"].values():
        rec["gpu"] = {"name": "Imaginary GPU", "compute_capability": "1.0"}
    (dst / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(EngineCompatibilityError, match="rebuild the plans on this machine"):
        load_engine(dst, backend="trt", device="cuda")


def test_corrupt_plan_is_an_error_not_a_crash(trt_dir, tmp_path):
    from gaf_trt.engine.trt_backend import TrtPlan
    from gaf_trt.export.manifest import EngineDirError

    bad = tmp_path / "bad.plan"
    bad.write_bytes(b"\0" * 4096)
    with pytest.raises(EngineDirError, match="could not deserialise"):
        TrtPlan(bad, {"file": "bad.plan"}, tmp_path)
