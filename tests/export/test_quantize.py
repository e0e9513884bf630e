"""Quantised engines (int8 / fp8): calibration along solver trajectories, which MatMuls get
Q/DQ, the recipe in the manifest, measured quality against FP32, refusals."""

from __future__ import annotations

import json

import pytest
import torch

from gaf_trt.errors import ConfigError
from gaf_trt.precision import Precision
from tests.export.shared import REF_CKPT, need_onnx, tiny_model

need_onnx()
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

from gaf_trt.export import quantize as q  # noqa: E402
from gaf_trt.export.calibration import (  # noqa: E402
    CALIB_KINDS,
    CALIB_SOLVERS,
    calibration_plan,
    capture,
)
from gaf_trt.export.quantize import graphs as qg  # noqa: E402
from gaf_trt.export.quantize import quality as qq  # noqa: E402
from gaf_trt.export.quantize import smoothquant as qs  # noqa: E402

TINY = q.QuantConfig(samples=6, steps=3, rows=8)


@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory):
    """The fixture checkpoint at int8, S8S8 static (TensorRT's form), split + fused."""
    from gaf_trt.export.build import ExportConfig, export_engine

    out = tmp_path_factory.mktemp("q") / "int8"
    export_engine(ExportConfig(str(REF_CKPT), str(out), precision=Precision.INT8,
                               quant=q.QuantConfig(samples=6, steps=3, rows=8, scheme="s8s8"),
                               onnx_only=True, parity=False))  # parity: tests/export
    return out


def _tiny_int8(tmp_path_factory, name: str, **quant):
    """A tiny random model at int8 (split graphs, no parity, a minimal calibration)."""
    from gaf_trt.export.build import ExportConfig, export_engine
    from gaf_trt.model.checkpoint import save_safetensors

    root = tmp_path_factory.mktemp(name)
    ckpt = save_safetensors(tiny_model(), root / "tiny.safetensors")
    export_engine(ExportConfig(str(ckpt), str(root / name), precision=Precision.INT8,
                               graphs=("split",), parity=False, onnx_only=True,
                               quant=q.QuantConfig(samples=4, steps=2, rows=8, **quant)))
    return root / name


@pytest.fixture(scope="module")
def dynamic_dir(tmp_path_factory):
    return _tiny_int8(tmp_path_factory, "dyn", mode="dynamic")


@pytest.fixture(scope="module")
def u8s8_dir(tmp_path_factory):
    return _tiny_int8(tmp_path_factory, "u8s8", scheme="u8s8")


@pytest.fixture(scope="module")
def fp8_dir(tmp_path_factory):
    from gaf_trt.export.build import ExportConfig, export_engine

    out = tmp_path_factory.mktemp("q") / "fp8"
    export_engine(ExportConfig(str(REF_CKPT), str(out), precision=Precision.FP8, quant=TINY,
                               graphs=("split",), onnx_only=True, parity=False))
    return out


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def _qdq(model):
    return [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]


# --------------------------------------------------------------------------- calibration


def test_plan_covers_every_solver_and_composition_and_is_seeded():
    cfg = tiny_model().config
    plan = calibration_plan(24, cfg, seed=3)
    assert {r.solver for r in plan} == set(CALIB_SOLVERS)
    assert {r.kind for r in plan} == set(CALIB_KINDS)
    assert sum(r.batch for r in plan) == 24
    assert all(0 <= c < cfg.num_classes for r in plan for c in r.classes)
    assert calibration_plan(24, cfg, seed=3) == plan
    assert calibration_plan(24, cfg, seed=4) != plan


def test_capture_sees_every_time_step_of_each_solver():
    from gaf_trt.compose.solvers import SOLVERS

    model = tiny_model()
    steps = 4
    cal = capture(model, 6, steps, seed=0)
    expected_calls = sum(steps * SOLVERS.get(r.solver).evals_per_step for r in cal.runs)
    assert cal.calls == expected_calls
    seen = set(torch.cat(cal.t).unique().tolist())
    for name in CALIB_SOLVERS:
        spec = SOLVERS.get(name)
        grid = spec.grid(steps, t_eps=model.config.t_eps)
        points = grid[:-1] if spec.extra_point else grid  # ODE: the last point is not evaluated
        assert all(any(abs(p - s) < 1e-6 for s in seen) for p in points.tolist()), name
    # fused items: one class each, unit coefficients, equal shapes (histogram calibrators)
    items = cal.fused_items(5, model.config.input_size)
    assert {tuple(it["x"].shape) for it in items} == {(5, *model.config.sample_shape)}
    assert all(it["classes"].shape == (1,) and bool((it["coef"] == 1).all()) for it in items)
    assert sum(1 for _ in cal.split_items(5)) == -(-cal.rows // 5)


def test_quantised_nodes_are_the_block_linears_only(tmp_path):
    from gaf_trt.export.graphs import GRAPH_GROUPS, Limits
    from gaf_trt.export.onnx_export import export_onnx
    from gaf_trt.export.precision import node_scopes

    model = tiny_model()
    trunk, j_head, _ = GRAPH_GROUPS.get("split")(model, Limits(64, 8))
    proto = onnx.load(str(tmp_path / export_onnx(trunk, tmp_path, opset=18, num_classes=4,
                                                  metadata={}).onnx_file))
    names = set(qg.quantizable_nodes(proto))
    by_name = {n.name: n for n in proto.graph.node}
    scopes = sorted(node_scopes(by_name[n])[-2] for n in names)
    assert scopes == ["trunk.blocks.0.attn.proj", "trunk.blocks.0.attn.qkv",
                      "trunk.blocks.0.mlp.fc1", "trunk.blocks.0.mlp.fc2"]
    kept = [n for n in proto.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")
            and n.name not in names]
    assert kept, "attention products, embedders and adaLN stay FP32"
    head = onnx.load(str(tmp_path / export_onnx(j_head, tmp_path, opset=18, num_classes=4,
                                                 metadata={}).onnx_file))
    assert qg.quantizable_nodes(head) == []


def test_smoothquant_rewrite_is_exact_before_quantisation(tmp_path):
    """The inserted per-channel Mul and the rescaled weights leave the FP32 graph's output
    unchanged (to float32 rounding); the activation's channel ranges are flattened."""
    from gaf_trt.export.graphs import GRAPH_GROUPS, Limits
    from gaf_trt.export.onnx_export import export_onnx
    from gaf_trt.export.parity import cpu_session

    model = tiny_model()
    trunk = GRAPH_GROUPS.get("split")(model, Limits(64, 8))[0]
    src = tmp_path / export_onnx(trunk, tmp_path, opset=18, num_classes=4, metadata={}).onnx_file
    cal = capture(model, 4, 3, seed=0)
    act = qs.channel_max(model, cal)
    assert set(act) == {"blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.mlp.fc1",
                        "blocks.0.mlp.fc2"}
    assert qs.smooth_graph(src, tmp_path / "s.onnx", act, 0.8) == 4
    onnx.checker.check_model(str(tmp_path / "s.onnx"))
    item = cal.split_items(6)[0]
    feeds = {k: v.numpy() for k, v in item.items()}
    a = torch.from_numpy(cpu_session(src).run(None, feeds)[0])
    b = torch.from_numpy(cpu_session(tmp_path / "s.onnx").run(None, feeds)[0])
    assert 0 < qq.rel_err(b, a) < 1e-5


# --------------------------------------------------------------------------- int8 engine


def test_int8_manifest_records_the_recipe_and_measured_quality(int8_dir):
    man = _manifest(int8_dir)
    assert man["precision"] == "int8"
    rec = man["quantization"]
    cal = rec["calibration"]
    assert (cal["samples"], cal["steps"], cal["seed"], cal["method"]) == (6, 3, 0, "minmax")
    assert set(cal["solvers"]) == {"euler", "heun", "ier"}
    assert cal["network_calls"] > 0 and rec["versions"]["onnxruntime"]
    assert "LayerNorm" in rec["high_precision"] and rec["weights"] == "per-channel"
    assert rec["graphs"]["trunk"]["quantized_nodes"] == 4 * 2  # depth 2: 4 linears per block
    assert rec["graphs"]["j_head"]["quantized_nodes"] == 0
    quality = rec["quality"]
    assert 0 < quality["velocity"] <= q.ERROR_BOUNDS[Precision.INT8]["velocity"]
    assert 0 < quality["final_state"] <= q.ERROR_BOUNDS[Precision.INT8]["final_state"]
    assert not rec["accepted_over_bound"]


def test_int8_graphs_are_valid_s8s8_qdq_with_per_channel_weights(int8_dir):
    man = _manifest(int8_dir)
    trunk = onnx.load(str(int8_dir / man["graphs"]["trunk"]["file"]))
    onnx.checker.check_model(trunk)
    nodes = _qdq(trunk)
    assert nodes
    inits = {t.name: t for t in trunk.graph.initializer}
    zp_types = {inits[n.input[2]].data_type for n in nodes if len(n.input) > 2}
    assert zp_types == {onnx.TensorProto.INT8}
    per_channel = [n for n in nodes if n.op_type == "DequantizeLinear"
                   and len(inits[n.input[1]].dims) == 1 and inits[n.input[1]].dims[0] > 1]
    assert len(per_channel) == 8  # one per quantised weight
    head = onnx.load(str(int8_dir / man["graphs"]["k_bank"]["file"]))
    assert _qdq(head) == []


def test_int8_engine_samples_on_ort_close_to_fp32_but_not_equal(int8_dir):
    import gaf_trt
    from gaf_trt.model.checkpoint import load_model

    model = load_model(str(REF_CKPT))
    noise = torch.randn(3, *model.config.sample_shape, generator=torch.Generator().manual_seed(7))
    masks = gaf_trt.masks.build("horizontal_2", model.config.input_size, model.config.input_size)
    for graphs in ("split", "fused"):
        engine = gaf_trt.load_engine(int8_dir, backend="ort", device="cpu", graphs=graphs)
        got = gaf_trt.sample(engine, [1, 4], noise, masks=masks, steps=4, solver="euler")
        want = gaf_trt.sample(model, [1, 4], noise, masks=masks, steps=4, solver="euler")
        err = qq.final_state_err(got, want)
        assert 0 < err <= q.ERROR_BOUNDS[Precision.INT8]["final_state"], (graphs, err)


def test_torch_backend_refuses_quantised_engines(int8_dir):
    import gaf_trt
    from gaf_trt.engine.torch_backend import precision_support

    assert precision_support("cpu", Precision.INT8) is not None
    with pytest.raises(ConfigError, match="int8"):
        gaf_trt.load_engine(int8_dir, backend="torch", device="cpu")
    with pytest.raises(ConfigError, match="quantised"):
        _ = Precision.FP8.torch_dtype


def test_bench_rows_pair_int8_engine_with_torch_precisions(int8_dir):
    """torch runs the torch precisions, ort the engine's; every other cell is skipped with
    its reason; a grid in which nothing can run is one error."""
    from gaf_trt.pipeline.bench.grid import BenchGrid, row_pairs

    grid = BenchGrid(ckpt=str(REF_CKPT), engine=str(int8_dir), backends=("torch", "ort"),
                     precisions=(Precision.FP32, Precision.INT8))
    pairs, unusable = row_pairs(grid, "cpu")
    assert pairs == [("torch", Precision.FP32), ("ort", Precision.INT8)]
    assert set(unusable) == {("torch", "int8"), ("ort", "fp32")}
    assert "exported at int8" in unusable["ort", "fp32"]
    with pytest.raises(ConfigError, match="int8"):
        row_pairs(BenchGrid(ckpt=str(REF_CKPT), backends=("torch",),
                            precisions=(Precision.INT8,)), "cpu")
    with pytest.raises(ConfigError, match="exported at int8"):
        row_pairs(BenchGrid(ckpt=str(REF_CKPT), engine=str(int8_dir), backends=("ort",),
                            precisions=(Precision.FP32,)), "cpu")


def test_int8_directory_stores_its_weights_once_under_half_the_fp32_weights(int8_dir):
    """One int8_weights.data that every graph reads (every large initializer external data
    into it), no PyTorch copy, the whole directory verified; <= 0.5x the FP32 weights."""
    from gaf_trt.enginedir.files import external_data_files
    from gaf_trt.export import verify_engine
    from gaf_trt.export.quantize.store import weights_file
    from gaf_trt.export.shared_weights import SHARED_MIN_BYTES, weights_bytes
    from gaf_trt.model.checkpoint import load_model

    man = verify_engine(str(int8_dir))
    shared = weights_file("int8")
    assert man["weights"] is None and not (int8_dir / "model.safetensors").exists()
    assert man["quantization"]["storage"]["file"] == shared
    for name, rec in man["graphs"].items():
        proto = onnx.load(str(int8_dir / rec["file"]), load_external_data=False)
        assert external_data_files(int8_dir, rec["file"], proto) == [shared], name
        inline = [t.name for t in proto.graph.initializer
                  if t.data_location != onnx.TensorProto.EXTERNAL
                  and len(t.raw_data) >= SHARED_MIN_BYTES]
        assert inline == [] and rec["data_file"] == shared, name
    fp32 = weights_bytes(load_model(str(REF_CKPT)))
    stored = (int8_dir / shared).stat().st_size
    assert stored <= 0.5 * fp32, (stored, fp32)
    refs = man["quantization"]["storage"]["referenced_bytes"]
    assert refs > 2 * stored  # trunk and the two fused graphs read the same int8 weights


def test_int8_scheme_is_resolved_for_the_cpu_and_for_tensorrt(monkeypatch):
    from gaf_trt.export.quantize.config import resolve_scheme, resolved

    assert resolve_scheme("auto", tensorrt=False, flags=["avx512_vnni"]) == "u8s8"
    assert resolve_scheme("auto", tensorrt=False, flags=[]) == "s8s8"
    assert resolve_scheme("auto", tensorrt=True, flags=["amx_int8"]) == "s8s8"
    assert resolve_scheme("s8s8", tensorrt=False, flags=["avx512_vnni"]) == "s8s8"
    with pytest.raises(ConfigError, match="TensorRT takes only static, symmetric S8S8"):
        resolve_scheme("u8s8", tensorrt=True)
    with pytest.raises(ConfigError, match="--quant dynamic.*--onnx-only"):
        resolved(q.QuantConfig(mode="dynamic"), Precision.INT8, tensorrt=True)
    r = resolved(q.QuantConfig(mode="dynamic"), Precision.INT8, tensorrt=False)
    assert (r.scheme, r.requested) == ("u8s8", "auto")
    for kw, needle in (({"scheme": "u7s8"}, "--int8-scheme"), ({"mode": "qat"}, "--quant"),
                       ({"mode": "dynamic", "scheme": "s8s8"}, "uint8"),
                       ({"mode": "dynamic", "smoothquant": 0.5}, "--smoothquant")):
        with pytest.raises(ConfigError, match=needle):
            q.QuantConfig(**kw).validate()
    with pytest.raises(ConfigError, match="fp8 is static E4M3"):
        q.QuantConfig(mode="dynamic").check_precision(Precision.FP8)


def test_s8s8_manifest_records_the_scheme_and_the_cpu(int8_dir):
    rec = _manifest(int8_dir)["quantization"]
    assert (rec["mode"], rec["scheme"], rec["scheme_requested"]) == ("static", "s8s8", "s8s8")
    assert rec["tensorrt"] is True and "S8S8" in rec["tool"]
    assert set(rec["cpu"]) == {"model", "int8_dot_flags"}


def _ort_and_openvino_velocity(folder) -> dict[str, torch.Tensor]:
    import gaf_trt

    pytest.importorskip("openvino", reason="openvino is not installed")

    x, t, y = torch.randn(3, 3, 8, 8), torch.rand(3), torch.tensor([0, 3, 1])
    out = {}
    for backend in ("ort", "openvino"):
        engine = gaf_trt.load_engine(folder, backend=backend, device="cpu")
        assert engine.precision == "int8"
        j, k = engine(x, t, y)
        out[backend] = k - j
    return out


def test_u8s8_is_uint8_activations_runs_on_ort_and_openvino_not_tensorrt(u8s8_dir):
    """--int8-scheme u8s8: activations uint8 (asymmetric), weights int8 per channel; the
    manifest says so; ORT and OpenVINO run it; TensorRT (S8S8 only) refuses the directory
    before building anything."""
    from gaf_trt.export.build import build_from_onnx

    rec = _manifest(u8s8_dir)["quantization"]
    assert (rec["scheme"], rec["scheme_requested"], rec["tensorrt"]) == ("u8s8", "u8s8", False)
    assert "U8S8" in rec["tool"] and "asymmetric uint8" in rec["activations"]
    trunk = onnx.load(str(u8s8_dir / "trunk.onnx"), load_external_data=False)
    inits = {t.name: t for t in trunk.graph.initializer}
    zp: dict[str, set[int]] = {"QuantizeLinear": set(), "DequantizeLinear": set()}
    for n in _qdq(trunk):
        if len(n.input) > 2:
            zp[n.op_type].add(inits[n.input[2]].data_type)
    assert zp["QuantizeLinear"] == {onnx.TensorProto.UINT8}  # activations
    assert onnx.TensorProto.INT8 in zp["DequantizeLinear"]  # weights
    out = _ort_and_openvino_velocity(u8s8_dir)
    # measured 1.9e-7 here, 2.3e-4 on the fixture checkpoint's U8S8 graphs (S8S8: ~1e-7)
    assert qq.rel_err(out["openvino"], out["ort"]) < 1e-3
    with pytest.raises(ConfigError, match="U8S8 static.*S8S8"):
        build_from_onnx(u8s8_dir)


def test_dynamic_int8_runs_on_ort_and_openvino_and_is_refused_by_tensorrt(dynamic_dir,
                                                                          monkeypatch):
    """--quant dynamic: MatMulInteger graphs (no Q/DQ), recorded as dynamic U8S8 without
    calibration; ORT and OpenVINO run them close to each other; TensorRT refuses the
    directory (build and load) naming the reason; info shows the recipe."""
    import gaf_trt
    from gaf_trt.enginedir import describe, describe_lines
    from gaf_trt.export.build import build_from_onnx

    man = _manifest(dynamic_dir)
    rec = man["quantization"]
    assert (rec["mode"], rec["scheme"], rec["calibration"]) == ("dynamic", "u8s8", None)
    assert rec["tensorrt"] is False and "quantize_dynamic" in rec["tool"]
    assert rec["quality"]["velocity"] <= q.ERROR_BOUNDS[Precision.INT8]["velocity"]
    trunk = onnx.load(str(dynamic_dir / "trunk.onnx"), load_external_data=False)
    ops = {n.op_type for n in trunk.graph.node}
    assert "MatMulInteger" in ops and not ops & {"QuantizeLinear", "DequantizeLinear"}
    out = _ort_and_openvino_velocity(dynamic_dir)
    assert qq.rel_err(out["openvino"], out["ort"]) < 1e-3  # measured 2.0e-7
    line = next(ln for ln in describe_lines(describe(dynamic_dir)) if ln.startswith("quant"))
    assert "dynamic U8S8" in line and "not for TensorRT" in line
    with pytest.raises(ConfigError, match="S8S8"):
        build_from_onnx(dynamic_dir)
    _fake_gpu(monkeypatch, (9, 0))
    with pytest.raises(ConfigError, match="trt backend cannot run.*S8S8"):
        gaf_trt.load_engine(dynamic_dir, backend="trt", device="cuda")


# --------------------------------------------------------------------------- fp8


def test_fp8_graphs_are_valid_onnx_qdq_in_e4m3(fp8_dir):
    man = _manifest(fp8_dir)
    trunk = onnx.load(str(fp8_dir / man["graphs"]["trunk"]["file"]))
    onnx.checker.check_model(trunk, full_check=True)
    opset = next(o.version for o in trunk.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 19  # float8 Q/DQ
    inits = {t.name: t for t in trunk.graph.initializer}
    zp = {inits[n.input[2]].data_type for n in _qdq(trunk) if len(n.input) > 2}
    assert zp == {onnx.TensorProto.FLOAT8E4M3FN}
    # scales = amax / 448: each weight's largest magnitude lands on float8's largest value
    from onnx import numpy_helper

    weights = [n for n in _qdq(trunk) if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert len(weights) == 8
    for n in weights:
        w8 = numpy_helper.to_array(inits[n.input[0]]).astype("float32")
        assert abs(float(abs(w8).max()) - qg.E4M3_MAX) < 1e-3
    rec = man["quantization"]
    assert rec["calibration"]["method"] == "distribution"
    assert 0 < rec["quality"]["velocity"] <= q.ERROR_BOUNDS[Precision.FP8]["velocity"]


def test_fp8_refused_on_gpu_older_than_ada(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_a: (8, 6))
    with pytest.raises(ConfigError, match="8.9"):
        q.check_fp8_device()
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_a: (9, 0))
    q.check_fp8_device()


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kw, needle", [({"samples": 3}, "--calib-samples"),
                                        ({"samples": 5000}, "--calib-samples"),
                                        ({"steps": 1}, "--calib-steps"),
                                        ({"method": "mse"}, "calibration method"),
                                        ({"seed": -1}, "--calib-seed"),
                                        ({"smoothquant": 0.0}, "--smoothquant"),
                                        ({"smoothquant": 1.5}, "--smoothquant")])
def test_calibration_options_are_bounded(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        q.QuantConfig(**kw).validate()


def test_non_finite_scales_are_refused(tmp_path):
    """A calibration whose activation range overflows float32 gives an infinite scale."""
    from onnx import TensorProto, helper, numpy_helper

    from gaf_trt.export.precision import NAME_SCOPES_KEY

    w = numpy_helper.from_array(torch.randn(4, 4).numpy(), "w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")
    meta = node.metadata_props.add()
    meta.key, meta.value = NAME_SCOPES_KEY, "['blocks.0.mlp.fc1', 'linear']"
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                          [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                              [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(tmp_path / "g.onnx"))
    x = torch.full((2, 4), 3e38)
    x[0] = -3e38
    with pytest.raises(q.QuantizationError, match="non-finite"):
        qg.quantize_graph(tmp_path / "g.onnx", tmp_path / "q.onnx", [{"x": x}], Precision.INT8)
    fine = qg.quantize_graph(tmp_path / "g.onnx", tmp_path / "q2.onnx",
                            [{"x": torch.randn(2, 4)}], Precision.INT8)
    assert fine["quantized_nodes"] == 1 and fine["scales"]["min"] > 0


# --------------------------------------------------------------------------- TensorRT plans


def _fake_gpu(monkeypatch, cc: tuple[int, int]) -> list:
    """The shared TensorRT stand-in (tests/trt_standin.py) on a GPU of compute capability
    ``cc``; returns its call record."""
    from tests.trt_standin import FakeCuda, install

    trt = install(monkeypatch, "11.1.0.4", cuda=FakeCuda(capability=f"{cc[0]}.{cc[1]}"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_a: cc)
    return trt.state.calls


def test_quantised_graphs_build_strongly_typed_plans(monkeypatch, tmp_path, fp8_dir):
    """--from-onnx on a quantised directory: the Q/DQ graphs go to TensorRT as they are
    (strongly typed network, no precision flag), the recipe stays in the manifest; FP8 on a
    GPU older than compute capability 8.9 is refused before anything is built."""
    import shutil

    from gaf_trt.export.build import build_from_onnx

    folder = tmp_path / "fp8"
    shutil.copytree(fp8_dir, folder)
    calls = _fake_gpu(monkeypatch, (8, 6))
    with pytest.raises(ConfigError, match="8.9"):
        build_from_onnx(folder)
    assert not calls and not _manifest(folder)["plans"]
    calls = _fake_gpu(monkeypatch, (9, 0))
    res = build_from_onnx(folder)
    assert res.plans_built == ["trunk", "j_head", "k_bank"]
    assert ("network_flags", 1) in calls  # 1 << STRONGLY_TYPED (0 in 11.x): typed by graph
    assert not [c for c in calls if c[0] == "set_flag"]  # no INT8 / FP8 / FP16 builder flag
    assert [c[1] for c in calls if c[0] == "parse"] == ["trunk.onnx", "j_head.onnx",
                                                        "k_bank.onnx"]
    man = _manifest(folder)
    assert man["precision"] == "fp8" and man["quantization"]["precision"] == "fp8"
    assert set(man["plans"]) == {"trunk", "j_head", "k_bank"}
