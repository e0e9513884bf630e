"""``gaf-trt bench`` on the CPU (tiny model): JSON schema with the reference row, the grid
flags, the plot, and bad input. No timing assertions; GPU numbers come from
benchmarks/gpu_check.sh."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from gaf_trt.cli import app
from gaf_trt.cli.bench import BenchCommand, bench
from gaf_trt.console.errors import OneLineErrorGroup
from gaf_trt.engine.torch_backend import precision_support
from gaf_trt.model import GAF, preset_config
from gaf_trt.model.flops import macs_per_sample
from gaf_trt.model.presets import preset_model
from gaf_trt.pipeline.bench import BenchGrid, run_bench
from gaf_trt.precision import Precision

runner = CliRunner()
REQUIRED = {"backend", "precision", "batch", "classes", "steps", "solver", "images_per_s",
            "ms_per_image", "gflops", "ceiling_fraction", "max_rel_err_vs_fp32"}
BF16 = precision_support("cpu", Precision.BF16) is None


def grid_app() -> typer.Typer:
    """The bench command registered with its multi-value grid flags."""
    a = typer.Typer(cls=OneLineErrorGroup)
    a.command(cls=BenchCommand)(bench)
    a.command("noop")(lambda: None)  # two commands: keep the subcommand name
    return a


def test_xl2_macs_match_the_paper():
    with torch.device("meta"):
        m = GAF(preset_config("XL", patch_size=2, input_size=32, in_channels=4))
    assert macs_per_sample(m) / 1e9 == pytest.approx(118.6, abs=0.05)


def test_bench_grid_json_and_plot(ref_ckpt, tmp_path):
    precisions = ["fp32", "bf16"] if BF16 else ["fp32"]
    out, png = tmp_path / "b.json", tmp_path / "b.png"
    r = runner.invoke(grid_app(), ["bench", "--ckpt", str(ref_ckpt), "--device", "cpu",
                                   "--precision", *precisions, "--batch", "1", "3",
                                   "--classes", "2", "--steps", "2", "--solver", "euler", "ier",
                                   "--repeats", "2", "--warmup", "0", "--json", str(out),
                                   "--plot", str(png)])
    assert r.exit_code == 0, r.output
    recs = json.loads(out.read_text())
    per_case = 1 + len(precisions)
    assert len(recs) == 2 * 2 * per_case
    for i in range(0, len(recs), per_case):
        case = recs[i:i + per_case]
        ref = case[0]
        assert ref["backend"] == "reference" and ref["precision"] == "fp32"
        assert ref["speedup_vs_reference"] == 1.0 and ref["composition"] == "spatial horizontal_2"
        for rec in case:
            assert REQUIRED <= set(rec)
            assert (rec["batch"], rec["classes"], rec["steps"]) == (ref["batch"], 2, 2)
            assert rec["images_per_s"] > 0 and rec["gflops"] > 0 and rec["finite"]
            assert 0 < rec["ceiling_fraction"] and rec["ceiling_gflops"] > 0
            assert rec["ms_per_image_p90"] >= rec["ms_per_image"] > 0
        fp32 = next(c for c in case if c["backend"] == "torch" and c["precision"] == "fp32")
        assert fp32["max_rel_err_vs_fp32"] < 1e-5
        for c in case:
            if c["precision"] == "bf16":
                assert 0 < c["max_rel_err_vs_fp32"] < 2e-2
    assert "reference" in r.output and "x ref" in r.output
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] >= 640


def test_bench_repeated_flags_on_the_app(ref_ckpt):
    """The registered command accepts the grid as repeated flags too."""
    r = runner.invoke(app, ["bench", "--ckpt", str(ref_ckpt), "--device", "cpu",
                            "--batch", "1", "--batch", "2", "--classes", "3", "--steps", "1",
                            "--repeats", "1", "--warmup", "0"])
    assert r.exit_code == 0, r.output
    rows = [ln for ln in r.output.splitlines() if ln.startswith("reference ")]
    assert len(rows) == 2  # one reference row per case


def test_bench_api_preset_weights_are_active():
    """Preset rows carry real precision error: adaLN weights are not left at zero."""
    model = preset_model("S/8", 16, 4, 10, seed=0, device="cpu")
    assert model.trunk.blocks[0].adaLN_modulation[-1].weight.abs().max() > 0
    assert model.twins.J.linear.weight.abs().max() > 0
    recs = run_bench(BenchGrid(preset="S/8", latent=16, batches=(1,), classes=(1,), steps=(1,),
                               device="cpu", repeats=1, warmup=0, num_classes=10))
    assert [r.backend for r in recs] == ["reference", "torch"]
    assert recs[0].composition == "pure" and recs[1].max_rel_err_vs_fp32 < 1e-5


def test_bench_subprocess(ref_ckpt, tmp_path):
    out = tmp_path / "s.json"
    proc = subprocess.run([sys.executable, "-m", "gaf_trt.cli", "bench", "--ckpt", str(ref_ckpt),
                           "--device", "cpu", "--classes", "1", "--batch", "1", "--steps", "1",
                           "--repeats", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [r["backend"] for r in json.loads(out.read_text())] == ["reference", "torch"]


@pytest.mark.parametrize("args,message", [
    (["--preset", "Q/2"], "unknown preset 'Q/2'"),
    ([], "give exactly one of --ckpt or --preset"),
    (["--preset", "S/8", "--solver", "ab2"], "unknown solver 'ab2'"),
    (["--preset", "S/8", "--batch", "0"], "--batch must be an integer in [1, 4096], got 0"),
    (["--preset", "S/8", "--steps", "0"], "--steps must be an integer in [1, 1000], got 0"),
    (["--preset", "S/8", "--repeats", "0"], "--repeats must be an integer in [1, 1000], got 0"),
    (["--preset", "S/8", "--repeats", "1001"], "--repeats must be an integer in [1, 1000]"),
    (["--preset", "S/8", "--warmup", "-1"], "--warmup must be an integer in [0, 100], got -1"),
    (["--preset", "S/8", "--backend", "onnx9"], "unknown backend 'onnx9'; valid: torch"),
    (["--preset", "S/8", "--backend", "ort"], "give --engine DIR"),
    (["--preset", "S/8", "--engine", "x"], "a random-weight --preset cannot be its reference"),
    (["--engine", "/nonexistent/dir"], "engine directory not found: /nonexistent/dir"),
    (["--preset", "S/8", "--precision", "fp64"], "fp64"),
    (["--preset", "S/8", "--precision", "fp16"], "precision fp16 on cpu"),
    (["--preset", "S/8", "--latent", "12"],
     "--latent 12 is not a multiple of the preset's patch 8"),
    (["--preset", "S/8", "--batch", "2", "--batch", "2"], "--batch lists a value twice"),
])
def test_bench_bad_input(args, message):
    r = runner.invoke(app, ["bench", "--device", "cpu", *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_bench_too_many_classes(ref_ckpt):
    r = runner.invoke(app, ["bench", "--ckpt", str(ref_ckpt), "--device", "cpu",
                            "--classes", "11"])
    assert r.exit_code == 2 and "--classes 11 exceeds the model's 10 classes" in r.output


def test_bench_json_path_is_a_directory(ref_ckpt, tmp_path):
    r = runner.invoke(app, ["bench", "--ckpt", str(ref_ckpt), "--device", "cpu",
                            "--json", str(tmp_path)])
    assert r.exit_code == 2 and "is a directory" in r.output
