"""Shared fixtures: the published-format reference checkpoint and its expected outputs."""

from __future__ import annotations

import os
from pathlib import Path

#: One intra-op thread in every test process and every subprocess it starts (set before torch
#: is imported, so torch, and the subprocesses through the environment, read it): the suite
#: runs two workers on two cores, and two threads each thrash -- OpenMP threads spin at each
#: op's barrier while the other worker holds the core (measured on a loaded 2-core machine:
#: 20-step digits sampling 1.0 s of CPU with one thread, 28 s with two).
#: ``GAF_TEST_THREADS=N`` sets another count.
TEST_THREADS = os.environ.get("GAF_TEST_THREADS", "1")
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # numpy's BLAS too
    os.environ[_var] = TEST_THREADS

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(TEST_THREADS))

DATA = Path(__file__).parent / "data"

#: Test files that start servers or clusters (Triton, Ray) or check what such processes leave
#: in /dev/shm and ~/.cache: under pytest-xdist (scripts/test.sh runs two workers) they all run
#: on one worker, one after the other, so that no check sees another server's files.
SERIAL_FILES = ("tests/serve/", "tests/generate/test_ray.py",
                "tests/reliability/test_generate_errors.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Whole test files per worker (as ``--dist loadfile``: module fixtures are built once),
    with :data:`SERIAL_FILES` as one unit."""
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "serial-servers" if path.startswith(SERIAL_FILES) else path

    return FileScheduling(config, log)
REF_CKPT = DATA / "gaf_ref_small.pt"
REF_EXPECTED = DATA / "gaf_ref_small_expected.pt"


@pytest.fixture(scope="session")
def ref_ckpt() -> Path:
    return REF_CKPT


@pytest.fixture(scope="session")
def expected() -> dict[str, torch.Tensor]:
    return torch.load(REF_EXPECTED, map_location="cpu", weights_only=True)


@pytest.fixture(scope="session")
def ref_model():
    from gaf_trt import load_model

    return load_model(REF_CKPT)


@pytest.fixture(scope="session")
def ref_raw() -> dict:
    return torch.load(REF_CKPT, map_location="cpu", weights_only=True)


@pytest.fixture(scope="session")
def tiny_vae_dir(tmp_path_factory) -> Path:
    """A tiny diffusers AutoencoderKL (4 latent channels, image = latent x 8) saved to disk."""
    diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed")
    d = tmp_path_factory.mktemp("vae")
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8),
        layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=32)
    vae.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def latent_ckpt(tmp_path_factory) -> Path:
    """A tiny latent GAF checkpoint in the published format (4 channels, 4x4, 3 named classes)."""
    from gaf_trt.model import GAF, GAFConfig

    d = tmp_path_factory.mktemp("latent")
    cfg = GAFConfig(in_channels=4, input_size=4, patch_size=2, hidden_size=32, depth=1,
                    num_heads=2, mlp_ratio=4.0, num_classes=3, mode="latent")
    torch.manual_seed(0)
    m = GAF(cfg)
    torch.save({"model": m.state_dict(), "ema": m.state_dict(), "opt": {}, "sched": {},
                "step": 1, "cfg": {"mode": "latent", "vae_scale": 0.5, "dit_heads": 2,
                                   "latent_ch": 4, "class_names": ["cat", "dog", "wild"]}},
               d / "latent.pt")
    return d / "latent.pt"


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one intra-op thread (two thrash when the 2-core machine is shared), also
    where ``GAF_TEST_THREADS`` sets more for the rest of the suite."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
