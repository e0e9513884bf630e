"""GPU check: CUDA parity with the CPU reference, CUDA-graph replay equal to the eager loop,
and ``gaf-trt bench`` on DiT-XL/2. Prints a short table last. Installs nothing.

Run through ``benchmarks/gpu_check.sh`` on a machine with CUDA.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gaf_trt import ComposedField, Composition, integrate, load_model, masks, sample  # noqa: E402
from gaf_trt.compose.capture import CapturedLoop  # noqa: E402

DATA = ROOT / "tests" / "data"
OUT = Path(os.environ.get("OUT") or "/tmp/gaf_gpu_check")
OUT.mkdir(parents=True, exist_ok=True)
rows: list[tuple[str, str, str]] = []


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    b = b.double()
    return ((a.double().cpu() - b).norm() / b.norm()).item()


def parity() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    exp = torch.load(DATA / "gaf_ref_small_expected.pt", weights_only=True)
    m = load_model(DATA / "gaf_ref_small.pt", device="cuda")
    with torch.no_grad():
        j, k = m(exp["forward.x"].cuda(), exp["forward.t"].cuda(), exp["forward.y"].cuda())
    worst = max(rel(j, exp["forward.J"]), rel(k, exp["forward.K"]))
    runs = {
        "euler_pure": dict(classes=[2], solver="euler", steps=6),
        "heun_weighted": dict(classes=[1, 4, 7], weights=[0.5, 0.3, 0.2], solver="heun", steps=4),
        "rk4_spatial_h2": dict(classes=[3, 8], masks=masks.build("horizontal_2", 8, 8).cuda(),
                               solver="rk4", steps=3),
        "endpoint_pure": dict(classes=[5], solver="endpoint", steps=5),
        "euler_alpha": dict(classes=[0, 6], alpha=0.6, solver="euler", steps=5),
    }
    for name, kw in runs.items():
        kw = dict(kw)
        z = sample(m, kw.pop("classes"), exp[f"{name}.z0"].cuda(), **kw)
        worst = max(worst, rel(z, exp[f"{name}.z"]))
    f = ComposedField(m, Composition.pure(4))
    with torch.no_grad():
        z = integrate(f, exp["euler_reverse.z0"].cuda(), steps=5, solver="euler", reverse=True)
    worst = max(worst, rel(z, exp["euler_reverse.z"]))
    rows.append(("CUDA fp32 vs CPU reference (7 fixtures)", f"max rel err {worst:.2e}",
                 "PASS" if worst < 1e-4 else "FAIL"))


def graph_replay() -> None:
    m = load_model(DATA / "gaf_ref_small.pt", device="cuda")
    comp = Composition.build([3, 8], masks=masks.build("horizontal_2", 8, 8),
                             weights=[0.6, 0.4])
    field = ComposedField(m, comp)
    x0 = torch.randn(4, 3, 8, 8, device="cuda")
    worst = 0.0
    for solver in ("euler", "heun", "rk4", "endpoint"):
        loop = CapturedLoop(field, x0, steps=8, solver=solver)
        for seed in (1, 2):
            x = torch.randn(4, 3, 8, 8, device="cuda", generator=torch.Generator("cuda").manual_seed(seed))
            with torch.no_grad():
                eager = integrate(field, x, steps=8, solver=solver)
            worst = max(worst, (loop(x) - eager).abs().max().item())
    rows.append(("CUDA-graph replay vs eager (4 solvers)", f"max abs diff {worst:.1e}",
                 "PASS" if worst == 0.0 else "FAIL"))


def bench() -> None:
    for precision, batch in (("bf16", 8), ("fp16", 8), ("fp32", 8), ("bf16", 32)):
        path = OUT / f"bench_xl2_{precision}_b{batch}.json"
        cmd = [sys.executable, "-m", "gaf_trt.cli", "bench", "--preset", "XL/2", "--classes", "2",
               "--batch", str(batch), "--steps", "20", "--precision", precision, "--device", "cuda",
               "--repeats", "5", "--warmup", "2", "--json", str(path)]
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
        print(proc.stdout, proc.stderr[-2000:], f"({time.time() - t0:.0f} s)", flush=True)
        if proc.returncode != 0:
            rows.append((f"bench XL/2 {precision} N=2 B={batch}", "failed", "FAIL"))
            continue
        r = json.loads(path.read_text())
        eager, graph = r["rows"][0], r["rows"][-1]
        tflops = 2 * r["gmac_per_eval"] * r["steps"] / (graph["loop_ms"] / 1e3) / 1e3
        rows.append((f"bench XL/2 {precision} N=2 B={batch} euler-20",
                     f"eager {eager['loop_ms']:.1f} ms, graph {graph['loop_ms']:.1f} ms "
                     f"({r['speedup_graph_vs_eager']:.2f}x), {graph['images_per_s']:.1f} img/s, "
                     f"{tflops:.0f} TFLOP/s", "info"))


def main() -> None:
    if not torch.cuda.is_available():
        print("CUDA is not available: nothing to check")
        sys.exit(1)
    print(f"device: {torch.cuda.get_device_name()} torch {torch.__version__}", flush=True)
    for step in (parity, graph_replay, bench):
        try:
            step()
        except Exception as err:  # noqa: BLE001 - report every check, keep going
            rows.append((step.__name__, f"error: {type(err).__name__}: {err}"[:120], "FAIL"))
    width = max(len(r[0]) for r in rows)
    print("\n" + "=" * 100)
    print(f"{'check':<{width}}  result")
    for name, result, verdict in rows:
        print(f"{name:<{width}}  [{verdict}] {result}")
    sys.exit(1 if any(v == "FAIL" for _, _, v in rows) else 0)


if __name__ == "__main__":
    main()
