"""The engine directory's ``manifest.json`` schema: its constants, errors and the typed
checks of every field.

Layout (``format`` ``gaf-trt-engine``, version 1)::

    {"format", "format_version", "created", "precision", "opset", "exporter": {...versions},
     "config": GAFConfig dict, "class_names", "source": {"path", "sha256", "weights"},
     "profiles": {"B": [min, opt, max], "N": [...], "M": [...], "static": {...} | null},
     "graphs": {name: {"group", "file", "data_file", "inputs", "outputs", "nodes",
                       "precision", "parity"}},
     "plans": {name: {"graph", "file", "shapes", "static", "tensorrt", "gpu": {"name",
                      "compute_capability"}, "hardware_compatibility_level",
                      "version_compatible", "weights_stripped", "tf32", "strongly_typed"}},
     "weights": "model.safetensors" | null,  (also the graphs' shared weights: their
                initializers are ONNX external data at offsets into it; listed and hashed)
     "files": [every file but the manifest], "sha256": {file: hex}}

``files`` is also what :class:`gaf_trt.io.files.OutputDir` removes when the folder is
rewritten. Loading verifies the sha256 of every file it reads and checks a plan's TensorRT
version and GPU *before* deserialising it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from gaf_trt.errors import GAFError
from gaf_trt.records import EXPORT

MANIFEST = EXPORT.record
FORMAT = "gaf-trt-engine"
FORMAT_VERSION = 1
REBUILD_HINT = "rebuild the plans on this machine with `gaf-trt export --from-onnx {dir}`"
#: At most this much of ``manifest.json`` is read (a real one is a few kB).
MAX_MANIFEST_BYTES = 16 << 20


class EngineDirError(GAFError):
    """An engine directory is missing, incomplete, altered or not an engine directory."""


class EngineCompatibilityError(GAFError):
    """A TensorRT plan was built for another GPU or TensorRT version."""


# --------------------------------------------------------------------------- the schema
#
# A small typed schema: each node checks one JSON value and raises Invalid naming where the
# value sits ("graphs.trunk.file") and what is wrong with it. Objects ignore keys they do not
# know (a newer exporter may add optional fields; no code reads them, and every file a graph
# reads is checked separately), so adding an optional field is one line in its Obj.


class Invalid(Exception):
    """A manifest value the schema refuses (the message names where it sits)."""


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null", int: "an integer", float: "a number"}.get(type(value),
                                                                          type(value).__name__)


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Spec:
    def check(self, value: Any, where: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class Str(Spec):
    """A string; ``choices`` (or a callable giving them) restricts it, ``pattern`` too."""

    choices: tuple[str, ...] | Callable[[], Iterable[str]] | None = None
    pattern: str | None = None
    max_len: int = 4096

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, str):
            raise Invalid(f"{where} must be a string, got {_kind(value)}")
        if not value or len(value) > self.max_len:
            raise Invalid(f"{where} must be a non-empty string of at most {self.max_len} "
                           "characters")
        if self.choices is not None:
            allowed = tuple(self.choices() if callable(self.choices) else self.choices)
            if value not in allowed:
                raise Invalid(f"{where} is {short(value)}; allowed: {', '.join(allowed)}")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise Invalid(f"{where} is {short(value)}, not of the form {self.pattern}")


@dataclass(frozen=True)
class Int(Spec):
    """An integer (not a boolean) in ``lo..hi``."""

    lo: int
    hi: int

    def check(self, value: Any, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"{where} must be an integer, got {_kind(value)} {short(value)}")
        if not self.lo <= value <= self.hi:
            raise Invalid(f"{where} is {short(value)}; allowed: {self.lo}..{self.hi}")


@dataclass(frozen=True)
class Num(Spec):
    """A number (integer or float, not a boolean, never NaN) in ``lo..hi``."""

    lo: float
    hi: float

    def check(self, value: Any, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(f"{where} must be a number, got {_kind(value)} {short(value)}")
        if math.isnan(value) or not self.lo <= value <= self.hi:
            raise Invalid(f"{where} is {short(value)}; allowed: {self.lo:g}..{self.hi:g}")


@dataclass(frozen=True)
class Bool(Spec):
    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, bool):
            raise Invalid(f"{where} must be true or false, got {_kind(value)}")


@dataclass(frozen=True)
class Anything(Spec):
    """Any JSON value (informational fields no code interprets)."""

    def check(self, value: Any, where: str) -> None:
        return None


@dataclass(frozen=True)
class Null(Spec):
    """``inner`` or null."""

    inner: Spec

    def check(self, value: Any, where: str) -> None:
        if value is not None:
            self.inner.check(value, where)


@dataclass(frozen=True)
class Either(Spec):
    """One of several specs (the first that accepts the value)."""

    options: tuple[Spec, ...]
    what: str

    def check(self, value: Any, where: str) -> None:
        for spec in self.options:
            try:
                spec.check(value, where)
                return
            except Invalid:
                continue
        raise Invalid(f"{where} must be {self.what}, got {_kind(value)} {short(value)}")


@dataclass(frozen=True)
class ListOf(Spec):
    item: Spec
    min_len: int = 0
    max_len: int = 10_000

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise Invalid(f"{where} must be a list, got {_kind(value)}")
        if not self.min_len <= len(value) <= self.max_len:
            raise Invalid(f"{where} has {len(value)} entries; allowed: "
                           f"{self.min_len}..{self.max_len}")
        for i, v in enumerate(value):
            self.item.check(v, f"{where}[{i}]")


@dataclass(frozen=True)
class MapOf(Spec):
    value: Spec
    key: Spec = field(default_factory=lambda: Str(max_len=256))
    max_len: int = 10_000

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise Invalid(f"{where} must be an object, got {_kind(value)}")
        if len(value) > self.max_len:
            raise Invalid(f"{where} has {len(value)} entries; at most {self.max_len}")
        for k, v in value.items():
            self.key.check(k, f"{where} key")
            self.value.check(v, f"{where}.{k}")


@dataclass(frozen=True)
class Obj(Spec):
    """An object with known fields: ``{name: (spec, required)}``; other keys are ignored."""

    fields: dict[str, tuple[Spec, bool]]

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise Invalid(f"{where} must be an object, got {_kind(value)}")
        for name, (spec, required) in self.fields.items():
            if name not in value:
                if required:
                    raise Invalid(f"{where}.{name} is missing")
                continue
            spec.check(value[name], f"{where}.{name}")


@dataclass(frozen=True)
class RelPath(Spec):
    """A file of the engine directory: a normalised relative POSIX path, no ``..``."""

    suffix: tuple[str, ...] | None = None

    def check(self, value: Any, where: str) -> None:
        Str(max_len=1024).check(value, where)
        p = PurePosixPath(value)
        if (p.is_absolute() or "\\" in value or "\0" in value or value.startswith("~")
                or any(part in ("..", ".") for part in value.split("/"))
                or str(p) != value):
            raise Invalid(f"{where} is {short(value)}: a file of the engine directory must be "
                           "named by a plain relative path inside it (no absolute path, no ..)")
        if self.suffix and not value.endswith(self.suffix):
            raise Invalid(f"{where} is {short(value)}; expected a {'/'.join(self.suffix)} file")


def _precisions() -> list[str]:
    from gaf_trt.precision import Precision

    return [p.value for p in Precision]


def _dtypes() -> list[str]:
    return ["float32", "float16", "bfloat16", "int64", "int32", "int8", "uint8", "bool",
            "float8e4m3fn"]


#: Bounds of a plausible network (far above any real GAF, far below a memory bomb).
CONFIG_SCHEMA = Obj({
    "in_channels": (Int(1, 64), True), "input_size": (Int(1, 4096), True),
    "patch_size": (Int(1, 64), True), "hidden_size": (Int(1, 16384), True),
    "depth": (Int(1, 512), True), "num_heads": (Int(1, 1024), True),
    "mlp_ratio": (Num(0.0625, 64.0), True), "num_classes": (Int(1, 100_000), True),
    "label_rows": (Null(Int(1, 100_001)), False), "t_eps": (Num(0.0, 0.5), False),
    "mode": (Str(("pixel", "latent")), False), "vae_scale": (Null(Num(1e-6, 1e6)), False),
    "class_names": (Null(ListOf(Str(max_len=256), max_len=100_000)), False),
    "heads_source": (Str(max_len=64), False),
})
IO_SCHEMA = Obj({
    "name": (Str(pattern=r"[A-Za-z_][A-Za-z0-9_]*", max_len=64), True),
    "shape": (ListOf(Either((Int(0, 1 << 20), Str(pattern=r"[A-Za-z]\w*", max_len=16)),
                            "a size or an axis name"), max_len=8), True),
    "dtype": (Str(_dtypes), True),
})
PARITY_SCHEMA = Obj({
    "ok": (Bool(), False), "ran": (Bool(), False), "bound": (Num(0, math.inf), False),
    "outputs": (ListOf(Obj({"name": (Str(), True), "rel": (Num(0, math.inf), True),
                            "max_abs": (Num(0, math.inf), False)})), False),
})
GRAPH_SCHEMA = Obj({
    "group": (Str(max_len=64), True),
    "file": (RelPath((".onnx",)), True),
    "data_file": (Null(RelPath()), False),
    "inputs": (ListOf(IO_SCHEMA, min_len=1, max_len=16), True),
    "outputs": (ListOf(IO_SCHEMA, min_len=1, max_len=16), True),
    "nodes": (Null(Int(0, 10_000_000)), False),
    "precision": (Str(_precisions), False),
    "parity": (Null(PARITY_SCHEMA), False),
    "reduced": (Anything(), False),
})
PLAN_SCHEMA = Obj({
    "graph": (Str(max_len=256), True),
    "file": (RelPath((".plan",)), True),
    "static": (Bool(), False),
    "tensorrt": (Str(pattern=r"\d+(\.\d+){1,3}", max_len=32), True),
    "gpu": (Obj({"name": (Str(max_len=256), True),
                 "compute_capability": (Str(pattern=r"\d{1,2}\.\d{1,2}", max_len=8), True)}),
            True),
    "hardware_compatibility_level": (Str(("NONE", "AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY")),
                                     True),
    "version_compatible": (Bool(), True),
    "tf32": (Bool(), False),
    "strongly_typed": (Bool(), False),
    "shapes": (Null(MapOf(ListOf(ListOf(Int(0, 1 << 20), max_len=8), min_len=3, max_len=3))),
               False),
})
#: Largest batch and class count the exported graphs accept (their dynamic-axis bounds).
MAX_PROFILE_BATCH = 4096
MAX_PROFILE_CLASSES = 256
_TRIPLE = ListOf(Int(1, MAX_PROFILE_BATCH * MAX_PROFILE_CLASSES), min_len=3, max_len=3)
_RANGES = Obj({"B": (_TRIPLE, True), "N": (_TRIPLE, True), "M": (_TRIPLE, True)})
PROFILES_SCHEMA = Obj({"B": (_TRIPLE, True), "N": (_TRIPLE, True), "M": (_TRIPLE, True),
                       "static": (Null(_RANGES), False)})
MANIFEST_SCHEMA = Obj({
    "format": (Str((FORMAT,)), True),
    "format_version": (Int(FORMAT_VERSION, FORMAT_VERSION), True),
    "created": (Null(Str(max_len=64)), False),
    "precision": (Str(_precisions), True),
    "opset": (Int(7, 64), False),
    "exporter": (Null(MapOf(Anything(), max_len=64)), False),  # versions, informational
    "config": (CONFIG_SCHEMA, True),
    "class_names": (Null(ListOf(Str(max_len=256), max_len=100_000)), False),
    "source": (Null(Obj({"path": (Null(Str()), False),
                         "sha256": (Null(Str(pattern=r"[0-9a-f]{64}")), False),
                         "weights": (Null(Str(max_len=64)), False)})), False),
    "profiles": (Null(PROFILES_SCHEMA), False),
    "graphs": (MapOf(GRAPH_SCHEMA, key=Str(pattern=r"[A-Za-z_][A-Za-z0-9_.]*", max_len=64),
                     max_len=64), True),
    "plans": (Null(MapOf(PLAN_SCHEMA, key=Str(pattern=r"[A-Za-z_][A-Za-z0-9_.]*", max_len=96),
                         max_len=256)), False),
    "weights": (Null(RelPath((".safetensors",))), False),
    "vae": (Null(Obj({"source": (Null(Str()), False)})), False),
    "files": (ListOf(RelPath(), max_len=10_000), True),
    "sha256": (MapOf(Str(pattern=r"[0-9a-f]{64}"), key=RelPath(), max_len=10_000), True),
})

