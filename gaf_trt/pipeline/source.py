"""One model source: which network a command runs and how it is loaded, resolved once.

Every command that takes a model (``sample``, ``transport``, ``translate``, ``generate``,
``serve``, ``evaluate --compare``) describes it with one :class:`ModelSource` and loads it
with :func:`load_source`. The rules hold everywhere:

- an engine directory without a backend runs ``auto`` (a checkpoint ``torch``), and the
  choice is named (logged; the CLI echoes it);
- the precision defaults to an engine directory's own (its manifest), else fp32;
- a latent model's decoder is ``vae`` (a diffusers AutoencoderKL directory), else the engine
  directory's exported VAE decoder graph;
- every record stores the artifact's hash (:func:`source_record`: a checkpoint's sha256, or
  an engine directory's manifest sha256, the manifest pinning every other file).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gaf_trt.engine.base import BACKENDS, AnchorNetwork, LoadRequest, check_threads, load_backend
from gaf_trt.enginedir import MANIFEST
from gaf_trt.errors import ConfigError
from gaf_trt.io.files import file_sha256
from gaf_trt.model.config import GAFConfig
from gaf_trt.precision import Precision

log = logging.getLogger(__name__)

#: Images decoded through the VAE per call.
DECODE_CHUNK = 16
#: The flat record keys of a model source (``ckpt`` names the artifact, as records always did).
RECORD_KEYS = ("ckpt", "backend", "device", "precision", "vae", "num_heads", "use_ema",
               "trust_pickle", "options")


@dataclass(frozen=True)
class ModelSource:
    """Which network to load and how.

    ``artifact``: a checkpoint (``.pt`` / ``.safetensors``), a bundled name (``digits``) or an
    engine directory written by ``gaf-trt export``. ``backend`` / ``precision`` None: chosen
    by :meth:`resolved` (``auto`` / the engine's own precision for an engine directory,
    ``torch`` / fp32 for a checkpoint). ``options`` go to the backend (e.g. ``compile``;
    ``threads``: the runtime's threads, 0 or absent its default).
    """

    artifact: str = "digits"
    backend: str | None = None
    device: str = "auto"
    precision: Precision | None = None
    vae: str | None = None
    num_heads: int | None = None
    use_ema: bool = True
    trust_pickle: bool = False
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "artifact", os.fspath(self.artifact))
        if self.vae is not None:
            object.__setattr__(self, "vae", os.fspath(self.vae))
        if self.precision is not None and not isinstance(self.precision, Precision):
            try:
                object.__setattr__(self, "precision", Precision(str(self.precision).lower()))
            except ValueError:
                raise ConfigError(f"unknown precision {self.precision!r}; valid: "
                                  f"{', '.join(p.value for p in Precision)}") from None
        object.__setattr__(self, "options", dict(self.options))

    @property
    def is_engine_dir(self) -> bool:
        """True when the artifact is a directory (an engine directory, or nothing usable)."""
        return Path(self.artifact).is_dir()

    def check(self) -> None:
        """The bounded fields, checked before any work (unknown backend, bad ``num_heads``,
        a ``vae`` folder that is not there)."""
        if self.backend is not None:
            BACKENDS.get(self.backend)
        if self.vae is not None and not Path(self.vae).is_dir():
            raise ConfigError(f"--vae {self.vae}: VAE directory not found (give a diffusers "
                              "AutoencoderKL directory)")
        h = self.num_heads
        if h is not None and (isinstance(h, bool) or not isinstance(h, int) or h < 1):
            raise ConfigError(f"--heads must be a positive integer, got {h!r}")
        if "threads" in self.options:
            check_threads(self.options["threads"])

    def resolved(self) -> ModelSource:
        """This source with ``backend`` and ``precision`` chosen (see the class docstring);
        reads an engine directory's manifest for its precision."""
        from gaf_trt.engine.loader import default_precision

        backend = self.backend or ("auto" if self.is_engine_dir else "torch")
        precision = default_precision(self.artifact, self.precision)
        if backend == self.backend and precision is self.precision:
            return self
        return dataclasses.replace(self, backend=backend, precision=precision)

    def load_request(self, device: str) -> LoadRequest:
        """The backend's :class:`~gaf_trt.engine.base.LoadRequest` on the resolved ``device``."""
        src = self.resolved()
        return LoadRequest(artifact=src.artifact, device=device, precision=src.precision,
                           num_heads=src.num_heads, use_ema=src.use_ema,
                           trust_pickle=src.trust_pickle, options=dict(src.options))

    def to_record(self) -> dict[str, Any]:
        """The flat keys records use (:data:`RECORD_KEYS`), resolved values."""
        src = self.resolved()
        return {"ckpt": src.artifact, "backend": src.backend, "device": src.device,
                "precision": src.precision.value, "vae": src.vae, "num_heads": src.num_heads,
                "use_ema": src.use_ema, "trust_pickle": src.trust_pickle,
                "options": dict(src.options)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ModelSource:
        """The source :meth:`to_record` wrote (other keys are ignored)."""
        return cls(artifact=record.get("ckpt", "digits"), backend=record.get("backend"),
                   device=record.get("device", "auto"), precision=record.get("precision"),
                   vae=record.get("vae"), num_heads=record.get("num_heads"),
                   use_ema=record.get("use_ema", True),
                   trust_pickle=record.get("trust_pickle", False),
                   options=record.get("options") or {})


def flat_args(cfg: Any) -> dict[str, Any]:
    """A job config's record: its own fields with its ``model`` (a :class:`ModelSource`)
    spread into the flat keys records use (``ckpt`` first, as before the model was a field)."""
    own = {f.name: copy.deepcopy(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
           if f.name != "model"}
    own = {k: (v.value if isinstance(v, Precision) else v) for k, v in own.items()}
    rec = cfg.model.to_record()
    return {"ckpt": rec.pop("ckpt"), **own, **rec}


def split_args(record: Mapping[str, Any]) -> tuple[dict[str, Any], ModelSource]:
    """The inverse of :func:`flat_args`: ``(the job's own fields, its model source)``."""
    own = {k: v for k, v in record.items() if k not in RECORD_KEYS}
    return own, ModelSource.from_record(record)


def source_record(artifact: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"path", "sha256"}`` of a checkpoint; of an engine directory ``{"path", "sha256",
    "manifest_sha256"}``, both the sha256 of its ``manifest.json`` (which pins every other
    file; None when it has none)."""
    from gaf_trt.model.checkpoint import resolve_path

    path = resolve_path(os.fspath(artifact))
    if path.is_dir():
        manifest = path / MANIFEST
        digest = file_sha256(manifest) if manifest.is_file() else None
        return {"path": str(path), "sha256": digest, "manifest_sha256": digest}
    return {"path": str(path), "sha256": file_sha256(path) if path.is_file() else None}


@dataclass
class Loaded:
    """A loaded model source: the network, its latent decoder (None for pixel models or when
    not asked for), the resolved source and device, and the load time in seconds."""

    source: ModelSource  # resolved: backend and precision chosen
    network: AnchorNetwork
    decoder: Any
    device: str
    load_s: float = 0.0

    @property
    def config(self) -> GAFConfig:
        return self.network.config

    @property
    def precision(self) -> Precision:
        return self.source.precision

    @property
    def backend(self) -> str:
        """The backend that runs (what ``auto`` chose, when asked for ``auto``)."""
        return getattr(self.network, "name", self.source.backend)

    def source_record(self) -> dict[str, Any]:
        """The artifact's path and hash (:func:`source_record`)."""
        return source_record(self.source.artifact)

    def decode(self, z: Tensor) -> Tensor:
        """``z [B, C, S, S]`` -> images ``[B, 3|1, H, W]`` in ``[-1, 1]`` on the CPU."""
        if self.decoder is None:
            return z.detach().float().cpu().clamp(-1, 1)
        parts = [self.decoder.decode(z[i:i + DECODE_CHUNK]).cpu()
                 for i in range(0, z.shape[0], DECODE_CHUNK)]
        return torch.cat(parts)


def load_source(source: ModelSource, *, decoder: bool = True,
                device: str | None = None) -> Loaded:
    """Resolve ``source`` and load its network (and, with ``decoder``, a latent model's
    decoder: :func:`load_decoder`); raises before anything is written. ``device`` overrides
    ``source.device`` (a torchrun rank's own GPU)."""
    from gaf_trt.device import resolve_device

    t0 = time.perf_counter()
    source.check()
    src = source.resolved()
    dev = resolve_device(device if device is not None else src.device)
    network = load_backend(src.backend, src.load_request(dev))
    if src.backend == "auto":
        log.info("%s: backend auto -> %s on %s", src.artifact,
                 getattr(network, "name", "auto"), dev)
    dec = load_decoder(src, network.config, dev) if decoder else None
    return Loaded(src, network, dec, dev, time.perf_counter() - t0)


def load_decoder(source: ModelSource, config: GAFConfig, device: str) -> Any:
    """The latent decoder ``z [B, C, h, w] -> images [B, 3, H, W]``: ``source.vae`` (a
    diffusers AutoencoderKL directory), else the engine directory's exported VAE decoder
    graph; None for pixel models. Raises ``ConfigError`` for a latent model with neither."""
    if config.mode != "latent":
        return None
    if source.vae is None and source.is_engine_dir:
        from gaf_trt.enginedir import read_manifest

        if "vae_decoder" in read_manifest(source.artifact)["graphs"]:
            from gaf_trt.engine.loader import load_vae_decoder

            backend = source.backend if source.backend in ("ort", "trt") else "auto"
            return load_vae_decoder(source.artifact, backend, device)
    if source.vae is None:
        raise ConfigError("this is a latent model: give the VAE with --vae DIR (a diffusers "
                          "AutoencoderKL directory), or export its decoder into the engine "
                          "directory (gaf-trt export --graphs split,fused,vae --vae DIR)")
    from gaf_trt.model.vae import load_vae

    return load_vae(source.vae, scale=config.vae_scale, device=device)
