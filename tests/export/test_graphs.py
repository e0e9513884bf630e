"""ONNX export of every graph: validity, metadata, dynamic axes, parity, external data."""

from __future__ import annotations

import json

import pytest
import torch

from gaf_trt.errors import ConfigError
from gaf_trt.precision import Precision
from tests.export.shared import need_onnx, tiny_model

need_onnx()
onnx = pytest.importorskip("onnx")


def test_manifest_records_everything(engine_dir, ref_ckpt):
    from gaf_trt.io.files import file_sha256

    man = json.loads((engine_dir / "manifest.json").read_text())
    assert set(man["graphs"]) == {"trunk", "j_head", "k_bank", "step_velocity", "step_anchors"}
    assert man["precision"] == "fp32" and man["opset"] == 18
    assert man["exporter"]["torch"] == torch.__version__
    assert man["exporter"]["onnx"] == onnx.__version__
    assert man["source"]["sha256"] == file_sha256(ref_ckpt)
    assert man["config"]["hidden_size"] == 64 and man["config"]["num_classes"] == 10
    assert man["profiles"]["M"] == [1, 8, 64] and man["profiles"]["N"] == [1, 2, 4]
    assert set(man["files"]) == set(man["sha256"])
    for name in man["files"]:
        assert man["sha256"][name] == file_sha256(engine_dir / name)
    trunk = man["graphs"]["trunk"]
    assert [i["name"] for i in trunk["inputs"]] == ["x", "t", "y"]
    assert trunk["inputs"][2] == {"name": "y", "shape": ["M"], "dtype": "int64"}
    assert trunk["outputs"][0]["shape"] == ["M", 16, 64]
    assert man["plans"] == {}  # no TensorRT here


def test_graphs_are_valid_with_config_metadata(engine_dir):
    from gaf_trt.model.config import GAFConfig

    man = json.loads((engine_dir / "manifest.json").read_text())
    for name, rec in man["graphs"].items():
        path = engine_dir / rec["file"]
        onnx.checker.check_model(str(path))
        model = onnx.load(str(path), load_external_data=False)
        meta = {p.key: p.value for p in model.metadata_props}
        assert GAFConfig.from_json(meta["gaf_config"]).to_dict() == man["config"]
        assert model.opset_import[0].version == 18 or any(
            o.version == 18 for o in model.opset_import if o.domain in ("", "ai.onnx"))
        first = model.graph.input[0].type.tensor_type.shape.dim[0].dim_param
        assert first in ("M", "B"), name  # dynamic batch axis, named


def test_parity_recorded_and_within_bound(engine_dir):
    man = json.loads((engine_dir / "manifest.json").read_text())
    for name, rec in man["graphs"].items():
        par = rec["parity"]
        assert par["ran"] and par["ok"] and par["bound"] == 1e-4
        assert len(par["sizes"]) == 2
        for out in par["outputs"]:
            assert 0 <= out["rel"] < 1e-4, (name, out)


def test_parity_failure_is_loud(engine_dir, ref_model):
    """A graph that does not match its module fails with per-output abs / rel errors."""
    import copy

    from gaf_trt.export.graphs import GRAPH_GROUPS, Limits
    from gaf_trt.export.parity import ParityError, check_graph, parity_sizes, require

    other = copy.deepcopy(ref_model)
    with torch.no_grad():
        other.twins.K.bias.add_(0.5)
    spec = next(s for s in GRAPH_GROUPS.get("split")(other, Limits(8, 4)) if s.name == "k_bank")
    res = check_graph(spec, engine_dir / "k_bank.onnx", Precision.FP32, 10, parity_sizes(spec))
    assert not res.ok and res.worst_rel > 1e-4
    with pytest.raises(ParityError, match=r"k_bank \(fp32, bound 0.0001 rel\): K: max abs "):
        require([res])


def test_parity_without_polygraphy_names_the_extra(monkeypatch, tmp_path):
    """Polygraphy is an extra: export refuses before writing (naming it and --no-parity), and
    only ``export.runners`` imports it at the top (the package imports without it)."""
    import ast
    import sys
    from pathlib import Path

    from gaf_trt.errors import ConfigError
    from gaf_trt.export.build import ExportConfig, export_engine

    monkeypatch.setitem(sys.modules, "polygraphy", None)  # import polygraphy fails
    with pytest.raises(ConfigError, match=r"export parity check \(or give --no-parity\) needs "
                       r"Polygraphy: .* \(pip install 'gaf-trt\[compare\]'\)"):
        export_engine(ExportConfig("digits", str(tmp_path / "e")))
    assert not (tmp_path / "e").exists()
    top = Path(__file__).resolve().parents[2] / "gaf_trt"
    eager = sorted(str(p.relative_to(top)) for p in top.rglob("*.py")
                   if any(isinstance(n, (ast.Import, ast.ImportFrom))
                          and ("polygraphy" in ast.unparse(n) or "export.runners" in
                               ast.unparse(n)) for n in ast.parse(p.read_text()).body))
    assert eager == ["export/runners.py"]


def _export_one(tmp_path, model, name, **kw):
    from gaf_trt.export.graphs import GRAPH_GROUPS, Limits
    from gaf_trt.export.onnx_export import export_onnx

    group = "split" if name in ("trunk", "j_head", "k_bank") else "fused"
    spec = next(s for s in GRAPH_GROUPS.get(group)(model, Limits(64, 8)) if s.name == name)
    rec = export_onnx(spec, tmp_path, opset=kw.pop("opset", 18),
                      num_classes=model.config.num_classes, metadata={"k": "v"}, **kw)
    return spec, rec


def test_external_data_when_over_threshold(tmp_path):
    """Forcing the threshold low writes the weights beside the graph; it still checks,
    shape-infers by path and runs."""
    from gaf_trt.export.parity import check_graph, parity_sizes

    model = tiny_model()
    spec, rec = _export_one(tmp_path, model, "k_bank", external_threshold=0)
    assert rec.data_file == "k_bank.onnx.data"
    data = tmp_path / rec.data_file
    assert data.stat().st_size >= model.twins.K.weight.numel() * 4
    graph = onnx.load(str(tmp_path / rec.onnx_file), load_external_data=False)
    weight = max(graph.graph.initializer, key=lambda t: onnx.numpy_helper.to_array(
        t, base_dir=str(tmp_path)).size)  # the K bank [Nc, D, P]
    assert list(weight.dims) == list(model.twins.K.weight.shape)
    assert weight.data_location == onnx.TensorProto.EXTERNAL and not weight.raw_data
    res = check_graph(spec, tmp_path / rec.onnx_file, Precision.FP32, 4, parity_sizes(spec))
    assert res.ran and res.worst_rel < 1e-4
    (tmp_path / "inline").mkdir()
    _, inline = _export_one(tmp_path / "inline", model, "k_bank")
    assert inline.data_file is None and not (tmp_path / "inline" / "k_bank.onnx.data").exists()


def test_opset_23_uses_attention_nodes(tmp_path):
    from gaf_trt.export.parity import check_graph, parity_sizes

    model = tiny_model()
    spec, rec = _export_one(tmp_path, model, "trunk", opset=23)
    graph = onnx.load(str(tmp_path / rec.onnx_file))
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("Attention") == model.config.depth
    res = check_graph(spec, tmp_path / rec.onnx_file, Precision.FP32, 4, parity_sizes(spec))
    assert res.worst_rel < 1e-4


def test_bad_opset_and_groups():
    from gaf_trt.export.graphs import parse_groups
    from gaf_trt.export.onnx_export import check_opset

    with pytest.raises(ConfigError, match="unsupported opset 17; valid: 18, 23"):
        check_opset(17)
    with pytest.raises(ConfigError, match="unknown graph group 'tronk'; valid: split, fused, vae"):
        parse_groups("split,tronk")
    assert parse_groups("fused, split,fused") == ("fused", "split")
