"""Model configuration (a dataclass serialised beside every artifact) and DiT presets."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from gaf_trt.errors import ConfigError

#: DiT head-count convention by hidden size (Peebles & Xie 2023, Table 1).
DIT_HEADS_BY_HIDDEN = {384: 6, 768: 12, 1024: 16, 1152: 16}

#: DiT size presets: name -> (hidden, depth, heads). Patch size is chosen separately.
DIT_PRESETS = {
    "S": (384, 12, 6),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
    "XL": (1152, 28, 16),
}


@dataclass(frozen=True)
class GAFConfig:
    """Architecture and sampling metadata of one GAF network.

    ``label_rows`` is the row count of the label table (``num_classes`` or ``num_classes + 1``
    for checkpoints trained with a null class). ``heads_source`` says where ``num_heads`` came
    from: ``"argument"``, ``"checkpoint cfg"`` or ``"DiT convention"``.
    """

    in_channels: int
    input_size: int
    patch_size: int
    hidden_size: int
    depth: int
    num_heads: int
    mlp_ratio: float
    num_classes: int
    label_rows: int | None = None
    t_eps: float = 1e-3
    mode: str = "pixel"
    vae_scale: float | None = None
    class_names: tuple[str, ...] | None = None
    heads_source: str = "argument"

    def __post_init__(self) -> None:
        for name in ("in_channels", "input_size", "patch_size", "hidden_size", "depth",
                     "num_heads", "num_classes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.input_size % self.patch_size:
            raise ConfigError(
                f"input_size {self.input_size} is not divisible by patch_size {self.patch_size}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.label_rows is None:
            object.__setattr__(self, "label_rows", self.num_classes)
        if self.label_rows not in (self.num_classes, self.num_classes + 1):
            raise ConfigError(f"label_rows {self.label_rows} must be num_classes "
                              f"({self.num_classes}) or num_classes + 1")
        if self.mode not in ("pixel", "latent"):
            raise ConfigError(f"mode must be 'pixel' or 'latent', got {self.mode!r}")
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
            if len(self.class_names) != self.num_classes:
                raise ConfigError(f"{len(self.class_names)} class names for "
                                  f"{self.num_classes} classes")

    @property
    def grid(self) -> int:
        """Tokens per side, ``input_size // patch_size``."""
        return self.input_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid

    @property
    def patch_dim(self) -> int:
        """``P = p * p * C``, the width of one output token."""
        return self.patch_size * self.patch_size * self.in_channels

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """Shape of one sample, ``(C, S, S)``."""
        return (self.in_channels, self.input_size, self.input_size)

    def class_name(self, index: int) -> str:
        return self.class_names[index] if self.class_names else str(index)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["class_names"] is not None:
            d["class_names"] = list(d["class_names"])
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GAFConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown GAFConfig fields: {', '.join(sorted(unknown))}")
        d = dict(d)
        if d.get("class_names") is not None:
            d["class_names"] = tuple(d["class_names"])
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> GAFConfig:
        return cls.from_dict(json.loads(text))


def default_heads(hidden_size: int) -> int | None:
    """Head count by the DiT convention, or ``None`` for a non-standard hidden size."""
    return DIT_HEADS_BY_HIDDEN.get(hidden_size)


def preset_config(name: str, *, patch_size: int = 2, input_size: int = 32, in_channels: int = 4,
                  num_classes: int = 1000, **overrides: Any) -> GAFConfig:
    """Config for a DiT size preset such as ``"XL"`` (random-weight benchmarking)."""
    if name not in DIT_PRESETS:
        raise ConfigError(f"unknown DiT preset {name!r}; valid: {', '.join(DIT_PRESETS)}")
    hidden, depth, heads = DIT_PRESETS[name]
    kw: dict[str, Any] = dict(in_channels=in_channels, input_size=input_size,
                              patch_size=patch_size, hidden_size=hidden, depth=depth,
                              num_heads=heads, mlp_ratio=4.0, num_classes=num_classes,
                              heads_source="DiT convention")
    kw.update(overrides)
    return GAFConfig(**kw)


__all__ = ["GAFConfig", "DIT_PRESETS", "DIT_HEADS_BY_HIDDEN", "default_heads", "preset_config"]
