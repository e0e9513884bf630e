"""What Polygraphy's comparator costs: CPU seconds of export's parity check per graph and of
``gaf-trt info DIR --compare`` on the fixture checkpoint's engine directory (split + fused,
fp32), one torch thread; the load average before and after (a number taken while the load
is above the core count is a busy-machine number).

    PYTHONPATH=$PWD python3 benchmarks/compare_cost.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import torch

    from gaf_trt.export.build import ExportConfig, export_engine
    from gaf_trt.export.graphs import GRAPH_GROUPS, Limits
    from gaf_trt.export.parity import check_graph, parity_sizes
    from gaf_trt.model.checkpoint import load_model
    from gaf_trt.pipeline.compare_runtimes import compare_engine
    from gaf_trt.precision import Precision

    torch.set_num_threads(1)
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    out = Path(tempfile.mkdtemp()) / "fixture"
    export_engine(ExportConfig(str(ROOT / "tests" / "data" / "gaf_ref_small.pt"), str(out),
                               onnx_only=True, parity=False))
    model = load_model(str(out / "model.safetensors"), device="cpu").float().eval()
    specs = [s for g in ("split", "fused") for s in GRAPH_GROUPS.get(g)(model, Limits(8, 4))]
    c0 = cpu_s()
    for _ in range(args.repeats):
        for spec in specs:
            check_graph(spec, out / f"{spec.name}.onnx", Precision.FP32,
                        model.config.num_classes, parity_sizes(spec))
    per = (cpu_s() - c0) / (args.repeats * len(specs))
    print(f"parity check: {per * 1000:.0f} ms CPU a graph ({len(specs)} graphs x "
          f"{args.repeats})")
    for runtimes in (("torch", "ort"), ("torch", "ort", "openvino")):
        c0 = cpu_s()
        res = compare_engine(out, runtimes)
        print(f"info --compare --backends {','.join(runtimes)}: {cpu_s() - c0:.2f} s CPU, "
              f"{len(res.pairs)} pairs, {'pass' if res.ok else 'FAIL'}"
              + (f" (not run: {', '.join(res.not_run)})" if res.not_run else ""))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
