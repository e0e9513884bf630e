"""Feature caching (issue 26): the CachedNetwork wrapper and its policies on the digits model."""

from __future__ import annotations

import pytest
import torch

import gaf_trt
from gaf_trt.compose.cache import (
    CachedNetwork,
    CachePolicy,
    FeatureState,
    grouped_call,
    parse_cache,
)
from gaf_trt.engine.base import AnchorNetwork, LoadRequest, load_backend
from gaf_trt.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def net():
    return load_backend("torch", LoadRequest("digits"))


@pytest.fixture(scope="module")
def noise(net):
    return torch.randn(4, *net.config.sample_shape, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def ref(net, noise):
    return gaf_trt.sample_pure(net, [3, 7], noise, steps=20, solver="euler")


class Counting:
    """A torch engine that counts its trunk runs."""

    def __init__(self, inner) -> None:
        self.inner, self.config, self.trunk = inner, inner.config, 0

    def __call__(self, x, t, y):
        self.trunk += 1
        return self.inner(x, t, y)

    def features(self, x, t, y):
        self.trunk += 1
        return self.inner.features(x, t, y)

    def anchors_from(self, f, x, t, y):
        return self.inner.anchors_from(f, x, t, y)


@pytest.mark.parametrize("text, want", [
    ("off", CachePolicy()), (None, CachePolicy()), ("static:3", CachePolicy("static", every=3)),
    ("adaptive:0.05", CachePolicy("adaptive", delta=0.05)), (" Static:2 ", CachePolicy("static", 2)),
    ("taylor:3", CachePolicy("taylor", every=3)),
])
def test_parse(text, want):
    assert parse_cache(text) == want
    assert parse_cache(want.text) == want


@pytest.mark.parametrize("bad", ["static:0", "adaptive:-1", "foo", "static", "static:x",
                                 "off:2", "adaptive:nan", "", "taylor", "taylor:0"])
def test_parse_refuses_with_valid_forms(bad):
    with pytest.raises(ConfigError) as err:
        parse_cache(bad)
    msg = str(err.value)
    assert repr(bad.strip()) in msg and "off, static:N, adaptive:δ, taylor:N" in msg


def test_wrapper_is_an_anchor_network(net):
    assert isinstance(CachedNetwork(net, "static:2"), AnchorNetwork)


@pytest.mark.parametrize("policy", ["off", "static:1", "adaptive:0", "taylor:1"])
def test_no_reuse_is_bit_identical(net, noise, ref, policy):
    wrapped = CachedNetwork(net, policy)
    z = gaf_trt.sample_pure(wrapped, [3, 7], noise, steps=20, solver="euler")
    assert torch.equal(z, ref)
    assert wrapped.trunk_calls == wrapped.calls == 20
    assert torch.equal(gaf_trt.sample_pure(net, [3, 7], noise, steps=20, cache=policy), ref)


def test_model_split_is_bit_identical(noise):
    model = gaf_trt.load_model("digits")
    a = gaf_trt.sample(model, [3, 8], noise, alpha=0.4, steps=6, solver="heun")
    b = gaf_trt.sample(model, [3, 8], noise, alpha=0.4, steps=6, solver="heun", cache="static:1")
    assert torch.equal(a, b)


def test_static_2_halves_trunk_calls_and_stays_close(net, noise, ref):
    counting = Counting(net)
    wrapped = CachedNetwork(counting, "static:2")
    z = gaf_trt.sample_pure(wrapped, [3, 7], noise, steps=20, solver="euler")
    assert counting.trunk == wrapped.trunk_calls == 10 and wrapped.calls == 20
    assert wrapped.saved == pytest.approx(0.5)
    # measured 0.019-0.022 (relative L2, 3 seeds, 8 samples x 2 classes); bound with margin
    assert float((z - ref).norm() / ref.norm()) < 0.05


def test_static_3_schedule(net, noise):
    counting = Counting(net)
    gaf_trt.sample_pure(CachedNetwork(counting, "static:3"), [3], noise, steps=20)
    assert counting.trunk == 7  # evaluations 1, 4, 7, ... 19


def test_changed_rows_recompute(net, noise):
    counting = Counting(net)
    wrapped = CachedNetwork(counting, "static:4")
    t = torch.full((4,), 0.5)
    y1, y2 = torch.full((4,), 3), torch.full((4,), 5)
    wrapped(noise, t, y1)
    wrapped(noise, t, y1.clone())  # same labels, another tensor: reused
    assert counting.trunk == 1
    j, k = wrapped(noise, t, y2)  # other labels: recomputed
    assert counting.trunk == 2
    j0, k0 = net(noise, t, y2)
    assert torch.equal(j, j0) and torch.equal(k, k0)
    wrapped(noise[:2], t[:2], y2[:2])  # other shape: recomputed
    assert counting.trunk == 3


def test_sample_resets_between_loops(net, noise, ref):
    wrapped = CachedNetwork(net, "static:2")
    first = gaf_trt.sample_pure(wrapped, [3, 7], noise, steps=20)
    again = gaf_trt.sample_pure(wrapped, [3, 7], noise, steps=20)
    assert torch.equal(first, again)  # no stale features from the previous loop


def test_adaptive_reuses_when_input_barely_moves(net, noise):
    counting = Counting(net)
    wrapped = CachedNetwork(counting, "adaptive:0.01")
    t, y = torch.full((4,), 0.5), torch.full((4,), 2)
    wrapped(noise, t, y)
    wrapped(noise * 1.001, t + 0.001, y)  # 0.1 % change: reused
    assert counting.trunk == 1
    wrapped(noise * 1.5, t, y)  # 50 % change: recomputed
    assert counting.trunk == 2


def test_network_without_split_is_refused(net):
    def plain(x, t, y):
        return net(x, t, y)

    class Plain:
        config = net.config
        __call__ = staticmethod(plain)

    with pytest.raises(ConfigError, match="separate trunk.*supported: torch.*ort / trt"):
        CachedNetwork(Plain(), "static:2")
    assert CachedNetwork(Plain(), "off").calls == 0  # off needs no split


def test_ort_split_engine_caches_and_fused_only_is_refused(tmp_path_factory):
    from tests.export.shared import need_onnx, ref_engine_dir

    need_onnx()
    from gaf_trt.engine.loader import load_engine

    folder = ref_engine_dir(tmp_path_factory.getbasetemp())
    split = load_engine(folder, backend="ort", device="cpu", graphs="split")
    x = torch.randn(3, *split.config.sample_shape, generator=torch.Generator().manual_seed(1))
    a = gaf_trt.sample(split, [2], x, steps=4)
    b = gaf_trt.sample(split, [2], x, steps=4, cache="static:1")
    assert torch.equal(a, b)
    c = gaf_trt.sample(split, [2], x, steps=4, cache="static:2")
    assert float((c - a).norm() / a.norm()) < 0.2
    fused = load_engine(folder, backend="ort", device="cpu", graphs="fused")
    with pytest.raises(ConfigError, match="fused graphs only"):
        CachedNetwork(fused, "static:2")


@pytest.mark.parametrize("solver", ["ier", "endpoint"])
def test_static_with_ier_is_refused_with_the_measured_reason(net, noise, solver):
    with pytest.raises(ConfigError, match=r"static:2 with solver .*refused: IER-8 .*Fréchet.*"
                                          r"adaptive"):
        gaf_trt.sample(net, [3], noise, steps=8, solver=solver, cache="static:2")
    gaf_trt.sample(net, [3], noise, steps=2, solver=solver, cache="static:1")  # no reuse: fine
    gaf_trt.sample(net, [3], noise, steps=2, solver=solver, cache="adaptive:0.2")


def test_hand_built_static_wrapper_with_ier_only_warns(net, noise, caplog):
    wrapped = CachedNetwork(net, "static:2")
    with caplog.at_level("WARNING", logger="gaf_trt.compose.cache"):
        gaf_trt.sample(wrapped, [3], noise, steps=4, solver="ier")
    assert "refused" in caplog.text and wrapped.trunk_calls == 2


class Linear:
    """A split network whose trunk tokens are linear in ``t``: ``f = a + b·t`` per row (``a``
    from ``x``, ``b`` from ``y``), ``J = f`` and ``K = x``; it records each trunk call's rows."""

    config = type("Cfg", (), {"sample_shape": (1, 2, 2)})()

    def __init__(self) -> None:
        self.trunk_rows: list[int] = []

    def features(self, x, t, y):
        self.trunk_rows.append(x.shape[0])
        return (x.flatten(1).sum(1) + y.float() * t).view(-1, 1, 1).expand(-1, 1, 4).clone()

    def anchors_from(self, f, x, t, y):
        return f[:, :, :].reshape(x.shape), x

    def __call__(self, x, t, y):
        return self.anchors_from(self.features(x, t, y), x, t, y)


def test_taylor_extrapolates_first_order_exactly():
    """Tokens linear in ``t`` are recovered exactly between recomputes once two exist; until
    then (and with static) they are reused."""
    lin = Linear()
    x, y = torch.ones(3, 1, 2, 2), torch.tensor([1, 2, 3])
    ts = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    taylor, static = CachedNetwork(lin, "taylor:2"), CachedNetwork(lin, "static:2")
    got_t = [float(taylor(x, torch.full((3,), t), y)[0][2, 0, 0, 0]) for t in ts]
    got_s = [float(static(x, torch.full((3,), t), y)[0][2, 0, 0, 0]) for t in ts]
    exact = [4 + 3 * t for t in ts]
    assert got_t[:4] == pytest.approx([exact[0], exact[0], exact[2], exact[3]], abs=1e-6)
    assert got_t[4:] == pytest.approx(exact[4:], abs=1e-6)  # recompute at 0.5, extrapolated
    assert got_s == pytest.approx([exact[0], exact[0], exact[2], exact[2], exact[4], exact[4]],
                                  abs=1e-6)
    assert taylor.trunk_calls == static.trunk_calls == 3


def test_taylor_2_halves_trunk_calls_closer_than_static(net, noise, ref):
    wrapped = CachedNetwork(net, "taylor:2")
    z = gaf_trt.sample_pure(wrapped, [3, 7], noise, steps=20, solver="euler")
    assert wrapped.trunk_calls == 10 and wrapped.calls == 20
    # measured 0.0068 (static:2: 0.022), 8 samples x 2 classes; bound with margin
    assert float((z - ref).norm() / ref.norm()) < 0.015


def test_grouped_call_recomputes_only_the_due_groups():
    """Three groups in one call: a static:2 one, an uncached one and a taylor:3 one; the
    trunk runs on the due rows only, and each group gets what its own wrapper gives."""
    lin = Linear()
    x = torch.randn(6, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([1, 1, 2, 3, 3, 3])
    a, c = FeatureState(parse_cache("static:2")), FeatureState(parse_cache("taylor:3"))
    alone = [CachedNetwork(Linear(), "static:2"), Linear(), CachedNetwork(Linear(), "taylor:3")]
    spans = [(0, 2), (2, 3), (3, 6)]
    for t in (0.1, 0.2, 0.3, 0.4):
        tt = torch.full((6,), t)
        j, _ = grouped_call(lin, [(a, 2), (None, 1), (c, 3)], x, tt, y)
        for net_, (lo, hi) in zip(alone, spans):
            want, _ = net_(x[lo:hi], tt[lo:hi], y[lo:hi])
            assert torch.allclose(j[lo:hi], want, atol=1e-6)
    assert lin.trunk_rows == [6, 1, 3, 4]  # 0.1 all; then the uncached row, with static at
    # 0.3 (its 3rd evaluation) and taylor at 0.4 (its 4th)
    assert (a.trunk_calls, a.calls, c.trunk_calls, c.calls) == (2, 4, 2, 4)
    with pytest.raises(ConfigError, match="groups hold 5 rows, the call 6"):
        grouped_call(lin, [(a, 2), (None, 3)], x, tt, y)


@pytest.mark.parametrize("policy", ["static:2", "taylor:2"])
def test_loop_program_starts_each_loop_with_an_empty_cache(net, noise, policy):
    """What a CUDA graph records (the uncaptured LoopProgram here): every run of the loop
    gives what ``gaf_trt.sample(cache=policy)`` gives, not features left from the last run."""
    from gaf_trt.compose.capture import CapturedLoop
    from gaf_trt.compose.composition import ComposedField, Composition

    want = gaf_trt.sample(net, [3], noise, steps=6, cache=policy)
    loop = CapturedLoop(ComposedField(CachedNetwork(net, policy), Composition.pure(3)), noise,
                        steps=6, t_eps=net.config.t_eps, capture=False)
    assert torch.equal(loop(noise), want) and torch.equal(loop(noise), want)
