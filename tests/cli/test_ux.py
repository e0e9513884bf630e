"""A new user's first hour (issue 13): help that reads right, `--version`, an engine directory
without `--backend`, pure classes without a composition, pictures with words, GIF frame
rates, progress and the bench table's width. In-process (Typer's CliRunner) unless a real
terminal or process matters."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from gaf_trt.cli import app

runner = CliRunner()


def invoke(*args, **env):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "100", **env})


def base(ref_ckpt, out, *extra):
    return ["sample", "--ckpt", ref_ckpt, "--out", out, "--steps", 2, "--batch", 2, "-q",
            "--device", "cpu", *extra]


# --------------------------------------------------------------------------- help, version


@pytest.mark.parametrize("command", ["sample", "bench", "transport", "translate", "export",
                                     "info"])
def test_flags_show_no_value_in_help(command):
    """On/off flags read as flags: `--permute`, never `--permute <bool>`."""
    r = invoke(command, "--help")
    assert r.exit_code == 0, r.output
    assert "--help" in r.output and "<bool>" not in r.output, r.output


def test_training_flags_show_no_value_in_help():
    from gaf_trt.training.cli import app as training

    for command in ("train", "evaluate", "bundle"):
        r = runner.invoke(training, [command, "--help"], env={"COLUMNS": "100"})
        assert r.exit_code == 0 and "<bool>" not in r.output, r.output


def test_a_flag_still_takes_no_value():
    r = invoke("sample", "--list-masks", "true")
    assert r.exit_code == 2 and "true" in r.output


def test_version():
    from importlib.metadata import version

    r = invoke("--version")
    assert r.exit_code == 0, r.output
    assert r.output.strip() == f"gaf-trt {version('gaf-trt')}"


def test_bench_help_first_sentence_whole():
    r = invoke("--help")
    line = next(ln for ln in r.output.splitlines() if " bench " in ln)
    assert line.rstrip(" │").endswith("batch."), line


# --------------------------------------------------------------------------- sample semantics


def test_several_classes_without_a_composition_are_pure(ref_ckpt, tmp_path):
    out = tmp_path / "o"
    r = invoke(*base(ref_ckpt, out), "--classes", 3, 8)
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "run.json").read_text())
    assert rec["composition"] == "pure" and rec["classes"] == [3, 8]
    assert set(rec["files"]) == {"pure_3.png", "pure_8.png", "summary.png", "run.json"}


def test_engine_dir_without_backend_runs_auto(ref_ckpt, tmp_path_factory):
    from tests.export.shared import ref_engine_dir

    engine = ref_engine_dir(tmp_path_factory.getbasetemp())
    out = tmp_path_factory.mktemp("eng") / "o"
    r = invoke("sample", "--engine", engine, "--classes", 3, 8, "--mask-type", "horizontal_2",
               "--steps", 2, "--batch", 1, "--out", out, "-q", "--device", "cpu")
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "run.json").read_text())
    assert rec["args"]["backend"] == "auto" and rec["backend"] == "ort"
    assert "backend ort (chosen by auto)" in r.output
    r = invoke("info", engine)
    assert r.exit_code == 0, r.output
    assert re.search(r"^profiles +B 1\.\.16 \(opt 4\) +N 1\.\.4 \(opt 2\) +M 1\.\.64 \(opt 8\)$",
                     r.output, re.M), r.output


def test_evaluate_names_the_ier_sampler_as_the_cli_does():
    from gaf_trt.compose.solvers import SOLVERS
    from gaf_trt.training.evaluate import SAMPLERS

    assert [name for name, _, _ in SAMPLERS] == ["euler-20", "ier-8"]
    assert all(SOLVERS.canonical(solver) == solver for _, solver, _ in SAMPLERS)
    assert SOLVERS.canonical("endpoint") == "ier"  # the old name is still accepted


# --------------------------------------------------------------------------- pictures


def test_strip_has_a_header_over_unchanged_tiles(ref_ckpt, tmp_path):
    """The strip keeps its tile row (same width as before) under a header band; the pure and
    composite tiles are exactly the pure grid's / composite's pixels."""
    out = tmp_path / "o"
    r = invoke(*base(ref_ckpt, out), "--classes", 1, 4, 7, "--weight", 0.5, 0.3, 0.2,
               "--batch", 1)
    assert r.exit_code == 0, r.output
    strip = np.asarray(Image.open(out / "0_mix_1_4_7.png").convert("RGB"))
    pure = np.asarray(Image.open(out / "pure_4.png").convert("RGB"))
    tile = pure.shape[0] - 4
    assert strip.shape[1] == 5 * (tile + 2) + 2 and strip.shape[0] > tile + 4 + 10
    header = strip[:strip.shape[0] - tile - 4]
    assert (header < 128).any(), "the header band holds no text"
    row = strip[-tile - 2:-2]
    assert np.array_equal(row[:, 2 + 2 * (tile + 2):2 + 2 * (tile + 2) + tile], pure[2:-2, 2:-2])
    first = row[:, 2:2 + tile]
    assert (first < 250).any(), "the first tile of a weighted strip is empty"


def test_summary_is_capped_and_labelled(ref_ckpt, tmp_path):
    """40 samples: the summary shows 8 per row (+ the label column), not 40."""
    out = tmp_path / "o"
    r = invoke(*base(ref_ckpt, out), "--classes", 2, "--batch", 40, "--steps", 1)
    assert r.exit_code == 0, r.output
    with Image.open(out / "summary.png") as im:
        summary = np.asarray(im.convert("RGB"))
    with Image.open(out / "pure_2.png") as im:
        pure_w = im.width
    tile = 128
    assert summary.shape[1] == 9 * (tile + 2) + 2
    label = summary[-tile - 2:-2, 2:2 + tile]
    assert (label < 128).any(), "the pure row's first cell holds no class label"
    assert pure_w == 16 * (tile + 2) + 2  # 40 samples: rows of 16


def test_pure_grids_are_paged_and_chunks_stream(ref_ckpt, tmp_path):
    """--batch 260 --chunk 100: pure_{c}.png holds 256 samples (16 x 16), the rest go to
    pure_{c}_page2.png; every chunk reaches the writer on its own, and the chunked states
    equal one loop's."""
    from gaf_trt.pipeline.generation import generate
    from gaf_trt.pipeline.sample import SampleConfig, prepare_sample
    from gaf_trt.pipeline.source import ModelSource

    out = tmp_path / "o"
    r = invoke(*base(ref_ckpt, out), "--classes", 5, "--batch", 260, "--chunk", 100,
               "--steps", 1)
    assert r.exit_code == 0, r.output
    with Image.open(out / "pure_5.png") as im:
        assert im.size == (16 * 130 + 2, 16 * 130 + 2)
    with Image.open(out / "pure_5_page2.png") as im:
        assert im.size == (2 * 130 + 2, 2 * 130 + 2)  # 4 samples: 2 x 2
    cfg = SampleConfig(classes=["5", "6"], alpha=0.3, batch=9, chunk=4, steps=2,
                       out=str(tmp_path / "unused"),
                       model=ModelSource(str(ref_ckpt), device="cpu"))
    plan = prepare_sample(cfg)
    seen: list[tuple[int, int]] = []
    chunks: dict[tuple[int, ...], list[torch.Tensor]] = {}

    def sink(start, pure, mixes):
        for key, z in mixes.items():
            seen.append((start, z.shape[0]))
            chunks.setdefault(key, []).append(z)
        assert set(pure) == {5, 6} and all(z.shape[0] <= 4 for z in pure.values())

    gen = generate(cfg, plan, sink=sink)
    assert seen == [(0, 4), (4, 4), (8, 1)]
    whole = generate(SampleConfig(**{**cfg.__dict__, "chunk": 9}), plan)
    streamed = torch.cat(chunks[(5, 6)])
    ref = whole.mixes[(5, 6)]
    assert ref.shape[0] == 8 and gen.mixes[(5, 6)].shape[0] == 8  # kept: the summary's 8
    err = (streamed[:8] - ref).norm() / ref.norm()
    assert ref.norm() > 0 and err < 1e-5, err


def test_gif_frames_have_a_real_delay(ref_ckpt, tmp_path):
    r = invoke(*base(ref_ckpt, tmp_path / "o"), "--classes", 2, "--gif", "--steps", 3)
    assert r.exit_code == 0, r.output
    with Image.open(tmp_path / "o" / "pure_2.gif") as im:
        delays = []
        for i in range(im.n_frames):
            im.seek(i)
            delays.append(im.info.get("duration"))
    assert delays == [250, 250, 250, 1000]


def test_transport_pictures_carry_labels(ref_ckpt, tmp_path):
    out = tmp_path / "t"
    r = invoke("transport", "--mode", "interpolation", "--ckpt", ref_ckpt, "--classes", 1, 2,
               "--n-interp", 3, "--steps", 1, "--out", out, "-q", "--device", "cpu")
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "transport.json").read_text())
    frames = rec["layout"]["interpolation.gif"]["frames"]
    with Image.open(out / "interpolation.gif") as im:
        assert im.n_frames == len(frames) and im.info["duration"] == 250
        im.seek(0)
        first = np.asarray(im.convert("RGB"))
    with Image.open(out / "interpolation.png") as im:
        grid_h = im.height
    assert first.shape[0] > 128  # the frame has a caption band under the cell
    caption = first[-20:]
    assert (caption < 128).any(), "no alpha caption under the frame"
    assert grid_h > 132  # a header band over the columns


# --------------------------------------------------------------------------- bench table


def _record(**kw):
    from gaf_trt.pipeline.bench import BenchRecord

    base = dict(backend="torch-compile", precision="bf16", mode="graph", batch=1024,
                classes=4, steps=1000, solver="euler", composition="spatial", device="cuda:0",
                device_name="NVIDIA H200", repeats=5, loop_ms=123456.0, ms_per_image=12345.6,
                ms_per_image_p90=12400.0, ms_per_step=1.0, ms_per_step_p90=1.0,
                images_per_s=123456.7, evals_per_s=1.0, gflops=123456.0, ceiling_gflops=1.0,
                ceiling_fraction=0.987, mfu=0.55, peak_mem_mb=123456.0, peak_mem_kind="x",
                max_rel_err_vs_fp32=1.234e-3, finite=True, speedup_vs_reference=123.45,
                setup_s=1234.5, compile_s=1200.1, resolved_backend="torch-compile")
    base.update(kw)
    return BenchRecord(**base)


def test_bench_table_fits_100_columns():
    """Even with the widest values the table fits a 100-column terminal, no number cut."""
    from rich.console import Console

    from gaf_trt.pipeline.bench.report import rich_table

    recs = [_record(backend="reference", resolved_backend="reference", mode="eager"),
            _record(), _record(backend="auto", resolved_backend="trt", finite=False,
                               max_rel_err_vs_fp32=None)]
    console = Console(width=100, file=io.StringIO(), record=True)
    console.print(rich_table(recs))
    text = console.export_text()
    assert max(len(ln) for ln in text.splitlines()) <= 100
    assert "…" not in text
    for value in ("12346", "123457", "123.45x", "99%", "55%", "non-finite", "1234.5"):
        assert value in text, value
