"""``gaf-trt sample`` and ``gaf-trt info`` through Typer's CliRunner."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from gaf_trt.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def base(ref_ckpt, out):
    return ["sample", "--ckpt", ref_ckpt, "--out", out, "--steps", 2, "--batch", 2, "-q",
            "--device", "cpu"]


def test_spec_command_line_works_as_written(ref_ckpt, tmp_path):
    out = tmp_path / "o"
    r = invoke(*base(ref_ckpt, out), "--classes", 3, 8, "--mask-type", "horizontal_2")
    assert r.exit_code == 0, r.output
    names = {p.name for p in out.iterdir()}
    assert {"pure_3.png", "pure_8.png", "0_mix_3_8.png", "1_mix_3_8.png", "summary.png",
            "run.json"} <= names
    record = json.loads((out / "run.json").read_text())
    assert record["classes"] == [3, 8] and record["composition"] == "spatial"
    assert record["backend"] == "torch" and record["device"] == "cpu"
    assert len(record["checkpoint"]["sha256"]) == 64
    assert record["args"]["mask_type"] == "horizontal_2"
    assert set(record["timings_s"]) >= {"load", "pure 3_8", "spatial 3_8"}  # pure classes: one batched loop
    assert all(v > 0 for v in record["timings_s"].values())


def test_images_are_visible_size(ref_ckpt, tmp_path):
    from PIL import Image

    invoke(*base(ref_ckpt, tmp_path), "--classes", 1)
    with Image.open(tmp_path / "pure_1.png") as im:
        assert min(im.size) >= 128  # 8x8 samples upscaled


def test_weights_alpha_permute_gif_skip(ref_ckpt, tmp_path):
    r = invoke(*base(ref_ckpt, tmp_path / "w"), "--classes", 1, 4, 7, "--weight", 0.5, 0.3, 0.2)
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "w" / "run.json").read_text())["composition"] == "weighted"
    r = invoke(*base(ref_ckpt, tmp_path / "a"), "--classes", 0, 6, "--alpha", 0.6, "--permute",
               "--gif", "--skip")
    assert r.exit_code == 0, r.output
    names = {p.name for p in (tmp_path / "a").iterdir()}
    assert {"0_mix_0_6.png", "0_mix_6_0.png", "mix_0_6.gif", "mix_6_0.gif", "summary.png"} <= names
    assert not any(n.startswith("pure_") for n in names)  # --skip


def test_gif_has_one_frame_per_step(ref_ckpt, tmp_path):
    import imageio.v2 as imageio

    r = invoke(*base(ref_ckpt, tmp_path), "--classes", 2, "--gif", "--steps", 4)
    assert r.exit_code == 0, r.output
    frames = imageio.mimread(tmp_path / "pure_2.gif")
    assert len(frames) == 5  # the noise and 4 steps


def test_seed_reproducible_and_changes_output(ref_ckpt, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        invoke(*base(ref_ckpt, tmp_path / name), "--classes", 5, "--seed", seed)
    a, b, c = ((tmp_path / n / "pure_5.png").read_bytes() for n in "abc")
    assert a == b and a != c


@pytest.mark.parametrize("solver", ["euler", "heun", "rk4", "ier", "endpoint"])
def test_every_solver(ref_ckpt, tmp_path, solver):
    r = invoke(*base(ref_ckpt, tmp_path), "--classes", 2, 3, "--mask-type", "quadrant",
               "--classes", 4, 5, "--solver", solver, "--sigma", 0, "--batch", 2)
    assert r.exit_code == 0, r.output
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["args"]["solver"] == solver and record["composition"] == "spatial"
    expected = {f"pure_{c}.png" for c in (2, 3, 4, 5)} | {"0_mix_2_3_4_5.png", "1_mix_2_3_4_5.png",
                                                          "summary.png", "run.json"}
    assert {p.name for p in tmp_path.iterdir()} == expected == set(record["files"])


def test_custom_mask_and_regions(ref_ckpt, tmp_path):
    from PIL import Image

    img = torch.zeros(16, 16, dtype=torch.uint8)
    img[:, 8:] = 255
    Image.fromarray(img.numpy()).save(tmp_path / "m.png")
    r = invoke(*base(ref_ckpt, tmp_path / "c"), "--classes", 1, 2, "--mask-img", tmp_path / "m.png")
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "c" / "run.json").read_text())
    assert rec["args"]["mask_type"] is None and rec["composition"] == "spatial"  # custom implied
    assert (tmp_path / "c" / "0_mix_1_2.png").is_file()
    r = invoke(*base(ref_ckpt, tmp_path / "r"), "--classes", 1, 2, 3, "--mask-type", "afhq",
               "--regions", "eyes", "nose")
    assert r.exit_code == 0, r.output
    # 3 classes: eyes, nose and the 'rest' region -> strips of mask | 3 pure | composite
    from PIL import Image

    strip = Image.open(tmp_path / "r" / "0_mix_1_2_3.png")
    tile = Image.open(tmp_path / "r" / "pure_1.png").height - 4  # one sample, 2-px border
    assert strip.width == 5 * (tile + 2) + 2


def test_list_masks():
    r = invoke("sample", "--list-masks")
    assert r.exit_code == 0
    assert "horizontal_2" in r.output and "afhq" in r.output and "radial_4" in r.output


def test_class_names(tmp_path, ref_model):
    from gaf_trt import save_safetensors
    from gaf_trt.model.gaf import GAF

    cfg = ref_model.config.__class__(**{**ref_model.config.to_dict(),
                                         "class_names": tuple("abcdefghij")})
    m = GAF(cfg)
    m.load_state_dict(ref_model.state_dict())
    path = save_safetensors(m, tmp_path / "named.safetensors")
    r = invoke(*base(path, tmp_path / "o"), "--classes", "C", "d", "--alpha", 0.5)
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "o" / "run.json").read_text())["classes"] == [2, 3]
    r = invoke(*base(path, tmp_path / "x"), "--classes", "zebra")
    assert r.exit_code == 2 and "unknown class name 'zebra'" in r.output


BAD = [
    (["--classes", 3, 18], "class id(s) [18] out of range: the model has 10 classes (0..9)"),
    (["--classes", "cat"], "unknown class name 'cat'"),
    (["--classes", 1, 2, "--weight", 1], "1 weight(s) [1.0] for 2 class(es)"),
    (["--classes", 1, 2, 3, "--alpha", 0.5], "--alpha blends exactly 2 classes, got 3"),
    (["--classes", 1, 2, 3, "--mask-type", "horizontal_2"], "the mask has 2 region(s) but 3 class(es)"),
    (["--classes", 1, 2, "--mask-type", "custom", "--mask-img", "/nonexistent.png"],
     "mask image not found: /nonexistent.png"),
    (["--classes", 1, 2, "--solver", "dopri5"], "unknown solver 'dopri5'; valid: euler, heun, ier, rk4"),
    (["--classes", 1, 2, "--mask-type", "stripes"], "unknown mask type 'stripes'; valid:"),
    (["--classes", 1, "--steps", 0], "steps must be an integer in 1..10000, got 0"),
    (["--classes", 1, "--steps", "many"], "Invalid value for '--steps'"),
    (["--classes", 1, "--backend", "tpu"], "unknown backend 'tpu'; valid: auto, openvino, ort, torch, trt"),
    (["--classes", 1, "--batch", 0], "--batch must be an integer in 1..4096, got 0"),
    (["--classes", 1, 2, "--regions", "eyes", "--mask-type", "quadrant"],
     "--regions is only used with mask type 'afhq', not 'quadrant'"),
    (["--classes", 1, "--skip"], "--skip without a composition generates nothing"),
    (["--classes", 3, 8, "--skip"], "--skip without a composition generates nothing"),
    (["--classes", "²"], "unknown class name"),
    (["--classes", 1, 2, "--mask-type", "horizontal_2", "--weight", 0, 0], "are all 0"),
    ([], "give at least one class"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[m[:30] for _, m in BAD])
def test_bad_input_one_line_exit_2_nothing_written(ref_ckpt, tmp_path, args, message):
    out = tmp_path / "never"
    r = invoke(*base(ref_ckpt, out), *args)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert message in lines[0]
    assert "Traceback" not in r.output
    assert not out.exists()


def test_bad_mask_image_file(ref_ckpt, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"no image here")
    r = invoke(*base(ref_ckpt, tmp_path / "o"), "--classes", 1, 2, "--mask-img", tmp_path / "bad.png")
    assert r.exit_code == 2 and "is unreadable" in r.output and not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["missing", "truncated", "not_gaf"])
def test_bad_checkpoints(tmp_path, ref_ckpt, kind):
    path = tmp_path / f"{kind}.pt"
    if kind == "truncated":
        path.write_bytes(ref_ckpt.read_bytes()[:5000])
    elif kind == "not_gaf":
        torch.save({"model": {"foo.weight": torch.ones(2)}}, path)
    r = invoke(*base(path, tmp_path / "o"), "--classes", 1)
    assert r.exit_code == 2 and "Traceback" not in r.output
    expect = {"missing": "checkpoint not found", "truncated": "truncated or corrupt",
              "not_gaf": "missing keys trunk.x_embedder.proj.weight"}[kind]
    assert expect in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_info(ref_ckpt):
    r = invoke("info", ref_ckpt)
    assert r.exit_code == 0, r.output
    assert "heads=4 (checkpoint cfg)" in r.output and "weights     ema" in r.output
    r = invoke("info", ref_ckpt, "--json")
    rec = json.loads(r.output)
    assert rec["config"]["hidden_size"] == 64 and rec["parameters"] > 0
    r = invoke("info", "/no/such.pt")
    assert r.exit_code == 2 and "checkpoint not found" in r.output


def test_chunked_batches_equal_one_loop(ref_ckpt, tmp_path):
    """--chunk splits the batch into several solver loops: same images, same GIF frames."""
    import imageio.v2 as imageio

    args = ["--classes", 3, 8, "--mask-type", "horizontal_2", "--batch", 5, "--gif"]
    for name, chunk in (("one", 256), ("chunks", 2)):
        r = invoke(*base(ref_ckpt, tmp_path / name), *args, "--chunk", chunk)
        assert r.exit_code == 0, r.output
    import numpy as np

    def close(x, y):  # uint8 pictures: batch position may move a value by one rounding step
        return np.abs(np.asarray(x, dtype=int) - np.asarray(y, dtype=int)).max() <= 1

    for f in ("pure_3.png", "pure_8.png", "0_mix_3_8.png", "4_mix_3_8.png"):
        assert close(*(imageio.imread(tmp_path / d / f) for d in ("one", "chunks"))), f
    for f in ("pure_8.gif", "mix_3_8.gif"):
        a, b = (imageio.mimread(tmp_path / d / f) for d in ("one", "chunks"))
        assert len(a) == len(b) == 3 and all(close(x, y) for x, y in zip(a, b)), f
