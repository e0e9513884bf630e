"""Devices (issue 22 item 7): rows reach a network on the network's device, results come
back on the CPU where the caller keeps its state -- for ``gaf_trt.sample`` and the
``gaf-trt sample`` pipeline, serving, ``generate`` and transport.

This machine has no GPU, so the other device is simulated with torch's function-mode
machinery: :class:`StandIn` declares ``device = meta`` and refuses any input that was not
moved there; under :class:`FakeDevice`, ``.to(meta)`` turns a CPU tensor into an
:class:`OnFake` (a CPU tensor standing for one on the other device) and ``.to("cpu")`` turns
it back. Ops on an ``OnFake`` yield ``OnFake``, so a network output that leaked into a
caller's state without being moved back would make the final result an ``OnFake``: every
result is checked to be a plain CPU tensor (or numpy array), equal to the same run on the
plain CPU network.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

import gaf_trt
from gaf_trt.compose.placement import network_device
from gaf_trt.engine.base import LoadRequest, load_backend

pytestmark = pytest.mark.usefixtures("one_thread")

FAKE = torch.device("meta")  # the device the stand-in declares
STEPS = 2


class OnFake(torch.Tensor):
    """A CPU tensor standing for one on :data:`FAKE`."""


class FakeDevice(TorchFunctionMode):
    """``.to(FAKE)`` -> :class:`OnFake`; ``OnFake.to(cpu)`` -> a plain tensor."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.to:
            dev = kwargs.get("device", args[1] if len(args) > 1 else None)
            if isinstance(dev, (str, torch.device)) and torch.device(dev) == FAKE:
                return args[0].as_subclass(OnFake)
            if (isinstance(dev, (str, torch.device)) and torch.device(dev).type == "cpu"
                    and isinstance(args[0], OnFake)):
                return args[0].as_subclass(torch.Tensor)
        return func(*args, **kwargs)


class StandIn:
    """The digits network declared on :data:`FAKE`: refuses inputs not on it, computes the
    real network on plain views and answers on :data:`FAKE`."""

    def __init__(self, real) -> None:
        self.real = real
        self.config = real.config
        self.device = FAKE
        self.calls = 0

    def __call__(self, x, t, y):
        off = [n for n, a in (("x", x), ("t", t), ("y", y)) if not isinstance(a, OnFake)]
        if off:
            raise RuntimeError(f"stand-in network on {FAKE}: input(s) {', '.join(off)} are "
                               f"not on it")
        self.calls += 1
        j, k = self.real(*(a.as_subclass(torch.Tensor) for a in (x, t, y)))
        return j.as_subclass(OnFake), k.as_subclass(OnFake)


class FusedStandIn(StandIn):
    """The stand-in with a fused composed step (:class:`~gaf_trt.engine.base.FusedComposedStep`)
    on :data:`FAKE`: the per-class anchors of the real network, blended as
    :class:`~gaf_trt.compose.ComposedField` blends them."""

    def _anchors(self, x, t, classes, coef):
        off = [n for n, a in (("x", x), ("t", t), ("classes", classes), ("coef", coef))
               if not isinstance(a, OnFake)]
        if off:
            raise RuntimeError(f"fused stand-in on {FAKE}: input(s) {', '.join(off)} are "
                               f"not on it")
        self.calls += 1
        x, t, classes, coef = (a.as_subclass(torch.Tensor) for a in (x, t, classes, coef))
        n, b = classes.shape[0], x.shape[0]
        j, k = self.real(x.repeat(n, 1, 1, 1), t.repeat(n), classes.repeat_interleave(b))
        return j.view(n, b, *x.shape[1:]), k.view(n, b, *x.shape[1:]), coef.unsqueeze(1)

    def composed_velocity(self, x, t, classes, coef):
        j, k, c = self._anchors(x, t, classes, coef)
        return (c * (k - j)).sum(0).as_subclass(OnFake)

    def composed_anchors(self, x, t, classes, coef):
        j, k, c = self._anchors(x, t, classes, coef)
        return (c * j).sum(0).as_subclass(OnFake), (c * k).sum(0).as_subclass(OnFake)


@pytest.fixture(scope="module")
def real():
    return load_backend("torch", LoadRequest(artifact="digits", device="cpu"))


@pytest.fixture
def stand_in(real) -> StandIn:
    return StandIn(real)


@contextlib.contextmanager
def on_fake(monkeypatch) -> Iterator[None]:
    """The fake device in this thread and in every thread started meanwhile (a function
    mode is thread-local; the serving scheduler and its request workers are threads)."""
    run = threading.Thread.run

    def run_on_fake(self):
        with FakeDevice():
            run(self)

    with monkeypatch.context() as patch:
        patch.setattr(threading.Thread, "run", run_on_fake)
        with FakeDevice():
            yield


def noise_for(net, batch: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *net.config.sample_shape, generator=gen)


def same(got, want) -> None:
    """``got`` is a plain CPU tensor equal to ``want``."""
    assert type(got) is torch.Tensor, f"a {type(got).__name__} leaked out"
    assert got.device.type == "cpu"
    assert torch.equal(got, want)


# --------------------------------------------------------------------------- the stand-in


def test_the_stand_in_refuses_cpu_inputs(real, stand_in):
    assert network_device(stand_in) == FAKE
    x = noise_for(real)
    t, y = torch.full((2,), 0.5), torch.tensor([3, 8])
    with pytest.raises(RuntimeError, match="not on it"):
        stand_in(x, t, y)
    with FakeDevice(), pytest.raises(RuntimeError, match="x, t, y are not on it"):
        stand_in(x, t, y)  # the mode alone moves nothing
    with FakeDevice():
        j, k = stand_in(*(a.to(FAKE) for a in (x, t, y)))
    assert type(j) is OnFake and type(k) is OnFake
    jr, kr = real(x, t, y)
    assert torch.equal(j.as_subclass(torch.Tensor), jr)


# --------------------------------------------------------------------------- sample


@pytest.mark.parametrize("solver", ["euler", "ier"])
def test_sample_and_sample_pure(real, stand_in, solver):
    noise = noise_for(real)
    kw = dict(steps=STEPS, solver=solver)
    want = gaf_trt.sample(real, [3, 8], noise, alpha=0.3, **kw)
    want_pure = gaf_trt.sample_pure(real, [3, 8], noise, **kw)
    with FakeDevice():
        got = gaf_trt.sample(stand_in, [3, 8], noise, alpha=0.3, **kw)
        got_pure = gaf_trt.sample_pure(stand_in, [3, 8], noise, **kw)
    same(got, want)
    same(got_pure, want_pure)
    assert stand_in.calls > 0


@pytest.mark.parametrize("solver", ["euler", "ier"])
def test_sample_on_a_fused_step(real, solver):
    from gaf_trt.engine.base import FusedComposedStep

    fused = FusedStandIn(real)
    assert isinstance(fused, FusedComposedStep)
    noise = noise_for(real)
    kw = dict(alpha=0.3, steps=STEPS, solver=solver)
    want = gaf_trt.sample(real, [3, 8], noise, **kw)
    with FakeDevice():
        got = gaf_trt.sample(fused, [3, 8], noise, **kw)
    assert fused.calls > 0
    same(got, want)


def test_sample_pipeline(real, stand_in, tmp_path):
    from gaf_trt.pipeline.generation import generate
    from gaf_trt.pipeline.sample import SampleConfig, prepare_sample
    from gaf_trt.pipeline.source import ModelSource

    cfg = SampleConfig(classes=["3", "8"], out=str(tmp_path / "out"), mask_type="horizontal_2",
                       steps=STEPS, batch=2, model=ModelSource(device="cpu"))
    plan = prepare_sample(cfg)
    want = generate(cfg, plan)
    with FakeDevice():
        got = generate(cfg, dataclasses.replace(plan, network=stand_in))
    assert stand_in.calls > 0
    assert got.pure.keys() == want.pure.keys() == {3, 8}
    assert got.mixes.keys() == want.mixes.keys() and len(want.mixes) == 1
    for c in want.pure:
        same(got.pure[c], want.pure[c])
    for key in want.mixes:
        same(got.mixes[key], want.mixes[key])


# --------------------------------------------------------------------------- serve


def _serve(network, requests, **config):
    from gaf_trt.serve import GenerationService
    from gaf_trt.serve.service import ServeConfig

    service = GenerationService(network, ServeConfig(**config)).start()
    try:
        return [service.generate(r, timeout=120) for r in requests]
    finally:
        service.close()


def test_serve(real, stand_in, monkeypatch):
    from gaf_trt.serve import ServeRequest
    from gaf_trt.serve.requests import ServeLimits

    requests = [ServeRequest(classes=[3, 8], alpha=0.5, steps=STEPS, batch=2, seed=1),
                ServeRequest(classes=[7], steps=STEPS, solver="heun", batch=2, seed=2)]
    # call_rows=0: the call size is calibrated on the network (its rows start on the CPU too)
    config = dict(call_rows=0, min_rows=4, limits=ServeLimits(max_rows=16))
    want = _serve(real, requests, **config)
    with on_fake(monkeypatch):
        got = _serve(stand_in, requests, **config)
    assert stand_in.calls > 0
    for g, w in zip(got, want, strict=True):
        same(g, w)


# --------------------------------------------------------------------------- generate


def _dataset(tmp: Path, name: str) -> dict[str, np.ndarray]:
    from gaf_trt.generate import GenerateConfig, run_generate, store
    from gaf_trt.pipeline.source import ModelSource

    comps = tmp / "comps.json"
    comps.write_text(json.dumps([{"classes": [1, 7], "alpha": 0.5},
                                 {"classes": [3, 8], "mask_type": "horizontal_2"},
                                 {"classes": [2]}]))
    out = tmp / name
    run_generate(GenerateConfig(out=str(out), classes=[], compositions=str(comps),
                                per_class=2, steps=STEPS, batch=2, shard_size=2, format="npz",
                                model=ModelSource(device="cpu")))
    with np.load(out / store.FINAL_NPZ) as z:
        return {k: z[k] for k in z.files}


def test_generate(real, stand_in, tmp_path, monkeypatch):
    from gaf_trt.generate import render

    want = _dataset(tmp_path, "plain")
    load = render.load_source

    def load_stand_in(*args, **kwargs):
        return dataclasses.replace(load(*args, **kwargs), network=stand_in)

    monkeypatch.setattr(render, "load_source", load_stand_in)
    states = []  # what generate's solvers hand back (before its own .cpu())

    def watched(fn):
        def call(*args, **kwargs):
            states.append(fn(*args, **kwargs))
            return states[-1]
        return call

    for name in ("integrate", "sample"):  # pure rows / compositions
        monkeypatch.setattr(render, name, watched(getattr(render, name)))
    with FakeDevice():
        got = _dataset(tmp_path, "fake")
    assert stand_in.calls > 0
    assert states and all(type(z) is torch.Tensor for z in states), "a state leaked"
    assert got.keys() == want.keys() and len(want["labels"]) == 6
    for key in want:
        assert type(got[key]) is np.ndarray
        np.testing.assert_array_equal(got[key], want[key])


# --------------------------------------------------------------------------- transport


def test_transport_functions(real, stand_in):
    noise = noise_for(real)
    kw = dict(steps=STEPS, solver="euler")
    want_cycle = gaf_trt.cycle(real, [1, 7], noise, **kw)
    want_tr = gaf_trt.translate(real, noise, 1, 7, snapshots=2, **kw)
    want_bary = gaf_trt.barycentric(real, [1, 4, 7], noise, grid_size=2, **kw)
    want_interp = gaf_trt.interpolation(real, [1, 7], noise, n_interp=2, **kw)
    with FakeDevice():
        got = gaf_trt.cycle(stand_in, [1, 7], noise, **kw)
        got_tr = gaf_trt.translate(stand_in, noise, 1, 7, snapshots=2, **kw)
        got_bary = gaf_trt.barycentric(stand_in, [1, 4, 7], noise, grid_size=2, **kw)
        got_interp = gaf_trt.interpolation(stand_in, [1, 7], noise, n_interp=2, **kw)
    for g, w in zip(got.stops, want_cycle.stops, strict=True):
        same(g, w)
    same(got_tr.noise, want_tr.noise)
    same(got_tr.result, want_tr.result)
    for g, w in zip(got_tr.snapshots, want_tr.snapshots, strict=True):
        for name in ("x", "j", "k"):
            same(getattr(g, name), getattr(w, name))
    same(got_bary.cells, want_bary.cells)
    same(got_interp.frames, want_interp.frames)
    assert len(want_interp.noises) > 0
    for g, w in zip(got_interp.noises, want_interp.noises, strict=True):
        same(g, w)


def test_transport_pipeline(real, stand_in, tmp_path):
    from gaf_trt.pipeline.source import ModelSource
    from gaf_trt.pipeline.transport import (
        TransportConfig,
        prepare_transport,
        run_transport,
    )

    def run(name: str, network=None):
        cfg = TransportConfig(mode="cycle", classes=["1", "7"], out=str(tmp_path / name),
                              steps=STEPS, solver="euler", batch=2,
                              model=ModelSource(device="cpu"))
        plan = prepare_transport(cfg)
        if network is not None:
            plan.loaded.network = network
        return run_transport(cfg, plan=plan)

    want = run("plain")
    with FakeDevice():
        got = run("fake", stand_in)
    assert stand_in.calls > 0
    for g, w in zip(got.result.stops, want.result.stops, strict=True):
        same(g, w)
    assert got.record["metrics"] == want.record["metrics"]
    pictures = sorted(p.name for p in want.files if p.suffix == ".png")
    assert pictures
    for name in pictures:
        assert (tmp_path / "fake" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()
