"""Solvers: known answers, measured convergence order, grids, the endpoint sampler."""

from __future__ import annotations

import math

import pytest
import torch

from gaf_trt import SOLVERS, ConfigError, integrate
from gaf_trt.compose.solvers import time_grid

EPS = 1e-3
T0, T1 = EPS, 1 - EPS


def x0(dtype=torch.float64):
    return torch.tensor([[0.7, -1.3, 2.1]], dtype=dtype)


@pytest.mark.parametrize("solver", ["euler", "heun", "rk4"])
def test_constant_field_is_exact(solver):
    c = torch.tensor([[0.5, -2.0, 1.5]], dtype=torch.float32)
    out = integrate(lambda x, t: c.expand_as(x), x0(torch.float32), steps=7, solver=solver)
    exact = x0(torch.float32) + c * (T1 - T0)
    assert torch.allclose(out, exact, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("solver", ["euler", "heun", "rk4"])
def test_reverse_constant_field(solver):
    c = torch.tensor([[0.5, -2.0, 1.5]], dtype=torch.float64)
    out = integrate(lambda x, t: c.expand_as(x), x0(), steps=5, solver=solver, reverse=True)
    assert torch.allclose(out, x0() - c * (T1 - T0), rtol=1e-12)


def test_heun_exact_for_linear_in_time_rk4_for_cubic():
    # dx/dt = 2t -> x0 + T1^2 - T0^2 ; dx/dt = 4t^3 -> x0 + T1^4 - T0^4
    lin = integrate(lambda x, t: (2 * t).expand_as(x), x0(), steps=3, solver="heun")
    assert torch.allclose(lin, x0() + T1 ** 2 - T0 ** 2, rtol=1e-12)
    cub = integrate(lambda x, t: (4 * t ** 3).expand_as(x), x0(), steps=3, solver="rk4")
    assert torch.allclose(cub, x0() + T1 ** 4 - T0 ** 4, rtol=1e-12)
    eul = integrate(lambda x, t: (2 * t).expand_as(x), x0(), steps=3, solver="euler")
    assert not torch.allclose(eul, x0() + T1 ** 2 - T0 ** 2, rtol=1e-3)


def _linear_error(solver: str, steps: int, a: float = 1.5) -> float:
    out = integrate(lambda x, t: a * x, x0(), steps=steps, solver=solver)
    exact = x0() * math.exp(a * (T1 - T0))
    return (out - exact).abs().max().item()


@pytest.mark.parametrize("solver,order", [("euler", 1), ("heun", 2), ("rk4", 4)])
def test_measured_convergence_order(solver, order):
    errors = [_linear_error(solver, n) for n in (8, 16, 32)]
    measured = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(e > 0 for e in errors)
    assert all(abs(m - order) < 0.15 for m in measured), measured
    assert SOLVERS.get(solver).order == order


def test_time_grids():
    g = time_grid(4)
    assert g.dtype == torch.float32 and g.shape == (5,)
    assert g[0].item() == pytest.approx(EPS) and g[-1].item() == pytest.approx(1 - EPS)
    assert torch.equal(time_grid(4, reverse=True), g.flip(0))
    assert SOLVERS.get("ier").grid(5).shape == (5,)  # steps points, not steps + 1
    assert SOLVERS.get("endpoint") is SOLVERS.get("ier")  # the reference sampler's name
    assert "endpoint" not in SOLVERS.names()


def test_every_solver_has_one_run_signature():
    """Every registered solver is ``run(field, x, grid, callback)``: the same call works for
    all of them on an anchored field, forward and (with its init) in reverse."""
    d = torch.tensor([[0.3, 0.9, -2.0]], dtype=torch.float64)
    f = ConstantAnchors(d, torch.zeros_like(d))
    for name in SOLVERS.names():
        spec = SOLVERS.get(name)
        seen = []
        out = spec.run(f, x0(), spec.grid(3, dtype=torch.float64), lambda k, n, x: seen.append(k))
        assert out.shape == x0().shape and seen == [0, 1, 2], name


class ConstantAnchors:
    """A field whose data anchor is a constant D and noise anchor a constant N."""

    def __init__(self, d, n):
        self.d, self.n = d, n

    def __call__(self, x, t):
        return self.d - self.n

    def data_anchor(self, x, t):
        return self.d.expand_as(x)

    def noise_anchor(self, x, t):
        return self.n.expand_as(x)


def test_ier_known_answer():
    z0 = torch.tensor([[1.0, -1.0, 0.5]], dtype=torch.float64)
    d = torch.tensor([[0.3, 0.9, -2.0]], dtype=torch.float64)
    f = ConstantAnchors(d, torch.zeros_like(d))
    out = integrate(f, z0, steps=5, solver="ier")
    r = (1 - 0.95) ** 5
    assert torch.allclose(out, r * z0 + (1 - r) * d, rtol=1e-12)


def test_ier_reverse_known_answer():
    data = torch.tensor([[1.0, -1.0, 0.5]], dtype=torch.float64)
    n = torch.tensor([[-0.4, 0.2, 1.1]], dtype=torch.float64)
    init = torch.tensor([[2.0, 2.0, 2.0]], dtype=torch.float64)
    f = ConstantAnchors(torch.zeros_like(n), n)
    out = integrate(f, data, steps=4, solver="ier", reverse=True, init=init)
    r = (1 - 0.95) ** 4
    assert torch.allclose(out, r * init + (1 - r) * n, rtol=1e-12)


def test_ier_needs_anchors():
    with pytest.raises(ConfigError, match="needs a field with data_anchor"):
        integrate(lambda x, t: x, x0(), steps=2, solver="ier")


def test_callback_sees_every_step():
    seen = []
    integrate(lambda x, t: x, x0(), steps=6, solver="heun", callback=lambda k, n, x: seen.append((k, n)))
    assert seen == [(k, 6) for k in range(6)]


@pytest.mark.parametrize("steps", [0, -1, 2.5, True, 10_001])
def test_bad_steps(steps):
    with pytest.raises(ConfigError, match=r"steps must be an integer in 1\.\.10000"):
        integrate(lambda x, t: x, x0(), steps=steps)


def test_unknown_solver_lists_valid():
    with pytest.raises(ConfigError, match="unknown solver 'dopri5'; valid: euler, heun, ier, rk4"):
        integrate(lambda x, t: x, x0(), steps=2, solver="dopri5")


def test_float32_state():
    out = integrate(lambda x, t: x, x0(torch.float16), steps=2)
    assert out.dtype == torch.float32
