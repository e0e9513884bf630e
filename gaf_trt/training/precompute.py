"""Encode an image folder into a latent cache with a diffusers ``AutoencoderKL``
(latent mean x scale, as the published runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gaf_trt.errors import ConfigError
from gaf_trt.io.files import atomic_write
from gaf_trt.model.vae import load_vae
from gaf_trt.training.data import folder_dataset


def precompute(images: str | Path, vae: str, out: str | Path, *, size: int = 256, batch: int = 16,
               scale: float | None = None, device: str = "cpu") -> dict[str, Any]:
    """Write ``{latents [N, 4, size/8, size/8] float16, labels [N], class_names, scale,
    image_size}`` atomically to ``out``; returns a summary."""
    if size < 8 or size % 8:
        raise ConfigError(f"--size must be a positive multiple of 8, got {size}")
    if batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}")
    decoder = load_vae(vae, scale=scale, device=device)
    ds = folder_dataset(images, size, 3)
    latents = []
    for start in range(0, len(ds), batch):
        idx = torch.arange(start, min(start + batch, len(ds)))
        x, _ = ds.get(idx)
        latents.append(decoder.encode(x).cpu().half())
    lat = torch.cat(latents)
    payload = {"latents": lat, "labels": ds.labels.clone(), "class_names": list(ds.class_names),
               "scale": decoder.scale, "image_size": size}
    atomic_write(out, lambda tmp: torch.save(payload, tmp))
    return {"count": lat.shape[0], "shape": list(lat.shape[1:]),
            "skipped": getattr(ds, "skipped", 0), "scale": decoder.scale}
