"""The bench's ceiling is the machine's: the best GEMM provider present per precision (torch,
ONNX Runtime's MatMul; the device peak on CUDA), never below a measured row; a grid cell that
cannot run is skipped with its reason. No timing assertions: the invariant is tested on fake
measurements, the probes only for what they report."""

from __future__ import annotations

import json

import pytest

from gaf_trt.pipeline.bench.probes import assign_ceilings, gemm_probes
from gaf_trt.precision import Precision

FP32, BF16 = Precision.FP32, Precision.BF16


def test_ceiling_is_the_best_provider_and_never_below_a_row():
    """The last session's CPU: ONNX Runtime's GEMMs outran torch's, and the ort row read
    139 % of a torch-only ceiling."""
    probes = {(FP32, 64): {"torch": 100.0, "ort": 150.0}, (FP32, 128): {"torch": 110.0},
              (BF16, 128): {"torch": 300.0}}
    rows = [("reference", FP32, 64, 60.0), ("ort", FP32, 128, 139.0),
            ("torch", BF16, 128, 200.0)]
    got = assign_ceilings(rows, probes)
    assert got[0] == (150.0, "ort")  # the best provider at that shape, not torch's
    assert got[1] == (139.0, "row ort")  # outran every probe at its shape: its own ceiling
    assert got[2] == (300.0, "torch")
    for (_, _, _, gflops), (ceiling, _) in zip(rows, got, strict=True):
        assert 0 < gflops / ceiling <= 1.0
    # a precision's rows share one ceiling rule; an unprobed shape still gets a ceiling
    assert assign_ceilings([("x", FP32, 7, 5.0)], {}) == [(5.0, "row x")]


def test_probes_report_every_provider_present():
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    pytest.importorskip("onnx", reason="onnx is not installed")
    got = gemm_probes("cpu", FP32, 32, 32, 64, {})
    assert set(got) == {"torch", "ort"} and all(v > 0 for v in got.values())
    assert "ort" not in gemm_probes("cpu", BF16, 32, 32, 64, {})  # no BF16 MatMul on ORT CPU
    # int8: ONNX Runtime's integer GEMM only (torch has no int8 GEMM to probe)
    int8 = gemm_probes("cpu", Precision.INT8, 32, 32, 64, {})
    assert set(int8) == {"ort"} and int8["ort"] > 0
    assert gemm_probes("cpu", Precision.FP8, 32, 32, 64, {}) == {}  # no fp8 GEMM on a CPU


def test_quantised_rows_meet_the_ceiling_of_their_arithmetic():
    """int8 rows against the integer GEMMs; fp8 rows dequantised on a CPU against fp32."""
    from gaf_trt.pipeline.bench.probes import probe_precision

    assert probe_precision(Precision.INT8, "cpu") is Precision.INT8
    assert probe_precision(Precision.FP8, "cpu") is FP32
    assert probe_precision(Precision.FP8, "cuda:0") is Precision.FP8
    assert probe_precision(BF16, "cpu") is BF16


def test_a_cell_that_cannot_run_is_skipped_with_its_reason(tmp_path_factory, tmp_path):
    from gaf_trt.pipeline.bench import BenchGrid, run_bench
    from gaf_trt.pipeline.bench.report import plot_png, rich_table, write_records
    from tests.export.shared import ref_engine_dir

    folder = ref_engine_dir(tmp_path_factory.getbasetemp())  # an fp32 engine directory
    grid = BenchGrid(engine=str(folder), backends=("ort",), precisions=(FP32, BF16),
                     batches=(1,), classes=(2,), steps=(1,), repeats=1, warmup=0,
                     device="cpu")
    records = run_bench(grid)
    assert [(r.backend, r.precision) for r in records] == [
        ("reference", "fp32"), ("ort", "fp32"), ("ort", "bf16")]
    skipped = records[2]
    assert "exported at fp32" in skipped.skipped and skipped.mode == "skipped"
    for r in records[:2]:
        assert not r.skipped and 0 < r.ceiling_fraction <= 1.0 and r.ceiling_source
    write_records(tmp_path / "b.json", records)
    data = json.loads((tmp_path / "b.json").read_text())
    assert data[2]["skipped"] == skipped.skipped and data[1]["skipped"] == ""
    from rich.console import Console

    console = Console(width=300, record=True)
    console.print(rich_table(records))
    assert "skipped: engine directory" in console.export_text()
    plot_png(tmp_path / "b.png", records)
    assert (tmp_path / "b.png").stat().st_size > 0
