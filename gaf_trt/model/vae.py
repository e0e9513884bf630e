"""Decoding latent GAF samples through a diffusers ``AutoencoderKL`` (optional extra)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import Tensor

from gaf_trt.errors import ConfigError

log = logging.getLogger(__name__)

SD_VAE_SCALE = 0.18215


class LatentDecoder:
    """``decode(z [B, 4, h, w]) -> images [B, 3, 8h, 8w]`` in ``[-1, 1]``."""

    def __init__(self, vae: torch.nn.Module, scale: float) -> None:
        self.vae = vae
        self.scale = float(scale)

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        dtype = next(self.vae.parameters()).dtype
        device = next(self.vae.parameters()).device
        out = self.vae.decode(z.to(device=device, dtype=dtype) / self.scale).sample
        return out.float().clamp(-1, 1)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """``images [B, 3, H, W]`` in ``[-1, 1]`` -> scaled latent means."""
        dtype = next(self.vae.parameters()).dtype
        device = next(self.vae.parameters()).device
        dist = self.vae.encode(images.to(device=device, dtype=dtype)).latent_dist
        return dist.mean.float() * self.scale


def import_autoencoder() -> type:
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise ConfigError("decoding latents needs diffusers: pip install 'gaf-trt[vae]'") from None
    return AutoencoderKL


def load_vae(source: str | os.PathLike[str], *, scale: float | None = None,
             device: str = "cpu") -> LatentDecoder:
    """Load an ``AutoencoderKL`` from a local directory (or a hub id where the network
    allows). The scale is ``scale`` (the checkpoint's ``vae_scale``) if given, else the VAE
    config's ``scaling_factor``."""
    autoencoder = import_autoencoder()
    src = os.fspath(source)
    local = Path(src)
    looks_like_path = local.is_absolute() or src.startswith(".") or local.exists()
    if looks_like_path and not local.is_dir():  # anything else is tried as a hub id
        raise ConfigError(f"VAE directory not found: {src}")
    try:
        vae = autoencoder.from_pretrained(src)
    except (OSError, ValueError, EnvironmentError) as err:
        raise ConfigError(f"cannot load a VAE from {src!r}: {str(err).splitlines()[0][:200]}") from None
    if scale is None:
        scale = float(getattr(vae.config, "scaling_factor", SD_VAE_SCALE))
    log.info("VAE from %s, latent scale %s", src, scale)
    return LatentDecoder(vae.to(device).eval(), scale)
