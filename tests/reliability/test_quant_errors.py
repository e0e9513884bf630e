"""Quantised exports (issue 17) as a user runs them: calibration counts out of bounds, fp8 on a
GPU older than compute capability 8.9, int8 on a backend that cannot run it, a calibration
that cannot produce finite ranges, and an engine whose error is above the bound — each one
``error:`` line, exit 2, nothing written; ``--accept-error`` keeps an over-bound engine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.reliability.conftest import (
    REF_CKPT,
    assert_bad_input,
    assert_nothing_written,
    cli_cmd,
    run_many,
)

pytest.importorskip("onnxruntime.quantization")
pytest.importorskip("onnxscript")

#: The smallest real quantised export of the reference checkpoint.
FAST = ["--graphs", "split", "--no-parity", "--onnx-only", "--calib-samples", "4",
        "--calib-steps", "2"]
#: Exports calibrate and measure: more than the default per-command limit on a loaded machine.
EXPORT_TIMEOUT_S = 300.0


def patched_cli(patch: str, *args: str | Path) -> list[str]:
    """``gaf-trt ARGS`` in a fresh interpreter after ``patch`` (Python statements) ran."""
    code = f"import sys\n{patch}\nfrom gaf_trt.cli import main\nsys.exit(main())"
    return [sys.executable, "-c", code, *map(str, args)]


OLD_GPU = ("import torch\ntorch.cuda.is_available = lambda: True\n"
           "torch.cuda.get_device_capability = lambda *a: (8, 6)")
TIGHT_BOUND = ("from gaf_trt.engine.base import Precision\n"
               "import gaf_trt.export.quantize.config as q\n"
               "q.ERROR_BOUNDS[Precision.INT8] = {'velocity': 1e-9, 'final_state': 1e-9}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, bad_ckpt):
    root = tmp_path_factory.mktemp("quant_errors")

    def export(case: str, *args: str | Path) -> list[str]:
        return cli_cmd("export", "--ckpt", REF_CKPT, "--out", root / case, *args)

    cases = {
        "samples_low": export("samples_low", "--precision", "int8", "--calib-samples", "3"),
        "samples_high": export("samples_high", "--precision", "int8", "--calib-samples",
                               "100000"),
        "steps_low": export("steps_low", "--precision", "int8", "--calib-steps", "1"),
        "method": export("method", "--precision", "int8", "--calib-method", "mse"),
        "fp8_old_gpu": patched_cli(OLD_GPU, "export", "--ckpt", REF_CKPT, "--out",
                                   root / "fp8_old_gpu", "--precision", "fp8"),
        "torch_int8": cli_cmd("bench", "--ckpt", REF_CKPT, "--backend", "torch",
                              "--precision", "int8", "--device", "cpu", "--steps", "1",
                              "--batch", "1", "--repeats", "1"),
        "non_finite": cli_cmd("export", "--ckpt", bad_ckpt("overflow"), "--out",
                              root / "non_finite", "--precision", "int8", *FAST),
        "over_bound": patched_cli(TIGHT_BOUND, "export", "--ckpt", REF_CKPT, "--out",
                                  root / "over_bound", "--precision", "int8", *FAST),
        "fp8_over_bound": patched_cli(TIGHT_BOUND.replace("INT8", "FP8"), "export", "--ckpt",
                                      REF_CKPT, "--out", root / "fp8_over_bound",
                                      "--precision", "fp8", *FAST),
        "accepted": patched_cli(TIGHT_BOUND, "export", "--ckpt", REF_CKPT, "--out",
                                root / "accepted", "--precision", "int8", "--accept-error",
                                *FAST),
    }
    return root, run_many(cases, timeout=EXPORT_TIMEOUT_S)


@pytest.mark.parametrize("case, needles", [
    ("samples_low", ["--calib-samples", "[4, 4096]", "3"]),
    ("samples_high", ["--calib-samples", "100000"]),
    ("steps_low", ["--calib-steps", "[2, 200]"]),
    ("method", ["mse", "minmax"]),
    ("fp8_old_gpu", ["fp8", "8.9", "8.6"]),
    ("non_finite", [("not finite", "non-finite")]),
    ("over_bound", ["int8", "bound", "nothing written"]),
])
def test_bad_quantised_export_is_one_line_and_writes_nothing(runs, case, needles):
    root, results = runs
    assert_bad_input(results[case], *needles)
    assert_nothing_written(root / case)


def test_the_fp8_refusal_is_its_one_line(runs):
    """Issue 23 item 9: no WARNING line (fp8 simulated on the CPU) before the refusal."""
    root, results = runs
    res = results["fp8_over_bound"]
    line = assert_bad_input(res, "fp8", "bound", "nothing written")
    assert [ln for ln in res.stderr.splitlines() if ln.strip()] == [line], res.describe()
    assert_nothing_written(root / "fp8_over_bound")


def test_int8_on_a_backend_that_cannot_run_it(runs):
    _, results = runs
    assert_bad_input(results["torch_int8"], "int8", ("--backend ort", "backend ort"))


def test_accept_error_keeps_the_engine_and_says_so(runs):
    root, results = runs
    res = results["accepted"]
    assert res.rc == 0, res.describe()
    assert "over the bound" in res.stdout, res.describe()
    man = json.loads((root / "accepted" / "manifest.json").read_text())
    assert man["precision"] == "int8"
    assert man["quantization"]["accepted_over_bound"] is True
    assert man["quantization"]["quality"]["velocity"] > 1e-9


def test_an_int8_engine_relabelled_fp32_is_refused(runs, tmp_path):
    """Issue 23 item 9: an int8 engine whose manifest says fp32 would run int8 and record
    fp32: refused by the commands that open it, one line, nothing written."""
    import shutil

    root, _ = runs
    eng = tmp_path / "relabelled"
    shutil.copytree(root / "accepted", eng)
    man = json.loads((eng / "manifest.json").read_text())
    man["precision"] = "fp32"
    (eng / "manifest.json").write_text(json.dumps(man))
    out = tmp_path / "out"
    res = run_many({
        "sample": cli_cmd("sample", "--engine", eng, "--classes", "1", "--steps", "2",
                          "--batch", "1", "--device", "cpu", "-q", "--out", out),
        "info": cli_cmd("info", eng)})
    for r in res.values():
        line = assert_bad_input(r, "trunk", "runs at int8", "fp32")
        assert [ln for ln in r.stderr.splitlines() if ln.strip()] == [line], r.describe()
    assert_nothing_written(out)
