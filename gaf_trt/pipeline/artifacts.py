"""What every generating command needs of its model artifact besides the network: the
record that pins it (checkpoint hash, or an engine directory's manifest hash) and the latent
decoder (``--vae DIR`` or an engine directory's exported VAE decoder graph).

Shared by ``gaf-trt sample``, ``transport`` and ``generate`` so that each loads and records
an artifact the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gaf_trt.errors import ConfigError
from gaf_trt.io.files import file_sha256
from gaf_trt.model.checkpoint import resolve_path
from gaf_trt.model.config import GAFConfig


def artifact_record(artifact: str) -> dict[str, Any]:
    """``{"path", "sha256"}`` of a checkpoint, or ``{"path", "manifest_sha256"}`` of an
    engine directory (its manifest pins every other file)."""
    path = resolve_path(artifact)
    if path.is_dir():
        manifest = path / "manifest.json"
        return {"path": str(path), "manifest_sha256": file_sha256(manifest)
                if manifest.is_file() else None}
    return {"path": str(path), "sha256": file_sha256(path)}


def load_decoder(ckpt: str, vae: str | None, backend: str, config: GAFConfig,
                 device: str) -> Any:
    """The latent decoder ``z [B, C, h, w] -> images [B, 3, H, W]``: ``vae`` (a diffusers
    AutoencoderKL directory), else the engine directory's exported VAE decoder graph; None
    for pixel models. Raises ``ConfigError`` for a latent model with neither."""
    if config.mode != "latent":
        return None
    if vae is None and Path(ckpt).is_dir():
        from gaf_trt.enginedir import read_manifest

        if "vae_decoder" in read_manifest(ckpt)["graphs"]:
            from gaf_trt.engine.loader import load_vae_decoder

            return load_vae_decoder(ckpt, backend if backend in ("ort", "trt") else "auto",
                                    device)
    if vae is None:
        raise ConfigError("this is a latent model: give the VAE with --vae DIR (a diffusers "
                          "AutoencoderKL directory), or export its decoder into the engine "
                          "directory (gaf-trt export --graphs split,fused,vae --vae DIR)")
    from gaf_trt.model.vae import load_vae

    return load_vae(vae, scale=config.vae_scale, device=device)
