"""What reduced precision costs in quality: the bundled digits model's classifier accuracy and
Fréchet distance (training's evaluator) at fp32 vs bf16 (and fp16 where it runs natively),
same noise, same classifier. Also the final-state relative error vs fp32 per sampler.

The evaluator has no precision option; this script feeds it a torch engine at each precision
(any AnchorNetwork works with ``generate_per_class``). Usage:

    python benchmarks/digits_precision.py [--per-class 100] [--json benchmarks/digits_precision.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gaf_trt.engine.base import LoadRequest, load_backend  # noqa: E402
from gaf_trt.engine.torch_backend import precision_support  # noqa: E402
from gaf_trt.io.files import write_json  # noqa: E402
from gaf_trt.metrics import digits as dm  # noqa: E402
from gaf_trt.precision import Precision  # noqa: E402
from gaf_trt.training import evaluate as ev  # noqa: E402


def evaluate(engine, clf, real_feats, per_class: int, seed: int) -> dict:
    out = {}
    for name, solver, steps in ev.SAMPLERS:
        t0 = time.perf_counter()
        images, labels = ev.generate_per_class(engine, per_class, solver, steps, seed)
        gen8 = dm.to_digit_grid(images)
        pred = clf.predict(gen8)
        lab = labels.numpy()
        per = [float((pred[lab == c] == c).mean()) for c in range(10)]
        out[name] = {"mean_accuracy": float(np.mean(per)),
                     "frechet_distance": dm.frechet_distance(real_feats, clf.logits(gen8)),
                     "seconds": round(time.perf_counter() - t0, 2), "images": images}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="digits quality at fp32 vs reduced precision")
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    if a.per_class < 2:
        sys.exit(f"error: --per-class must be >= 2, got {a.per_class}")
    precisions = [p for p in Precision if precision_support("cpu", p) is None]
    skipped = {p.value: precision_support("cpu", p) for p in Precision if p not in precisions}
    engines = {p: load_backend("torch", LoadRequest("digits", precision=p)) for p in precisions}
    size = engines[Precision.FP32].config.input_size
    clf = dm.fit_classifier(size, a.seed)
    real_feats = clf.logits(dm.real_digits(size)[0])
    results = {p.value: evaluate(e, clf, real_feats, a.per_class, a.seed)
               for p, e in engines.items()}
    report = {"per_class": a.per_class, "seed": a.seed, "torch": torch.__version__,
              "classifier_test_accuracy": clf.test_accuracy, "skipped": skipped, "results": {}}
    print(f"classifier held-out accuracy {clf.test_accuracy:.3f}; per class {a.per_class}")
    for prec, res in results.items():
        for sampler, r in res.items():
            fp32 = results["fp32"][sampler]["images"]
            d = (r["images"].double() - fp32.double()).flatten(1).norm(dim=1)
            err = float((d / fp32.double().flatten(1).norm(dim=1)).max())
            report["results"].setdefault(prec, {})[sampler] = {
                k: v for k, v in r.items() if k != "images"} | {"max_rel_err_vs_fp32": err}
            print(f"{prec:<5} {sampler:<11} accuracy {r['mean_accuracy']:.3f}  Fréchet "
                  f"{r['frechet_distance']:.3f}  max rel err vs fp32 {err:.1e}  "
                  f"({r['seconds']:.1f} s)")
    for prec, why in skipped.items():
        print(f"{prec:<5} skipped: {why}")
    if a.json is not None:
        write_json(a.json, report)


if __name__ == "__main__":
    main()
