"""Whole-loop capture: the program a CUDA graph records, exercised uncaptured on the CPU.

On a CUDA machine the captured replay is compared with the uncaptured loop (tolerance
measured by benchmarks/gpu_check.py; fp32 replay is bit-identical there).
"""

from __future__ import annotations

import pytest
import torch

from gaf_trt import ComposedField, Composition, ConfigError, integrate, masks
from gaf_trt.compose.capture import (
    CapturedLoop,
    LoopCache,
    LoopKey,
    LoopProgram,
    LoopSpec,
    final_state_check,
)
from gaf_trt.errors import NonFiniteError
from tests.compose.test_graph_safety import HOST_SYNC_OPS, OpRecorder

SOLVERS = ["euler", "heun", "rk4", "endpoint"]


@pytest.fixture(scope="module")
def field(ref_model):
    comp = Composition.build([3, 8], masks=masks.build("horizontal_2", 8, 8), weights=[0.6, 0.4])
    return ComposedField(ref_model, comp)


@pytest.mark.parametrize("solver", SOLVERS)
def test_uncaptured_loop_equals_integrate(field, solver):
    x0 = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    loop = CapturedLoop(field, x0, steps=3, solver=solver, capture=False)
    for seed in (1, 2):  # new noise through the same static input buffer
        x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            want = integrate(field, x, steps=3, solver=solver)
        out, finite = loop.run(x)
        assert torch.equal(out, want) and finite.dtype == torch.bool and bool(finite)
        assert torch.equal(loop(x), want)


@pytest.mark.parametrize("solver", SOLVERS)
def test_loop_program_has_no_host_sync(field, solver):
    """Everything the graph would record, the finite flag included, stays on the device."""
    program = LoopProgram(field, LoopSpec(3, solver))
    x = torch.randn(2, 3, 8, 8)
    program(x)  # warm-up fills the field's caches
    with OpRecorder() as rec:
        out, finite = program(x)
    assert "all" in rec.ops and finite.dim() == 0  # the isfinite(x).all() reduction
    assert not HOST_SYNC_OPS & set(rec.ops), sorted(HOST_SYNC_OPS & set(rec.ops))


def test_final_state_check():
    x = torch.randn(4, 3)
    assert final_state_check(x).dim() == 0 and bool(final_state_check(x))
    x[2, 1] = float("nan")
    assert not bool(final_state_check(x))
    x[2, 1] = float("-inf")
    assert not bool(final_state_check(x))


def test_non_finite_state_names_the_composition(ref_model):
    comp = Composition.build([1, 4], weights=[1.0, 1.0])

    class Overflow(ComposedField):
        def __call__(self, x, t):
            return super().__call__(x, t) * float("inf")

    loop = CapturedLoop(Overflow(ref_model, comp), torch.randn(1, 3, 8, 8), steps=2,
                        capture=False)
    out, finite = loop.run(torch.randn(1, 3, 8, 8))
    assert not bool(finite)
    with pytest.raises(NonFiniteError, match=r"classes \[1, 4\] \(weighted\).*2 euler steps"):
        loop(torch.randn(1, 3, 8, 8))


def test_bad_input(field):
    loop = CapturedLoop(field, torch.randn(2, 3, 8, 8), steps=2, capture=False)
    with pytest.raises(ConfigError, match=r"captured for input \[2, 3, 8, 8\], got \[3, 3, 8, 8\]"):
        loop.run(torch.randn(3, 3, 8, 8))
    with pytest.raises(ConfigError, match="reverse IER"):
        LoopSpec(4, "endpoint", reverse=True)
    with pytest.raises(ConfigError, match="unknown solver 'ab2'"):
        LoopSpec(4, "ab2")
    with pytest.raises(ConfigError, match="steps must be an integer in 1"):
        LoopSpec(0)
    with pytest.raises(ConfigError, match="needs a CUDA tensor"):
        CapturedLoop(field, torch.randn(2, 3, 8, 8), steps=2)


def test_cache_keys_on_composition_and_shape(ref_model):
    cache = LoopCache(size=2)
    spec = LoopSpec(2)
    top = ComposedField(ref_model, Composition.build(
        [3, 8], masks=masks.build("horizontal_2", 8, 8)))
    side = ComposedField(ref_model, Composition.build(
        [3, 8], masks=masks.build("vertical_2", 8, 8)))
    x2, x3 = torch.randn(2, 3, 8, 8), torch.randn(3, 3, 8, 8)
    a = cache.get("torch", top, x2, spec)
    assert cache.get("torch", top, x2, spec) is a
    assert LoopKey.of("torch", top, x2, spec) != LoopKey.of("torch", side, x2, spec)
    b = cache.get("torch", side, x2, spec)  # same classes, other masks: another loop
    assert b is not a and len(cache) == 2
    cache.get("torch", top, x3, spec)  # a third loop evicts the least recently used (a)
    assert len(cache) == 2 and cache.get("torch", side, x2, spec) is b
    assert cache.get("torch", top, x2, spec) is not a
    with torch.no_grad():
        want = integrate(side, x2, steps=2)
    assert torch.equal(b(x2), want)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")


@cuda
def test_captured_finite_flag_on_cuda(ref_ckpt):
    from gaf_trt import load_model

    model = load_model(ref_ckpt, device="cuda")
    f = ComposedField(model, Composition.pure(2))
    x = torch.randn(2, 3, 8, 8, device="cuda")
    loop = CapturedLoop(f, x, steps=3, solver="heun")
    out, finite = loop.run(x)
    assert bool(finite) and torch.isfinite(out).all()
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError):
        loop(bad)
