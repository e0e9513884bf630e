"""Quantisation table (issue 17): speed and final-state error per precision on the S/2 preset
grid, and the digits model's classifier accuracy / Fréchet distance per precision.

Part ``speed``: ``gaf-trt bench``'s own case runner (reference loop, round-robin timed
repeats, ratios from one run) over torch fp32 / bf16 and ONNX Runtime fp32 / int8 (and fp8,
simulated by dequantising on the CPU) engine directories of the same weights:

    python benchmarks/preset_ckpt.py --preset S/2 --latent 16 --out /tmp/s2.safetensors
    gaf-trt export --ckpt /tmp/s2.safetensors --out /tmp/s2_fp32 --onnx-only --graphs fused,split
    gaf-trt export --ckpt /tmp/s2.safetensors --out /tmp/s2_int8 --onnx-only --graphs fused,split \\
        --precision int8
    python benchmarks/quant_table.py speed --ckpt /tmp/s2.safetensors \\
        --engine fp32=/tmp/s2_fp32 --engine int8=/tmp/s2_int8

Part ``digits``: the bundled digits model exported at int8 / fp8 here, sampled through the
ort backend, scored by training's evaluator (same classifier, noise and samplers as
benchmarks/digits_precision.py: euler-20 and IER-8):

    python benchmarks/quant_table.py digits --per-class 100 \
        --json benchmarks/results/20261130/quant_digits.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gaf_trt.engine.base import LoadRequest, load_backend  # noqa: E402
from gaf_trt.engine.loader import load_engine  # noqa: E402
from gaf_trt.io.files import write_json  # noqa: E402
from gaf_trt.precision import Precision  # noqa: E402


def speed(a: argparse.Namespace) -> dict:
    from gaf_trt.device import device_name
    from gaf_trt.pipeline.bench.grid import BenchGrid, Case
    from gaf_trt.pipeline.bench.reference import load_fp32_model
    from gaf_trt.pipeline.bench.run import _Context, bench_case

    engines = dict(e.split("=", 1) for e in a.engine)
    bad = [p for p in engines if p not in {x.value for x in Precision}]
    if bad:
        sys.exit(f"error: --engine PRECISION=DIR, unknown precision {bad[0]!r}")
    if a.threads:
        torch.set_num_threads(a.threads)
    grid = BenchGrid(ckpt=a.ckpt, backends=("torch",), precisions=(Precision.FP32,),
                       batches=(a.batch,), classes=(2,), steps=(a.steps,), solvers=(a.solver,),
                       device="cpu", warmup=a.warmup, repeats=a.repeats)
    grid.validate()
    ctx = _Context(grid, "cpu", load_fp32_model(grid, "cpu"))
    ctx.pairs = [("torch", Precision(p)) for p in a.torch_precisions]
    for prec, folder in engines.items():
        engine = load_engine(folder, backend="ort", device="cpu", graphs=a.graphs,
                             **({"threads": a.threads} if a.threads else {}))
        ctx.engines[("ort", prec)] = (engine, "ort")
        ctx.pairs.append(("ort", Precision(prec)))
    case = Case(a.batch, 2, a.steps, a.solver)
    records = bench_case(ctx, case, progress=lambda m: print(m, file=sys.stderr))
    print(f"{case}, {device_name('cpu')}; ort graphs: {a.graphs}, ort threads "
          f"{a.threads or 'default'}")
    print("| row | ms/image median (p90) | x reference | rel err vs fp32 |")
    print("|---|---|---|---|")
    for r in records:
        err = "–" if r.backend == "reference" else f"{r.max_rel_err_vs_fp32:.2g}"
        print(f"| {r.backend} {r.precision} | {r.ms_per_image:.0f} ({r.ms_per_image_p90:.0f}) "
              f"| {r.speedup_vs_reference:.2f} | {err} |")
    return {"case": str(case), "records": [r.to_dict() for r in records]}


def digits(a: argparse.Namespace) -> dict:
    from gaf_trt.export.build import ExportConfig, export_engine
    from gaf_trt.export.quantize import QuantConfig
    from gaf_trt.metrics import digits as dm
    from gaf_trt.training import evaluate as ev

    nets = {"fp32 (torch)": load_backend("torch", LoadRequest("digits")),
            "bf16 (torch)": load_backend("torch", LoadRequest("digits",
                                                              precision=Precision.BF16))}
    tmp = Path(tempfile.mkdtemp(prefix="quant_digits."))
    recipes = {}
    for prec in (Precision.INT8, Precision.FP8):
        out = tmp / prec.value
        qc = QuantConfig(samples=a.calib_samples, steps=a.calib_steps, method=a.method,
                         accept_error=True)  # measured here, not refused
        res = export_engine(ExportConfig("digits", str(out), precision=prec, quant=qc,
                                         onnx_only=True, graphs=("fused",)))
        recipes[prec.value] = res.manifest["quantization"]
        nets[f"{prec.value} (ort{', simulated' if prec is Precision.FP8 else ''})"] = \
            load_engine(out, backend="ort", device="cpu")
    size = nets["fp32 (torch)"].config.input_size
    clf = dm.fit_classifier(size, a.seed)
    real = clf.logits(dm.real_digits(size)[0])
    table, fp32_images = {}, {}
    print(f"classifier held-out accuracy {clf.test_accuracy:.3f}; per class {a.per_class}")
    for name, net in nets.items():
        for sampler, solver, steps in ev.SAMPLERS:
            t0 = time.perf_counter()
            images, labels = ev.generate_per_class(net, a.per_class, solver, steps, a.seed)
            grid8 = dm.to_digit_grid(images)
            pred, lab = clf.predict(grid8), labels.numpy()
            acc = float(np.mean([(pred[lab == c] == c).mean() for c in range(10)]))
            fd = dm.frechet_distance(real, clf.logits(grid8))
            fp32_images.setdefault(sampler, images)
            ref = fp32_images[sampler]
            d = (images.double() - ref.double()).flatten(1).norm(dim=1)
            err = float((d / ref.double().flatten(1).norm(dim=1)).max())
            table.setdefault(name, {})[sampler] = {"accuracy": acc, "frechet": fd,
                                                   "max_rel_err_vs_fp32": err,
                                                   "seconds": time.perf_counter() - t0}
            print(f"| {name} | {sampler} | {acc:.3f} | {fd:.3f} | {err:.1e} |")
    return {"per_class": a.per_class, "seed": a.seed, "torch": torch.__version__,
            "classifier_test_accuracy": clf.test_accuracy, "results": table,
            "quantization": recipes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="part", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--ckpt", required=True)
    s.add_argument("--engine", action="append", default=[], help="PRECISION=DIR (ort rows)")
    s.add_argument("--torch-precisions", nargs="+", default=["fp32", "bf16"])
    s.add_argument("--graphs", default="fused", choices=["fused", "split"])
    s.add_argument("--batch", type=int, default=8)
    s.add_argument("--steps", type=int, default=20)
    s.add_argument("--solver", default="euler")
    s.add_argument("--warmup", type=int, default=1)
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads "
                   "(1: robust on a shared, oversubscribed machine; 0: library defaults)")
    d = sub.add_parser("digits")
    d.add_argument("--per-class", type=int, default=100)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--calib-samples", type=int, default=32)
    d.add_argument("--calib-steps", type=int, default=10)
    d.add_argument("--method", default="minmax")
    for p in (s, d):
        p.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    report = speed(a) if a.part == "speed" else digits(a)
    if a.json is not None:
        write_json(a.json, report)


if __name__ == "__main__":
    main()
