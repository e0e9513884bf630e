"""The serving load benchmarks' requests on the wire: padded input tensors (every request the
same shapes, so Triton's dynamic batcher groups any mix of class counts), Triton's HTTP /
KServe v2 JSON bodies (``benchmarks/locustfile.py``), and the request-data file of
``perf_analyzer --input-data`` (Triton's SDK container).

    python benchmarks/serve_requests.py --out /tmp/gaf_requests.json   # perf_analyzer data
    python benchmarks/serve_requests.py --locust --out /tmp/gaf_locust.json  # the locustfile's
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gaf_trt.serve import ServeRequest  # noqa: E402
from gaf_trt.serve.wire import encode_request, pad_request  # noqa: E402

CLASS_WIDTH = 8  # gaf-trt serve's default --max-classes: the width requests are padded to
TRITON_DTYPES = {"int32": "INT32", "int64": "INT64", "float32": "FP32", "uint8": "UINT8"}


def wire_arrays(req: ServeRequest, width: int | None) -> tuple[dict[str, np.ndarray],
                                                               dict[str, str]]:
    """Input tensors (batch dimension 1) and parameters of ``req``; padded to ``width``
    classes (``class_count``) unless ``width`` is None."""
    arrays, params = encode_request(req)
    return (pad_request(arrays, width) if width else arrays), params


def kserve_body(req: ServeRequest, width: int | None = CLASS_WIDTH,
                output: str = "latents") -> dict:
    """The JSON body of ``POST /v2/models/gaf/infer`` (KServe v2 / Triton HTTP) for ``req``."""
    arrays, params = wire_arrays(req, width)
    inputs = [{"name": name, "shape": list(arr.shape), "datatype": TRITON_DTYPES[arr.dtype.name],
               "data": arr.reshape(-1).tolist()} for name, arr in arrays.items()]
    return {"inputs": inputs, "parameters": params, "outputs": [{"name": output}]}


def perf_analyzer_data(requests: list[ServeRequest], width: int = CLASS_WIDTH) -> dict:
    """``perf_analyzer --input-data`` JSON: one entry per request, each input with its
    ``content`` and ``shape`` (without the batch dimension: perf_analyzer's ``-b 1`` adds
    it). String parameters are not per request there (``--request-parameter`` is global), so
    the solver goes on the command line; ``steps`` and ``seed`` travel per request."""
    entries = []
    for req in requests:
        arrays, _ = wire_arrays(req, width)
        entries.append({name: {"content": arr.reshape(-1).tolist(), "shape": list(arr.shape[1:])}
                        for name, arr in arrays.items()})
    return {"data": entries}


def locust_data(requests: list[ServeRequest], width: int | None = CLASS_WIDTH) -> dict:
    """``benchmarks/locustfile.py``'s request data: the KServe v2 bodies of ``requests``
    grouped by solver (one Locust user class per mix), ``{"mixes": {solver: [body, ...]}}``."""
    mixes: dict[str, list[dict]] = {}
    for req in requests:
        mixes.setdefault(req.solver, []).append(kserve_body(req, width))
    return {"mixes": mixes}


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` atomically (a temporary file in the same folder, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f)
    os.replace(tmp, path)


def main() -> None:
    from serve_load import workload

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--locust", action="store_true",
                   help="write benchmarks/locustfile.py's data (GAF_LOCUST_DATA) instead")
    p.add_argument("--steps", type=int, default=0, help="every request's steps (0: the "
                   "workload's own)")
    p.add_argument("--requests", type=int, default=60)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    requests = workload(args.requests, args.num_classes, args.seed)
    if args.steps:
        requests = [dataclasses.replace(r, steps=args.steps) for r in requests]
    write_json(args.out, locust_data(requests) if args.locust else perf_analyzer_data(requests))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
