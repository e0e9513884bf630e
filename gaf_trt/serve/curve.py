"""The network's rows-vs-time curve: what one call of ``m`` rows costs, and the rows per
call the step scheduler aims for (:func:`calibrate_call_rows`)."""

from __future__ import annotations

import logging
import time

import torch

from gaf_trt.compose.placement import call_network, network_device
from gaf_trt.engine.base import AnchorNetwork
from gaf_trt.serve.scheduler import DEFAULT_MAX_ROWS, DEFAULT_MIN_ROWS

log = logging.getLogger(__name__)

CALIBRATION_SIZES = (16, 32, 64, 128, 256)  # rows per call timed by calibrate_call_rows
CALIBRATION_SHARE = 0.9  # calls down to this share of the best rows/s are still efficient


def call_times(network: AnchorNetwork, sizes: list[int], repeats: int = 3) -> dict[int, float]:
    """Seconds of one network call of ``m`` random rows ``x [M,C,S,S], t [M], y [M]`` for
    each ``m`` in ``sizes``: one warm-up call, then the fastest of ``repeats`` (the least
    disturbed by other work on the machine). The rows start on the CPU and reach the
    network as the scheduler's do (:func:`~gaf_trt.compose.placement.call_network`)."""
    cfg = network.config
    device = network_device(network)
    gen = torch.Generator().manual_seed(0)
    out = {}
    for m in sizes:
        x = torch.randn(m, *cfg.sample_shape, generator=gen)
        t = torch.rand(m, generator=gen)
        y = torch.randint(0, cfg.num_classes, (m,), generator=gen)
        times = []
        with torch.no_grad():
            for i in range(repeats + 1):
                start = time.perf_counter()
                j, _ = call_network(network, x, t, y, device=device)
                float(j.reshape(-1)[0])  # waits for an asynchronous device
                if i:
                    times.append(time.perf_counter() - start)
        out[m] = min(times)
    return out


def calibrate_call_rows(network: AnchorNetwork, max_rows: int = DEFAULT_MAX_ROWS,
                        min_rows: int = DEFAULT_MIN_ROWS, repeats: int = 5) -> int:
    """The rows per call to aim for: the largest of :data:`CALIBRATION_SIZES` (within
    ``min_rows .. max_rows``) whose rows/s (:func:`call_times`) is still within
    :data:`CALIBRATION_SHARE` of the best. Beyond it calls get slower per row (on a CPU once
    the activations leave the cache), so a larger iteration is better split; below it, a
    cap would split iterations that one efficient call serves (each split adds a call's
    time to the latency of every request in the iteration)."""
    sizes = sorted({min(max(m, min_rows), max_rows) for m in CALIBRATION_SIZES})
    speed = {m: m / sec for m, sec in call_times(network, sizes, repeats).items()}
    best = max(speed.values())
    chosen = max(m for m in sizes if speed[m] >= CALIBRATION_SHARE * best)
    log.info("call size calibration (rows/s): %s -> %d rows per call",
             ", ".join(f"{m}: {v:.0f}" for m, v in speed.items()), chosen)
    return chosen
