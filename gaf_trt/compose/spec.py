"""One composition spec (docs/design.md §1, §3): the one parser and validator of a composition
for every front end — ``gaf-trt sample`` options, served requests and the entries of a
``gaf-trt generate`` compositions file.

A composition is classes (ids or names), weights or an alpha, a mask (a preset, AFHQ regions
or a custom mask image) and its softening ``sigma``. :meth:`CompositionSpec.validate` checks
one, without the model, and names a bad value the way its :class:`Source` spells it
(``--mask-type`` on the command line, ``mask_type`` in a request, ``compositions[3].mask_type``
in a compositions file); :meth:`CompositionSpec.build` resolves it against a model into what
the solvers take: class ids, a :class:`~gaf_trt.compose.composition.Composition` and masks.
What one front end accepts, all accept; only the carrier of a mask image differs (a file path
on the command line and in a compositions file, where it is relative to the file; a uint8
array in a request, which never names a file on the server).
"""

from __future__ import annotations

import hashlib
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from gaf_trt.checks import number_in
from gaf_trt.compose import masks as mask_lib
from gaf_trt.compose.composition import Composition, check_coefficient, resolve_classes
from gaf_trt.errors import ConfigError, unknown_key
from gaf_trt.io.files import file_sha256
from gaf_trt.model.config import GAFConfig

#: The fields of a composition, in the order errors list them.
FIELDS = ("classes", "weights", "alpha", "mask_type", "mask_image", "regions", "sigma")
#: How ``gaf-trt sample`` spells each field.
CLI_FLAGS = {"classes": "--classes", "weights": "--weight", "alpha": "--alpha",
             "mask_type": "--mask-type", "mask_image": "--mask-img", "regions": "--regions",
             "sigma": "--sigma"}
SOURCE_KINDS = ("cli", "request", "file")


@dataclass(frozen=True)
class Source:
    """Where a composition comes from: decides how errors name its fields and whether a mask
    image may be a file path (not in a request: a client never names a server's file)."""

    kind: str  # one of SOURCE_KINDS
    path: str | None = None  # the compositions file (kind "file")
    index: int | None = None  # the entry in it

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"unknown source kind {self.kind!r}; valid: {SOURCE_KINDS}")

    @classmethod
    def entry(cls, path: str | os.PathLike[str], index: int) -> Source:
        """Entry ``index`` of the compositions file ``path``."""
        return cls("file", os.fspath(path), index)

    def name(self, key: str) -> str:
        """How this source spells field ``key``: ``--mask-type``, ``mask_type`` or
        ``compositions[3].mask_type``."""
        if self.kind == "cli":
            return CLI_FLAGS.get(key, key)
        if self.kind == "file":
            return f"compositions[{self.index}].{key}"
        return key

    def error(self, message: str) -> ConfigError:
        """``message`` as an error of this source (a compositions file names itself first)."""
        if self.kind == "file":
            return ConfigError(f"compositions file {self.path}, entry {self.index}: {message}")
        return ConfigError(message)

    @property
    def reads_files(self) -> bool:
        return self.kind != "request"

    def resolve(self, path: str | os.PathLike[str]) -> Path:
        """A mask image path as given: relative to the compositions file, else as it is."""
        p = Path(path)
        if self.kind == "file" and not p.is_absolute() and self.path is not None:
            return Path(self.path).parent / p
        return p


CLI = Source("cli")
REQUEST = Source("request")

MaskImage = str | np.ndarray  # a path (as given) or a uint8 gray array [H, W]


@dataclass(frozen=True)
class BuiltComposition:
    """What the solvers take: class ids, the composition (``None``: pure classes, each on
    its own) and the softened masks ``[N, 1, S, S]`` of a spatial one."""

    classes: list[int]
    composition: Composition | None
    masks: Tensor | None


@dataclass(frozen=True)
class CompositionSpec:
    """A validated composition, not yet resolved against a model (class names stay names).

    ``mask_type`` is the preset that runs: as given, or implied by a mask image (``custom``)
    or by regions (``afhq``). ``mask_image`` is a path as given (relative to a compositions
    file) or a uint8 array ``[H, W]``; ``mask_sha256`` identifies it (the file's bytes, or
    the array's shape and bytes), so two specs compare equal when their masks are the same.
    """

    classes: tuple[str, ...]
    weights: tuple[float, ...] | None = None
    alpha: float | None = None
    mask_type: str | None = None
    regions: tuple[str, ...] | None = None
    sigma: float = mask_lib.DEFAULT_SIGMA
    mask_sha256: str | None = None
    mask_image: MaskImage | None = field(default=None, compare=False)
    source: Source = field(default=CLI, compare=False)

    @classmethod
    def validate(cls, raw: Mapping[str, Any], source: Source = CLI) -> CompositionSpec:
        """Check a composition given as ``{field: value}`` (:data:`FIELDS`; ``None`` or an
        empty list is "not given"); raises :class:`ConfigError` naming the bad value, the
        allowed ones and, through ``source``, where it came from."""
        if not isinstance(raw, Mapping):
            raise source.error(f"a composition is an object with {', '.join(FIELDS)}; "
                               f"got {type(raw).__name__}")
        extra = sorted(set(raw) - set(FIELDS))
        if extra:
            raise source.error(f"unknown key(s) {extra}; valid: {', '.join(sorted(FIELDS))}")
        classes = _classes(raw.get("classes"), source)
        weights = _weights(raw.get("weights"), len(classes), source)
        alpha = _alpha(raw.get("alpha"), len(classes), source)
        sigma = raw.get("sigma")
        sigma = mask_lib.DEFAULT_SIGMA if sigma is None else _checked(
            number_in, source, source.name("sigma"), sigma, 0, mask_lib.MAX_SIGMA)
        mask_type, image, regions, digest = _mask(raw, source)
        if alpha is not None and (weights is not None or mask_type is not None):
            raise source.error(f"{source.name('alpha')} cannot be combined with "
                               f"{source.name('weights')} or a mask")
        return cls(classes, weights, alpha, mask_type, regions, sigma, digest, image, source)

    @property
    def composing(self) -> bool:
        """Weighted, blended or masked; else the classes run pure, each on its own."""
        return any(v is not None for v in (self.weights, self.alpha, self.mask_type))

    def require_one_generation(self) -> None:
        """Refuse several classes without weights, alpha or mask: one request or one entry of a
        compositions file is one generation (``gaf-trt sample`` runs them as pure rows)."""
        if len(self.classes) > 1 and not self.composing:
            name = self.source.name
            raise self.source.error(
                f"{len(self.classes)} classes need a composition: give {name('weights')}, "
                f"{name('alpha')} or a mask ({name('mask_type')}, {name('mask_image')} or "
                f"{name('regions')})")

    @property
    def mask_source(self) -> str | np.ndarray | None:
        """The mask image to read: the resolved path, or the array."""
        if self.mask_image is None or isinstance(self.mask_image, np.ndarray):
            return self.mask_image
        return str(self.source.resolve(self.mask_image))

    def build(self, config: GAFConfig) -> BuiltComposition:
        """Resolve against a model: class ids (names looked up), masks on its ``S x S`` grid
        (``[N, 1, S, S]``, softened by ``sigma``) and the composition (coefficients
        ``[N, 1, S|1, S|1]``); ``composition`` is ``None`` when nothing composes."""
        try:
            classes = resolve_classes(self.classes, config)
            masks = None
            if self.mask_type is not None:
                s = config.input_size
                masks = mask_lib.build(self.mask_type, s, s, sigma=self.sigma,
                                       image=self.mask_source, regions=self.regions)
            composition = None
            if self.composing:
                composition = Composition.build(classes, weights=self.weights, alpha=self.alpha,
                                                masks=masks)
                composition.validate_for(config)
        except ConfigError as err:
            raise self.source.error(str(err)) from None
        return BuiltComposition(classes, composition, masks)

    def to_dict(self) -> dict[str, Any]:
        """A JSON record: every field; a mask image as its path (or ``array HxW``) and sha256;
        ``regions`` and the mask image only when given."""
        out: dict[str, Any] = {"classes": list(self.classes),
                               "weights": None if self.weights is None else list(self.weights),
                               "alpha": self.alpha, "mask_type": self.mask_type,
                               "sigma": self.sigma}
        if self.regions is not None:
            out["regions"] = list(self.regions)
        if self.mask_image is not None:
            image = self.mask_image
            out["mask_image"] = (f"array {image.shape[1]}x{image.shape[0]}"
                                 if isinstance(image, np.ndarray) else str(image))
            out["mask_sha256"] = self.mask_sha256
        return out


# --------------------------------------------------------------------------- fields


def _checked(check: Any, source: Source, *args: Any) -> Any:
    """``check(*args)`` with its error worded for ``source``."""
    try:
        return check(*args)
    except ConfigError as err:
        raise source.error(str(err)) from None


def _is_number(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _classes(value: object, source: Source) -> tuple[str, ...]:
    name = source.name("classes")
    if value is None or (isinstance(value, (list, tuple)) and not value):
        given = "is missing" if value is None else "is empty"
        raise source.error(f"give at least one class ({name} {given})")
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(c, str) or (isinstance(c, numbers.Integral) and not isinstance(c, bool))
            for c in value):
        raise source.error(f"{name} must be a list of class ids or names, got {value!r}")
    return tuple(str(c).strip() for c in value)


def _weights(value: object, n: int, source: Source) -> tuple[float, ...] | None:
    name = source.name("weights")
    if value is None or (isinstance(value, (list, tuple)) and not value):
        return None
    if not isinstance(value, (list, tuple)) or not all(_is_number(v) for v in value):
        raise source.error(f"{name} must be a list of numbers, got {value!r}")
    w = tuple(_checked(check_coefficient, source, v, f"{name}[{i}]") for i, v in enumerate(value))
    if len(w) != n:
        raise source.error(f"{name}: {len(w)} weight(s) {list(w)} for {n} class(es): give one "
                           "weight per class")
    return w


def _alpha(value: object, n: int, source: Source) -> float | None:
    name = source.name("alpha")
    if value is None:
        return None
    if not _is_number(value):
        raise source.error(f"{name} must be a number, got {value!r}")
    a = _checked(check_coefficient, source, value, name)
    if n != 2:
        raise source.error(f"{name} blends exactly 2 classes, got {n}")
    return a


def _regions(value: object, source: Source) -> tuple[str, ...] | None:
    if value is None or (isinstance(value, (list, tuple)) and not value):
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(r, str) for r in value):
        raise source.error(f"{source.name('regions')} must be a list of region names "
                           f"({', '.join(mask_lib.AFHQ_REGIONS)}), got {value!r}")
    return tuple(value)


def _image(value: object, source: Source) -> tuple[MaskImage | None, str | None]:
    """A mask image and its sha256: a uint8 array ``[H, W]``, or (where the source reads
    files) an existing file."""
    name = source.name("mask_image")
    if value is None:
        return None, None
    if isinstance(value, (str, os.PathLike)) and source.reads_files:
        path = source.resolve(value)
        if not path.is_file():
            raise source.error(f"mask image not found: {path} ({name})")
        return os.fspath(value), file_sha256(path)
    if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.ndim != 2 \
            or 0 in value.shape:
        raise source.error(f"{name} must be uint8 [H, W], got "
                           f"{getattr(value, 'dtype', type(value).__name__)} "
                           f"{list(getattr(value, 'shape', []))}")
    digest = hashlib.sha256(repr(value.shape).encode() + np.ascontiguousarray(value).tobytes())
    return value, digest.hexdigest()


def _mask(raw: Mapping[str, Any], source: Source
          ) -> tuple[str | None, MaskImage | None, tuple[str, ...] | None, str | None]:
    """The mask preset (given, or implied by an image or regions), image, regions, sha256."""
    image, digest = _image(raw.get("mask_image"), source)
    regions = _regions(raw.get("regions"), source)
    mask_type = raw.get("mask_type")
    if mask_type is None:
        if image is not None:
            mask_type = mask_lib.presets_taking("image")[0]
        elif regions is not None:
            mask_type = mask_lib.presets_taking("regions")[0]
        else:
            return None, None, None, None
    try:
        mask_type = mask_lib.MASKS.canonical(mask_type)
    except (ConfigError, TypeError):
        err = unknown_key("mask type", mask_type, mask_lib.MASKS.names())
        raise source.error(f"{source.name('mask_type')}: {err}") from None
    preset = mask_lib.MASKS.get(mask_type)
    with_image = ", ".join(map(repr, mask_lib.presets_taking("image")))
    if image is not None and not preset.takes("image"):
        raise source.error(f"a mask image goes with mask type {with_image} (or none), not "
                           f"{mask_type!r} ({source.name('mask_image')})")
    if regions is not None and not preset.takes("regions"):
        raise source.error(f"{source.name('regions')} is only used with mask type "
                           f"{', '.join(map(repr, mask_lib.presets_taking('regions')))}, "
                           f"not {mask_type!r}")
    if preset.takes("image") and image is None:
        raise source.error(f"{source.name('mask_type')} {mask_type!r} needs an image file's "
                           "gray levels (one region per gray level): give "
                           f"{source.name('mask_image')}")
    if preset.takes("regions") and regions is None:
        raise source.error(f"{source.name('mask_type')} {mask_type!r} needs "
                           f"{source.name('regions')} (from {', '.join(mask_lib.AFHQ_REGIONS)})")
    return mask_type, image, regions, digest


__all__ = ["CLI", "REQUEST", "BuiltComposition", "CompositionSpec", "Source", "FIELDS"]
