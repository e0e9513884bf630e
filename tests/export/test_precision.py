"""FP16 / BF16 graphs: FP32 islands, FP32 I/O, measured error against PyTorch FP32."""

from __future__ import annotations

import pytest

from gaf_trt.precision import Precision
from tests.export.shared import need_onnx, tiny_model

need_onnx()
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxconverter_common", reason="onnxconverter-common is not installed")


@pytest.fixture(scope="module")
def fused_fp32(tmp_path_factory):
    from gaf_trt.export.graphs import GRAPH_GROUPS, Limits
    from gaf_trt.export.onnx_export import export_onnx

    folder = tmp_path_factory.mktemp("prec")
    model = tiny_model()
    spec = GRAPH_GROUPS.get("fused")(model, Limits(64, 8))[0]  # step_velocity
    rec = export_onnx(spec, folder, opset=18, num_classes=4, metadata={})
    return spec, folder / rec.onnx_file


def _types(model):
    """Element type of every named value (inputs, outputs, value_info, initializers)."""
    out = {v.name: v.type.tensor_type.elem_type
           for v in (*model.graph.input, *model.graph.output, *model.graph.value_info)}
    out.update({t.name: t.data_type for t in model.graph.initializer})
    return out


def _convert(path, precision):
    from gaf_trt.export.precision import reduce_precision

    return reduce_precision(onnx.load(str(path)), precision)


def test_fp16_islands_and_io(fused_fp32, tmp_path):
    from onnx import TensorProto

    spec, path = fused_fp32
    half, report = _convert(path, Precision.FP16)
    onnx.checker.check_model(half)
    assert report.reduced_nodes > 0 and report.fp32_nodes > 0 and report.casts_added > 0
    inferred = onnx.shape_inference.infer_shapes(half)
    types = _types(inferred)
    for v in (*half.graph.input, *half.graph.output):  # I/O stays FP32 / int64
        assert v.type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.INT64)
    kept = {"LayerNormalization", "Softmax", "Sin", "Cos"}
    seen = set()
    for node in inferred.graph.node:
        if node.op_type in kept:
            seen.add(node.op_type)
            assert types.get(node.input[0]) == TensorProto.FLOAT, node.name
    assert seen == kept
    # the adaLN modulation linears keep FP32 weights; attention / MLP weights are FP16
    inits = {t.name: t.data_type for t in half.graph.initializer}
    ada = [n for n in inits if "adaLN_modulation" in n]
    mlp = [n for n in inits if "mlp.fc1" in n or "qkv" in n]
    assert ada and all(inits[n] == TensorProto.FLOAT for n in ada)
    assert mlp and all(inits[n] == TensorProto.FLOAT16 for n in mlp)
    t_mlp = [n for n in inits if "t_embedder" in n]
    assert t_mlp and all(inits[n] == TensorProto.FLOAT for n in t_mlp)
    # no value makes an FP16 round trip between two FP32 nodes
    prod = {o: n for n in half.graph.node for o in n.output}
    for n in half.graph.node:
        src = prod.get(n.input[0]) if n.input else None
        if n.op_type == "Cast" and src is not None and src.op_type == "Cast":
            raise AssertionError(f"cast chain {src.name} -> {n.name}")


def test_fp16_error_measured_against_torch(fused_fp32, tmp_path):
    """FP16 graph vs PyTorch FP32 on ONNX Runtime CPU: small but not zero, within bound."""
    from gaf_trt.export.parity import PARITY_BOUNDS, check_graph, parity_sizes

    spec, path = fused_fp32
    half, _ = _convert(path, Precision.FP16)
    onnx.save(half, str(tmp_path / "v16.onnx"))
    res = check_graph(spec, tmp_path / "v16.onnx", Precision.FP16, 4, parity_sizes(spec))
    fp32 = check_graph(spec, path, Precision.FP32, 4, parity_sizes(spec))
    assert res.ran and res.ok
    assert fp32.worst_rel < res.worst_rel < PARITY_BOUNDS[Precision.FP16]


def test_bf16_graph_valid_and_parity_reported(fused_fp32, tmp_path):
    from onnx import TensorProto

    from gaf_trt.export.parity import check_graph, parity_sizes

    spec, path = fused_fp32
    bf, report = _convert(path, Precision.BF16)
    onnx.checker.check_model(bf)
    kinds = {t.data_type for t in bf.graph.initializer}
    assert TensorProto.BFLOAT16 in kinds and TensorProto.FLOAT16 not in kinds
    assert report.reduced_nodes > 0
    onnx.save(bf, str(tmp_path / "vbf.onnx"))
    res = check_graph(spec, tmp_path / "vbf.onnx", Precision.BF16, 4, parity_sizes(spec))
    if res.ran:  # an onnxruntime with BF16 CPU kernels: then it must meet the bound
        assert res.ok, res.describe()
    else:
        assert "BF16" in res.reason
