"""``gaf-trt export`` through CliRunner (and one real subprocess for the error path)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from gaf_trt.cli import app
from tests.export.shared import need_onnx, tiny_model

need_onnx()
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def latent_ckpt(tmp_path_factory):
    from gaf_trt.model.checkpoint import save_safetensors

    model = tiny_model(in_channels=4, input_size=4, mode="latent")
    return save_safetensors(model, tmp_path_factory.mktemp("lat") / "latent.safetensors")


def test_export_latent_checkpoint_with_vae(latent_ckpt, tiny_vae_dir, tmp_path):
    out = tmp_path / "eng"
    r = invoke("export", "--ckpt", latent_ckpt, "--out", out, "--vae", tiny_vae_dir,
               "--graphs", "split,vae", "--max-batch", 8, "--max-classes", 3)
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert "4 graph(s) (trunk, j_head, k_bank, vae_decoder), fp32, parity rel <=" in lines[0]
    from gaf_trt.engine.trt_runtime import unavailable

    if unavailable() is not None:  # no TensorRT here: ONNX + manifest, and one line saying so
        assert len(lines) == 2 and "need a GPU machine with TensorRT" in lines[1]
        assert "--from-onnx" in lines[1]
    man = json.loads((out / "manifest.json").read_text())
    assert man["config"]["mode"] == "latent" and man["vae"]["source"] == str(tiny_vae_dir)
    vae = man["graphs"]["vae_decoder"]
    assert vae["inputs"][0]["shape"] == ["B", 4, 4, 4]
    assert vae["outputs"][0]["shape"] == ["B", 3, 32, 32]
    assert vae["parity"]["ok"] and vae["parity"]["outputs"][0]["rel"] < 1e-4
    assert man["profiles"]["M"] == [1, 8, 24]
    assert {"trunk.onnx", "vae_decoder.onnx", "model.safetensors"} <= set(man["files"])
    from gaf_trt.export import describe_engine

    assert set(describe_engine(str(out), verify=True)["graphs"]) == set(man["graphs"])
    _decoder_matches_torch(out, tiny_vae_dir)


def _decoder_matches_torch(out, vae_dir):
    """The exported decoder (ONNX Runtime) against diffusers in PyTorch, same latents."""
    import torch

    from gaf_trt.engine.loader import load_vae_decoder
    from gaf_trt.model.vae import load_vae
    from tests.helpers import rel_err

    z = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    got = load_vae_decoder(out, backend="ort", device="cpu").decode(z)
    want = load_vae(vae_dir).decode(z)
    assert got.shape == (2, 3, 32, 32)
    assert rel_err(got, want) < 1e-4


@pytest.mark.parametrize("args,msg", [
    (["--graphs", "split,bogus"], "unknown graph group 'bogus'; valid: split, fused, vae"),
    (["--max-classes", "0"], "--max-classes must be >= 1, got 0"),
    (["--opset", "17"], "unsupported opset 17; valid: 18, 23"),
    (["--graphs", "vae"], "--graphs vae needs --vae DIR"),
    (["--int8-scheme", "u8s8"], "--int8-scheme and --quant apply to --precision int8"),
    (["--precision", "int8", "--int8-scheme", "u7s8"], "--int8-scheme must be one of auto"),
    (["--precision", "int8", "--quant", "qat"], "--quant must be one of static, dynamic"),
    (["--precision", "fp8", "--quant", "dynamic"], "fp8 is static E4M3"),
])
def test_bad_options_one_line(ref_ckpt, tmp_path, args, msg):
    out = tmp_path / "eng"
    r = invoke("export", "--ckpt", ref_ckpt, "--out", out, *args)
    assert r.exit_code == 2
    assert msg in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_vae_for_a_pixel_model_is_refused(ref_ckpt, tiny_vae_dir, tmp_path):
    r = invoke("export", "--ckpt", ref_ckpt, "--out", tmp_path / "e", "--vae", tiny_vae_dir,
               "--graphs", "vae")
    assert r.exit_code == 2 and "has 4 latent channels but the model has 3" in r.output
    assert not (tmp_path / "e").exists()


def test_out_is_a_file_and_missing_arguments(ref_ckpt, tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    r = invoke("export", "--ckpt", ref_ckpt, "--out", f)
    assert r.exit_code == 2 and "is an existing file, not a folder" in r.output
    r = invoke("export", "--out", tmp_path / "e")
    assert r.exit_code == 2 and "give --ckpt CKPT and --out DIR" in r.output
    r = invoke("export", "--from-onnx", tmp_path, "--ckpt", ref_ckpt)
    assert r.exit_code == 2 and "do not give --ckpt" in r.output


def test_from_onnx_on_non_engine_dir_subprocess(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gaf_trt.cli", "export", "--from-onnx",
                        str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no manifest.json" in err[0]
