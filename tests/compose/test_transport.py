"""Transport experiments on the tiny reference model: cycles return, interpolation and
barycentric ends are the pure classes, translation to the same class returns the input."""

from __future__ import annotations

import pytest
import torch

from gaf_trt import ConfigError, sample
from gaf_trt.compose import transport as tr
from tests.helpers import rel_err


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def noise(ref_model):
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, *ref_model.config.sample_shape, generator=g)


def pure(model, c, z, steps, solver="rk4"):
    return sample(model, [c], z, steps=steps, solver=solver)


@pytest.mark.parametrize("solver,min_ratio", [("heun", 4.0), ("rk4", 16.0)])
def test_cycle_error_shrinks_as_steps_grow(ref_model, noise, solver, min_ratio):
    # Halving h divides the MSE by 2^(2p) for a p-th order solver; ask for p >= 1 (heun) and
    # p >= 2 (rk4) with margin. Measured on this model: heun x50-60, rk4 x700-1000 per halving.
    errs = [tr.cycle(ref_model, [1, 5], noise, steps=s, solver=solver).latent_mse
            for s in (2, 4, 8)]
    assert all(e == e for e in errs), errs  # no NaN
    for coarse, fine in zip(errs, errs[1:]):
        assert fine * min_ratio < coarse, errs
    signal = float(noise.pow(2).mean())
    assert errs[-1] < 1e-3 * signal, errs


def test_cycle_stops_and_first_image(ref_model, noise):
    res = tr.cycle(ref_model, [1, 5, 7], noise, steps=4, solver="rk4")
    assert res.path == (1, 5, 7, 1)
    assert res.labels == ["noise", "class 1", "noise", "class 5", "noise", "class 7", "noise",
                          "class 1"]
    assert len(res.stops) == 8 and all(s.shape == noise.shape for s in res.stops)
    assert rel_err(res.first, pure(ref_model, 1, noise, 4)) < 1e-6
    # each later image is the pure class generated from the noise inverted just before it
    assert rel_err(res.stops[3], pure(ref_model, 5, res.stops[2], 4)) < 1e-6
    assert res.latent_mse == pytest.approx(tr.mse(res.first, res.last))
    closed = tr.cycle(ref_model, [1, 5, 7, 1], noise, steps=4, solver="rk4")  # same chain
    assert closed.path == (1, 5, 7, 1) and torch.equal(closed.last, res.last)


def test_cycle_with_euler_is_worse_than_rk4(ref_model, noise):
    euler = tr.cycle(ref_model, [1, 5], noise, steps=4, solver="euler").latent_mse
    rk4 = tr.cycle(ref_model, [1, 5], noise, steps=4, solver="rk4").latent_mse
    assert rk4 < euler


def test_interpolation_ends_are_pure_samples(ref_model, noise):
    steps = 16
    res = tr.interpolation(ref_model, [1, 5], noise, n_interp=3, steps=steps, solver="rk4")
    assert res.frames.shape == (5, *noise.shape)  # 1 + 2 transitions x (3 - 1)
    assert [a for _, _, a in res.steps] == [0.0, 0.5, 1.0, 0.5, 1.0]
    assert rel_err(res.frames[0], pure(ref_model, 1, noise, steps)) < 1e-6
    # later frames come through inversions; rk4 at 16 steps inverts to ~1e-7 here
    assert rel_err(res.frames[2], pure(ref_model, 5, noise, steps)) < 1e-4
    assert rel_err(res.frames[4], pure(ref_model, 1, noise, steps)) < 1e-4
    mid = sample(ref_model, [1, 5], noise, alpha=0.5, steps=steps, solver="rk4")
    assert rel_err(res.frames[1], mid) < 1e-4
    assert res.closure_mse == pytest.approx(tr.mse(res.frames[0], res.frames[-1]))


def test_barycentric_weights():
    w = tr.barycentric_weights(4)
    assert w.shape == (4, 4, 3)
    assert torch.allclose(w.sum(-1), torch.ones(4, 4, dtype=torch.float64))
    assert w[0, 0].tolist() == [0.0, 1.0, 0.0] and w[0, 3].tolist() == [1.0, 0.0, 0.0]
    assert w[3, 0].tolist() == [0.0, 0.0, 1.0] and w[3, 3].tolist() == [0.0, 0.0, 1.0]


def test_barycentric_corners_are_pure_samples(ref_model, noise):
    steps, g = 4, 3
    res = tr.barycentric(ref_model, [1, 5, 7], noise, grid_size=g, steps=steps, solver="rk4",
                         chunk=4)
    assert res.cells.shape == (g, g, *noise.shape)
    assert rel_err(res.cells[0, 0], pure(ref_model, 5, noise, steps)) < 1e-5
    assert rel_err(res.cells[0, g - 1], pure(ref_model, 1, noise, steps)) < 1e-5
    p7 = pure(ref_model, 7, noise, steps)
    assert rel_err(res.cells[g - 1, 0], p7) < 1e-5 and rel_err(res.cells[g - 1, g - 1], p7) < 1e-5
    centre = sample(ref_model, [1, 5, 7], noise, weights=[0.25, 0.25, 0.5], steps=steps,
                    solver="rk4")
    assert rel_err(res.cells[1, 1], centre) < 1e-5
    whole = tr.barycentric(ref_model, [1, 5, 7], noise, grid_size=g, steps=steps, solver="rk4")
    assert rel_err(res.cells, whole.cells) < 1e-5  # chunking does not change the result


def test_translation_to_the_same_class_returns_the_input(ref_model, noise):
    x = pure(ref_model, 3, noise, 8)
    res = tr.translate(ref_model, x, 3, 3, steps=16, solver="rk4", snapshots=4)
    assert rel_err(res.result, x) < 1e-4  # measured ~1e-7
    coarse = tr.translate(ref_model, x, 3, 3, steps=2, solver="rk4", snapshots=1)
    assert res.latent_mse < coarse.latent_mse
    assert [s.leg for s in res.snapshots] == ["invert"] * 5 + ["generate"] * 4
    assert torch.equal(res.snapshots[-1].x, res.result)
    assert res.snapshots[-1].t == pytest.approx(1 - ref_model.config.t_eps)


def test_translation_generates_the_target_from_the_inverted_noise(ref_model, noise):
    x = pure(ref_model, 3, noise, 8)
    res = tr.translate(ref_model, x, 3, 6, steps=8, solver="heun")
    assert rel_err(res.result, pure(ref_model, 6, res.noise, 8, "heun")) < 1e-6
    assert res.latent_mse > 0


def test_ier_forward_uses_an_ode_reverse_and_ier_reverse_is_refused(ref_model, noise):
    res = tr.cycle(ref_model, [1, 5], noise, steps=3, solver="ier")
    assert res.settings.reverse_solver == tr.DEFAULT_REVERSE_SOLVER
    assert tr.resolve_reverse_solver("rk4", None) == "rk4"
    with pytest.raises(ConfigError, match="does not invert"):
        tr.cycle(ref_model, [1, 5], noise, steps=3, solver="rk4", reverse_solver="ier")


def test_progress_callback_counts_every_step(ref_model, noise):
    seen = []
    tr.cycle(ref_model, [1, 5], noise, steps=3, solver="euler",
             callback=lambda k, n, x: seen.append((k, n)))
    assert seen == [(k, 15) for k in range(15)]  # 5 legs x 3 steps


@pytest.mark.parametrize("call,match", [
    (lambda m, z: tr.cycle(m, [4], z, steps=2), "at least 2 distinct"),
    (lambda m, z: tr.cycle(m, [4, 4], z, steps=2), "at least 2 distinct"),
    (lambda m, z: tr.cycle(m, [4, 10], z, steps=2), "out of range"),
    (lambda m, z: tr.cycle(m, [1, 2], z[:, :1], steps=2), "noise must be"),
    (lambda m, z: tr.cycle(m, [1, 2], z, steps=0), "steps"),
    (lambda m, z: tr.cycle(m, [1, 2], z, steps=2, solver="nope"), "unknown solver"),
    (lambda m, z: tr.interpolation(m, [1, 2], z, n_interp=1), "n_interp"),
    (lambda m, z: tr.barycentric(m, [1, 2], z), "exactly 3 distinct"),
    (lambda m, z: tr.barycentric(m, [1, 2, 2], z), "exactly 3 distinct"),
    (lambda m, z: tr.barycentric(m, [1, 2, 3], z, grid_size=1), "grid_size"),
    (lambda m, z: tr.barycentric(m, [1, 2, 3], z, grid_size=tr.MAX_GRID + 1), "grid_size"),
    (lambda m, z: tr.translate(m, z, 1, 2, snapshots=0), "snapshots"),
])
def test_bad_input(ref_model, noise, call, match):
    with pytest.raises(ConfigError, match=match):
        call(ref_model, noise)
