"""``gaf-trt bench`` on the CPU (tiny models); GPU numbers come from benchmarks/gpu_check.sh."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from gaf_trt.cli import app
from gaf_trt.model import GAF, preset_config
from gaf_trt.pipeline.bench import macs_per_sample

runner = CliRunner()


def test_xl2_macs_match_the_paper():
    with torch.device("meta"):
        m = GAF(preset_config("XL", patch_size=2, input_size=32, in_channels=4))
    assert macs_per_sample(m) / 1e9 == pytest.approx(118.6, abs=0.05)


def test_bench_checkpoint(ref_ckpt, tmp_path):
    r = runner.invoke(app, ["bench", "--ckpt", str(ref_ckpt), "--classes", "3", "--batch", "2",
                            "--steps", "3", "--repeats", "2", "--device", "cpu",
                            "--json", str(tmp_path / "b.json")])
    assert r.exit_code == 0, r.output
    assert "eager" in r.output
    rec = json.loads((tmp_path / "b.json").read_text())
    row = rec["rows"][0]
    assert row["mode"] == "eager" and row["loop_ms"] > 0 and row["images_per_s"] > 0
    assert rec["classes"] == 3 and rec["batch"] == 2


def test_bench_preset_small(tmp_path):
    r = runner.invoke(app, ["bench", "--preset", "S/8", "--batch", "1", "--steps", "1",
                            "--repeats", "1", "--device", "cpu", "--classes", "1"])
    assert r.exit_code == 0, r.output
    assert "D=384 depth=12 patch=8" in r.output


@pytest.mark.parametrize("args,message", [
    (["--preset", "Q/2"], "unknown preset 'Q/2'"),
    ([], "give exactly one of --ckpt or --preset"),
    (["--preset", "S/8", "--solver", "ab2"], "unknown solver 'ab2'"),
    (["--preset", "S/8", "--batch", "0"], "--batch must be >= 1"),
])
def test_bench_bad_input(args, message):
    r = runner.invoke(app, ["bench", "--device", "cpu", *args])
    assert r.exit_code == 2 and message in r.output and len(r.output.strip().splitlines()) == 1
