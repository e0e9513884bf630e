"""Transport algebra against the reference runs, the batched N·B evaluation and the rules."""

from __future__ import annotations

import pytest
import torch

from gaf_trt import ComposedField, Composition, ConfigError, integrate, masks, sample
from gaf_trt.compose.composition import Mode
from tests.helpers import rel_err

RUNS = {
    "euler_pure": dict(classes=[2], solver="euler", steps=6),
    "heun_weighted": dict(classes=[1, 4, 7], weights=[0.5, 0.3, 0.2], solver="heun", steps=4),
    "rk4_spatial_h2": dict(classes=[3, 8], mask="horizontal_2", solver="rk4", steps=3),
    "endpoint_pure": dict(classes=[5], solver="endpoint", steps=5),
    "euler_alpha": dict(classes=[0, 6], alpha=0.6, solver="euler", steps=5),
}


@pytest.mark.parametrize("run", sorted(RUNS))
def test_reference_runs(ref_model, expected, run):
    kw = dict(RUNS[run])
    mask = kw.pop("mask", None)
    if mask:
        kw["masks"] = masks.build(mask, 8, 8, sigma=1.25)
    z = sample(ref_model, kw.pop("classes"), expected[f"{run}.z0"], t_eps=1e-3, **kw)
    assert z.shape == expected[f"{run}.z0"].shape
    assert rel_err(z, expected[f"{run}.z"]) < 1e-4


def test_reference_reverse_run(ref_model, expected):
    field = ComposedField(ref_model, Composition.pure(4))
    with torch.no_grad():
        z = integrate(field, expected["euler_reverse.z0"], steps=5, solver="euler", reverse=True)
    assert rel_err(z, expected["euler_reverse.z"]) < 1e-4


class CountingNetwork:
    """Wraps a GAF and records the batch size of every call."""

    def __init__(self, model):
        self.model, self.config, self.calls = model, model.config, []

    def __call__(self, x, t, y):
        self.calls.append(x.shape[0])
        return self.model(x, t, y)


def test_batched_classes_equal_per_class_loop(ref_model):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 8, 8, generator=g)
    t = torch.tensor(0.37)
    m = masks.build("quadrant", 8, 8)
    comp = Composition.build([1, 4, 7, 9], masks=m, weights=[0.4, 0.3, 0.2, 0.1])
    net = CountingNetwork(ref_model)
    with torch.no_grad():
        v = ComposedField(net, comp)(x, t)
        loop = sum(comp.coefficients[i] * ref_model.velocity(x, t.expand(3), torch.full((3,), c))
                   for i, c in enumerate(comp.classes))
    assert net.calls == [12]  # one network call of N*B = 4*3
    assert rel_err(v, loop) < 1e-6


def test_anchor_blends(ref_model):
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor(0.6)
    comp = Composition.build([2, 5], alpha=0.25)
    f = ComposedField(ref_model, comp)
    with torch.no_grad():
        j2, k2 = ref_model(x, t, torch.full((2,), 2))
        j5, k5 = ref_model(x, t, torch.full((2,), 5))
        assert rel_err(f.data_anchor(x, t), 0.25 * k2 + 0.75 * k5) < 1e-6
        assert rel_err(f.noise_anchor(x, t), 0.25 * j2 + 0.75 * j5) < 1e-6
        assert rel_err(f(x, t), 0.25 * (k2 - j2) + 0.75 * (k5 - j5)) < 1e-6


def test_weighting_rules():
    w = Composition.build([1, 2, 3], weights=[2.0, 1.0, 1.0])
    assert w.mode is Mode.WEIGHTED
    assert torch.allclose(w.coefficients.flatten(), torch.tensor([0.5, 0.25, 0.25]))
    m = masks.build("horizontal_2", 8, 8)
    sw = Composition.build([1, 2], masks=m, weights=[2.0, 3.0])
    assert sw.mode is Mode.SPATIAL_WEIGHTED
    assert torch.allclose(sw.coefficients, m * torch.tensor([2.0, 3.0]).view(2, 1, 1, 1))  # not normalised
    a = Composition.build([1, 2], alpha=0.7)
    assert torch.allclose(a.coefficients.flatten(), torch.tensor([0.7, 0.3]))
    assert Composition.build([4]).mode is Mode.PURE


def test_permuted_keeps_coefficient_maps():
    m = masks.build("horizontal_2", 8, 8)
    comp = Composition.build([3, 8], masks=m)
    p = comp.permuted((1, 0))
    assert p.classes == (8, 3) and torch.equal(p.coefficients, comp.coefficients)


@pytest.mark.parametrize("kwargs,message", [
    (dict(classes=[1, 2], weights=[1.0]), r"1 weight\(s\) \[1.0\] for 2 class\(es\)"),
    (dict(classes=[1, 2, 3], alpha=0.5), "exactly 2 classes, got 3"),
    (dict(classes=[1, 2, 3], masks=masks.build("horizontal_2", 8, 8)),
     r"2 region\(s\) but 3 class\(es\)"),
    (dict(classes=[1, 2], weights=[1.0, -1.0]), "sum to 0"),
    (dict(classes=[1, 2], weights=[1.0, float("nan")]), "finite"),
    (dict(classes=[1, 2]), "need a composition"),
    (dict(classes=[]), "at least one class"),
    (dict(classes=[1, 2], alpha=0.5, weights=[1.0, 1.0]), "cannot be combined"),
])
def test_composition_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Composition.build(**kwargs)


def test_class_out_of_range_names_the_range(ref_model):
    with pytest.raises(ConfigError, match=r"\[10\] out of range: the model has 10 classes \(0..9\)"):
        sample(ref_model, [10], torch.randn(1, 3, 8, 8), steps=1)


def test_mask_size_must_match_model(ref_model):
    with pytest.raises(ConfigError, match="mask size 16x16"):
        sample(ref_model, [1, 2], torch.randn(1, 3, 8, 8), masks=masks.build("vertical_2", 16, 16))


def test_noise_shape_checked(ref_model):
    with pytest.raises(ConfigError, match=r"noise must be \[B, 3, 8, 8\]"):
        sample(ref_model, [1], torch.randn(1, 3, 16, 16))


def test_sample_is_deterministic_and_keeps_shape(ref_model):
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    a = sample(ref_model, [1, 2], noise, weights=[0.5, 0.5], steps=3, solver="heun")
    b = sample(ref_model, [1, 2], noise, weights=[0.5, 0.5], steps=3, solver="heun")
    assert torch.equal(a, b) and a.shape == noise.shape and torch.isfinite(a).all()


# --- the one sampling entry, batched pure classes, the fused-step hook, non-finite states ---


def test_sample_pure_is_one_batched_loop_equal_to_separate_runs(ref_model, expected):
    from gaf_trt.compose import sample_pure

    z0 = expected["euler_pure.z0"]
    together = sample_pure(ref_model, [2, 7, 2], z0, steps=6)  # [3, B, C, S, S]
    assert together.shape == (3, *z0.shape)
    assert rel_err(together[0], expected["euler_pure.z"]) < 1e-5  # class 2: the fixture run
    alone = sample(ref_model, [7], z0, steps=6)
    assert rel_err(together[1], alone) < 1e-5
    assert rel_err(together[2], together[0]) < 1e-6  # same class, another batch position


def test_sample_accepts_a_composition(ref_model, expected):
    from gaf_trt import Composition

    run = "heun_weighted"
    comp = Composition.build([1, 4, 7], weights=[0.5, 0.3, 0.2])
    z = sample(ref_model, comp, expected[f"{run}.z0"], steps=4, solver="heun")
    assert rel_err(z, expected[f"{run}.z"]) < 1e-4
    with pytest.raises(ConfigError, match="through the Composition, not both"):
        sample(ref_model, comp, expected[f"{run}.z0"], weights=[1, 1, 1])


class FusedWrapper:
    """A network offering the composed step on plain tensors (as a fused graph does),
    computed here from the per-class anchors; counts the calls."""

    def __init__(self, model):
        self.model, self.config, self.calls = model, model.config, {"v": 0, "a": 0}

    def __call__(self, x, t, y):
        raise AssertionError("a fused network must not be called per class")

    def _anchors(self, x, t, classes, coef):
        n, b = classes.shape[0], x.shape[0]
        xn = x.repeat(n, 1, 1, 1)
        j, k = self.model(xn, t.repeat(n), classes.repeat_interleave(b))
        c = coef.unsqueeze(1)  # [N, 1, 1, H|1, W|1]
        return ((c * j.view(n, b, *x.shape[1:])).sum(0), (c * k.view(n, b, *x.shape[1:])).sum(0))

    def composed_velocity(self, x, t, classes, coef):
        self.calls["v"] += 1
        j, k = self._anchors(x, t, classes, coef)
        return k - j

    def composed_anchors(self, x, t, classes, coef):
        self.calls["a"] += 1
        return self._anchors(x, t, classes, coef)


@pytest.mark.parametrize("run,solver,steps", [("rk4_spatial_h2", "rk4", 3),
                                              ("euler_alpha", "euler", 5)])
def test_composed_field_uses_a_fused_step_when_offered(ref_model, expected, run, solver, steps):
    net = FusedWrapper(ref_model)
    kw = {"masks": expected[f"{run}.masks"]} if "spatial" in run else {"alpha": 0.6}
    classes = [3, 8] if "spatial" in run else [0, 6]
    z = sample(net, classes, expected[f"{run}.z0"], steps=steps, solver=solver, **kw)
    assert rel_err(z, expected[f"{run}.z"]) < 1e-4
    assert net.calls["v"] == steps * {"rk4": 4, "euler": 1}[solver]


def test_fused_anchors_drive_the_ier_sampler(ref_model, expected):
    net = FusedWrapper(ref_model)
    z = sample(net, [5], expected["endpoint_pure.z0"], steps=5, solver="ier")
    assert rel_err(z, expected["endpoint_pure.z"]) < 1e-4 and net.calls["a"] == 5


class ExplodingNetwork:
    """Infinite data anchors for ``t`` above ``t_bad``."""

    def __init__(self, model, t_bad):
        self.model, self.config, self.t_bad = model, model.config, t_bad

    def __call__(self, x, t, y):
        j, k = self.model(x, t, y)
        return j, torch.where(t.view(-1, 1, 1, 1) > self.t_bad, k * float("inf"), k)


def test_non_finite_state_names_composition_and_first_bad_step(ref_model, expected):
    from gaf_trt.errors import NonFiniteError

    net = ExplodingNetwork(ref_model, t_bad=0.55)  # euler-5 grid: the 4th step starts at 0.6
    with pytest.raises(NonFiniteError, match=r"classes \[0, 6\] \(alpha\): the state became "
                                             r"NaN or infinite from step 4 of 5"):
        sample(net, [0, 6], expected["euler_alpha.z0"], alpha=0.6, steps=5)
