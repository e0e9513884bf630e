"""Latent checkpoints decode through a diffusers AutoencoderKL given by --vae."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from gaf_trt.cli import app

pytest.importorskip("diffusers", reason="diffusers is not installed")

runner = CliRunner()


def test_latent_sample_decodes_through_vae(latent_ckpt, tiny_vae_dir, tmp_path):
    from PIL import Image

    r = runner.invoke(app, ["sample", "--ckpt", str(latent_ckpt), "--vae", str(tiny_vae_dir),
                            "--classes", "cat", "dog", "--mask-type", "vertical_2", "--steps", "2",
                            "--batch", "1", "--out", str(tmp_path), "-q", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    with Image.open(tmp_path / "pure_0.png") as im:
        assert im.mode == "RGB" and min(im.size) >= 128  # 32x32 decoded image, upscaled
    rec = json.loads((tmp_path / "run.json").read_text())
    assert rec["model"]["mode"] == "latent" and rec["model"]["vae_scale"] == 0.5


def test_decoder_uses_checkpoint_scale(tiny_vae_dir):
    from gaf_trt.model.vae import load_vae

    assert load_vae(tiny_vae_dir, scale=0.5).scale == 0.5
    assert load_vae(tiny_vae_dir).scale == pytest.approx(0.18215)  # the VAE config's factor


def test_latent_without_vae_is_refused(latent_ckpt, tmp_path):
    r = runner.invoke(app, ["sample", "--ckpt", str(latent_ckpt), "--classes", "0",
                            "--out", str(tmp_path / "o"), "-q", "--device", "cpu"])
    assert r.exit_code == 2 and "give the VAE with --vae" in r.output
    assert not (tmp_path / "o").exists()


def test_missing_vae_dir(latent_ckpt, tmp_path):
    r = runner.invoke(app, ["sample", "--ckpt", str(latent_ckpt), "--classes", "0", "--vae",
                            str(tmp_path / "novae"), "--out", str(tmp_path / "o"), "-q",
                            "--device", "cpu"])
    assert r.exit_code == 2 and "VAE directory not found" in r.output
