"""``gaf-trt evaluate``: the Inception weights path (a randomly initialised file of the right
format), FID/IS/KID/PR end to end, reference statistics, the digits metric, --compare."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gaf_trt.errors import CheckpointError, ConfigError
from gaf_trt.evaluate import EvaluateConfig, run_evaluate
from gaf_trt.evaluate.compare import error_distribution, run_compare
from gaf_trt.evaluate.inception import WEIGHTS_NAME, Inception, _extractor_class
from gaf_trt.generate import GenerateConfig, run_generate
from gaf_trt.generate.store import save_npz
from gaf_trt.pipeline.source import ModelSource

try:
    _extractor_class()
except ConfigError:  # torch-fidelity not installed (scripts/test.sh installs it)
    pytest.skip("torch-fidelity is not installed", allow_module_level=True)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory) -> Path:
    """torch-fidelity's Inception-v3 with its default (random) initialisation, saved as a
    state dict: the format of the real weights file."""
    cls = _extractor_class()
    original = cls.load_state_dict
    cls.load_state_dict = lambda self, sd, *a, **k: None  # keep the random init
    try:
        torch.manual_seed(0)
        net = cls("inception-v3-compat", ["2048"], feature_extractor_weights_path="unused")
    except (OSError, RuntimeError):
        # __init__ reads the path before loading: give it a placeholder dict
        path = tmp_path_factory.mktemp("w") / "empty.pth"
        torch.save({}, path)
        net = cls("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    finally:
        cls.load_state_dict = original
    path = tmp_path_factory.mktemp("inception") / WEIGHTS_NAME
    torch.save(net.state_dict(), path)
    return path


def images(n: int, seed: int, size: int = 16, shift: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.integers(0, 200, (n, size, size, 3)) + shift, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def inception_features(random_inception):
    """Features of the 4 generated and 4 reference test images (Inception at 299x299 on
    the CPU costs about 2 s per image: the tests share these)."""
    net = Inception(random_inception, "cpu", batch=8)
    return net, net.features(images(4, 1)), net.features(images(4, 2, shift=40))


def test_random_weights_load_and_give_features(inception_features):
    _, (pool, logits), _ = inception_features
    assert pool.shape == (4, 2048) and logits.shape == (4, 1008)
    assert np.isfinite(pool).all() and np.isfinite(logits).all() and pool.std() > 0


@pytest.fixture
def known_features(inception_features, monkeypatch):
    """``Inception.features`` answers from :func:`inception_features` for exactly those
    images (same weights file, same uint8 arrays: the same numbers, without running the
    network on the CPU again) and runs the network for any other input."""
    _, gen, ref = inception_features
    known = [(images(4, 1), gen), (images(4, 2, shift=40), ref)]
    original = Inception.features

    def features(self, imgs):
        for arr, (pool, logits) in known:
            if imgs.dtype == arr.dtype and imgs.shape == arr.shape and np.array_equal(imgs, arr):
                return pool.copy(), logits.copy()
        return original(self, imgs)

    monkeypatch.setattr(Inception, "features", features)


def test_end_to_end_metrics(random_inception, inception_features, known_features, tmp_path):
    """evaluate on .npz files gives the formulas' values on the same features (images that
    evaluate did not read back unchanged would miss :func:`known_features` and give other
    features)."""
    from gaf_trt.metrics import features as m

    _, (pool, logits), (ref_pool, _) = inception_features
    save_npz(tmp_path / "gen.npz", arr_0=images(4, 1), labels=np.arange(4) % 3)
    save_npz(tmp_path / "ref.npz", arr_0=images(4, 2, shift=40))
    rep = run_evaluate(EvaluateConfig(str(tmp_path / "gen.npz"), str(tmp_path / "ref.npz"),
                                      str(random_inception), [], "cpu", 8))
    got = rep["metrics"]
    assert set(got) == {"fid", "is_mean", "is_std", "kid_mean", "kid_std", "precision", "recall"}
    assert all(np.isfinite(v) for v in got.values())
    fid = m.frechet_features(pool, ref_pool)
    assert fid > 0 and abs(got["fid"] - fid) <= 1e-6 * fid
    is_mean = m.inception_score(logits)[0]
    assert is_mean >= 1.0 and abs(got["is_mean"] - is_mean) <= 1e-6 * is_mean
    kid = m.kid(pool, ref_pool)[0]
    assert abs(got["kid_mean"] - kid) <= 1e-6 * abs(kid)
    assert (got["precision"], got["recall"]) == m.precision_recall(ref_pool, pool)
    mu = ref_pool.mean(0)  # an .npz of mu/sigma (ADM / torch-fidelity / clean-fid)
    np.savez(tmp_path / "stats.npz", mu=mu, sigma=(ref_pool - mu).T @ (ref_pool - mu) / 3)
    rep = run_evaluate(EvaluateConfig(str(tmp_path / "gen.npz"), str(tmp_path / "stats.npz"),
                                      str(random_inception), ["fid"], "cpu", 8))
    assert abs(rep["metrics"]["fid"] - fid) <= 1e-6 * fid
    with pytest.raises(ConfigError, match="only mu/sigma"):
        run_evaluate(EvaluateConfig(str(tmp_path / "gen.npz"), str(tmp_path / "stats.npz"),
                                    str(random_inception), ["kid"], "cpu", 8))


def test_weights_of_another_format_refused(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(10, 2048)}, bad)
    with pytest.raises(CheckpointError, match=WEIGHTS_NAME):
        Inception(bad)
    with pytest.raises(ConfigError, match="not found.*--inception"):
        Inception(tmp_path / "missing.pth")


def test_reference_of_another_resolution_refused(random_inception, tmp_path):
    save_npz(tmp_path / "gen.npz", arr_0=images(4, 0, size=16))
    save_npz(tmp_path / "ref.npz", arr_0=images(4, 0, size=32))
    with pytest.raises(ConfigError, match="32x32.*16x16"):
        run_evaluate(EvaluateConfig(str(tmp_path / "gen.npz"), str(tmp_path / "ref.npz"),
                                    str(random_inception), ["fid"], "cpu"))


@pytest.fixture(scope="module")
def digits_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits") / "ds"
    run_generate(GenerateConfig(out=str(out), per_class=3, steps=4, batch=10, shard_size=10,
                                format="png", model=ModelSource(device="cpu")))
    return out


def test_digits_metric_on_a_generated_folder(digits_dataset):
    """The digits quality gate through evaluate (PNG folder + labels.txt)."""
    rep = run_evaluate(EvaluateConfig(str(digits_dataset), metrics=["digits"], device="cpu"))
    got = rep["metrics"]
    assert rep["samples"] == 30
    assert 0.5 < got["mean_accuracy"] <= 1.0 and got["classifier_test_accuracy"] > 0.9
    assert np.isfinite(got["frechet_digits"]) and got["frechet_digits"] > 0


def test_error_distribution_closed_form():
    a = np.zeros((4, 2, 2, 3), dtype=np.uint8) + 100
    b = a.copy()
    b[1] += 4  # every pixel of sample 1 off by 4
    b[3, 0, 0, 0] += 12  # one pixel of sample 3 off by 12
    e = error_distribution(a, b)
    assert e["mae_max"] == 4.0 and e["pixel_max"] == 12.0 and e["identical_share"] == 0.5
    assert abs(e["mae_mean"] - (4 + 1) / 4) < 1e-12


def test_compare_same_network_is_identical_and_bf16_is_not(tmp_path):
    base = GenerateConfig(out=str(tmp_path / "c1"), per_class=1, steps=2, batch=10,
                          shard_size=10, model=ModelSource(device="cpu"))
    same = run_compare("digits", "digits:torch:fp32", base, None)
    assert same["error"]["identical_share"] == 1.0 and same["error"]["pixel_max"] == 0
    base.out = str(tmp_path / "c2")
    low = run_compare("digits", "digits:torch:bf16", base, None)
    assert low["error"]["mae_mean"] > 0 and low["error"]["pixel_max"] < 64
    rec = json.loads((tmp_path / "c2" / "b" / "dataset.json").read_text())
    assert rec["job"]["precision"] == "bf16"
