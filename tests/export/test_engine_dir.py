"""Engine directory: verification, compatibility check before deserialising, description,
consistent rewrites, bad input."""

from __future__ import annotations

import json
import shutil

import pytest

from gaf_trt.errors import ConfigError, GAFError
from gaf_trt.io.files import file_sha256
from tests.enginedir.shared import plan_record
from tests.export.shared import need_onnx

need_onnx()


@pytest.fixture()
def copy_dir(engine_dir, tmp_path):
    dst = tmp_path / "engine"
    shutil.copytree(engine_dir, dst)
    return dst


def test_verify_ok_then_missing_and_altered(copy_dir):
    from gaf_trt.enginedir import EngineDirError
    from gaf_trt.export import verify_engine

    verify_engine(str(copy_dir))
    (copy_dir / "k_bank.onnx").unlink()
    with pytest.raises(EngineDirError, match="k_bank.onnx is missing"):
        verify_engine(str(copy_dir))


def test_altered_file_refused_by_loader(copy_dir):
    from gaf_trt.engine.loader import load_engine
    from gaf_trt.enginedir import EngineDirError

    with open(copy_dir / "trunk.onnx", "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(EngineDirError, match=r"trunk.onnx was altered since export \(sha256"):
        load_engine(copy_dir, backend="ort", device="cpu", graphs="split")
    load_engine(copy_dir, backend="ort", device="cpu", graphs="fused")  # untouched graphs load


def test_not_an_engine_dir(tmp_path):
    from gaf_trt.engine.loader import load_engine
    from gaf_trt.enginedir import EngineDirError

    with pytest.raises(EngineDirError, match="no manifest.json"):
        load_engine(tmp_path, backend="ort", device="cpu")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(EngineDirError, match="is a file, not an engine directory"):
        load_engine(f, backend="ort", device="cpu")
    with pytest.raises(ConfigError, match="unknown engine backend 'onnx'; valid: auto, trt"):
        load_engine(tmp_path, backend="onnx")


def test_manifest_from_another_gpu_refused_by_trt_loader(copy_dir, monkeypatch):
    """The trt loader checks the manifest against this machine before reading the plan."""
    from gaf_trt.engine import trt_backend, trt_runtime
    from gaf_trt.engine.base import LoadRequest
    from gaf_trt.enginedir import EngineCompatibilityError, RuntimeInfo

    man = json.loads((copy_dir / "manifest.json").read_text())
    for g in ("trunk", "j_head", "k_bank"):
        man["plans"][g] = dict(plan_record(file=f"{g}.plan"), graph=g, static=False)
        (copy_dir / f"{g}.plan").write_bytes(b"a plan of another GPU")
        man["files"].append(f"{g}.plan")  # listed and hashed, as export writes them
        man["sha256"][f"{g}.plan"] = file_sha256(copy_dir / f"{g}.plan")
    (copy_dir / "manifest.json").write_text(json.dumps(man))
    monkeypatch.setattr(trt_runtime, "runtime_info",
                        lambda index=None: RuntimeInfo("10.13.0.35", "NVIDIA L4", "8.9"))
    monkeypatch.setattr(trt_backend, "resolve_device", lambda d: "cuda:0")
    monkeypatch.setattr(trt_backend.TrtPlan, "__init__",
                        lambda *a: pytest.fail("deserialised before the compatibility check"))
    with pytest.raises(EngineCompatibilityError, match="--from-onnx"):
        trt_backend.load_trt(LoadRequest(str(copy_dir), device="cuda", options={"graphs": "split"}))


def test_describe(engine_dir):
    from gaf_trt.export import describe_engine, describe_lines

    info = describe_engine(str(engine_dir), verify=True)
    assert info["network"]["hidden_size"] == 64 and info["verified"]
    assert set(info["graphs"]) >= {"trunk", "step_velocity"}
    assert all(0 <= g["parity_rel"] < 1e-4 for g in info["graphs"].values())
    text = "\n".join(describe_lines(info))
    assert "plans       none" in text and "--from-onnx" in text and "step_velocity" in text


def test_bad_export_options_fail_before_writing(tmp_path, ref_ckpt):
    from gaf_trt.export.build import ExportConfig, ProfileSpec, export_engine

    out = tmp_path / "never"
    cases = [
        (dict(graphs=("split", "trunks")), "unknown graph group 'trunks'"),
        (dict(profile=ProfileSpec(max_classes=0)), "--max-classes must be >= 1, got 0"),
        (dict(profile=ProfileSpec(max_classes=1000)), "--max-classes must be at most 256"),
        (dict(profile=ProfileSpec(max_batch=10 ** 9)), "--max-batch must be at most 4096"),
        (dict(profile=ProfileSpec(static_batch=5000)), "--static-batch must be at most 4096"),
        (dict(profile=ProfileSpec(min_batch=4, opt_batch=2)), "1 <= --min-batch <= --opt-batch"),
        (dict(opset=17), "unsupported opset 17"),
        (dict(graphs=("vae",)), "--graphs vae needs --vae DIR"),
    ]
    for kw, msg in cases:
        with pytest.raises(ConfigError, match=msg.replace("(", r"\(")):
            export_engine(ExportConfig(str(ref_ckpt), str(out), **kw))
        assert not out.exists()
    f = tmp_path / "afile"
    f.write_text("keep")
    with pytest.raises(ConfigError, match="is an existing file, not a folder"):
        export_engine(ExportConfig(str(ref_ckpt), str(f)))
    assert f.read_text() == "keep"
    with pytest.raises(GAFError, match="checkpoint not found"):
        export_engine(ExportConfig(str(tmp_path / "nope.pt"), str(out)))
    assert not out.exists()


def test_from_onnx_without_tensorrt(copy_dir):
    from gaf_trt.engine import trt_runtime
    from gaf_trt.export.build import build_from_onnx

    if trt_runtime.unavailable() is None:
        pytest.skip("TensorRT and a GPU are here: the GPU test builds real plans")
    with pytest.raises(ConfigError, match="cannot build TensorRT plans here: .* GPU machine"):
        build_from_onnx(copy_dir)


def test_from_onnx_rewrites_folder_consistently(copy_dir, monkeypatch):
    """Plans are added beside the verified ONNX graphs (hard links, no copy); the new
    manifest lists and hashes everything. TensorRT itself is replaced by a stub here."""
    from gaf_trt.engine import trt_runtime
    from gaf_trt.export import tensorrt as trt_build
    from gaf_trt.export import verify_engine
    from gaf_trt.export.build import ProfileSpec, build_from_onnx

    def fake_build_all(man, folder, profile, opts, say):
        for name in man["graphs"]:
            (folder / f"{name}.plan").write_bytes(b"plan " + name.encode())
            man["plans"][name] = dict(plan_record(file=f"{name}.plan"), graph=name, static=False)
        return list(man["graphs"])

    monkeypatch.setattr(trt_runtime, "unavailable", lambda: None)
    monkeypatch.setattr(trt_build, "build_all", fake_build_all)
    before = (copy_dir / "trunk.onnx").read_bytes()
    res = build_from_onnx(copy_dir, ProfileSpec(max_batch=8, max_classes=3))
    man = verify_engine(str(copy_dir))
    assert set(res.plans_built) == set(man["graphs"]) == set(man["plans"])
    assert "trunk.plan" in man["files"] and "trunk.onnx" in man["files"]
    assert (copy_dir / "trunk.onnx").read_bytes() == before
    assert man["profiles"]["M"][2] == 24
    assert not [p for p in copy_dir.parent.iterdir() if p.name.endswith(".staging")]


def test_failed_reexport_leaves_previous_engine_intact(copy_dir, ref_ckpt, monkeypatch):
    """An export that fails midway (here: the second graph) changes nothing in the folder."""
    from gaf_trt.export import build, verify_engine

    before = {p.name: p.read_bytes() for p in copy_dir.iterdir() if p.is_file()}
    real = build.export_onnx
    seen = []

    def failing(spec, *a, **kw):
        seen.append(spec.name)
        if len(seen) == 2:
            raise RuntimeError("simulated crash while exporting")
        return real(spec, *a, **kw)

    monkeypatch.setattr(build, "export_onnx", failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build.export_engine(build.ExportConfig(str(ref_ckpt), str(copy_dir), graphs=("split",)))
    after = {p.name: p.read_bytes() for p in copy_dir.iterdir() if p.is_file()}
    assert after == before
    verify_engine(str(copy_dir))
    assert not [p for p in copy_dir.parent.iterdir() if p.name.endswith(".staging")]
