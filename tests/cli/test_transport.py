"""``gaf-trt transport`` and ``gaf-trt translate`` through CliRunner and a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from gaf_trt.cli import app

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def base(mode, ref_ckpt, out, *classes):
    return ["transport", "--mode", mode, "--classes", *classes, "--ckpt", ref_ckpt, "--out",
            out, "--steps", 2, "-q", "--device", "cpu"]


def record(out):
    return json.loads((out / "transport.json").read_text())


def test_cycle_writes_grid_and_record(ref_ckpt, tmp_path):
    from PIL import Image

    out = tmp_path / "c"
    r = invoke(*base("cycle", ref_ckpt, out, 1, 5), "--batch", 2)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["cycle.png", "transport.json"]
    rec = record(out)
    assert rec["mode"] == "cycle" and rec["classes"] == [1, 5] and rec["steps"] == 2
    assert rec["solver"] == "rk4" and rec["reverse_solver"] == "rk4"
    assert rec["files"] == ["cycle.png", "transport.json"]
    m = rec["metrics"]
    assert m["latent_mse"] > 0 and m["pixel_mse"] > 0  # 2 rk4 steps do not close the cycle
    assert (m["lpips"] is None) == (m["lpips_note"] is not None)
    assert len(rec["checkpoint"]["sha256"]) == 64
    cols = rec["layout"]["cycle.png"]["columns"]
    assert cols == ["noise", "class 1", "noise", "class 5", "noise", "class 1"]
    with Image.open(out / "cycle.png") as im:  # 2 rows x 6 columns of >= 128 px cells
        assert im.size[0] >= 6 * 128 and im.size[1] >= 2 * 128


def test_interpolation_writes_grid_and_gif(ref_ckpt, tmp_path):
    from PIL import Image

    out = tmp_path / "i"
    r = invoke(*base("interpolation", ref_ckpt, out, 2, 6), "--n-interp", 3, "--size", 300)
    assert r.exit_code == 0, r.output
    assert {p.name for p in out.iterdir()} == {"interpolation.png", "interpolation.gif",
                                               "transport.json"}
    with Image.open(out / "interpolation.png") as im:  # the images 300 px long; label
        assert im.size[0] == 300 and im.size[1] < 300  # bands above them
    with Image.open(out / "interpolation.gif") as im:  # a 300-px frame over its caption
        assert im.n_frames == 5 and im.size[0] == 300 and 300 < im.size[1] < 360
    assert set(record(out)["metrics"]) >= {"closure_latent_mse", "closure_pixel_mse",
                                           "closure_lpips"}


def test_barycentric_writes_grid(ref_ckpt, tmp_path):
    out = tmp_path / "b"
    r = invoke(*base("barycentric", ref_ckpt, out, 1, 5, 7), "--grid-size", 3)
    assert r.exit_code == 0, r.output
    rec = record(out)
    assert rec["metrics"]["cells"] == 9 and len(rec["metrics"]["weights"]) == 3
    assert rec["layout"]["barycentric.png"]["corners"] == {"top": 7, "bottom-left": 5,
                                                           "bottom-right": 1}
    assert (out / "barycentric.png").is_file()


def test_rerun_replaces_previous_files(ref_ckpt, tmp_path):
    out = tmp_path / "r"
    assert invoke(*base("cycle", ref_ckpt, out, 1, 5)).exit_code == 0
    assert invoke(*base("barycentric", ref_ckpt, out, 1, 5, 7), "--grid-size", 2).exit_code == 0
    assert {p.name for p in out.iterdir()} == {"barycentric.png", "transport.json"}


def _write_png(tmp_path, model_ckpt):
    """An 8x8 RGB sample of class 3 of the reference model, saved as a PNG."""
    from PIL import Image

    from gaf_trt import load_model, sample

    m = load_model(model_ckpt)
    x = sample(m, [3], torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1)),
               steps=4, solver="rk4")
    arr = ((x[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    path = tmp_path / "in.png"
    Image.fromarray(arr).save(path)
    return path


def test_translate_same_class_returns_the_input(ref_ckpt, tmp_path):
    png = _write_png(tmp_path, ref_ckpt)
    out = tmp_path / "t"
    r = invoke("translate", "--image", png, "--source", 3, "--target", 3, "--ckpt", ref_ckpt,
               "--steps", 8, "--snapshots", 3, "--out", out, "-q", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert {p.name for p in out.iterdir()} == {"translation.png", "trajectory.png",
                                               "transport.json"}
    rec = record(out)
    assert rec["mode"] == "translate" and rec["source"] == 3 and rec["target"] == 3
    # measured ~1e-12 (rk4, 8 steps); the input's own scale is ~0.3
    assert rec["metrics"]["latent_mse"] < 1e-6
    assert len(rec["layout"]["trajectory.png"]["columns"]) == 1 + 2 * 3


def test_translate_latent_model_through_vae(latent_ckpt, tiny_vae_dir, tmp_path):
    from PIL import Image

    png = tmp_path / "in.png"
    Image.new("RGB", (40, 32), (200, 30, 90)).save(png)  # not square: centre-cropped
    out = tmp_path / "t"
    r = invoke("translate", "--image", png, "--source", "cat", "--target", "dog", "--ckpt",
               latent_ckpt, "--vae", tiny_vae_dir, "--steps", 2, "--out", out, "-q",
               "--device", "cpu")
    assert r.exit_code == 0, r.output
    with Image.open(out / "translation.png") as im:
        assert im.size[0] >= 2 * 128  # 32x32 decoded cells, upscaled
    assert record(out)["model"]["mode"] == "latent"


def _bad_cases(ref_ckpt, tmp_path, latent_ckpt):
    t = ["transport", "--ckpt", ref_ckpt, "--steps", 2, "-q", "--device", "cpu"]
    png = tmp_path / "x.png"
    png.write_bytes(b"not an image")
    tl = ["translate", "--source", 0, "--target", 1, "--steps", 2, "-q", "--device", "cpu"]
    return [
        (t + ["--mode", "barycentric", "--classes", 1, 2], "exactly 3 distinct"),
        (t + ["--mode", "barycentric", "--classes", 1, 2, 2], "exactly 3 distinct"),
        (t + ["--mode", "cycle", "--classes", 4], "at least 2 distinct"),
        (t + ["--mode", "interpolation", "--classes", 1, 2, "--n-interp", 1], "--n-interp"),
        (t + ["--mode", "barycentric", "--classes", 1, 2, 3, "--grid-size", 1], "--grid-size"),
        (t + ["--mode", "barycentric", "--classes", 1, 2, 3, "--grid-size", 33], "--grid-size"),
        (t + ["--mode", "spiral", "--classes", 1, 2], "unknown transport mode"),
        (t + ["--mode", "cycle", "--classes", 1, 12], "out of range"),
        (t + ["--mode", "cycle", "--classes", 1, 2, "--size", 4], "--size"),
        (t + ["--mode", "cycle", "--classes", 1, 2, "--reverse-solver", "ier"], "does not invert"),
        (tl + ["--image", tmp_path / "missing.png", "--ckpt", ref_ckpt], "cannot read image"),
        (tl + ["--image", png, "--ckpt", ref_ckpt], "cannot read image"),
        (tl + ["--image", tmp_path / "missing.png", "--ckpt", latent_ckpt], "cannot read image"),
    ]


def test_bad_input_one_line_exit_2_nothing_written(ref_ckpt, tmp_path, latent_ckpt):
    for i, (args, match) in enumerate(_bad_cases(ref_ckpt, tmp_path, latent_ckpt)):
        out = tmp_path / f"o{i}"
        r = invoke(*args, "--out", out)
        assert r.exit_code == 2, (args, r.output)
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], lines
        assert not out.exists()


def test_translate_latent_without_vae(latent_ckpt, tmp_path):
    from PIL import Image

    png = tmp_path / "in.png"
    Image.new("RGB", (32, 32)).save(png)
    out = tmp_path / "o"
    r = invoke("translate", "--image", png, "--source", 0, "--target", 1, "--ckpt", latent_ckpt,
               "--out", out, "-q", "--device", "cpu")
    assert r.exit_code == 2 and "give the VAE with --vae" in r.output
    assert not out.exists()


def test_real_subprocess(ref_ckpt, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "gaf_trt.cli", "transport", "--mode", "cycle", "--classes",
           "1", "5", "--ckpt", str(ref_ckpt), "--steps", "2", "--device", "cpu", "-q"]
    ok = subprocess.run(cmd + ["--out", str(tmp_path / "ok")], capture_output=True, text=True,
                        env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "latent_mse=" in ok.stdout and (tmp_path / "ok" / "cycle.png").is_file()
    bad_cmd = [sys.executable, "-m", "gaf_trt.cli", "transport", "--mode", "barycentric",
               "--classes", "1", "2", "--ckpt", str(ref_ckpt), "--out", str(tmp_path / "bad")]
    bad = subprocess.run(bad_cmd, capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: barycentric needs exactly 3 distinct classes, got 2: 1 2"]
    assert not (tmp_path / "bad").exists()
