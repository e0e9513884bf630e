"""Issue 27 target: the first live preview of a 20-step request, from its admission, against
the time of one network call of its rows (target: at most 2x).

In-process on the serving service (``GenerationService.submit_streamed``, the path of
``gaf_stream``): the preview is counted as delivered when the stream's consumer has its uint8
image (``to_images``, as ``gaf_stream`` sends it). Measured alone and with ``--companions``
requests of 8 classes x 16 images in flight (their rows share the calls: the preview then
waits for the call in flight and its own). Prints one JSON object; the machine's load average
goes with it (numbers taken on a busy machine are labelled so).

    python benchmarks/serve_preview_latency.py --repeats 20 --companions 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from gaf_trt.engine.base import LoadRequest, load_backend
from gaf_trt.serve import GenerationService, ServeConfig, ServeRequest, to_images
from gaf_trt.serve.curve import call_times
from gaf_trt.serve.scheduler import padded_rows

REQUEST = ServeRequest(classes=[3, 7], weights=[1.0, 2.0], steps=20, solver="euler", batch=4)
COMPANION = ServeRequest(classes=list(range(8)), weights=[1.0] * 8, steps=1000, batch=16)


def first_preview_s(service: GenerationService, req: ServeRequest) -> float:
    """Seconds from admission to the first preview's image; the rest of the stream is
    drained (its final result too)."""
    job = service.submit_streamed(req, 1)
    first = job.previews.get(120)
    to_images(first.state)
    took = time.monotonic() - job.admitted_at
    while job.previews.get(120) is not None:
        pass
    job.result(120)
    return took


def measure(service: GenerationService, repeats: int, companions: int) -> dict:
    others = [service.submit(COMPANION) for _ in range(companions)]
    try:
        if others:  # the companions run: wait for their first call
            while service.scheduler.stats.calls == 0:
                time.sleep(0.005)
        before, _ = service.scheduler.snapshot()
        times = [first_preview_s(service, REQUEST) for _ in range(repeats)]
        after, _ = service.scheduler.snapshot()
    finally:
        for job in others:
            job.cancel()
    calls = after.calls - before.calls
    return {"median_s": statistics.median(times), "p90_s": sorted(times)[int(0.9 * len(times))],
            "min_s": min(times), "mean_call_s": (after.seconds - before.seconds) / calls,
            "mean_call_rows": (after.rows - before.rows) / calls}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--companions", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    net = load_backend("torch", LoadRequest(artifact="digits", device="cpu"))
    service = GenerationService(net, ServeConfig()).start()
    rows = len(REQUEST.classes) * REQUEST.batch
    try:
        call = call_times(net, [padded_rows(rows, service.scheduler.min_rows)], repeats=20)
        call_s = next(iter(call.values()))
        alone = measure(service, args.repeats, 0)
        loaded = measure(service, args.repeats, args.companions)
    finally:
        service.close()
    print(json.dumps({
        "request": "2 classes x 4 images, 20 euler steps, preview_every 1",
        "call_of_its_rows_s": call_s, "rows": rows,
        "alone": {**alone, "ratio_median": alone["median_s"] / call_s},
        f"with_{args.companions}_companions": {
            **loaded, "ratio_median": loaded["median_s"] / call_s,
            "ratio_median_to_mean_call": loaded["median_s"] / loaded["mean_call_s"]},
        "loadavg": os.getloadavg(), "threads": args.threads}, indent=1))


if __name__ == "__main__":
    main()
