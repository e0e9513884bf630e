"""The engine directory's ``manifest.json``: what was exported, from what, for which GPU.

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

import json
import logging
import math
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from gaf_trt.errors import GAFError
from gaf_trt.io.files import file_sha256
from gaf_trt.records import EXPORT

log = logging.getLogger(__name__)

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
# A small typed schema: each node checks one JSON value and raises _Invalid naming where the
# value sits ("graphs.trunk.file") and what is wrong with it. Objects ignore keys they do not
# know (a newer exporter may add optional fields; no code reads them, and every file a graph
# reads is checked separately), so adding an optional field is one line in its Obj.


class _Invalid(Exception):
    pass


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null", int: "an integer", float: "a number"}.get(type(value),
                                                                          type(value).__name__)


def _short(value: Any) -> str:
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
            raise _Invalid(f"{where} must be a string, got {_kind(value)}")
        if not value or len(value) > self.max_len:
            raise _Invalid(f"{where} must be a non-empty string of at most {self.max_len} "
                           "characters")
        if self.choices is not None:
            allowed = tuple(self.choices() if callable(self.choices) else self.choices)
            if value not in allowed:
                raise _Invalid(f"{where} is {_short(value)}; allowed: {', '.join(allowed)}")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise _Invalid(f"{where} is {_short(value)}, not of the form {self.pattern}")


@dataclass(frozen=True)
class Int(Spec):
    """An integer (not a boolean) in ``lo..hi``."""

    lo: int
    hi: int

    def check(self, value: Any, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"{where} must be an integer, got {_kind(value)} {_short(value)}")
        if not self.lo <= value <= self.hi:
            raise _Invalid(f"{where} is {_short(value)}; allowed: {self.lo}..{self.hi}")


@dataclass(frozen=True)
class Num(Spec):
    """A number (integer or float, not a boolean, never NaN) in ``lo..hi``."""

    lo: float
    hi: float

    def check(self, value: Any, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(f"{where} must be a number, got {_kind(value)} {_short(value)}")
        if math.isnan(value) or not self.lo <= value <= self.hi:
            raise _Invalid(f"{where} is {_short(value)}; allowed: {self.lo:g}..{self.hi:g}")


@dataclass(frozen=True)
class Bool(Spec):
    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, bool):
            raise _Invalid(f"{where} must be true or false, got {_kind(value)}")


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
            except _Invalid:
                continue
        raise _Invalid(f"{where} must be {self.what}, got {_kind(value)} {_short(value)}")


@dataclass(frozen=True)
class ListOf(Spec):
    item: Spec
    min_len: int = 0
    max_len: int = 10_000

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise _Invalid(f"{where} must be a list, got {_kind(value)}")
        if not self.min_len <= len(value) <= self.max_len:
            raise _Invalid(f"{where} has {len(value)} entries; allowed: "
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
            raise _Invalid(f"{where} must be an object, got {_kind(value)}")
        if len(value) > self.max_len:
            raise _Invalid(f"{where} has {len(value)} entries; at most {self.max_len}")
        for k, v in value.items():
            self.key.check(k, f"{where} key")
            self.value.check(v, f"{where}.{k}")


@dataclass(frozen=True)
class Obj(Spec):
    """An object with known fields: ``{name: (spec, required)}``; other keys are ignored."""

    fields: dict[str, tuple[Spec, bool]]

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise _Invalid(f"{where} must be an object, got {_kind(value)}")
        for name, (spec, required) in self.fields.items():
            if name not in value:
                if required:
                    raise _Invalid(f"{where}.{name} is missing")
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
            raise _Invalid(f"{where} is {_short(value)}: a file of the engine directory must be "
                           "named by a plain relative path inside it (no absolute path, no ..)")
        if self.suffix and not value.endswith(self.suffix):
            raise _Invalid(f"{where} is {_short(value)}; expected a {'/'.join(self.suffix)} file")


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


def _check_triples(profiles: dict[str, Any] | None, where: str) -> None:
    """min <= opt <= max in every range; B and N within the graphs' own bounds."""
    for label, ranges in ((where, profiles),
                          (f"{where}.static", (profiles or {}).get("static"))):
        if not ranges:
            continue
        for axis, hi in (("B", MAX_PROFILE_BATCH), ("N", MAX_PROFILE_CLASSES),
                         ("M", MAX_PROFILE_BATCH * MAX_PROFILE_CLASSES)):
            lo, opt, top = ranges[axis]
            if not lo <= opt <= top <= hi:
                raise _Invalid(f"{label}.{axis} is {ranges[axis]}; must be [min, opt, max] "
                               f"with 1 <= min <= opt <= max <= {hi}")


def named_files(man: dict[str, Any]) -> dict[str, str]:
    """``{file: where the manifest names it}`` for every file a field of the manifest names
    (graphs, their data files, plans, weights); each must be listed in ``files``."""
    named: dict[str, str] = {}
    for g, rec in man["graphs"].items():
        named.setdefault(rec["file"], f"graphs.{g}.file")
        if rec.get("data_file"):
            named.setdefault(rec["data_file"], f"graphs.{g}.data_file")
    for p, rec in (man.get("plans") or {}).items():
        named.setdefault(rec["file"], f"plans.{p}.file")
    if man.get("weights"):
        named.setdefault(man["weights"], "weights")
    return named


def _cross_check(man: dict[str, Any]) -> None:
    """What one field says about another: files listed once and hashed, named files listed,
    plans of known graphs, the graphs' I/O matching the config."""
    files = man["files"]
    if len(set(files)) != len(files) or MANIFEST in files:
        raise _Invalid("files lists a file twice, or lists manifest.json itself")
    unhashed = [f for f in files if f not in man["sha256"]]
    if unhashed:
        raise _Invalid(f"files lists {unhashed[0]} but sha256 has no hash for it")
    stray = [f for f in man["sha256"] if f not in files]
    if stray:
        raise _Invalid(f"sha256 hashes {stray[0]}, which files does not list")
    for name, where in named_files(man).items():
        if name not in files:
            raise _Invalid(f"{where} names {name}, which files does not list (nothing "
                           "unlisted and unhashed is ever read)")
    for p, rec in (man.get("plans") or {}).items():
        if rec["graph"] not in man["graphs"]:
            raise _Invalid(f"plans.{p}.graph is {_short(rec['graph'])}, not a graph of this "
                           f"directory ({', '.join(man['graphs'])})")
    if not man["graphs"]:
        raise _Invalid("graphs is empty")
    _check_triples(man.get("profiles"), "profiles")
    cfg = man["config"]
    want = [cfg["in_channels"], cfg["input_size"], cfg["input_size"]]
    for g, rec in man["graphs"].items():
        for spec in rec["inputs"]:
            if spec["name"] == "x" and list(spec["shape"][1:]) != want:
                raise _Invalid(f"graphs.{g}.inputs x has shape {spec['shape']}, but the config "
                               f"says [batch, {', '.join(map(str, want))}]")
    names = man.get("class_names")
    if names is not None and len(names) != cfg["num_classes"]:
        raise _Invalid(f"class_names has {len(names)} names for {cfg['num_classes']} classes")


def validate_manifest(man: Any, path: str | Path) -> dict[str, Any]:
    """Check a parsed manifest against :data:`MANIFEST_SCHEMA` and its cross-field rules;
    returns it, or raises an :class:`EngineDirError` naming the field and the problem."""
    from gaf_trt.model.config import GAFConfig

    try:
        MANIFEST_SCHEMA.check(man, "manifest")
        _cross_check(man)
        GAFConfig.from_dict(man["config"])
    except _Invalid as err:
        raise EngineDirError(f"{path} is not a valid engine manifest: {err}") from None
    except GAFError as err:
        raise EngineDirError(f"{path} is not a valid engine manifest: config: {err}") from None
    return man


# --------------------------------------------------------------------------- reading


def _inside(folder: Path, name: str) -> Path:
    """``folder / name`` as a real path, refused when a link leads it outside ``folder``."""
    root = folder.resolve()
    try:
        real = (root / name).resolve()
    except (RuntimeError, OSError):
        raise EngineDirError(f"{folder}/{name} cannot be resolved (a symbolic link loop)") \
            from None
    if root not in real.parents:
        raise EngineDirError(f"{folder}/{name} leads outside the engine directory (to "
                             f"{real}); every file it uses must lie inside it")
    return real


def _read_capped(path: Path, cap: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise EngineDirError(f"{path} is not a regular file")
        size = os.fstat(fd).st_size
        if size > cap:
            raise EngineDirError(f"{path} is {size:,} bytes; at most {cap:,} bytes of a "
                                 "manifest are read: this is not a gaf-trt engine manifest")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(cap + 1)
        if len(data) > cap:
            raise EngineDirError(f"{path} is over {cap:,} bytes; at most {cap:,} bytes of a "
                                 "manifest are read: this is not a gaf-trt engine manifest")
        return data
    finally:
        os.close(fd)


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """Read and validate ``folder/manifest.json``: at most :data:`MAX_MANIFEST_BYTES`, the
    typed schema, every named path inside the directory (no hashing; see
    :func:`verify_files`). Raises :class:`EngineDirError` with one line."""
    folder = Path(folder)
    if not folder.exists():
        raise EngineDirError(f"engine directory not found: {folder}")
    if not folder.is_dir():
        raise EngineDirError(f"{folder} is a file, not an engine directory")
    path = folder / MANIFEST
    if not path.exists() and not path.is_symlink():
        raise EngineDirError(f"{folder} is not an engine directory (no {MANIFEST}); "
                             "create one with `gaf-trt export --ckpt CKPT --out DIR`")
    _inside(folder, MANIFEST)
    try:
        raw = _read_capped(path.resolve(), MAX_MANIFEST_BYTES)
        man = json.loads(raw.decode("utf-8"))
    except EngineDirError:
        raise
    except (OSError, ValueError, RecursionError) as err:
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0][:200]
        raise EngineDirError(f"{path} is unreadable or not JSON: {reason}") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise EngineDirError(f"{path} is not a gaf-trt engine manifest")
    if man.get("format_version") != FORMAT_VERSION:
        raise EngineDirError(f"{path} has format version {_short(man.get('format_version'))}; "
                             f"this gaf-trt reads version {FORMAT_VERSION}: re-export the engine")
    for key in ("config", "graphs", "files", "sha256"):
        if key not in man:
            raise EngineDirError(f"{path} lacks the {key!r} entry")
    validate_manifest(man, path)
    for name in man["files"]:  # no link may lead a listed file out of the directory
        _inside(folder, name)
    return man


def check_precision(man: dict[str, Any], requested: Any, folder: str | Path) -> None:
    """An engine runs at the precision it was exported at: a request for another one is
    refused (a record must never claim a precision that did not run)."""
    if requested is None:
        return
    want = getattr(requested, "value", requested)
    if want != man["precision"]:
        raise EngineDirError(f"engine directory {folder} was exported at {man['precision']}; "
                             f"--precision {want} needs an engine exported with `gaf-trt export "
                             f"--precision {want}` (or run --precision {man['precision']})")


def files_of(man: dict[str, Any], *, graphs: list[str] | None = None,
             plans: list[str] | None = None) -> list[str]:
    """The files a loader needs for the named graphs / plans (all files when both None);
    :func:`verify_files` adds the external-data files each ONNX graph references."""
    if graphs is None and plans is None:
        return list(man["files"])
    names: list[str] = []
    for g in graphs or []:
        rec = man["graphs"][g]
        names += [rec["file"]] + ([rec["data_file"]] if rec.get("data_file") else [])
    for p in plans or []:
        names.append(man["plans"][p]["file"])
    return names


def _onnx_tensors(graph: Any) -> Iterable[Any]:
    """Every tensor of an ONNX graph: initializers, sparse initializers, node attributes,
    and those of subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _onnx_tensors(attr.g)
            for sub in attr.graphs:
                yield from _onnx_tensors(sub)


def external_data_files(folder: str | Path, graph_file: str) -> list[str]:
    """The external-data files an ONNX graph reads (its tensors' ``location`` entries), read
    without loading the data. An unreadable graph is an :class:`EngineDirError`."""
    try:
        import onnx
    except ImportError:
        raise EngineDirError("checking an engine directory's graphs needs the onnx package "
                             "(pip install 'gaf-trt[onnx]')") from None
    path = Path(folder) / graph_file
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - protobuf / onnx raise several types
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else \
            type(err).__name__
        raise EngineDirError(f"graph {graph_file} in {folder} is not a valid ONNX model "
                             f"({reason}); re-export the engine") from None
    found: list[str] = []
    for tensor in _onnx_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entry = {kv.key: kv.value for kv in tensor.external_data}
        loc = entry.get("location", "")
        try:
            RelPath().check(loc, f"external data of tensor {tensor.name!r}")
        except _Invalid as err:
            raise EngineDirError(f"graph {graph_file} in {folder}: {err}") from None
        if loc not in found:
            found.append(loc)
    return found


def verify_files(folder: str | Path, man: dict[str, Any], names: list[str] | None = None) -> None:
    """Every named file (all listed files when None) lies inside ``folder``, is a regular
    file and has the recorded sha256; each ONNX graph among them is then parsed (without its
    data) and every external-data file it reads must be listed, hashed and verified too.
    Anything else is an :class:`EngineDirError`."""
    folder = Path(folder)
    graph_files = {rec["file"] for rec in man["graphs"].values()}
    todo = list(man["files"] if names is None else names)
    done: set[str] = set()
    while todo:
        name = todo.pop(0)
        if name in done:
            continue
        done.add(name)
        _verify_one(folder, man, name)
        if name in graph_files or name.endswith(".onnx"):
            for data in external_data_files(folder, name):
                if data not in man["files"]:
                    raise EngineDirError(f"graph {name} in {folder} reads {data}, which the "
                                         "manifest does not list and hash; re-export the "
                                         "engine")
                todo.append(data)


def _verify_one(folder: Path, man: dict[str, Any], name: str) -> None:
    real = _inside(folder, name)
    want = man["sha256"].get(name)
    if not real.is_file():
        raise EngineDirError(f"engine directory {folder} is incomplete: {name} is missing; "
                             "re-export it")
    if want is None:
        raise EngineDirError(f"{folder}/{MANIFEST} has no sha256 for {name}")
    got = file_sha256(real)
    if got != want:
        raise EngineDirError(f"{folder / name} was altered since export (sha256 {got[:12]}… != "
                             f"{want[:12]}… in the manifest); re-export the engine")


def hash_files(folder: Path, names: list[str]) -> dict[str, str]:
    return {n: file_sha256(folder / n) for n in names}


# --------------------------------------------------------------------------- compatibility


@dataclass(frozen=True)
class RuntimeInfo:
    """The machine a plan is about to be loaded on."""

    tensorrt: str
    gpu_name: str
    compute_capability: str  # "9.0"


def _major_minor(version: str) -> tuple[int, ...]:
    parts = []
    for p in str(version).split(".")[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_plan_compatible(plan: dict[str, Any], here: RuntimeInfo, folder: str | Path) -> None:
    """Refuse a plan built for another TensorRT version or GPU, before deserialising it.

    Plans are tied to the exact TensorRT version unless built version-compatible (then a
    runtime of the same major version, not older, may load them), and to the compute
    capability unless built with a hardware-compatibility level (``AMPERE_PLUS``: any
    compute capability >= 8.0). The GPU name only warns when the capability matches.
    """
    hint = REBUILD_HINT.format(dir=folder)
    built_trt, built_gpu = str(plan.get("tensorrt", "?")), plan.get("gpu") or {}
    name = plan.get("file", "plan")
    if plan.get("version_compatible"):
        same_major = _major_minor(built_trt)[:1] == _major_minor(here.tensorrt)[:1]
        if not same_major or _major_minor(here.tensorrt) < _major_minor(built_trt):
            raise EngineCompatibilityError(
                f"{name} was built with TensorRT {built_trt} (version-compatible) and cannot "
                f"run on TensorRT {here.tensorrt}; {hint}")
    elif built_trt != here.tensorrt:
        raise EngineCompatibilityError(f"{name} was built with TensorRT {built_trt}, this "
                                       f"machine has TensorRT {here.tensorrt}; {hint}")
    level = str(plan.get("hardware_compatibility_level", "NONE")).upper()
    built_cc = str(built_gpu.get("compute_capability", "?"))
    if level == "AMPERE_PLUS":
        if _major_minor(here.compute_capability) < (8, 0):
            raise EngineCompatibilityError(
                f"{name} needs an Ampere or newer GPU (compute capability >= 8.0); "
                f"{here.gpu_name} is {here.compute_capability}; {hint}")
    elif built_cc != here.compute_capability:
        raise EngineCompatibilityError(
            f"{name} was built for {built_gpu.get('name', '?')} (compute capability "
            f"{built_cc}), this GPU is {here.gpu_name} ({here.compute_capability}); {hint}")
    elif built_gpu.get("name") and built_gpu.get("name") != here.gpu_name:
        log.warning("%s was built on %s and runs on %s (same compute capability %s)", name,
                    built_gpu.get("name"), here.gpu_name, built_cc)


# --------------------------------------------------------------------------- description


def describe(folder: str | Path, *, verify: bool = False) -> dict[str, Any]:
    """A summary of an engine directory (for ``gaf-trt info DIR``); ``verify`` also checks
    every file's sha256."""
    man = read_manifest(folder)
    if verify:
        verify_files(folder, man)
    cfg = man["config"]
    return {
        "path": str(folder),
        "precision": man.get("precision"),
        "opset": man.get("opset"),
        "created": man.get("created"),
        "source": man.get("source"),
        "network": {k: cfg.get(k) for k in ("hidden_size", "depth", "num_heads", "patch_size",
                                             "in_channels", "input_size", "num_classes", "mode")},
        "graphs": {n: {"group": g.get("group"), "file": g.get("file"),
                       "parity_rel": max((o["rel"] for o in (g.get("parity") or {}).get(
                           "outputs", [])), default=None)}
                   for n, g in man["graphs"].items()},
        "plans": {n: {"file": p.get("file"), "tensorrt": p.get("tensorrt"),
                      "gpu": (p.get("gpu") or {}).get("name"),
                      "compute_capability": (p.get("gpu") or {}).get("compute_capability"),
                      "static": p.get("static")}
                  for n, p in (man.get("plans") or {}).items()},
        "profiles": man.get("profiles"),
        "exporter": man.get("exporter"),
        "verified": verify,
    }


def describe_lines(info: dict[str, Any]) -> list[str]:
    """Human-readable lines of :func:`describe`'s result."""
    net = info["network"]
    src = info.get("source") or {}
    lines = [
        f"engine      {info['path']}",
        f"precision   {info['precision']}  opset {info['opset']}  created {info['created']}",
        f"network     D={net['hidden_size']} depth={net['depth']} heads={net['num_heads']} "
        f"patch={net['patch_size']} input={net['in_channels']}x{net['input_size']}x"
        f"{net['input_size']} ({net['mode']}) classes={net['num_classes']}",
        f"source      {src.get('path')} (sha256 {str(src.get('sha256'))[:16]}…)",
    ]
    for name, g in info["graphs"].items():
        rel = g["parity_rel"]
        lines.append(f"graph       {name:<14} {g['group']:<6} {g['file']}"
                     + (f"  parity rel {rel:.2g}" if rel is not None else ""))
    if not info["plans"]:
        lines.append("plans       none (build them on a GPU machine with TensorRT: "
                     f"`gaf-trt export --from-onnx {info['path']}`)")
    for name, p in info["plans"].items():
        lines.append(f"plan        {name:<22} TensorRT {p['tensorrt']} on {p['gpu']} "
                     f"(cc {p['compute_capability']})" + (" static" if p["static"] else ""))
    if info["verified"]:
        lines.append("files       all sha256 verified")
    return lines
