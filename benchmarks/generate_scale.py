"""``gaf-trt generate`` throughput: the same digits dataset in-process, under torchrun and on
Ray, measured in one run, with the bytes of the three datasets compared.

Each runner is a real command line (a fresh process, like a user's); the throughput is the
one ``dataset.json`` records (samples / seconds from the first shard to the last, model
loading and Ray's start excluded), and the wall time includes start-up (Python, torch, Ray,
model load). Every worker process runs one torch thread.

    python benchmarks/generate_scale.py [--num 10000] [--steps 10] [--workers 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(name: str, cmd: list[str], out: Path, env: dict[str, str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    rec = json.loads((out / "dataset.json").read_text())
    last = rec["last_run"]
    npz = out / "samples.npz"
    return {"runner": name, "workers": last["workers"], "images_per_s": last["images_per_s"],
            "images_per_s_per_worker": last["images_per_s_per_worker"],
            "seconds": last["seconds"], "wall_s": round(wall, 2),
            "samples_npz_sha256": hashlib.sha256(npz.read_bytes()).hexdigest()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--shard-size", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    # one thread per worker process (torchrun's default too): 1 core vs K cores
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    job = ["generate", "--num", str(args.num), "--steps", str(args.steps), "--batch",
           str(args.batch), "--shard-size", str(args.shard_size), "--device", args.device,
           "--format", "npz", "-q"]
    cli = [sys.executable, "-m", "gaf_trt.cli"]
    with tempfile.TemporaryDirectory(prefix="gaf-scale-") as tmp:
        d = Path(tmp)
        rows = [
            run("in-process", [*cli, *job, "--out", str(d / "local")], d / "local", env),
            run(f"torchrun x{args.workers}",
                [sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc_per_node", str(args.workers), "-m", "gaf_trt.cli", "--", *job,
                 "--runner", "torchrun", "--out", str(d / "torchrun")], d / "torchrun", env),
            run(f"ray x{args.workers}", [*cli, *job, "--ray", "auto", "--workers",
                                         str(args.workers), "--out", str(d / "ray")],
                d / "ray", env),
        ]
    base = rows[0]["images_per_s"]
    print(f"{args.num} digits samples, {args.steps} euler steps, batch {args.batch}, shards of "
          f"{args.shard_size}, device {args.device}, {os.cpu_count()} CPUs")
    print(f"{'runner':<14}{'workers':>8}{'images/s':>10}{'per worker':>12}{'vs local':>10}"
          f"{'gen s':>8}{'wall s':>8}")
    for r in rows:
        print(f"{r['runner']:<14}{r['workers']:>8}{r['images_per_s']:>10.1f}"
              f"{r['images_per_s_per_worker']:>12.1f}{r['images_per_s'] / base:>10.2f}"
              f"{r['seconds']:>8.1f}{r['wall_s']:>8.1f}")
    same = len({r["samples_npz_sha256"] for r in rows}) == 1
    print(f"samples.npz identical across runners: {same}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows,
                                               "identical": same}, indent=2) + "\n")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
