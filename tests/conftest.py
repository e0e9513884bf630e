"""Shared fixtures: the published-format reference checkpoint and its expected outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"
REF_CKPT = DATA / "gaf_ref_small.pt"
REF_EXPECTED = DATA / "gaf_ref_small_expected.pt"


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Relative L2 error against a non-zero reference; NaN never passes (returns inf)."""
    expected = expected.double()
    assert expected.abs().max() > 0, "reference must not be all zeros"
    err = ((actual.double() - expected).norm() / expected.norm()).item()
    return err if err == err else float("inf")


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
