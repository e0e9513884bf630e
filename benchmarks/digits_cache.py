"""What reusing the trunk's features costs in quality (issue 26): the bundled digits model's
classifier accuracy and Fréchet distance (training's evaluator machinery) per cache policy
and solver, pure classes, same noise, same classifier; with the share of trunk evaluations
saved and the final states' relative L2 error against no cache (same solver).

Usage:

    python benchmarks/digits_cache.py [--per-class 100] [--json benchmarks/results/digits_cache.json]

Prints a Markdown table (the one in docs/results.md); the JSON keeps each cell's wall time,
which on a shared machine is a poor speed measure (compare trunk calls).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gaf_trt.compose.cache import CachedNetwork  # noqa: E402
from gaf_trt.device import cpu_model  # noqa: E402
from gaf_trt.engine.base import LoadRequest, load_backend  # noqa: E402
from gaf_trt.io.files import write_json  # noqa: E402
from gaf_trt.metrics import digits as dm  # noqa: E402
from gaf_trt.training import evaluate as ev  # noqa: E402

SOLVERS = (("euler-20", "euler", 20), ("heun-10", "heun", 10), ("rk4-5", "rk4", 5),
           ("ier-8", "ier", 8))
POLICIES = ("off", "static:2", "static:3", "adaptive:0.1", "adaptive:0.2")


def run_one(engine, policy: str, solver: str, steps: int, per_class: int, seed: int,
            clf, real_feats) -> tuple[dict, torch.Tensor]:
    """One (policy, solver) cell: metrics and the final states ``[N, C, S, S]``."""
    net = CachedNetwork(engine, policy)
    t0 = time.perf_counter()
    images, labels = ev.generate_per_class(net, per_class, solver, steps, seed)
    wall = time.perf_counter() - t0
    gen8 = dm.to_digit_grid(images)
    pred, lab = clf.predict(gen8), labels.numpy()
    per = [float((pred[lab == c] == c).mean()) for c in range(10)]
    return {"policy": policy, "trunk_calls": net.trunk_calls, "calls": net.calls,
            "saved": round(net.saved, 3), "seconds": round(wall, 2),
            "accuracy": float(np.mean(per)),
            "frechet": dm.frechet_distance(real_feats, clf.logits(gen8))}, images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    engine = load_backend("torch", LoadRequest("digits"))
    clf = dm.fit_classifier(engine.config.input_size, args.seed)
    real_feats = clf.logits(dm.real_digits(engine.config.input_size)[0])
    rows = []
    for name, solver, steps in SOLVERS:
        ref = None
        for policy in POLICIES:
            row, images = run_one(engine, policy, solver, steps, args.per_class, args.seed,
                                  clf, real_feats)
            ref = images if ref is None else ref
            row["sampler"] = name
            row["rel_err_vs_off"] = float((images - ref).norm() / ref.norm())
            rows.append(row)
            print(f"{name:<9} {policy:<13} trunk {row['trunk_calls']:>4}/{row['calls']:<4} "
                  f"acc {row['accuracy']:.3f} fd {row['frechet']:.3f} "
                  f"err {row['rel_err_vs_off']:.4f} {row['seconds']:.1f}s", flush=True)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_model(),
            "threads": torch.get_num_threads(), "load_average": os.getloadavg(),
            "python": platform.python_version(), "torch": torch.__version__,
            "per_class": args.per_class, "seed": args.seed}
    print(table(rows, meta))
    if args.json:
        write_json(Path(args.json), {"meta": meta, "rows": rows})


def table(rows: list[dict], meta: dict) -> str:
    off = {r["sampler"]: r for r in rows if r["policy"] == "off"}
    out = [f"{meta['date']}, {meta['cpu']}, {meta['threads']} threads, load average "
           f"{' / '.join(f'{x:.1f}' for x in meta['load_average'])} at the end; "
           f"{meta['per_class']} samples per class, torch fp32", "",
           "| sampler | cache | trunk calls | saved | accuracy | Fréchet | × off | "
           "final-state error vs off |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r["frechet"] / off[r["sampler"]]["frechet"]
        out.append(f"| {r['sampler']} | {r['policy']} | {r['trunk_calls']} / {r['calls']} | "
                   f"{r['saved']:.0%} | {r['accuracy']:.3f} | {r['frechet']:.3f} | "
                   f"{ratio:.2f} | {r['rel_err_vs_off']:.3f} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
