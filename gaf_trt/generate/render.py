"""Load a job's network once, and turn a shard of sample indices into image bytes.

Only the solvers of :mod:`gaf_trt.compose` integrate: pure rows go through one
:class:`~gaf_trt.compose.ClassBatchField` per micro-batch (one network call for every class
in it), composed rows through :func:`gaf_trt.sample`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gaf_trt.compose import (
    ClassBatchField,
    Composition,
    check_finite,
    integrate,
    sample,
)
from gaf_trt.compose.cache import check_split, parse_cache, with_cache
from gaf_trt.engine.base import AnchorNetwork
from gaf_trt.generate.job import (
    Condition,
    GenerateConfig,
    check_bounds,
    condition_index,
    micro_batches,
    num_samples,
    plan_shards,
    resolve_conditions,
    sample_noise,
)
from gaf_trt.generate.store import check_dataset_folder
from gaf_trt.io import images as img
from gaf_trt.io.files import check_output_dir
from gaf_trt.model.config import GAFConfig
from gaf_trt.records import GENERATE
from gaf_trt.pipeline.source import load_decoder, load_source

log = logging.getLogger(__name__)


@dataclass
class Job:
    """A validated job with its network loaded: everything a worker needs to render shards."""

    cfg: GenerateConfig
    network: AnchorNetwork
    config: GAFConfig
    conditions: list[Condition]
    decoder: Any  # a LatentDecoder for latent models, else None
    device: str
    num_samples: int
    shards: list[tuple[int, int]]
    load_s: float = 0.0
    _compositions: dict[int, Composition] = field(default_factory=dict)

    def composition(self, k: int) -> Composition:
        if k not in self._compositions:
            self._compositions[k] = self.conditions[k].composition(self.config)
        return self._compositions[k]


def prepare_job(cfg: GenerateConfig, device: str | None = None) -> Job:
    """Validate every option and load the network (and VAE); raises before anything is
    written. ``device`` overrides ``cfg.device`` (a torchrun rank's own GPU)."""
    import time

    t0 = time.perf_counter()
    check_bounds(cfg)
    check_output_dir(cfg.out, command=GENERATE.command)
    check_dataset_folder(Path(cfg.out))
    loaded = load_source(cfg.model, decoder=False, device=device)
    network, config, device = loaded.network, loaded.config, loaded.device
    if parse_cache(cfg.cache).active:
        check_split(network)
    conditions = resolve_conditions(cfg, config)
    n = num_samples(cfg, conditions)
    decoder = load_decoder(loaded.source, config, device)  # --vae or the engine's VAE graph
    return Job(cfg, network, config, conditions, decoder, device, n,
               plan_shards(n, cfg.shard_size), time.perf_counter() - t0)


@torch.no_grad()
def _integrate_rows(job: Job, noise: Tensor, conds: list[int]) -> Tensor:
    """Final states ``[B, C, S, S]`` (CPU float32) of one micro-batch: pure rows in one
    class-batched loop, each composition's rows through :func:`gaf_trt.sample`."""
    cfg, t_eps = job.cfg, job.config.t_eps
    out = torch.empty(noise.shape, dtype=torch.float32)
    pure = [r for r, k in enumerate(conds) if job.conditions[k].pure]
    if pure:
        labels = [job.conditions[conds[r]].label for r in pure]
        x = noise[pure]
        net = with_cache(job.network, cfg.cache, cfg.solver)
        z = integrate(ClassBatchField(net, labels), x, steps=cfg.steps,
                      solver=cfg.solver, t_eps=t_eps)
        out[pure] = check_finite(z, f"classes {sorted(set(labels))}").float().cpu()
    for k in sorted({k for k in conds if not job.conditions[k].pure}):
        rows = [r for r, kk in enumerate(conds) if kk == k]
        z = sample(job.network, job.composition(k), noise[rows], steps=cfg.steps,
                   solver=cfg.solver, t_eps=t_eps, cache=cfg.cache)
        out[rows] = z.float().cpu()
    return out


@torch.no_grad()
def render(job: Job, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Samples ``start .. stop-1``: images ``[n, H, W, 3]`` uint8 and labels ``[n]`` int64,
    integrated in the job's global micro-batches."""
    cfg = job.cfg
    images, labels = [], []
    for idx in micro_batches(start, stop, cfg.batch):
        conds = [condition_index(cfg.seed, i, len(job.conditions), cfg.per_class) for i in idx]
        noise = sample_noise(cfg.seed, idx, job.config.sample_shape).to(job.device)
        z = _integrate_rows(job, noise, conds)
        decoded = z.clamp(-1, 1) if job.decoder is None else \
            job.decoder.decode(z.to(job.device)).float().cpu()
        images.append(img.to_uint8_hwc(decoded))
        labels.append(np.array([job.conditions[k].label for k in conds], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)
