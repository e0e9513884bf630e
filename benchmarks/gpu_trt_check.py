"""TensorRT check for gaf-trt export (one call; called by benchmarks/gpu_check.py).

On a GPU machine with TensorRT (10.x or 11.x):

1. the fixture checkpoint: ``export_engine`` (split + fused graphs, FP32 and FP16, TensorRT
   plans with a static-batch variant), ``load_engine(backend="trt")`` reproducing the reference
   runs (FP32, TF32 off), FP32 TensorRT vs ONNX Runtime, the TensorRT engine under
   ``CapturedLoop``; ``info --compare`` (Polygraphy's TrtRunner beside torch, ort, openvino);
2. a random-weight DiT-XL/2 (32x32x4 latent, 1000 classes): the fused ``step_velocity`` graph in
   FP32 and FP16, plans built, FP16 TensorRT velocity error against PyTorch FP32 (torch FP16
   eager as the yardstick), FP32 TensorRT against ONNX Runtime, and the PSNR of a 10-step
   Euler sample's final state (FP16 TensorRT vs PyTorch FP32, same noise).

Without ``tensorrt`` or CUDA it prints why and exits 0 ("skipped: ...").

``--cpu-precision`` (no GPU needed) measures the reduced-precision *graphs* on ONNX Runtime's
CPU provider against PyTorch FP32, for the fixture model and a random DiT-S/2 (the numbers in
benchmarks/EXPORT.md). The last line printed is a one-line summary.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURE = ROOT / "tests" / "data" / "gaf_ref_small.pt"
OUT = Path(os.environ.get("OUT") or tempfile.gettempdir()) / "gaf_trt_check"


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    b = b.double().cpu()
    err = float((a.double().cpu() - b).norm() / b.norm())
    return err if err == err else math.inf


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 2.0) -> float:
    """PSNR of ``a`` against ``b`` for values in [-1, 1] (peak-to-peak 2)."""
    mse = float(((a.float().cpu().clamp(-1, 1) - b.float().cpu().clamp(-1, 1)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def random_model(preset: str, latent: int, channels: int, classes: int):
    from gaf_trt.model.presets import preset_model

    return preset_model(preset, latent, channels, classes, seed=0, device="cpu")


def step_inputs(cfg, b: int, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, *cfg.sample_shape, generator=g)
    t = torch.rand(b, generator=g) * 0.98 + 0.01
    classes = torch.randint(0, cfg.num_classes, (n,), generator=g)
    coef = torch.full((n, 1, cfg.input_size, cfg.input_size), 1.0 / n)
    return x, t, classes, coef


def export_step(model, folder: Path, precision, opset: int = 18) -> tuple[Path, object]:
    """The fused ``step_velocity`` graph of ``model`` at ``precision``; returns (path, spec)."""
    import onnx

    from gaf_trt.export.graphs import GRAPH_GROUPS, Limits
    from gaf_trt.export.onnx_export import check_by_path, export_onnx, save_model
    from gaf_trt.export.precision import reduce_precision
    from gaf_trt.precision import Precision

    folder.mkdir(parents=True, exist_ok=True)
    spec = GRAPH_GROUPS.get("fused")(model, Limits(4096, 256))[0]
    rec = export_onnx(spec, folder, opset=opset, num_classes=model.config.num_classes,
                      metadata={"gaf_config": model.config.to_json()})
    path = folder / rec.onnx_file
    if precision is not Precision.FP32:
        proto = onnx.load(str(path))
        reduced, _ = reduce_precision(proto, precision)
        if rec.data_file:
            (folder / rec.data_file).unlink()
        out = folder / f"step_velocity.{precision.value}.onnx"
        save_model(reduced, out, 2 * 1024**3 - 64 * 1024**2)
        check_by_path(out)
        path = out
    return path, spec


def ort_run(path: Path, spec, args) -> torch.Tensor:
    from gaf_trt.export.parity import cpu_session

    s = cpu_session(path)
    feeds = {n: a.numpy() for n, a in zip(spec.input_names, args, strict=True)}
    return torch.from_numpy(s.run(None, feeds)[0])


def eager(model, args, dtype) -> torch.Tensor:
    from gaf_trt.export.graphs import StepVelocityGraph

    m = StepVelocityGraph(model.to(dtype))
    with torch.no_grad():
        out = m(*args).float()
    model.float()
    return out


# --------------------------------------------------------------------------- CPU precision


def cpu_precision(tmp: Path) -> dict:
    from gaf_trt import load_model
    from gaf_trt.precision import Precision

    rows = {}
    cases = [("fixture (D64 depth2, 3x8x8)", load_model(FIXTURE), 4, 2),
             ("random DiT-S/2 (32x32x4, 1000 classes)", random_model("S/2", 32, 4, 1000), 8, 2)]
    for label, model, b, n in cases:
        args = step_inputs(model.config, b, n)
        ref = eager(model, args, torch.float32)
        row = {"batch": b, "classes": n}
        for prec in (Precision.FP32, Precision.FP16, Precision.BF16):
            t0 = time.perf_counter()
            path, spec = export_step(model, tmp / label.split()[0] / prec.value, prec)
            try:
                got = ort_run(path, spec, args)
                row[f"onnx_{prec.value}"] = rel(got, ref)
            except Exception as err:  # noqa: BLE001 - ORT has no BF16 CPU kernels
                row[f"onnx_{prec.value}"] = f"not run: {str(err).splitlines()[0][:90]}"
            row[f"export_{prec.value}_s"] = round(time.perf_counter() - t0, 1)
        for name, dtype in (("torch_fp16_eager", torch.float16),
                            ("torch_bf16_eager", torch.bfloat16)):
            row[name] = rel(eager(model, args, dtype), ref)
        rows[label] = row
        print(label, json.dumps(row), flush=True)
    return rows


# --------------------------------------------------------------------------- TensorRT


def trt_fixture(tmp: Path, summary: list[str]) -> None:
    from gaf_trt import ComposedField, Composition, sample
    from gaf_trt.compose.capture import CapturedLoop
    from gaf_trt.engine.loader import load_engine
    from gaf_trt.export.build import ExportConfig, ProfileSpec, export_engine
    from gaf_trt.precision import Precision

    expected = torch.load(ROOT / "tests" / "data" / "gaf_ref_small_expected.pt",
                          weights_only=True)
    t0 = time.perf_counter()
    res = export_engine(ExportConfig(str(FIXTURE), str(tmp / "fixture_fp32"),
                                     profile=ProfileSpec(max_batch=8, max_classes=4,
                                                         static_batch=2)))
    print(f"fixture fp32 export + {len(res.plans_built)} plans: "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    z0 = expected["heun_weighted.z0"].cuda()
    for graphs in ("split", "fused"):
        eng = load_engine(tmp / "fixture_fp32", backend="trt", device="cuda", graphs=graphs)
        z = sample(eng, [1, 4, 7], z0, weights=[0.5, 0.3, 0.2], steps=4, solver="heun")
        e = rel(z, expected["heun_weighted.z"])
        print(f"fixture trt fp32 {graphs}: heun_weighted rel err {e:.2e}", flush=True)
        summary.append(f"fixture-{graphs} {e:.1e}")
        assert e < 1e-4, f"TensorRT FP32 ({graphs}) misses the reference: {e}"
    ort = load_engine(tmp / "fixture_fp32", backend="ort", device="cpu", graphs="fused")
    trt = load_engine(tmp / "fixture_fp32", backend="trt", device="cuda", graphs="fused")
    args = step_inputs(trt.config, 4, 3)
    e = rel(trt.composed_velocity(*[a.cuda() for a in args]), ort.composed_velocity(*args))
    print(f"fixture step_velocity TensorRT fp32 vs ONNX Runtime: {e:.2e}", flush=True)
    comp = Composition.build([3, 8], weights=[0.5, 0.5])
    loop = CapturedLoop(ComposedField(trt, comp), z0, steps=6, solver="euler")
    eager_z = sample(trt, [3, 8], z0, weights=[0.5, 0.5], steps=6)
    e = rel(loop(z0), eager_z)
    print(f"fixture CapturedLoop over the trt engine vs eager: {e:.2e}", flush=True)
    summary.append(f"capture {e:.1e}")
    static = load_engine(tmp / "fixture_fp32", backend="trt", device="cuda", graphs="fused",
                         static=True)
    e = rel(sample(static, [3, 8], z0, weights=[0.5, 0.5], steps=6), eager_z)
    print(f"fixture static plan (B=2, N=2) vs dynamic: {e:.2e}", flush=True)
    trt_runtime(tmp, trt, comp, z0, eager_z, summary)
    res16 = export_engine(ExportConfig(str(FIXTURE), str(tmp / "fixture_fp16"),
                                       precision=Precision.FP16, graphs=("fused",),
                                       profile=ProfileSpec(max_batch=8, max_classes=4)))
    trt16 = load_engine(res16.out, backend="trt", device="cuda")
    e = rel(sample(trt16, [1, 4, 7], z0, weights=[0.5, 0.3, 0.2], steps=4, solver="heun"),
            expected["heun_weighted.z"])
    print(f"fixture trt fp16 heun_weighted rel err {e:.2e}", flush=True)
    trt_compare(tmp / "fixture_fp32", summary)


def trt_compare(folder: Path, summary: list[str]) -> None:
    """``gaf-trt info DIR --compare``: Polygraphy's TrtRunner over the plans beside torch, ort
    and openvino on the same inputs (every graph within the fp32 bound)."""
    from gaf_trt.pipeline.compare_runtimes import compare_engine

    res = compare_engine(folder)
    print("\n".join(res.lines()), flush=True)
    summary.append(f"compare {'pass' if res.ok else 'FAIL'}")
    assert "trt" not in res.not_run and res.ok, "info --compare: " + res.lines()[-1]


def trt_runtime(tmp: Path, trt, comp, z0, eager_z, summary: list[str]) -> None:
    """The runtime fixes of issue 15 on real TensorRT: the plan's own stream, a batch-1 time
    view (not 256-byte aligned) copied to an aligned buffer, two captured loops over one
    engine with eager calls of other shapes between replays (one context per capture), an
    out-of-profile shape as one line with TensorRT's reason, weight-stripped plans refitted
    from the shared ONNX weights (load time measured)."""
    from gaf_trt import ComposedField, sample
    from gaf_trt.compose.capture import CapturedLoop
    from gaf_trt.engine.trt_backend import TrtPlan
    from gaf_trt.errors import GAFError
    from gaf_trt.export.build import ProfileSpec
    from gaf_trt.export.tensorrt import build_plan, profile_shapes

    plan = trt.plans["step_velocity"]
    assert plan.stream.cuda_stream != 0, "the plan runs on the default stream"
    one = z0[:1]
    e = rel(sample(trt, [3, 8], one, weights=[0.5, 0.5], steps=6), eager_z[:1])
    print(f"batch-1 (misaligned t view) vs batch-2 row: {e:.2e}", flush=True)
    assert e < 1e-4, e
    loop2 = CapturedLoop(ComposedField(trt, comp), z0, steps=6, solver="euler")
    loop3 = CapturedLoop(ComposedField(trt, comp), torch.cat([z0, z0[:1]]), steps=6,
                         solver="euler")
    sample(trt, [3, 8], z0[:1], weights=[0.5, 0.5], steps=2)  # eager, other shapes
    e2 = rel(loop2(z0), eager_z)
    e3 = rel(loop3(torch.cat([z0, z0[:1]]))[:2], eager_z)
    print(f"two captured loops, replayed after eager calls: {e2:.2e} / {e3:.2e} "
          f"({len(plan.captured_contexts)} capture contexts)", flush=True)
    summary.append(f"2 loops {max(e2, e3):.1e}")
    assert max(e2, e3) < 1e-4
    try:
        sample(trt, [3, 8], torch.randn(9, *z0.shape[1:], device="cuda"), weights=[0.5, 0.5],
               steps=1)
        raise AssertionError("batch 9 ran on a max-batch-8 profile")
    except GAFError as err:
        print(f"out-of-profile: {err}", flush=True)
        assert "\n" not in str(err)
    folder = tmp / "fixture_fp32"
    graph = json.loads((folder / "manifest.json").read_text())["graphs"]["step_velocity"]
    t0 = time.perf_counter()
    rec = build_plan(folder / graph["file"], tmp / "sv_stripped.plan",
                     profile_shapes(graph, ProfileSpec(max_batch=8, max_classes=4).ranges()),
                     {"strip_plan": True})
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    stripped = TrtPlan(tmp / "sv_stripped.plan", dict(rec, file="sv_stripped.plan"), folder,
                       f"cuda:{torch.cuda.current_device()}", graph, folder / graph["file"])
    load_s = time.perf_counter() - t0
    feeds = trt._step_inputs(*[a.cuda() for a in step_inputs(trt.config, 4, 3)])
    e = rel(stripped.execute(feeds)["v"], plan.execute(feeds)["v"])
    sizes = (tmp / "sv_stripped.plan").stat().st_size, (folder / "step_velocity.plan").stat().st_size
    print(f"weight-stripped step_velocity plan: {sizes[0]} vs {sizes[1]} bytes, build "
          f"{build_s:.1f} s, load + refit from the shared ONNX weights {load_s:.2f} s, "
          f"vs the full plan {e:.2e}", flush=True)
    summary.append(f"stripped {e:.1e}")
    assert e < 1e-5, e


def trt_xl(tmp: Path, summary: list[str], deadline: float) -> None:
    import onnx

    from gaf_trt import ComposedField, Composition, integrate
    from gaf_trt.export.onnx_export import check_by_path, save_model
    from gaf_trt.export.precision import reduce_precision
    from gaf_trt.precision import Precision

    model = random_model("XL/2", 32, 4, 1000)
    cfg = model.config
    b, n = 8, 2
    args = step_inputs(cfg, b, n)
    gargs = [a.cuda() for a in args]
    model.cuda()
    ref = eager(model, gargs, torch.float32)
    y16 = eager(model, gargs, torch.float16)
    model.cpu()
    print(f"XL/2 torch fp16 eager velocity vs torch fp32 (yardstick): {rel(y16, ref):.2e}",
          flush=True)
    t0 = time.perf_counter()
    path32, spec = export_step(model, tmp / "xl", Precision.FP32)  # traced once
    proto = onnx.load(str(path32))
    reduced, _ = reduce_precision(proto, Precision.FP16)
    path16 = tmp / "xl" / "step_velocity.fp16.onnx"
    save_model(reduced, path16, 2 * 1024**3 - 64 * 1024**2)
    del proto, reduced
    check_by_path(path16)
    print(f"XL/2 export fp32 + fp16 graphs: {time.perf_counter() - t0:.0f} s", flush=True)
    engines = {}
    for prec, path in ((Precision.FP16, path16), (Precision.FP32, path32)):
        if time.time() > deadline - 150:
            print(f"XL/2 {prec.value} plan skipped: under 150 s of the budget left", flush=True)
            continue
        engines[prec] = _xl_engine(path, spec, cfg, b, n)
        v = engines[prec].composed_velocity(*gargs)
        print(f"XL/2 TensorRT {prec.value} velocity vs torch fp32: {rel(v, ref):.2e}",
              flush=True)
        if prec is Precision.FP32:
            e = rel(v, ort_run(path, spec, args))
            print(f"XL/2 TensorRT fp32 vs ONNX Runtime CPU: {e:.2e}", flush=True)
    if Precision.FP16 not in engines:
        summary.append("XL/2 skipped (time)")
        return
    v16 = rel(engines[Precision.FP16].composed_velocity(*gargs), ref)
    comp = Composition.build([int(args[2][0]), int(args[2][1])], weights=[0.5, 0.5])
    z0 = torch.randn(b, *cfg.sample_shape, generator=torch.Generator().manual_seed(1)).cuda()
    with torch.no_grad():
        z32 = integrate(ComposedField(model.cuda(), comp), z0, steps=10, solver="euler")
        z16 = integrate(ComposedField(engines[Precision.FP16], comp), z0, steps=10,
                        solver="euler")
    scale = z32.abs().max()
    p = psnr(z16 / scale, z32 / scale)
    print(f"XL/2 euler-10 final latent, TensorRT fp16 vs torch fp32: PSNR {p:.1f} dB "
          "(latents scaled to [-1, 1] by the reference's max)", flush=True)
    summary.append(f"XL/2 fp16 v {v16:.1e} (torch fp16 {rel(y16, ref):.1e}), PSNR {p:.1f} dB")


def _xl_engine(path: Path, spec, cfg, b: int, n: int):
    """Build a plan for ``path`` (B 1..b, N 1..n; optimisation level 2 to fit the time) and
    open it as a fused TensorRT engine over a hand-built manifest."""
    from gaf_trt.engine.trt_backend import TrtFusedEngine
    from gaf_trt.export.tensorrt import build_plan, profile_shapes
    from gaf_trt.io.files import file_sha256

    t0 = time.perf_counter()
    rec = {"inputs": [s.to_dict() for s in spec.inputs],
           "outputs": [s.to_dict() for s in spec.outputs], "file": path.name}
    plan_path = path.with_suffix(".plan")
    plan = build_plan(path, plan_path, profile_shapes(rec, {"B": [1, b, b], "N": [1, n, n]}),
                      {"tf32": False, "optimization_level": 2})
    print(f"XL/2 plan {plan_path.name}: {time.perf_counter() - t0:.0f} s (TensorRT "
          f"{plan['tensorrt']}, {plan['gpu']['name']})", flush=True)
    man = {"config": cfg.to_dict(), "precision": "fp32",
           "graphs": {"step_velocity": rec, "step_anchors": rec},
           "plans": {"step_velocity": dict(plan, graph="step_velocity", file=plan_path.name,
                                           static=False)},
           "files": [plan_path.name], "sha256": {plan_path.name: file_sha256(plan_path)}}
    eng = TrtFusedEngine(path.parent, man, ["step_velocity"], f"cuda:{torch.cuda.current_device()}")
    eng._load_plans(static=False)
    return eng


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-precision", action="store_true",
                    help="measure the FP16/BF16 graphs on ONNX Runtime CPU (no GPU needed)")
    ap.add_argument("--skip-xl", action="store_true")
    ap.add_argument("--budget", type=float, default=420.0,
                    help="seconds for the whole check; XL/2 plans are skipped near the end")
    a = ap.parse_args()
    deadline = time.time() + a.budget
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        if a.cpu_precision:
            rows = cpu_precision(tmp)
            OUT.mkdir(parents=True, exist_ok=True)
            (OUT / "cpu_precision.json").write_text(json.dumps(rows, indent=2))
            s2 = next(v for k, v in rows.items() if "S/2" in k)
            print(f"S/2 fp16 graph {s2['onnx_fp16']:.1e} vs torch fp16 eager "
                  f"{s2['torch_fp16_eager']:.1e} (ORT CPU)")
            return 0
        from gaf_trt.engine.trt_runtime import unavailable

        why = unavailable()
        if why is not None:
            print(f"skipped: {why}")
            return 0
        import tensorrt as trt

        print(f"TensorRT {trt.__version__} on {torch.cuda.get_device_name()}", flush=True)
        summary: list[str] = []
        trt_fixture(tmp, summary)
        if not a.skip_xl:
            trt_xl(tmp, summary, deadline)
        print("TensorRT check ok: " + "; ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
