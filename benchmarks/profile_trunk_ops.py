"""Where an fp32 trunk call spends its time: ONNX Runtime's profiler on an engine directory's
``trunk.onnx`` (16 rows, 2 threads, 6 calls), kernel time summed by op type.

    python benchmarks/profile_trunk_ops.py ENGINE_DIR   (from gaf-trt export --onnx-only)
"""

from __future__ import annotations

import collections
import json
import os
import sys

import numpy as np
import onnxruntime as ort


def main(folder: str, rows: int = 16, calls: int = 6) -> None:
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(f"{folder}/trunk.onnx", so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else rows for d in i.shape]
        feeds[i.name] = (rng.integers(0, 10, size=shape).astype(np.int64) if "int" in i.type
                         else rng.random(shape, dtype=np.float32))
    for _ in range(calls):
        sess.run(None, feeds)
    path = sess.end_profiling()
    with open(path) as f:
        events = json.load(f)
    os.remove(path)
    total: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            total[e["args"]["op_name"]] += e["dur"]
    all_us = sum(total.values())
    print(f"{folder}: trunk, {rows} rows, 2 threads, {calls} calls, load {os.getloadavg()[0]:.2f}")
    for op, us in total.most_common(12):
        print(f"  {op:24s} {100 * us / all_us:5.1f} %  {us / calls / 1000:7.1f} ms/call")


if __name__ == "__main__":
    main(sys.argv[1])
