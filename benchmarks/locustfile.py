"""Locust load test of ``gaf-trt serve`` over Triton's HTTP / KServe v2 JSON API.

One user class per request mix (the workload of ``benchmarks/serve_load.py``: IER-8,
euler-20 and heun-10 single-image requests of 1-3 weighted classes), each user sending
``POST /v2/models/gaf/infer`` and then waiting an exponential time (mean 1 / GAF_LOCUST_RATE
seconds): with many users the arrivals are Poisson-like. Requests are padded to the server's
class limit (``class_count``), so a ``--batching request`` server groups any mix of them.

    pip install locust==2.47.0
    python benchmarks/serve_requests.py --locust --out /tmp/gaf_locust.json
    GAF_LOCUST_DATA=/tmp/gaf_locust.json locust -f benchmarks/locustfile.py --headless \\
        -u 16 -r 16 -t 60s --csv /tmp/gaf_locust --host http://127.0.0.1:8000

Environment: ``GAF_LOCUST_DATA`` (the request bodies, written by
``benchmarks/serve_requests.py --locust``; without it they are built here, which imports
gaf_trt and torch), ``GAF_LOCUST_RATE`` (requests per second per user, default 1).
Locust writes ``PREFIX_stats.csv`` (a row per mix and an ``Aggregated`` row: requests,
failures, median / average / percentile response times in ms, requests/s).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sys

from locust import HttpUser, task

RATE = float(os.environ.get("GAF_LOCUST_RATE", "1.0"))


def _load_mixes() -> dict[str, list[dict]]:
    path = os.environ.get("GAF_LOCUST_DATA")
    if path:
        with open(path) as f:
            return json.load(f)["mixes"]
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from serve_load import workload
    from serve_requests import locust_data

    return locust_data(workload(60, 10, 0))["mixes"]


MIXES = _load_mixes()


def exponential(user: HttpUser) -> float:
    """Locust ``wait_time``: exponential think time of mean ``1 / GAF_LOCUST_RATE`` s."""
    return random.expovariate(RATE)


class _GafUser(HttpUser):
    abstract = True
    mix = ""
    wait_time = exponential

    def on_start(self) -> None:
        bodies = MIXES.get(self.mix, [])
        self._bodies = itertools.cycle(bodies) if bodies else None

    @task
    def infer(self) -> None:
        if self._bodies is None:
            return
        with self.client.post("/v2/models/gaf/infer", json=next(self._bodies),
                              name=f"gaf {self.mix}", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
            elif not any(o.get("name") == "latents" for o in resp.json().get("outputs", [])):
                resp.failure("no latents in the answer")


class IerUser(_GafUser):
    mix = "ier"


class EulerUser(_GafUser):
    mix = "euler"


class HeunUser(_GafUser):
    mix = "heun"
