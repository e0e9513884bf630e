"""Two-rank gloo DDP through torchrun, and the latent pipeline with a tiny AutoencoderKL."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from gaf_trt import load_model
from gaf_trt.training import train
from tests.training.helpers import TINY, assert_one_error_line, invoke, tiny


def test_two_rank_gloo_torchrun(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "gaf_trt.training", "train", "--preset", "digits", "--out", str(tmp_path), "-q",
           *[x for kv in TINY for x in ("--set", kv)], "--set", "iters=3",
           "--set", "lam_time=0.002", "--set", "grad_accum=2"]  # full objective, accumulation
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ck["step"] == 3
    model = load_model(tmp_path / "last.pt")
    assert model.config.num_classes == 10
    assert not list(tmp_path.glob(".*.gaftmp"))  # no temp file of a checkpoint write left


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("imgs")
    for ci, cls in enumerate(("cat", "dog")):
        (root / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (40, 36), (40 * i, 100 * ci, 90)).save(root / cls / f"{i}.jpg")
    (root / "dog" / "corrupt.jpg").write_bytes(b"\xff\xd8 not really")
    return root


def test_precompute_and_train_on_latents(tmp_path, tiny_vae_dir, image_folder):
    cache = tmp_path / "lat.pt"
    r = invoke("precompute", "--images", image_folder, "--vae", tiny_vae_dir, "--out", cache,
               "--size", "32", "--batch", "4")
    assert r.exit_code == 0, r.output
    assert "skipped 1 unreadable" in r.output
    d = torch.load(cache, weights_only=True)
    assert d["latents"].shape == (6, 4, 4, 4) and d["class_names"] == ["cat", "dog"]
    assert d["labels"].tolist() == [0, 0, 0, 1, 1, 1]
    assert d["scale"] == pytest.approx(0.18215)
    # the cached latents are the VAE's latent means times the scale
    from gaf_trt.model.vae import load_vae
    from gaf_trt.training.data import load_image

    dec = load_vae(tiny_vae_dir)
    img = load_image(image_folder / "cat" / "0.jpg", 32, 3).unsqueeze(0) * 2 - 1
    assert torch.allclose(d["latents"][0].float(), dec.encode(img)[0], atol=2e-3)

    cfg = tiny(tmp_path / "run", "data=latents", f"data_path={cache}", "mode=latent",
               "image_size=32", "latent_ch=4", "num_classes=2", "class_names=none", "iters=2",
               "patch_size=2")
    result = train(cfg)
    model = load_model(result.checkpoint)
    assert model.config.mode == "latent" and model.config.class_names == ("cat", "dog")


def test_latent_cache_shape_mismatch(tmp_path):
    torch.save({"latents": torch.zeros(4, 4, 8, 8), "labels": torch.zeros(4, dtype=torch.long),
                "class_names": ["a"]}, tmp_path / "c.pt")
    r = invoke("train", "--preset", "digits", "--out", tmp_path / "o", "-q",
               "--data", tmp_path / "c.pt", *[x for kv in TINY for x in ("--set", kv)],
               "--set", "data=latents", "--set", "mode=latent", "--set", "image_size=32",
               "--set", "latent_ch=4")
    assert_one_error_line(r, "data samples are [4, 8, 8] but the config expects [4, 4, 4]")
    assert not (tmp_path / "o").exists()
