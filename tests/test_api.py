"""The public Python API contract (README, docs/design.md)."""

from __future__ import annotations

import inspect

import torch

import gaf_trt


def test_public_names():
    for name in ("load_model", "masks", "sample", "integrate", "GAF", "GAFConfig"):
        assert name in gaf_trt.__all__ and hasattr(gaf_trt, name)


def test_signatures():
    p = inspect.signature(gaf_trt.load_model).parameters
    assert list(p)[:4] == ["path", "num_heads", "use_ema", "device"]
    assert p["use_ema"].default is True and p["device"].default == "cpu"
    p = inspect.signature(gaf_trt.sample).parameters
    assert list(p)[:3] == ["model_or_engine", "classes", "noise"]
    assert (p["steps"].default, p["solver"].default, p["t_eps"].default) == (20, "euler", 1e-3)
    assert p["weights"].default is None and p["alpha"].default is None and p["masks"].default is None
    p = inspect.signature(gaf_trt.integrate).parameters
    assert list(p)[:2] == ["velocity_fn", "x"]
    assert p["reverse"].default is False and p["t_eps"].default == 1e-3
    p = inspect.signature(gaf_trt.masks.build).parameters
    assert list(p)[:3] == ["name", "height", "width"] and p["sigma"].default == 1.25


def test_model_contract(ref_model, expected):
    x, t, y = expected["forward.x"], expected["forward.t"], expected["forward.y"]
    with torch.no_grad():
        j, k = ref_model.forward(x, t, y)
        v = ref_model.velocity(x, t, y)
    assert j.shape == k.shape == v.shape == x.shape
    assert isinstance(ref_model, torch.nn.Module) and not ref_model.training
    assert ref_model.config.num_classes == 10
