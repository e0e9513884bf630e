"""References for the serving tests, computed by the ``gaf-trt sample`` pipeline itself."""

from __future__ import annotations

import dataclasses

import torch

from gaf_trt.pipeline.generation import generate
from gaf_trt.pipeline.sample import prepare_sample
from gaf_trt.serve import MinRowsNetwork, ServeRequest


def sample_reference(req: ServeRequest, network=None) -> torch.Tensor:
    """What ``gaf-trt sample`` generates for ``req``'s arguments (its pipeline:
    ``prepare_sample`` + ``generate``), optionally on another network."""
    cfg = req.sample_config()
    cfg.model = dataclasses.replace(cfg.model, device="cpu")
    plan = prepare_sample(cfg)
    if network is not None:
        plan.network = network(plan.network)
    gen = generate(cfg, plan)
    if plan.composition is not None:
        return gen.mixes[plan.composition.classes]
    return gen.pure[plan.classes[0]]


def min_rows_reference(req: ServeRequest) -> torch.Tensor:
    """The same on the network padded to the scheduler's minimum rows (the scheduler's numerics, one request)."""
    return sample_reference(req, MinRowsNetwork)
