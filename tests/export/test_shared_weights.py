"""Engine directories store each precision's weights once: the graphs' initializers are ONNX
external data (location / offset / length) into ``model.safetensors``, which is also the
PyTorch weights the torch backend and the bench's reference row read."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from gaf_trt.precision import Precision
from tests.export.shared import need_onnx, tiny_model
from tests.helpers import rel_err

need_onnx()
onnx = pytest.importorskip("onnx")

GAF_GRAPHS = ("trunk", "j_head", "k_bank", "step_velocity", "step_anchors")


def _external(t) -> dict[str, str]:
    return {e.key: e.value for e in t.external_data}


def _param_digests(model) -> set[str]:
    return {hashlib.sha256(v.detach().float().contiguous().numpy().tobytes()).hexdigest()
            for v in model.state_dict().values() if v.is_floating_point()}


def test_graph_weights_point_into_the_one_weights_file(engine_dir, ref_model):
    from gaf_trt.export.shared_weights import SHARED_MIN_BYTES, weights_bytes

    man = json.loads((engine_dir / "manifest.json").read_text())
    shared = engine_dir / "model.safetensors"
    assert man["weights"] == "model.safetensors" and "model.safetensors" in man["sha256"]
    assert "model.safetensors" in man["files"]
    assert not list(engine_dir.glob("*.onnx.data"))
    data = shared.read_bytes()
    params = _param_digests(ref_model)
    for name in GAF_GRAPHS:
        assert man["graphs"][name]["data_file"] == "model.safetensors"
        graph = onnx.load(str(engine_dir / f"{name}.onnx"), load_external_data=False)
        external = [t for t in graph.graph.initializer
                    if t.data_location == onnx.TensorProto.EXTERNAL]
        inline = [t for t in graph.graph.initializer
                  if t.data_location != onnx.TensorProto.EXTERNAL]
        assert external and all(len(t.raw_data) < SHARED_MIN_BYTES for t in inline)
        for t in external:
            ext = _external(t)
            off, length = int(ext["offset"]), int(ext["length"])
            assert ext["location"] == "model.safetensors" and off + length <= len(data)
            assert hashlib.sha256(data[off:off + length]).hexdigest() in params
    # the file is the state dict once (plus the safetensors header)
    assert weights_bytes(ref_model) <= shared.stat().st_size < weights_bytes(ref_model) + 65536


def test_onnx_runtime_and_torch_read_the_shared_weights(engine_dir, ref_model):
    import onnxruntime as ort

    from gaf_trt.engine.loader import load_engine

    g = torch.Generator().manual_seed(0)
    x, t, y = torch.randn(3, 3, 8, 8, generator=g), torch.tensor([0.2, 0.5, 0.8]), \
        torch.tensor([1, 4, 7])
    with torch.no_grad():
        j_ref, k_ref = ref_model(x, t, y)
    sess = ort.InferenceSession(str(engine_dir / "trunk.onnx"),
                                providers=["CPUExecutionProvider"])
    feats = sess.run(None, {"x": x.numpy(), "t": t.numpy(), "y": y.numpy()})[0]
    assert feats.shape[0] == 3 and bool(torch.isfinite(torch.from_numpy(feats)).all())
    eng = load_engine(engine_dir, backend="ort", device="cpu", graphs="split")
    j, k = eng(x, t, y)
    assert rel_err(j, j_ref) < 1e-4 and rel_err(k, k_ref) < 1e-4
    torch_eng = load_engine(engine_dir, backend="torch", device="cpu")
    j2, k2 = torch_eng(x, t, y)
    assert torch.equal(j2, j_ref) and torch.equal(k2, k_ref)  # the same fp32 weights


def _tiny_specs(model):
    from gaf_trt.export.graphs import GRAPH_GROUPS, Limits

    return GRAPH_GROUPS.get("split")(model, Limits(16, 4))[:1] + \
        GRAPH_GROUPS.get("fused")(model, Limits(16, 4))[:1]  # trunk, step_velocity


@pytest.fixture(scope="module")
def tiny_fp32_graphs(tmp_path_factory):
    """The fp32 ONNX export of :func:`_tiny_specs` of ``tiny_model()`` (seeded: the same
    weights in every call), made once for both precisions: ``(folder, {graph: file})``."""
    from gaf_trt.export.onnx_export import export_onnx

    folder = tmp_path_factory.mktemp("tiny_fp32")
    files = {spec.name: export_onnx(spec, folder, opset=18, num_classes=4,
                                    metadata={}).onnx_file for spec in _tiny_specs(tiny_model())}
    return folder, files


@pytest.mark.parametrize("precision", [Precision.FP16, Precision.BF16])
def test_reduced_graphs_share_reduced_weights(tiny_fp32_graphs, tmp_path, precision):
    import shutil

    from safetensors import safe_open

    from gaf_trt.export.onnx_export import check_by_path, save_model
    from gaf_trt.export.parity import check_graph, parity_sizes
    from gaf_trt.export.precision import reduce_precision
    from gaf_trt.export.shared_weights import ParamIndex, share_graphs, untranspose
    from gaf_trt.model.checkpoint import CONFIG_METADATA_KEY, load_model

    model = tiny_model()
    index = ParamIndex.of(model)
    specs = _tiny_specs(model)
    shutil.copytree(tiny_fp32_graphs[0], tmp_path, dirs_exist_ok=True)  # this case's own copy
    files = {}
    for spec in specs:
        rec_file = tiny_fp32_graphs[1][spec.name]
        proto = onnx.load(str(tmp_path / rec_file))
        assert untranspose(proto, index) > 0
        reduce_precision(proto, precision)
        save_model(proto, tmp_path / rec_file, 2**40)
        files[spec.name] = rec_file
    report = share_graphs(tmp_path, files, model,
                          {CONFIG_METADATA_KEY: model.config.to_json(), "format": "gaf-trt"})
    assert all(r["shared"] > 0 for r in report.values())
    low = torch.float16 if precision is Precision.FP16 else torch.bfloat16
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert dtypes == {torch.float32, low}  # reduced where only reduced nodes read them
    for spec in specs:
        check_by_path(tmp_path / files[spec.name])  # checker + shape inference, by path
        res = check_graph(spec, tmp_path / files[spec.name], precision, 4, parity_sizes(spec))
        if precision is Precision.BF16:  # ONNX Runtime's CPU provider has no BF16 kernels
            assert not res.ran and "cannot run BF16" in res.reason
        else:
            assert res.ran and res.ok, res.describe()
    again = load_model(tmp_path / "model.safetensors")  # still a gaf-trt checkpoint
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([0.3, 0.7]), torch.tensor([0, 3])
    with torch.no_grad():
        want, got = model(x, t, y)[1], again(x, t, y)[1]
    assert 0 < rel_err(got, want) < 2e-2  # the rounded weights, widened to fp32
