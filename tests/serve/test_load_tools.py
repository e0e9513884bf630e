"""The serving load benchmarks' own logic, without a server: benchmarks/gpu_check.sh parses
(``bash -n``), the rows-vs-time curve's interpolation and per-row times behind the
"curve's ceiling", and the ``perf_analyzer --input-data`` file (one entry per request, every
request padded to the same shapes, no batch dimension)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gaf_trt.serve import ServeRequest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

stl = pytest.importorskip("serve_triton_load")
from serve_requests import perf_analyzer_data, write_json  # noqa: E402


def test_gpu_check_scripts_parse():
    for script in ("gpu_check.sh",):
        subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / script)], check=True)
    subprocess.run([sys.executable, "-m", "py_compile",
                    str(ROOT / "benchmarks" / "gpu_serve_check.py")], check=True)


def test_curve_ceiling_arithmetic():
    curve = {1: 0.002, 4: 0.004, 16: 0.008, 64: 0.032}
    assert stl.call_seconds(curve, 1) == 0.002 and stl.call_seconds(curve, 0.5) == 0.002
    assert stl.call_seconds(curve, 10) == pytest.approx(0.006)  # between 4 and 16
    assert stl.call_seconds(curve, 128) == pytest.approx(0.064)  # beyond: in proportion
    # 2 real rows in calls padded to 16: the padded call's time over the 2 real rows
    assert stl.per_row(curve, 2, 16) == pytest.approx(0.008 / 2)
    assert stl.per_row(curve, 32, 16) == pytest.approx(stl.call_seconds(curve, 32) / 32)


def test_perf_analyzer_data_file(tmp_path):
    reqs = [ServeRequest(classes=[4], steps=3, seed=1),
            ServeRequest(classes=[1, 2, 3], weights=[1.0, 0.5, 2.0], steps=8, seed=2)]
    path = tmp_path / "data.json"
    write_json(path, perf_analyzer_data(reqs, 8))
    data = json.loads(path.read_text())["data"]
    assert len(data) == 2 and list(tmp_path.iterdir()) == [path]  # no temporary left
    assert {k: v["shape"] for k, v in data[0].items()} == \
        {k: v["shape"] for k, v in data[1].items()}
    assert data[1]["classes"] == {"content": [1, 2, 3, 0, 0, 0, 0, 0], "shape": [8]}
    assert data[1]["class_count"] == {"content": [3], "shape": [1]}
    assert data[0]["weights"]["content"][:2] == [1.0, 0.0]
    assert data[1]["steps"] == {"content": [8], "shape": [1]}
