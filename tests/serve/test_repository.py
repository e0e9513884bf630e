"""``gaf-trt triton-repo``: the repository's layout, every ``config.pbtxt`` against Triton's
schema, the graphs' external data inside each version folder, atomic replacement of a
previous output, and the one-line refusals of bad input. (Loading it into a real Triton:
test_triton_repo_server.py; its Python models: test_bls.py.)"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gaf_trt.cli import app
from gaf_trt.errors import ConfigError
from gaf_trt.io.files import file_sha256

onnx = pytest.importorskip("onnx", reason="onnx is not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

runner = CliRunner()
LEAVES = ("gaf_trunk", "gaf_j_head", "gaf_k_bank")


def configs(repo: Path) -> dict[str, object]:
    """Every model's config.pbtxt parsed with Triton's schema."""
    return {p.parent.name: text_format.Parse(p.read_text(), model_config_pb2.ModelConfig())
            for p in sorted(repo.glob("*/config.pbtxt"))}


def one_error(r) -> str:
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.output
    return lines[0]


@pytest.fixture(scope="module")
def written(digits_engine, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo") / "models"
    r = runner.invoke(app, ["triton-repo", str(digits_engine), str(repo)])
    assert r.exit_code == 0, r.output
    assert "gaf, gaf_anchors, gaf_trunk, gaf_j_head, gaf_k_bank" in r.output
    return repo


def test_configs_follow_triton_schema_and_the_engine(written, digits_engine):
    man = json.loads((digits_engine / "manifest.json").read_text())
    cfg = configs(written)
    assert set(cfg) == {"gaf", "gaf_anchors", *LEAVES, "gaf_stream"}  # issue 27: + gaf_stream
    assert cfg["gaf"].backend == "python" and cfg["gaf"].max_batch_size == 8
    # answering later: the model's service bounds the requests in flight, not Triton's queue
    # (a bounded queue stalls Triton's hand-over of queued requests by up to 500 ms)
    assert not cfg["gaf"].dynamic_batching.HasField("default_queue_policy")
    assert [i.name for i in cfg["gaf"].input][:2] == ["classes", "weights"]
    assert {o.name for o in cfg["gaf"].output} == {"images", "latents"}
    ens = cfg["gaf_anchors"]
    assert ens.platform == "ensemble" and [o.name for o in ens.output] == ["J", "K"]
    assert [s.model_name for s in ens.ensemble_scheduling.step] == list(LEAVES)
    rows = man["profiles"]["M"][2]
    for leaf, graph in zip(LEAVES, ("trunk", "j_head", "k_bank")):
        c = cfg[leaf]
        assert c.platform == "onnxruntime_onnx" and c.max_batch_size == rows
        assert c.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
        assert c.HasField("dynamic_batching")
        record = man["graphs"][graph]
        assert [i.name for i in c.input] == [s["name"] for s in record["inputs"]]
        for i, spec in zip(c.input, record["inputs"]):
            assert list(i.dims) == (spec["shape"][1:] or [1])
            assert i.HasField("reshape") == (len(spec["shape"]) == 1)
    record = json.loads((written / "gaf" / "1" / "gaf_model.json").read_text())
    assert record["network_model"] == "gaf_anchors" and record["limits"]["max_rows"] == rows
    assert record["config"] == man["config"]
    # issue 27: gaf_stream, decoupled, gaf's inputs, previews then gaf's outputs, same record
    stream = cfg["gaf_stream"]
    assert stream.model_transaction_policy.decoupled and stream.max_batch_size == 1
    assert [i.name for i in stream.input] == [i.name for i in cfg["gaf"].input]
    assert [o.name for o in stream.output] == ["preview", "preview_latents", "preview_step",
                                               "images", "latents"]
    shim = (written / "gaf_stream" / "1" / "model.py").read_text()
    assert "from gaf_trt.serve.bls_stream import StreamModel as TritonPythonModel" in shim
    streamed = json.loads((written / "gaf_stream" / "1" / "gaf_model.json").read_text())
    assert streamed == {**record, "max_queue": 64}


def test_graphs_and_weights_in_each_version_folder(written, digits_engine):
    """model.onnx reads its weights from model.safetensors beside it (hard links of the
    engine's files here: same filesystem); ONNX Runtime runs it from there."""
    data = digits_engine / "model.safetensors"
    for leaf in LEAVES:
        version = written / leaf / "1"
        model = onnx.load(str(version / "model.onnx"), load_external_data=False)
        locations = {kv.value for t in model.graph.initializer for kv in t.external_data
                     if kv.key == "location"}
        assert locations == {"model.safetensors"}
        assert (version / "model.safetensors").stat().st_ino == data.stat().st_ino
    session = ort.InferenceSession(str(written / "gaf_trunk" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    (features,) = session.run(None, {"x": rng.standard_normal((3, 1, 16, 16), np.float32),
                                     "t": np.array([0.2, 0.5, 0.9], np.float32),
                                     "y": np.array([1, 4, 7], np.int64)})
    assert features.shape == (3, 16, 128) and np.isfinite(features).all() and features.std() > 0
    listed = json.loads((written / "gaf_repository.json").read_text())
    assert listed["command"] == "triton-repo" and listed["writer"] == "gaf-trt"
    assert all((written / f).is_file() for f in listed["files"])


def test_rewrite_replaces_the_previous_output_as_a_whole(written, digits_engine, tmp_path):
    """A rerun (python network backend) replaces the repository, and a rerun of that one
    (onnxruntime again) drops the files of the old one it does not write again; nothing is
    left beside it (staging, old copy, lock)."""
    from gaf_trt.serve.repository import RepoOptions, build_repository

    repo = tmp_path / "again"
    shutil.copytree(written, repo)
    build_repository(digits_engine, repo, RepoOptions(network_backend="python"))
    cfg = configs(repo)
    assert all(cfg[leaf].backend == "python" and not cfg[leaf].platform for leaf in LEAVES)
    assert (repo / "gaf_trunk" / "1" / "model.py").is_file()
    build_repository(digits_engine, repo, RepoOptions())
    assert not (repo / "gaf_trunk" / "1" / "model.py").exists()
    assert configs(repo)["gaf_trunk"].platform == "onnxruntime_onnx"
    assert sorted(os.listdir(tmp_path)) == ["again"]


def test_misspelled_fields_and_enums_are_refused():
    from gaf_trt.serve.pbtxt import Enum, to_pbtxt, validate_pbtxt

    good = {"name": "m", "backend": "python", "max_batch_size": 4,
            "input": [{"name": "t", "data_type": Enum("TYPE_FP32"), "dims": [1],
                       "reshape": {"shape": []}}]}
    assert validate_pbtxt(to_pbtxt(good), "m").input[0].name == "t"
    with pytest.raises(ConfigError, match="data_typ"):
        validate_pbtxt(to_pbtxt({**good, "input": [{"name": "t", "data_typ": Enum("TYPE_FP32")}]}),
                       "m")
    with pytest.raises(ConfigError, match="TYPE_FP31"):
        validate_pbtxt(to_pbtxt({**good, "input": [{"name": "t", "data_type": Enum("TYPE_FP31")}]}),
                       "m")


def test_tensorrt_plans_become_tensorrt_plan_models(digits_engine, tmp_path):
    """An engine directory with dynamic plans (stand-in bytes, listed and hashed as the
    exporter does) gives tensorrt_plan models on the GPU; weight-stripped plans are refused."""
    from gaf_trt.serve.repository import RepoOptions, plan_repository

    engine = tmp_path / "engine"
    shutil.copytree(digits_engine, engine)
    man = json.loads((engine / "manifest.json").read_text())
    rows = 32
    for graph in ("trunk", "j_head", "k_bank"):
        (engine / f"{graph}.plan").write_bytes(os.urandom(64))
        shapes = {s["name"]: [[1, *s["shape"][1:]], [8, *s["shape"][1:]], [rows, *s["shape"][1:]]]
                  for s in man["graphs"][graph]["inputs"]}
        man.setdefault("plans", {})[graph] = {
            "graph": graph, "file": f"{graph}.plan", "static": False, "tensorrt": "10.13.0",
            "gpu": {"name": "Fake GPU", "compute_capability": "9.0"},
            "hardware_compatibility_level": "NONE", "version_compatible": False,
            "weights_stripped": False, "shapes": shapes}
        man["files"].append(f"{graph}.plan")
        man["sha256"][f"{graph}.plan"] = file_sha256(engine / f"{graph}.plan")
    (engine / "manifest.json").write_text(json.dumps(man))
    plan = plan_repository(engine, RepoOptions())
    assert plan.backend == "tensorrt" and plan.kind == "gpu"
    leaves = [m for m in plan.models if m.name in LEAVES]  # not gaf_stream (issue 27)
    assert len(leaves) == len(LEAVES)
    for m in leaves:
        assert m.config["platform"] == "tensorrt_plan" and m.config["max_batch_size"] == rows
        assert list(m.files) == ["model.plan"]
        assert m.config["instance_group"][0]["kind"] == "KIND_GPU"
    assert plan.record["limits"]["max_rows"] == rows
    man["plans"]["trunk"]["weights_stripped"] = True
    (engine / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ConfigError, match="weight-stripped"):
        plan_repository(engine, RepoOptions(network_backend="tensorrt"))


def test_bad_input_is_one_error_line(digits_engine, tmp_path):
    engine = str(digits_engine)
    line = one_error(runner.invoke(app, ["triton-repo", str(tmp_path / "nope"),
                                         str(tmp_path / "r")]))
    assert "engine directory not found" in line
    line = one_error(runner.invoke(app, ["triton-repo", engine, str(tmp_path / "r"),
                                         "--network-backend", "tensorflow"]))
    assert "tensorflow" in line and "auto, onnxruntime, tensorrt, python" in line
    line = one_error(runner.invoke(app, ["triton-repo", engine, str(tmp_path / "r"),
                                         "--network-backend", "tensorrt"]))
    assert "no TensorRT plan" in line
    line = one_error(runner.invoke(app, ["triton-repo", engine, str(tmp_path / "r"),
                                         "--max-rows", "65"]))
    assert "65" in line and "64" in line
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "notes.txt").write_text("mine")
    line = one_error(runner.invoke(app, ["triton-repo", engine, str(mixed)]))
    assert "not a gaf-trt triton-repo output" in line
    assert sorted(os.listdir(mixed)) == ["notes.txt"]
    sampled = tmp_path / "sampled"
    sampled.mkdir()
    (sampled / "run.json").write_text(json.dumps({"writer": "gaf-trt", "command": "sample"}))
    assert "gaf-trt sample" in one_error(runner.invoke(app, ["triton-repo", engine,
                                                             str(sampled)]))
    altered = tmp_path / "altered"
    shutil.copytree(digits_engine, altered)
    with open(altered / "k_bank.onnx", "ab") as f:
        f.write(b"\0")
    line = one_error(runner.invoke(app, ["triton-repo", str(altered), str(tmp_path / "r")]))
    assert "altered since export" in line
    assert not (tmp_path / "r").exists()


def test_blocking_execute_keeps_triton_queue_bound():
    """With ``--blocking-execute`` requests wait in Triton's queue: its bound refuses them."""
    from gaf_trt.serve.repository import RepoOptions, solver_config

    blocking = solver_config(RepoOptions(respond_later=False, max_queue=7))
    assert blocking["dynamic_batching"] == {"default_queue_policy": {"max_queue_size": 7}}
    assert solver_config(RepoOptions(max_queue=7))["dynamic_batching"] == {}
