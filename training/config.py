"""Training configuration: one dataclass, presets matching the published runs, YAML files
and ``key=value`` overrides. Serialised into every checkpoint's ``cfg``."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gaf_trt.errors import ConfigError
from gaf_trt.model.config import GAFConfig


@dataclass
class TrainConfig:
    """Everything a run needs. ``image_size`` is the *image* size; for latent runs the
    network sees ``image_size // 8`` (SD VAE)."""

    # data
    data: str = "digits"  # digits | folder | cifar10 | latents
    data_path: str | None = None
    mode: str = "pixel"  # pixel | latent
    image_size: int = 16
    latent_ch: int = 1
    num_classes: int = 10
    class_names: list[str] | None = None
    vae_scale: float | None = None
    # network
    dit_hidden: int = 128
    dit_depth: int = 4
    dit_heads: int = 4
    patch_size: int = 2
    mlp_ratio: float = 4.0
    # objective
    t_eps: float = 1e-3
    pair_loss: bool = True
    res_reg: float = 0.003
    lam_time: float = 0.002
    # optimisation
    iters: int = 2000
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 2e-4
    min_lr: float = 1e-6
    warmup: int = 200
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.9995
    ema_warmup_decay: float = 0.999
    bf16: bool = True  # autocast on CUDA only
    # bookkeeping
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 500
    preview_every: int = 0
    preview_steps: int = 20
    outdir: str = "runs/gaf"
    device: str = "auto"

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        if self.mode not in ("pixel", "latent"):
            raise ConfigError(f"mode must be 'pixel' or 'latent', got {self.mode!r}")
        if self.data not in DATA_KINDS:
            raise ConfigError(f"unknown data kind {self.data!r}; valid: {', '.join(DATA_KINDS)}")
        for name in ("iters", "batch_size", "grad_accum", "image_size", "latent_ch",
                     "num_classes", "dit_hidden", "dit_depth", "dit_heads", "patch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.warmup = max(0, min(self.warmup, self.iters - 1))
        if not 0 <= self.ema_decay < 1 or not 0 <= self.ema_warmup_decay < 1:
            raise ConfigError("EMA decays must be in [0, 1)")
        self.model_config()  # validates the architecture

    @property
    def input_size(self) -> int:
        """Spatial size the network sees."""
        return self.image_size // 8 if self.mode == "latent" else self.image_size

    def model_config(self) -> GAFConfig:
        return GAFConfig(
            in_channels=self.latent_ch, input_size=self.input_size, patch_size=self.patch_size,
            hidden_size=self.dit_hidden, depth=self.dit_depth, num_heads=self.dit_heads,
            mlp_ratio=self.mlp_ratio, num_classes=self.num_classes, t_eps=self.t_eps,
            mode=self.mode, vae_scale=self.vae_scale,
            class_names=tuple(self.class_names) if self.class_names else None,
            heads_source="checkpoint cfg")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; valid: "
                              f"{', '.join(sorted(names))}")
        return cls(**d)


DATA_KINDS = ("digits", "folder", "cifar10", "latents")

_LATENT = dict(mode="latent", latent_ch=4, vae_scale=0.18215, dit_hidden=1152, dit_depth=28,
               dit_heads=16, patch_size=2, lr=1e-4, ema_decay=0.9999, res_reg=1e-4,
               lam_time=1e-4, iters=100_000, warmup=5000, batch_size=256, data="latents")

PRESETS: dict[str, dict[str, Any]] = {
    "cifar": dict(data="cifar10", mode="pixel", image_size=32, latent_ch=3, num_classes=10,
                  dit_hidden=768, dit_depth=12, dit_heads=12, patch_size=2, lr=2e-4,
                  ema_decay=0.9995, res_reg=0.003, lam_time=0.002, iters=100_000,
                  warmup=5000, batch_size=128,
                  class_names=["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                               "horse", "ship", "truck"]),
    "celeb": dict(_LATENT, image_size=256, num_classes=1, class_names=["face"]),
    "afhq": dict(_LATENT, image_size=512, num_classes=3, class_names=["cat", "dog", "wild"]),
    "imagenet": dict(_LATENT, image_size=256, num_classes=1000),
    # The bundled model: sklearn's 8x8 digits upscaled to 16x16, pixel space, CPU-sized.
    "digits": dict(data="digits", mode="pixel", image_size=16, latent_ch=1, num_classes=10,
                   class_names=[str(i) for i in range(10)], dit_hidden=128, dit_depth=4,
                   dit_heads=4, patch_size=4, lr=1e-3, min_lr=1e-5, warmup=200,
                   ema_decay=0.9995, ema_warmup_decay=0.99, res_reg=0.003, lam_time=0.0,
                   iters=12000, batch_size=128, log_every=250, ckpt_every=2000,
                   preview_every=4000),
}


def _coerce(value: str, typ: Any, key: str) -> Any:
    """Parse a ``key=value`` override string into the field's type."""
    origin = typing.get_origin(typ)
    args = [a for a in typing.get_args(typ) if a is not type(None)]
    if value.lower() in ("none", "null") and type(None) in typing.get_args(typ):
        return None
    if origin in (typing.Union, types.UnionType) and args:
        return _coerce(value, args[0], key)
    try:
        if typ is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if typ is int:
            return int(float(value)) if "e" in value.lower() else int(value)
        if typ is float:
            return float(value)
        if origin in (list, tuple):
            items = [v for v in value.replace(",", " ").split() if v]
            inner = typing.get_args(typ)[0] if typing.get_args(typ) else str
            return [(_coerce(v, inner, key)) for v in items]
    except ValueError:
        raise ConfigError(f"bad value {value!r} for {key} (expected {getattr(typ, '__name__', typ)})") from None
    return value


def build_config(preset: str | None = None, config_file: str | Path | None = None,
                 overrides: list[str] | None = None) -> TrainConfig:
    """Preset, then YAML file, then ``key=value`` overrides, in that order."""
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
    if config_file is not None:
        p = Path(config_file)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {p} is not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping")
        values.update(loaded)
    hints = typing.get_type_hints(TrainConfig)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in hints:
            raise ConfigError(f"unknown config key {key!r}; valid: {', '.join(sorted(hints))}")
        values[key] = _coerce(value.strip(), hints[key], key)
    return TrainConfig.from_dict(values)

