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
from gaf_trt.pipeline.bench.load import LoadSpan, read_load
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
    loads = iter([0.25, 0.3])  # an injected load reader: before, after
    recs = run_bench(BenchGrid(preset="S/8", latent=16, batches=(1,), classes=(1,), steps=(1,),
                               device="cpu", repeats=1, warmup=0, num_classes=10),
                     load=lambda: next(loads))
    assert [r.backend for r in recs] == ["reference", "torch"]
    assert recs[0].composition == "pure" and recs[1].max_rel_err_vs_fp32 < 1e-5
    assert {(r.load_before, r.load_after, r.load_label) for r in recs} == {
        (0.25, 0.3, "quiet (load 0.25→0.30)")}


@pytest.mark.parametrize("before, after, own, label", [
    (0.1, 1.9, 2, "quiet (load 0.10→1.90)"),  # an idle 2-core machine, a 2-thread bench
    (0.6, 0.7, 2, "busy (load 0.60→0.70)"),  # something ran before
    (0.1, 2.6, 2, "busy (load 0.10→2.60)"),  # something ran beside it
    (0.1, 1.6, 1, "busy (load 0.10→1.60)"),  # a 1-thread bench and one more job
    (None, 0.1, 1, "load unknown"), (0.1, None, 1, "load unknown"),
])
def test_load_label_never_quiet_on_a_busy_machine(before, after, own, label):
    span = LoadSpan(before, after, own)
    assert span.label == label and span.quiet == label.startswith("quiet")


def test_load_reader_and_the_table_title(tmp_path):
    from rich.console import Console

    from gaf_trt.pipeline.bench.grid import BenchRecord
    from gaf_trt.pipeline.bench.report import rich_table

    f = tmp_path / "loadavg"
    f.write_text("3.25 2.10 1.00 3/400 1234\n")
    assert read_load(f) == 3.25 and read_load(tmp_path / "none") is None
    fields = {k: 0 for k in BenchRecord.__dataclass_fields__}
    rec = BenchRecord(**{**fields, "backend": "torch", "precision": "fp32", "mode": "eager",
                         "solver": "euler", "composition": "pure", "device": "cpu",
                         "device_name": "cpu", "mfu": None, "finite": True, "skipped": "",
                         "resolved_backend": "torch", "ceiling_source": "", "cache": "off",
                         "torch": "2", "peak_mem_kind": "", "speedup_vs_uncached": None,
                         "load_label": "busy (load 3.25→4.00)"})
    console = Console(record=True, width=200)
    console.print(rich_table([rec]))
    assert "busy (load 3.25→4.00)" in " ".join(console.export_text().split())


def test_bench_cache_axis(ref_ckpt, tmp_path):
    """--cache as a grid axis: one row per policy and backend, the policy and the share of
    reused trunk evaluations in each JSON row; a policy refused with a solver is a skipped
    row with the measured reason."""
    out = tmp_path / "c.json"
    r = runner.invoke(grid_app(), ["bench", "--ckpt", str(ref_ckpt), "--device", "cpu",
                                   "--batch", "1", "--classes", "2", "--steps", "2",
                                   "--solver", "euler", "ier", "--cache", "off", "static:2",
                                   "taylor:2", "--repeats", "1", "--warmup", "0", "--json",
                                   str(out)])
    assert r.exit_code == 0, r.output
    recs = json.loads(out.read_text())
    got = [(x["solver"], x["backend"], x["cache"], x["trunk_saved"], bool(x["skipped"]))
           for x in recs]
    assert got == [("euler", "reference", "off", 0.0, False), ("euler", "torch", "off", 0.0, False),
                   ("euler", "torch", "static:2", 0.5, False),
                   ("euler", "torch", "taylor:2", 0.5, False),
                   ("ier", "reference", "off", 0.0, False), ("ier", "torch", "off", 0.0, False),
                   ("ier", "torch", "static:2", 0.0, True), ("ier", "torch", "taylor:2", 0.0, True)]
    assert recs[1]["speedup_vs_uncached"] == 1.0 and recs[2]["speedup_vs_uncached"] > 0
    assert recs[0]["speedup_vs_uncached"] is None and "Fréchet" in recs[-1]["skipped"]
    assert 0 < recs[2]["max_rel_err_vs_fp32"] < 0.2 and recs[1]["max_rel_err_vs_fp32"] < 1e-5
    assert all(x["load_label"] for x in recs)
    assert "x off" in r.output and "static:2" in r.output and "taylor:2" in r.output


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
    (["--preset", "S/8", "--cache", "static:0"], "unknown cache policy 'static:0'"),
    (["--preset", "S/8", "--cache", "off", "static:2", "Static:2"],
     "--cache lists a policy twice"),
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
