"""GPU check, one call (< 8 minutes), installs nothing; prints a short table last:

1. CUDA parity: fp32 CUDA against the CPU reference fixtures (tests/data);
2. CUDA-graph replay vs the uncaptured loop, measured max relative error, for every solver
   and for torch fp32, torch bf16 and torch-compile fp32 engines; the in-graph finite flag;
3. ``gaf-trt bench --preset XL/2 --latent 32`` grids with the reference row (batch 16 and
   32 at fp32 / bf16 / fp16, torch-compile bf16, and 1 image / 2 classes / IER-8 latency);
4. ``benchmarks/gpu_trt_check.py`` when present (it skips itself without ``tensorrt``).

Every step checks the time left and skips with a printed reason rather than overrun.
``--device cpu --quick`` runs the same logic on the CPU with small shapes (a self-test of
this script: capture is replaced by the uncaptured loop there).
Run through ``benchmarks/gpu_check.sh`` on a machine with CUDA.
"""

from __future__ import annotations

import argparse
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
from gaf_trt.cli.bench import GRID_FLAGS  # noqa: E402
from gaf_trt.cli.multivalue import expand_multi  # noqa: E402
from gaf_trt.compose.capture import CapturedLoop  # noqa: E402
from gaf_trt.engine.torch_backend import engine_from_model  # noqa: E402
from gaf_trt.errors import NonFiniteError  # noqa: E402
from gaf_trt.precision import Precision  # noqa: E402

DATA = ROOT / "tests" / "data"
OUT = Path(os.environ.get("OUT") or "/tmp/gaf_gpu_check")
BUDGET_S = 360.0  # gpu_check.sh gives this script 380 s
START = time.time()
rows: list[tuple[str, str, str]] = []


def left() -> float:
    return BUDGET_S - (time.time() - START)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max over images of ||a - b|| / ||b|| (float64; inf when a is not finite)."""
    a, b = a.double().cpu(), b.double().cpu()
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).max().item()


def parity(device: str) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    exp = torch.load(DATA / "gaf_ref_small_expected.pt", weights_only=True)
    m = load_model(DATA / "gaf_ref_small.pt", device=device)
    with torch.no_grad():
        j, k = m(exp["forward.x"].to(device), exp["forward.t"].to(device),
                 exp["forward.y"].to(device))
    worst = max(rel(j, exp["forward.J"]), rel(k, exp["forward.K"]))
    runs = {
        "euler_pure": dict(classes=[2], solver="euler", steps=6),
        "heun_weighted": dict(classes=[1, 4, 7], weights=[0.5, 0.3, 0.2], solver="heun", steps=4),
        "rk4_spatial_h2": dict(classes=[3, 8], masks=masks.build("horizontal_2", 8, 8).to(device),
                               solver="rk4", steps=3),
        "endpoint_pure": dict(classes=[5], solver="endpoint", steps=5),
        "euler_alpha": dict(classes=[0, 6], alpha=0.6, solver="euler", steps=5),
    }
    for name, kw in runs.items():
        kw = dict(kw)
        z = sample(m, kw.pop("classes"), exp[f"{name}.z0"].to(device), **kw)
        worst = max(worst, rel(z, exp[f"{name}.z"]))
    f = ComposedField(m, Composition.pure(4))
    with torch.no_grad():
        z = integrate(f, exp["euler_reverse.z0"].to(device), steps=5, solver="euler", reverse=True)
    worst = max(worst, rel(z, exp["euler_reverse.z"]))
    rows.append((f"{device} fp32 vs CPU reference (7 fixtures)", f"max rel err {worst:.2e}",
                 "PASS" if worst < 1e-4 else "FAIL"))


def graph_replay(device: str) -> None:
    """Replay vs uncaptured loop on the same engine and noise: the measured tolerance."""
    capture = device.startswith("cuda")
    model = load_model(DATA / "gaf_ref_small.pt", device=device)
    comp = Composition.build([3, 8], masks=masks.build("horizontal_2", 8, 8), weights=[0.6, 0.4])
    engines = {"torch fp32": engine_from_model(model, Precision.FP32)}
    bf16 = load_model(DATA / "gaf_ref_small.pt", device=device, dtype=torch.bfloat16)
    engines["torch bf16"] = engine_from_model(bf16, Precision.BF16)
    if left() > 300:
        engines["torch-compile fp32"] = engine_from_model(model, Precision.FP32, {"compile": True})
    x0 = torch.randn(4, 3, 8, 8, device=device)
    for label, engine in engines.items():
        field = ComposedField(engine, comp)
        errs = []
        for solver in ("euler", "heun", "rk4", "ier"):
            loop = CapturedLoop(field, x0, steps=8, solver=solver, capture=capture)
            worst = 0.0
            for seed in (1, 2):
                g = torch.Generator().manual_seed(seed)
                x = torch.randn(4, 3, 8, 8, generator=g).to(device)
                with torch.no_grad():
                    eager = integrate(field, x, steps=8, solver=solver)
                worst = max(worst, rel(loop(x), eager))
            errs.append(f"{solver} {worst:.1e}")
            bound = 1e-5 if "fp32" in label else 1e-2
            if worst > bound:
                rows.append((f"graph replay {label} {solver}", f"max rel err {worst:.2e} > "
                             f"{bound:.0e}", "FAIL"))
        rows.append((f"graph replay vs uncaptured, {label}", ", ".join(errs), "PASS"
                     if not any(r[0].startswith(f"graph replay {label} ") for r in rows) else
                     "FAIL"))
    bad = x0.clone()
    bad[0, 0, 0, 0] = float("nan")
    loop = CapturedLoop(ComposedField(engines["torch fp32"], comp), x0, steps=3, capture=capture)
    try:
        loop(bad)
        rows.append(("in-graph finite flag", "NaN input was not reported", "FAIL"))
    except NonFiniteError:
        rows.append(("in-graph finite flag", "NaN input reported after replay", "PASS"))


def run_bench(tag: str, args: list[str], timeout: float) -> list[dict] | None:
    path = OUT / f"bench_{tag}.json"
    args = expand_multi(args, GRID_FLAGS)  # repeated flags parse with any registration
    cmd = [sys.executable, "-m", "gaf_trt.cli", "bench", *args, "--json", str(path),
           "--plot", str(OUT / f"bench_{tag}.png")]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        rows.append((f"bench {tag}", f"timed out after {timeout:.0f} s", "FAIL"))
        return None
    print(proc.stdout[-6000:], proc.stderr[-1500:], f"({time.time() - t0:.0f} s)", flush=True)
    if proc.returncode != 0:
        rows.append((f"bench {tag}", proc.stderr.strip().splitlines()[-1][:150]
                     if proc.stderr.strip() else f"exit {proc.returncode}", "FAIL"))
        return None
    return json.loads(path.read_text())


def summarise(tag: str, recs: list[dict]) -> None:
    for r in recs:
        if r["backend"] == "reference":
            continue
        mfu = "" if r["mfu"] is None else f", MFU {r['mfu']:.0%}"
        err = r["max_rel_err_vs_fp32"]
        rows.append((f"{tag} {r['backend']} {r['precision']} {r['mode']} B={r['batch']} "
                     f"N={r['classes']} {r['solver']}-{r['steps']}",
                     f"{r['speedup_vs_reference']:.2f}x ref, {r['ms_per_image']:.2f} ms/img, "
                     f"{r['images_per_s']:.1f} img/s, {r['gflops'] / 1e3:.3g} TFLOP/s{mfu}, "
                     f"err {'non-finite' if err is None else f'{err:.1e}'}", "info"))


def bench(device: str, quick: bool) -> None:
    size = ["S/8", "16"] if quick else ["XL/2", "32"]
    model = ["--preset", size[0], "--latent", size[1]]
    common = [*model, "--device", device, "--classes", "2", "--warmup", "1", "--repeats",
              "2" if quick else "3"]
    plans = [
        ("xl2_torch", ["--backend", "torch", "--precision", "fp32", "bf16", "fp16",
                       "--batch", "16", "32", "--steps", "20"], 170),
        ("xl2_latency", ["--backend", "torch", "--precision", "bf16", "fp16", "--batch", "1",
                         "--solver", "ier", "--steps", "8"], 60),
        ("xl2_compile", ["--backend", "torch-compile", "--precision", "bf16", "--batch", "16",
                         "--steps", "20"], 150),
    ]
    if quick:  # CPU self-test: no fp16, tiny shapes, no compile
        plans = [("s8_torch", ["--backend", "torch", "--precision", "fp32", "bf16",
                               "--batch", "2", "--steps", "2"], 170),
                 ("s8_latency", ["--backend", "torch", "--precision", "bf16", "--batch", "1",
                                 "--solver", "ier", "--steps", "2"], 60)]
    for tag, args, budget in plans:
        if left() < budget * 0.6:
            rows.append((f"bench {tag}", f"skipped: {left():.0f} s left of the budget", "SKIP"))
            continue
        recs = run_bench(tag, [*common, *args], min(budget, left() - 20))
        if recs:
            summarise(tag, recs)


def trt_check() -> None:
    script = ROOT / "benchmarks" / "gpu_trt_check.py"
    if not script.exists():
        rows.append(("TensorRT check", "skipped: benchmarks/gpu_trt_check.py not present", "SKIP"))
        return
    if left() < 40:
        rows.append(("TensorRT check", f"skipped: {left():.0f} s left", "SKIP"))
        return
    try:
        budget = max(30.0, left() - 20)  # its XL/2 plans are skipped near the end of it
        proc = subprocess.run([sys.executable, str(script), "--budget", f"{budget:.0f}"],
                              capture_output=True, text=True, timeout=left() - 10)
    except subprocess.TimeoutExpired:
        rows.append(("TensorRT check", "timed out", "FAIL"))
        return
    print(proc.stdout[-4000:], proc.stderr[-1500:], flush=True)
    last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1][:150]
    rows.append(("TensorRT check (gpu_trt_check.py)", last,
                 "PASS" if proc.returncode == 0 else "FAIL"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="small shapes (CPU self-test)")
    ap.add_argument("--budget", type=float, default=None, help="seconds for all steps "
                    f"(default {BUDGET_S:.0f})")
    a = ap.parse_args()
    if a.budget is not None:
        globals()["BUDGET_S"] = a.budget
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available: nothing to check (use --device cpu --quick to self-test)")
        sys.exit(1)
    OUT.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu"
    print(f"device: {name} torch {torch.__version__}", flush=True)
    steps = [lambda: parity(a.device), lambda: graph_replay(a.device),
             lambda: bench(a.device, a.quick)]
    if a.device.startswith("cuda"):
        steps.append(trt_check)
    for step, label in zip(steps, ("parity", "graph replay", "bench", "tensorrt")):
        try:
            step()
        except Exception as err:  # noqa: BLE001 - report every check, keep going
            rows.append((label, f"error: {type(err).__name__}: {err}"[:150], "FAIL"))
    width = max(len(r[0]) for r in rows)
    print("\n" + "=" * 110)
    print(f"{'check':<{width}}  result   (total {time.time() - START:.0f} s)")
    for check, result, verdict in rows:
        print(f"{check:<{width}}  [{verdict}] {result}")
    sys.exit(1 if any(v == "FAIL" for _, _, v in rows) else 0)


if __name__ == "__main__":
    main()
