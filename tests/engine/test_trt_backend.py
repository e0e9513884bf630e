"""The TensorRT backend.

Against the stand-in ``tensorrt`` of tests/trt_standin.py (runs on the CPU; plans built by the
real exporter, executed through ONNX Runtime at the addresses the runtime hands over): the
reference through split and fused plans, the plan's own stream ordered against the caller's,
the device guard, misaligned inputs, every refusal as one line with TensorRT's reason, dtypes
checked at load, one execution context per captured graph, the version- and
hardware-compatible paths, weight-stripped plans refitted from the ONNX weights, and the
version floor.

With ``tensorrt`` and a CUDA GPU (skipped with the reason otherwise): builds the fixture's
plans once, then the reference through split and fused plans (FP32, TF32 off), TensorRT vs
ONNX Runtime through Polygraphy, the static-batch plan, capture of a whole solver loop over
the engine, and the compatibility check on a real plan."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from gaf_trt.errors import ConfigError, GAFError
from tests.export.shared import REF_CKPT, need_onnx
from tests.helpers import rel_err
from tests.trt_standin import FakeCuda, install

need_onnx()

STANDIN = "10.13.0.35"


def _why_not() -> str | None:
    from gaf_trt.engine.trt_runtime import unavailable

    return unavailable()


_REAL_WHY = _why_not()
needs_trt = pytest.mark.skipif(_REAL_WHY is not None,
                               reason=f"TensorRT tests need tensorrt and a CUDA GPU: {_REAL_WHY}")


# --------------------------------------------------------------------------- stand-in


@pytest.fixture(scope="module")
def standin_dir(tmp_path_factory):
    """The fixture checkpoint exported with plans built by the stand-in (dynamic + static)."""
    from gaf_trt.export.build import ExportConfig, ProfileSpec, build_from_onnx, export_engine

    out = tmp_path_factory.mktemp("standin") / "engine"
    prof = ProfileSpec(max_batch=8, max_classes=4, static_batch=2)
    export_engine(ExportConfig(str(REF_CKPT), str(out), profile=prof, onnx_only=True))
    with pytest.MonkeyPatch.context() as mp:  # (torch.export looks for a real tensorrt)
        install(mp, STANDIN)
        res = build_from_onnx(out, prof)
    assert len(res.plans_built) == 10  # 5 graphs x (dynamic, static)
    return out


def _open(folder, cuda, graphs="fused", device="cuda:0", static=False):
    """The trt engine over the stand-in: tensors on the CPU, plans on a fake CUDA device."""
    from gaf_trt.engine.trt_backend import TrtFusedEngine, TrtSplitEngine
    from gaf_trt.engine.graph_engine import open_engine_dir

    man, names = open_engine_dir(folder, graphs)
    cls = TrtFusedEngine if "step_velocity" in names else TrtSplitEngine
    eng = cls(folder, man, names, "cpu")
    eng._load_plans(static, plan_device=torch.device(device), cuda=cuda)
    return eng


@pytest.fixture()
def standin(monkeypatch):
    cuda = FakeCuda()
    return install(monkeypatch, STANDIN, cuda), cuda


@pytest.mark.parametrize("graphs", ["split", "fused"])
def test_standin_runs_the_reference(standin_dir, standin, expected, graphs, capsys):
    from gaf_trt import sample

    eng = _open(standin_dir, standin[1], graphs)
    z = sample(eng, [1, 4, 7], expected["heun_weighted.z0"], weights=[0.5, 0.3, 0.2],
               steps=4, solver="heun")
    assert rel_err(z, expected["heun_weighted.z"]) < 1e-4
    z = sample(eng, [5], expected["endpoint_pure.z0"], steps=5, solver="ier")
    assert rel_err(z, expected["endpoint_pure.z"]) < 1e-4
    assert capsys.readouterr().out == ""


def test_batch_one_time_view_is_copied_to_an_aligned_buffer(standin_dir, standin, ref_model):
    """Batch 1: ``t`` is a view into the solver's time grid, 4·k bytes past an aligned
    address; TensorRT refuses it (set_tensor_address -> False)."""
    from gaf_trt import sample

    trt, cuda = standin
    eng = _open(standin_dir, cuda, "split")
    z0 = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    want = sample(ref_model, [2, 6], z0, weights=[0.5, 0.5], steps=3)
    got = sample(eng, [2, 6], z0, weights=[0.5, 0.5], steps=3)
    assert rel_err(got, want) < 1e-4
    plan = eng.plans["trunk"]
    t = torch.linspace(0.1, 0.9, 9)[3].reshape(1)  # 12 bytes past the grid's start
    assert t.data_ptr() % 256 != 0
    x = torch.randn(1, 3, 8, 8)
    out = plan.execute({"x": x, "t": t, "y": torch.tensor([2])})["features"]
    aligned = plan.execute({"x": x, "t": t.clone(), "y": torch.tensor([2])})["features"]
    assert torch.equal(out, aligned) and out.data_ptr() % 256 == 0
    assert all(c[2] % 256 == 0 for ctx in trt.state.contexts for c in ctx.events
               if c[0] == "address")


def test_engine_stream_is_ordered_against_the_callers(standin_dir, standin):
    trt, cuda = standin
    eng = _open(standin_dir, cuda, "fused")
    x = torch.randn(2, 3, 8, 8)
    eng.composed_velocity(x, torch.full((2,), 0.5), torch.tensor([1, 2]),
                          torch.full((2, 1, 1, 1), 0.5))
    plan = eng.plans["step_velocity"]
    own = plan.stream.cuda_stream
    execs = [c for c in trt.state.calls if c[0] == "execute"]
    assert execs and all(c[2] == own != 0 for c in execs)  # never the default stream
    assert cuda.log == [("wait", own, 0), ("wait", 0, own)]  # before and after the enqueue
    msgs = [m for _, m in plan.logger.messages]
    assert not [m for m in msgs if "default stream" in m]


def test_execute_runs_under_the_plans_device(standin_dir, standin):
    trt, cuda = standin
    eng = _open(standin_dir, cuda, "fused", device="cuda:1")
    assert cuda.current_device == 0  # the caller's current device stays 0
    eng.composed_velocity(torch.randn(2, 3, 8, 8), torch.full((2,), 0.5), torch.tensor([1]),
                          torch.ones(1, 1, 1, 1))
    assert ("deserialize", 1) in trt.state.calls
    assert [c[3] for c in trt.state.calls if c[0] == "execute"] == [1]
    assert cuda.current_device == 0


def test_refusals_are_one_line_errors_with_tensorrts_reason(standin_dir, standin, tmp_path,
                                                            capsys):
    from gaf_trt.engine.trt_backend import TrtPlan
    from gaf_trt.enginedir import EngineDirError

    trt, cuda = standin
    eng = _open(standin_dir, cuda, "fused")
    with pytest.raises(ConfigError, match=r"outside step_velocity.plan's profile .*Parameter "
                                          r"check failed.*--max-batch"):
        eng.composed_velocity(torch.randn(9, 3, 8, 8), torch.full((9,), 0.5),
                              torch.tensor([1]), torch.ones(1, 1, 1, 1))
    bad = tmp_path / "bad.plan"
    bad.write_bytes(b"\0" * 4096)
    with pytest.raises(EngineDirError, match=r"could not deserialise .*Magic tag does not "
                                             r"match.*gaf-trt export --from-onnx") as err:
        TrtPlan(bad, {"file": "bad.plan"}, tmp_path, "cuda:0", cuda=cuda)
    assert "\n" not in str(err.value)
    assert capsys.readouterr().out == ""  # TensorRT's [E] lines were captured, not printed


def test_dtypes_are_checked_against_the_manifest_at_load(standin_dir, monkeypatch):
    from gaf_trt.enginedir import EngineDirError

    cuda = FakeCuda()
    install(monkeypatch, STANDIN, cuda, dtype_override={"v": "HALF"})
    with pytest.raises(EngineDirError, match=r"output 'v' is float16 \(output\) in the plan, "
                                             r"float32 in the manifest"):
        _open(standin_dir, cuda, "fused")


def test_each_captured_graph_gets_its_own_context(standin_dir, standin):
    trt, cuda = standin
    eng = _open(standin_dir, cuda, "fused")
    plan = eng.plans["step_velocity"]

    def step(b):
        return eng.composed_velocity(torch.randn(b, 3, 8, 8), torch.full((b,), 0.5),
                                     torch.tensor([1, 3]), torch.full((2, 1, 1, 1), 0.5))

    step(2)  # warm-up, eager
    with cuda.capture():
        step(2), step(2)  # one captured loop: two calls, one context
    end_first = len(cuda.log)
    step(3)  # eager, other shapes
    with cuda.capture():
        step(3)
    step(1)
    first, second = plan.captured_contexts
    assert len({id(plan.context), id(first), id(second)}) == 3
    assert not [c for c in trt.state.contexts if c.events and c.events[0][-2]]  # none made
    # a capture with no eager call before it finds no spare context: one clear line
    with cuda.capture(), pytest.raises(GAFError, match="without an eager call before it"):
        plan._spare.clear()
        step(2)
    used = {}
    for ctx in trt.state.contexts:
        used[id(ctx)] = ctx.events
    # the first graph's context is never touched after its capture ended
    assert used[id(first)] and all(ev[-1] <= end_first for ev in used[id(first)])
    assert all(ev[-2] for ev in used[id(first)] if ev[0] == "execute")  # only captured calls
    assert not [ev for ev in used[id(plan.context)] if ev[0] == "execute" and ev[-2]]


def test_version_and_hardware_compatible_plans(standin_dir, tmp_path, monkeypatch):
    from gaf_trt.export.build import build_from_onnx
    from gaf_trt.enginedir import EngineCompatibilityError

    copy = tmp_path / "engine"
    shutil.copytree(standin_dir, copy)
    install(monkeypatch, "10.13.0.35")
    build_from_onnx(copy, trt_options={"version_compatible": True,
                                       "hardware_compatibility": "ampere_plus"})
    man = json.loads((copy / "manifest.json").read_text())
    assert man["plans"]["trunk"]["version_compatible"]
    assert man["plans"]["trunk"]["hardware_compatibility_level"] == "AMPERE_PLUS"
    cuda = FakeCuda(capability="8.6", name="Other GPU")  # newer TensorRT, another GPU
    trt = install(monkeypatch, "10.14.1.48", cuda)
    eng = _open(copy, cuda, "fused")
    v = eng.composed_velocity(torch.randn(2, 3, 8, 8), torch.full((2,), 0.5),
                              torch.tensor([1]), torch.ones(1, 1, 1, 1))
    assert torch.isfinite(v).all() and [c for c in trt.state.calls if c[0] == "deserialize"]
    install(monkeypatch, "10.14.1.48", cuda)  # the plain plans are tied to version and GPU
    with pytest.raises(EngineCompatibilityError, match="rebuild the plans on this machine"):
        _open(standin_dir, cuda, "fused")


def test_weight_stripped_plans_are_refitted_from_the_onnx(standin_dir, tmp_path, monkeypatch,
                                                         expected):
    from gaf_trt import sample
    from gaf_trt.export.build import build_from_onnx

    copy = tmp_path / "engine"
    shutil.copytree(standin_dir, copy)
    install(monkeypatch, STANDIN)
    build_from_onnx(copy, trt_options={"strip_plan": True})
    man = json.loads((copy / "manifest.json").read_text())
    assert all(p["weights_stripped"] for p in man["plans"].values())
    stripped = sum((copy / p["file"]).stat().st_size for p in man["plans"].values())
    full = sum((standin_dir / p["file"]).stat().st_size for p in man["plans"].values())
    assert stripped < full
    cuda = FakeCuda()
    trt = install(monkeypatch, STANDIN, cuda)
    eng = _open(copy, cuda, "fused")
    assert {c[1] for c in trt.state.calls if c[0] == "refit"} == {"step_velocity.onnx",
                                                                   "step_anchors.onnx"}
    z = sample(eng, [1, 4, 7], expected["heun_weighted.z0"], weights=[0.5, 0.3, 0.2],
               steps=4, solver="heun")
    assert rel_err(z, expected["heun_weighted.z"]) < 1e-4


def test_too_old_tensorrt_is_refused_in_one_line(standin_dir, monkeypatch):
    from gaf_trt.engine.loader import load_engine

    install(monkeypatch, "10.8.0.43")
    with pytest.raises(GAFError, match=r"TensorRT 10.8.0.43 is too old: .*tensorrt>=10.9"):
        load_engine(standin_dir, backend="trt", device="cuda")


# --------------------------------------------------------------------------- real TensorRT


@pytest.fixture(scope="module")
def trt_dir(tmp_path_factory):
    from gaf_trt.export.build import ExportConfig, ProfileSpec, export_engine

    out = tmp_path_factory.mktemp("trt") / "engine"
    res = export_engine(ExportConfig(str(REF_CKPT), str(out),
                                     profile=ProfileSpec(max_batch=8, max_classes=4,
                                                         static_batch=2)))
    assert len(res.plans_built) == 10  # 5 graphs x (dynamic, static)
    return out


@needs_trt
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


@needs_trt
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


@needs_trt
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


@needs_trt
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


@needs_trt
def test_plan_from_other_gpu_refused_before_deserialising(trt_dir, tmp_path):
    from gaf_trt.engine.loader import load_engine
    from gaf_trt.enginedir import EngineCompatibilityError

    dst = tmp_path / "copy"
    shutil.copytree(trt_dir, dst)
    man = json.loads((dst / "manifest.json").read_text())
    for rec in man["plans"].values():
        rec["gpu"] = {"name": "Imaginary GPU", "compute_capability": "1.0"}
    (dst / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(EngineCompatibilityError, match="rebuild the plans on this machine"):
        load_engine(dst, backend="trt", device="cuda")


@needs_trt
def test_corrupt_plan_is_an_error_not_a_crash(trt_dir, tmp_path):
    from gaf_trt.engine.trt_backend import TrtPlan
    from gaf_trt.enginedir import EngineDirError

    bad = tmp_path / "bad.plan"
    bad.write_bytes(b"\0" * 4096)
    with pytest.raises(EngineDirError, match="could not deserialise"):
        TrtPlan(bad, {"file": "bad.plan"}, tmp_path, "cuda")
