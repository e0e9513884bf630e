"""Training configuration: one dataclass, presets matching the published runs, YAML files
and ``key=value`` overrides. Serialised into every checkpoint's ``cfg``.

Every value is checked when the config is built (:meth:`TrainConfig.__post_init__`), so a
bad value fails before any data is read or anything is written; errors name the field, the
bad value and the allowed range.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gaf_trt.errors import ConfigError
from gaf_trt.model.config import GAFConfig

#: Largest accepted ``seed`` + 1 (seeds are mixed with step counters into 64-bit generators).
SEED_LIMIT = 2**32


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
        hints = typing.get_type_hints(TrainConfig)
        for f in dataclasses.fields(self):
            setattr(self, f.name, check_type(f.name, getattr(self, f.name), hints[f.name]))
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        self.outdir = str(self.outdir)
        check_values(self)
        self.warmup = min(self.warmup, self.iters - 1)
        self.model_config()  # the architecture as the network sees it

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
        if not isinstance(d, dict):
            raise ConfigError(f"a training config must be a mapping, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown config key(s) {', '.join(map(str, unknown))}; valid: "
                              f"{', '.join(sorted(names))}")
        return cls(**d)


DATA_KINDS = ("digits", "folder", "cifar10", "latents")
MODES = ("pixel", "latent")

#: Fields that define the network or the objective: a resumed run must keep them.
FROZEN_ON_RESUME = ("data", "mode", "image_size", "latent_ch", "num_classes", "class_names",
                    "vae_scale", "dit_hidden", "dit_depth", "dit_heads", "patch_size",
                    "mlp_ratio", "t_eps", "pair_loss", "res_reg", "lam_time")
#: Schedule fields: a resumed run changes them only with ``--override KEY=VALUE``.
SCHEDULE_FIELDS = ("iters", "batch_size", "grad_accum", "lr", "min_lr", "warmup", "betas",
                   "weight_decay", "grad_clip", "ema_decay", "ema_warmup_decay", "bf16", "seed")
#: Bookkeeping: free to differ on resume (where data lives, logging, output, device).
FREE_ON_RESUME = ("data_path", "log_every", "ckpt_every", "preview_every", "preview_steps",
                  "outdir", "device")


# --------------------------------------------------------------------------- validation


def _type_name(typ: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number",
            str: "a string"}.get(typ, getattr(typ, "__name__", str(typ)))


def check_type(name: str, value: Any, typ: Any) -> Any:
    """``value`` as the field's type ``typ``; strings (YAML, ``--set``) are parsed."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return check_type(name, value, next(a for a in args if a is not type(None)))
    if isinstance(value, str) and typ is not str:
        return parse_value(value, typ, name)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        inner = args[0] if args else str
        return [check_type(f"{name}[{i}]", v, inner) for i, v in enumerate(value)]
    if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if typ is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    ok = (isinstance(value, bool) if typ is bool else
          isinstance(value, int) and not isinstance(value, bool) if typ is int else
          isinstance(value, typ) if isinstance(typ, type) else True)
    if not ok:
        raise ConfigError(f"{name} must be {_type_name(typ)}, got {value!r}")
    return value


def _need(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r} is not allowed; {name} must be {allowed}")


def check_values(cfg: TrainConfig) -> None:
    """Ranges of every field (the types are already checked)."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        values = v if isinstance(v, (list, tuple)) else [v]
        for item in values:
            if isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(f"{f.name}={v!r} is not allowed; {f.name} must be a finite "
                                  "number")
    _check_data_and_network(cfg)
    _check_objective(cfg)
    _check_schedule(cfg)
    _check_bookkeeping(cfg)


def _check_data_and_network(cfg: TrainConfig) -> None:
    _need(cfg.data in DATA_KINDS, "data", cfg.data, f"one of {', '.join(DATA_KINDS)}")
    _need(cfg.mode in MODES, "mode", cfg.mode, f"one of {', '.join(MODES)}")
    for name in ("image_size", "latent_ch", "num_classes", "dit_hidden", "dit_depth",
                 "dit_heads", "patch_size"):
        _need(getattr(cfg, name) >= 1, name, getattr(cfg, name), ">= 1")
    if cfg.mode == "latent":
        _need(cfg.image_size % 8 == 0, "image_size", cfg.image_size,
              "a multiple of 8 in latent mode (the VAE downsamples by 8)")
    _need(cfg.input_size % cfg.patch_size == 0, "patch_size", cfg.patch_size,
          f"a divisor of the network input size {cfg.input_size}")
    _need(cfg.dit_hidden % cfg.dit_heads == 0, "dit_heads", cfg.dit_heads,
          f"a divisor of dit_hidden={cfg.dit_hidden}")
    _need(cfg.mlp_ratio > 0, "mlp_ratio", cfg.mlp_ratio, "> 0")
    if cfg.vae_scale is not None:
        _need(cfg.vae_scale > 0, "vae_scale", cfg.vae_scale, "> 0 (or none)")
    if cfg.class_names:
        _need(len(cfg.class_names) == cfg.num_classes, "class_names", cfg.class_names,
              f"a list of num_classes={cfg.num_classes} names (or none)")


def _check_objective(cfg: TrainConfig) -> None:
    from gaf_trt.compose.solvers import check_t_eps

    try:  # the rule sampling applies, so every trained checkpoint can be sampled
        check_t_eps(cfg.t_eps)
    except ConfigError:
        _need(False, "t_eps", cfg.t_eps, "in [0, 0.5) (the range sampling accepts)")
    for name in ("res_reg", "lam_time"):
        _need(getattr(cfg, name) >= 0, name, getattr(cfg, name), ">= 0")


def _check_schedule(cfg: TrainConfig) -> None:
    for name in ("iters", "batch_size", "grad_accum"):
        _need(getattr(cfg, name) >= 1, name, getattr(cfg, name), ">= 1")
    _need(cfg.lr > 0, "lr", cfg.lr, "a finite number > 0")
    _need(cfg.min_lr >= 0, "min_lr", cfg.min_lr, ">= 0")
    _need(cfg.warmup >= 0, "warmup", cfg.warmup, ">= 0")
    _need(len(cfg.betas) == 2 and all(0 <= b < 1 for b in cfg.betas), "betas",
          list(cfg.betas), "a pair of numbers in [0, 1), e.g. betas=0.9,0.99")
    _need(cfg.weight_decay >= 0, "weight_decay", cfg.weight_decay, ">= 0")
    _need(cfg.grad_clip >= 0, "grad_clip", cfg.grad_clip, ">= 0 (0 turns clipping off)")
    for name in ("ema_decay", "ema_warmup_decay"):
        _need(0 <= getattr(cfg, name) < 1, name, getattr(cfg, name), "in [0, 1)")
    _need(0 <= cfg.seed < SEED_LIMIT, "seed", cfg.seed, f"in [0, {SEED_LIMIT})")


def _check_bookkeeping(cfg: TrainConfig) -> None:
    from gaf_trt.device import resolve_device

    for name in ("log_every", "ckpt_every", "preview_every"):
        _need(getattr(cfg, name) >= 0, name, getattr(cfg, name), ">= 0 (0 turns it off)")
    _need(cfg.preview_steps >= 1, "preview_steps", cfg.preview_steps, ">= 1")
    _need(cfg.outdir.strip() != "", "outdir", cfg.outdir, "a folder path (--out)")
    resolve_device(cfg.device)  # the one device rule: unknown or unavailable -> ConfigError


# --------------------------------------------------------------------------- presets

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


# --------------------------------------------------------------------------- building


def parse_value(value: str, typ: Any, key: str) -> Any:
    """Parse a ``key=value`` string into the field's type ``typ``."""
    origin = typing.get_origin(typ)
    args = [a for a in typing.get_args(typ) if a is not type(None)]
    if value.strip().lower() in ("none", "null") and type(None) in typing.get_args(typ):
        return None
    if origin in (typing.Union, types.UnionType) and args:
        return parse_value(value, args[0], key)
    value = value.strip()
    try:
        if typ is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if typ is int:
            number = float(value)
            if not number.is_integer():
                raise ValueError(value)
            return int(number) if "e" in value.lower() or "." in value else int(value)
        if typ is float:
            return float(value)
        if origin in (list, tuple):
            items = [v for v in value.replace(",", " ").split() if v]
            inner = typing.get_args(typ)[0] if typing.get_args(typ) else str
            return [parse_value(v, inner, key) for v in items]
    except (ValueError, OverflowError):
        raise ConfigError(f"bad value {value!r} for {key} (expected {_type_name(typ)})") from None
    return value


def parse_assignment(item: str, flag: str = "--set") -> tuple[str, str]:
    """``"key=value"`` -> ``(field name, raw value)``; the key must be a TrainConfig field."""
    if "=" not in item:
        raise ConfigError(f"{flag} {item!r} must look like key=value")
    key, value = item.split("=", 1)
    key = key.strip().replace("-", "_")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    if key not in names:
        raise ConfigError(f"unknown config key {key!r} in {flag}; valid: "
                          f"{', '.join(sorted(names))}")
    return key, value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping of a YAML config file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {p} is not valid YAML: "
                          f"{str(err).splitlines()[0]}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {p} must hold a mapping")
    return loaded


def build_config(preset: str | None = None, config_file: str | Path | None = None,
                 overrides: list[str] | None = None) -> TrainConfig:
    """Preset, then YAML file, then ``key=value`` overrides, in that order."""
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
    if config_file is not None:
        values.update(read_config_file(config_file))
    hints = typing.get_type_hints(TrainConfig)
    for item in overrides or []:
        key, value = parse_assignment(item)
        values[key] = parse_value(value, hints[key], key)
    return TrainConfig.from_dict(values)
