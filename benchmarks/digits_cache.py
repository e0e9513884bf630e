"""What reusing the trunk's features costs in quality (issue 26): the bundled digits model's
classifier accuracy and Fréchet distance (training's evaluator machinery) per cache policy
and solver, same noise, same classifier; with the share of trunk evaluations saved and the
final states' relative L2 error against no cache (same solver, same composition).

Compositions: ``pure`` (each class alone), and for euler-20 / heun-10 two-class compositions
of the pairs ``(c, c+1 mod 10)``: ``masked`` (soft ``horizontal_2`` masks) and ``weighted``
(weights 1, 1). A composed sample's "accuracy" is the share classified as one of its two
classes; its Fréchet distance is taken against the real digits like the pure rows', so only
its ratio to the uncached row of the same composition (``× off``) is read.

Usage:

    python benchmarks/digits_cache.py [--per-class 100] [--json benchmarks/results/digits_cache.json]
        [--samplers euler-20 heun-10] [--policies off static:2 taylor:2]
        [--kinds pure masked weighted] [--composed-per-class 30]

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

from gaf_trt.compose import masks as mask_lib  # noqa: E402
from gaf_trt.compose.cache import CachedNetwork  # noqa: E402
from gaf_trt.compose.composition import Composition  # noqa: E402
from gaf_trt.compose.sampling import sample  # noqa: E402
from gaf_trt.device import cpu_model  # noqa: E402
from gaf_trt.engine.base import LoadRequest, load_backend  # noqa: E402
from gaf_trt.io.files import write_json  # noqa: E402
from gaf_trt.metrics import digits as dm  # noqa: E402
from gaf_trt.training import evaluate as ev  # noqa: E402

SOLVERS = (("euler-20", "euler", 20), ("heun-10", "heun", 10), ("rk4-5", "rk4", 5),
           ("ier-8", "ier", 8))
POLICIES = ("off", "static:2", "static:3", "taylor:2", "taylor:3", "adaptive:0.1",
            "adaptive:0.2")
COMPOSED = ("euler-20", "heun-10")  # samplers with composed rows
KINDS = ("masked", "weighted")


def composition(kind: str, a: int, b: int, size: int) -> Composition:
    """The two-class composition ``kind`` of classes ``a``, ``b``."""
    if kind == "masked":
        return Composition.build([a, b], masks=mask_lib.build("horizontal_2", size, size))
    return Composition.build([a, b], weights=[1.0, 1.0])


def generate_composed(net, kind: str, per_class: int, solver: str, steps: int,
                      seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` samples of each pair ``(c, c+1 mod 10)``: images ``[N, C, S, S]`` and
    the pairs ``[N, 2]`` (the noise drawn as the pure rows draw theirs)."""
    g = torch.Generator().manual_seed(seed)
    cfg = net.config
    outs, pairs = [], []
    for c in range(cfg.num_classes):
        pair = (c, (c + 1) % cfg.num_classes)
        noise = torch.randn(per_class, *cfg.sample_shape, generator=g)
        outs.append(sample(net, composition(kind, *pair, cfg.input_size), noise, steps=steps,
                           solver=solver, t_eps=cfg.t_eps))
        pairs.append(torch.tensor([pair] * per_class))
    return torch.cat(outs), torch.cat(pairs)


def run_one(engine, policy: str, kind: str, solver: str, steps: int, per_class: int,
            seed: int, clf, real_feats) -> tuple[dict, torch.Tensor]:
    """One (policy, composition, solver) cell: metrics and the final states ``[N, C, S, S]``."""
    net = CachedNetwork(engine, policy)
    t0 = time.perf_counter()
    if kind == "pure":
        images, labels = ev.generate_per_class(net, per_class, solver, steps, seed)
    else:
        images, labels = generate_composed(net, kind, per_class, solver, steps, seed)
    wall = time.perf_counter() - t0
    gen8 = dm.to_digit_grid(images)
    pred, lab = clf.predict(gen8), labels.numpy()
    if kind == "pure":
        per = [float((pred[lab == c] == c).mean()) for c in range(10)]
    else:  # classified as one of its pair's classes
        hit = (pred == lab[:, 0]) | (pred == lab[:, 1])
        per = [float(hit[lab[:, 0] == c].mean()) for c in range(10)]
    return {"policy": policy, "composition": kind, "trunk_calls": net.trunk_calls,
            "calls": net.calls,
            "saved": round(net.saved, 3), "seconds": round(wall, 2),
            "accuracy": float(np.mean(per)),
            "frechet": dm.frechet_distance(real_feats, clf.logits(gen8))}, images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--samplers", nargs="+", default=[n for n, *_ in SOLVERS])
    ap.add_argument("--policies", nargs="+", default=list(POLICIES))
    ap.add_argument("--kinds", nargs="+", default=["pure", *KINDS])
    ap.add_argument("--composed-per-class", type=int, default=None,
                    help="samples per pair of the composed rows (default: --per-class)")
    args = ap.parse_args()
    load_start = os.getloadavg()
    engine = load_backend("torch", LoadRequest("digits"))
    clf = dm.fit_classifier(engine.config.input_size, args.seed)
    real_feats = clf.logits(dm.real_digits(engine.config.input_size)[0])
    rows = []
    policies = ["off"] + [p for p in args.policies if p != "off"]  # the reference first
    for name, solver, steps in SOLVERS:
        if name not in args.samplers:
            continue
        kinds = [k for k in ("pure", *(KINDS if name in COMPOSED else ())) if k in args.kinds]
        for kind in kinds:
            ref = None
            n = args.per_class if kind == "pure" else args.composed_per_class or args.per_class
            for policy in policies:
                row, images = run_one(engine, policy, kind, solver, steps, n, args.seed, clf,
                                      real_feats)
                row["per_class"] = n
                ref = images if ref is None else ref
                row["sampler"] = name
                row["rel_err_vs_off"] = float((images - ref).norm() / ref.norm())
                rows.append(row)
                print(f"{name:<9} {kind:<8} {policy:<13} trunk "
                      f"{row['trunk_calls']:>4}/{row['calls']:<4} acc {row['accuracy']:.3f} "
                      f"fd {row['frechet']:.3f} err {row['rel_err_vs_off']:.4f} "
                      f"{row['seconds']:.1f}s", flush=True)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_model(),
            "threads": torch.get_num_threads(), "load_average": os.getloadavg(),
            "load_average_start": load_start,
            "python": platform.python_version(), "torch": torch.__version__,
            "per_class": args.per_class, "seed": args.seed,
            "composed_per_class": args.composed_per_class or args.per_class}
    print(table(rows, meta))
    if args.json:
        write_json(Path(args.json), {"meta": meta, "rows": rows})


def table(rows: list[dict], meta: dict) -> str:
    off = {(r["sampler"], r.get("composition", "pure")): r for r in rows
           if r["policy"] == "off"}
    out = [f"{meta['date']}, {meta['cpu']}, {meta['threads']} threads, load average "
           f"{' / '.join(f'{x:.1f}' for x in meta['load_average'])} at the end"
           + (f" ({meta['load_average_start'][0]:.1f} at the start)"
              if "load_average_start" in meta else "") + "; "
           f"{meta['per_class']} samples per class"
           + (f" ({meta['composed_per_class']} per pair in the composed rows)"
              if any(r.get("composition", "pure") != "pure" for r in rows) else "")
           + ", torch fp32", "",
           "| sampler | composition | cache | trunk calls | saved | accuracy | Fréchet | "
           "× off | final-state error vs off |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kind = r.get("composition", "pure")
        ratio = r["frechet"] / off[r["sampler"], kind]["frechet"]
        out.append(f"| {r['sampler']} | {kind} | {r['policy']} | "
                   f"{r['trunk_calls']} / {r['calls']} | "
                   f"{r['saved']:.0%} | {r['accuracy']:.3f} | {r['frechet']:.3f} | "
                   f"{ratio:.2f} | {r['rel_err_vs_off']:.3f} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
