"""One model source (issue 22): every command that takes a model names it with the same
options (names, defaults, help), resolves it by the same rules (an engine directory without
``--backend`` runs ``auto`` and names the choice; ``--precision`` defaults to the engine's
own) and records the artifact's hash. Tiny models, in-process (CliRunner); serve builds its
service only (no server)."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from gaf_trt.cli import app
from gaf_trt.io.files import file_sha256
from gaf_trt.precision import Precision
from tests.export.shared import ref_engine_dir, tiny_model

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")

#: The commands that take a model, and the model options all of them share.
MODEL_COMMANDS = ("sample", "transport", "translate", "generate", "serve")
SHARED = ("--ckpt", "--backend", "--device", "--precision", "--heads", "--no-ema",
          "--trust-pickle", "--threads")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from gaf_trt.model.checkpoint import save_safetensors

    return save_safetensors(tiny_model(), tmp_path_factory.mktemp("ms") / "tiny.safetensors")


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory):
    """An engine directory (split + fused, fp32) ort runs on the CPU: the fixture checkpoint's,
    exported once per test run for the suite (:func:`tests.export.shared.ref_engine_dir`;
    read-only, copied to change it)."""
    return ref_engine_dir(tmp_path_factory.getbasetemp())


@pytest.fixture
def engine16(engine_dir, tmp_path):
    """A copy whose manifest says fp16 (only its precision is read)."""
    eng = tmp_path / "eng16"
    shutil.copytree(engine_dir, eng)
    man = json.loads((eng / "manifest.json").read_text())
    man["precision"] = "fp16"
    (eng / "manifest.json").write_text(json.dumps(man))
    return eng


def _params(command: str) -> dict:
    import typer.main

    cmd = typer.main.get_command(app).commands[command]
    return {p.opts[0]: p for p in cmd.params if getattr(p, "param_type_name", "") == "option"}


# --------------------------------------------------------------------------- options


def test_every_option_of_every_command_has_help():
    import typer.main

    missing = []

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
            return
        missing.extend(f"{' '.join(path)} {p.opts[0]}" for p in cmd.params
                       if getattr(p, "param_type_name", "") == "option"
                       and not (p.help or "").strip())

    walk(typer.main.get_command(app), [])
    assert not missing, missing


def test_model_options_are_the_same_everywhere():
    """Same names (``--engine`` the same option as ``--ckpt``), defaults and help."""
    ref = _params("sample")
    for command in MODEL_COMMANDS:
        params = _params(command)
        for opt in SHARED:
            assert opt in params, (command, opt)
            p, r = params[opt], ref[opt]
            assert (p.opts, p.default, p.help) == (r.opts, r.default, r.help), (command, opt)
        assert params["--vae"].help == ref["--vae"].help, command
    assert "--engine" in ref["--ckpt"].opts and ref["--backend"].default is None
    export = _params("export")
    for opt in ("--heads", "--no-ema", "--trust-pickle"):
        assert export[opt].help == ref[opt].help, opt


def test_export_no_ema_reaches_the_export(tiny_ckpt, tmp_path, monkeypatch):
    import gaf_trt.export.build as build

    seen = {}

    def fake_export(cfg, progress=None):
        seen["cfg"] = cfg
        raise KeyboardInterrupt  # stop before any work

    monkeypatch.setattr(build, "export_engine", fake_export)
    invoke("export", "--ckpt", tiny_ckpt, "--out", tmp_path / "e", "--no-ema", "-q")
    assert seen["cfg"].use_ema is False


# --------------------------------------------------------------------------- resolution


def test_model_source_rules(tiny_ckpt, engine_dir, engine16):
    from gaf_trt.cli.options import model_source_from_cli

    eng = model_source_from_cli(str(engine_dir))
    assert (eng.backend, eng.precision) == ("auto", Precision.FP32)
    assert model_source_from_cli(str(engine16)).precision is Precision.FP16
    ckpt = model_source_from_cli(str(tiny_ckpt))
    assert (ckpt.backend, ckpt.precision) == ("torch", Precision.FP32)
    given = model_source_from_cli(str(engine16), backend="ort", precision=Precision.FP16)
    assert (given.backend, given.precision) == ("ort", Precision.FP16)
    rec = eng.to_record()
    assert rec["ckpt"] == str(engine_dir) and rec["precision"] == "fp32"


def test_sample_engine_dir_runs_auto_and_records_its_hash(engine_dir, tmp_path):
    out = tmp_path / "s"
    r = invoke("sample", "--engine", engine_dir, "--classes", 0, 1, "--alpha", 0.5,
               "--steps", 1, "--batch", 1, "--device", "cpu", "-q", "--out", out)
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "run.json").read_text())
    assert rec["args"]["backend"] == "auto" and rec["backend"] == "ort"
    assert "(chosen by auto)" in r.output
    assert rec["checkpoint"]["sha256"] == file_sha256(engine_dir / "manifest.json")


def test_transport_engine_dir_runs_auto_and_records_its_hash(engine_dir, tmp_path):
    out = tmp_path / "t"
    r = invoke("transport", "--mode", "cycle", "--classes", 0, 1, "--engine", engine_dir,
               "--steps", 1, "--device", "cpu", "-q", "--out", out)
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "transport.json").read_text())
    assert rec["backend_requested"] == "auto" and rec["backend"] == "ort"
    assert rec["args"]["model"]["backend"] == "auto"
    assert rec["checkpoint"]["sha256"] == file_sha256(engine_dir / "manifest.json")
    assert "(chosen by auto)" in r.output


def test_generate_engine_dir_runs_auto_with_batch_50(engine_dir, tmp_path):
    """``--batch 50`` works: the default shard size is the smallest multiple >= 1024."""
    out = tmp_path / "g"
    r = invoke("generate", "--engine", engine_dir, "--per-class", 1, "--batch", 50,
               "--steps", 1, "--device", "cpu", "-q", "--out", out)
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "dataset.json").read_text())
    assert rec["job"]["shard_size"] == 1050 and rec["job"]["backend"] == "auto"
    assert rec["job"]["checkpoint"]["sha256"] == file_sha256(engine_dir / "manifest.json")
    assert "backend ort (chosen by auto)" in r.output


def test_generate_shard_size_default_and_check():
    from gaf_trt.errors import ConfigError
    from gaf_trt.generate import GenerateConfig
    from gaf_trt.generate.job import check_bounds

    assert [GenerateConfig(batch=b, per_class=1).shard_size for b in (50, 64, 1, 4096)] == \
        [1050, 1024, 1024, 4096]
    check_bounds(GenerateConfig(batch=50, shard_size=1000, per_class=1))
    with pytest.raises(ConfigError, match="--shard-size 1001 must be a multiple of --batch 50"):
        check_bounds(GenerateConfig(batch=50, shard_size=1001, per_class=1))


@pytest.fixture
def no_server(monkeypatch):
    """``serve`` up to its service: no ports, no shared memory, no Triton."""
    import signal

    from gaf_trt.serve import host, pytriton_patch
    from gaf_trt.serve import triton as tr

    seen = {}
    monkeypatch.setattr(host, "check_port_free", lambda *a, **k: None)
    monkeypatch.setattr(host, "check_shm", lambda *a, **k: None)
    monkeypatch.setattr(pytriton_patch, "pytriton_missing", lambda: None)
    def fake_serve(service, config, stop, ready, decode=None):
        seen.update(service=service, decode=decode)

    monkeypatch.setattr(tr, "serve_until_stopped", fake_serve)
    monkeypatch.setattr(signal, "signal", lambda *a: None)
    return seen


def test_serve_engine_dir_runs_auto(engine_dir, no_server):
    r = invoke("serve", "--engine", engine_dir, "--device", "cpu", "--threads", 1)
    assert r.exit_code == 0, r.output
    network = no_server["service"].scheduler.network
    assert network.name == "ort"
    assert {s.get_session_options().intra_op_num_threads
            for s in network.sessions.values()} == {1}  # serve's --threads: the shared one
    assert "backend ort (chosen by auto)" in r.output


def test_serve_precision_defaults_to_the_engines(engine16, no_server, monkeypatch):
    import gaf_trt.pipeline.source as source

    seen = {}

    def fake_load(src, **kw):
        seen["src"] = src
        raise KeyboardInterrupt  # the source is all this test needs

    monkeypatch.setattr(source, "load_source", fake_load)
    invoke("serve", "--engine", engine16, "--device", "cpu", "--no-ema", "--heads", 2)
    src = seen["src"]
    assert (src.backend, src.precision) == ("auto", Precision.FP16)
    assert (src.use_ema, src.num_heads) == (False, 2)


def test_bench_json_records_the_artifacts_hash(engine_dir, tiny_ckpt, tmp_path, monkeypatch):
    """Every row of ``bench --json`` names the artifacts' hashes (the grid itself is stubbed:
    bench's own tests measure)."""
    import gaf_trt.pipeline.bench as bench
    import gaf_trt.pipeline.bench.report as report

    seen = {}
    monkeypatch.setattr(bench, "run_bench", lambda grid, progress=None: [])
    monkeypatch.setattr(report, "rich_table", lambda records: "")
    monkeypatch.setattr(report, "write_records",
                        lambda path, records, artifacts=None: seen.setdefault("a", artifacts))
    r = invoke("bench", "--ckpt", tiny_ckpt, "--engine", engine_dir, "--backend", "ort",
               "--device", "cpu", "-q", "--json", tmp_path / "b.json")
    assert r.exit_code == 0, r.output
    assert seen["a"]["engine"]["sha256"] == file_sha256(engine_dir / "manifest.json")
    assert seen["a"]["ckpt"]["sha256"] == file_sha256(tiny_ckpt)


def test_serve_vae_decodes_a_latent_models_images(latent_ckpt, tiny_vae_dir, no_server):
    """``serve --vae``: the images output of a latent model is its latents decoded (the
    rounding of ``gaf-trt sample``'s decoded pictures); without it, latents only."""
    import numpy as np

    from gaf_trt.model.vae import load_vae
    from gaf_trt.serve import ServeRequest, to_images
    from gaf_trt.serve.triton import GafTritonServer, ServerConfig

    r = invoke("serve", "--ckpt", str(latent_ckpt), "--vae", str(tiny_vae_dir), "--device", "cpu")
    assert r.exit_code == 0, r.output
    service, decode = no_server["service"], no_server["decode"]
    assert decode is not None
    service.start()
    try:
        state = service.generate(ServeRequest(classes=["cat"], steps=2, batch=2), timeout=120)
        out = GafTritonServer(service, ServerConfig(), decode)._outputs([state])
    finally:
        service.close()
    vae = load_vae(str(tiny_vae_dir), scale=service.scheduler.config.vae_scale, device="cpu")
    want = to_images(vae.decode(state))
    assert want.shape == (2, 32, 32, 3) and np.array_equal(out["images"][0], want)
    assert np.array_equal(out["latents"][0], state.numpy())

    r = invoke("serve", "--ckpt", str(latent_ckpt), "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert no_server["decode"] is None and "serving latents only" in r.output


# --------------------------------------------------------------------------- --threads


def test_threads_reach_every_backend(engine_dir, tiny_ckpt):
    """``--threads`` from the shared bundle: ONNX Runtime's session options, OpenVINO's
    compiled graph, torch's intra-op threads."""
    import torch

    from gaf_trt.cli.options import model_source_from_cli
    from gaf_trt.pipeline.source import load_source

    def load(artifact, backend, threads=3):
        src = model_source_from_cli(str(artifact), backend, "cpu", threads=threads)
        assert src.to_record()["options"] == {"threads": threads}
        return load_source(src, decoder=False).network

    ort_net = load(engine_dir, "ort")
    assert {s.get_session_options().intra_op_num_threads
            for s in ort_net.sessions.values()} == {3}
    before = torch.get_num_threads()
    try:
        assert load(tiny_ckpt, "torch").name == "torch" and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)  # the suite's one thread per worker (tests/conftest.py)
    pytest.importorskip("openvino", reason="openvino is not installed")
    ov_net = load(engine_dir, "openvino", threads=1)  # OpenVINO caps it at the cores here
    ov_net(*_rows(ov_net.config))
    req = next(iter(ov_net.compiled["trunk"].requests.values()))
    assert int(req.get_compiled_model().get_property("INFERENCE_NUM_THREADS")) == 1


def _rows(cfg, m=2):
    import torch

    return (torch.randn(m, *cfg.sample_shape), torch.rand(m),
            torch.randint(0, cfg.num_classes, (m,)))


def test_threads_recorded_and_bad_values_refused(engine_dir, tmp_path, no_server):
    r = invoke("sample", "--engine", engine_dir, "--backend", "ort", "--device", "cpu",
               "--threads", 1, "--classes", 0, "--steps", 1, "--batch", 1, "-q",
               "--out", tmp_path / "s")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "s" / "run.json").read_text())["args"]["options"] == \
        {"threads": 1}
    extra = {"translate": ("--image", tmp_path / "none.png", "--source", 0, "--target", 1),
             "transport": ("--mode", "cycle", "--out", tmp_path / "t"), "serve": ()}
    for command in MODEL_COMMANDS:
        more = extra.get(command, ("--out", tmp_path / command))
        r = invoke(command, "--threads", -2, *more)
        assert r.exit_code == 2, (command, r.output)
        assert r.output.strip().splitlines() == [
            "error: --threads must be 0 (the runtime's default) or a positive integer up to "
            "1024, got -2"], (command, r.output)
