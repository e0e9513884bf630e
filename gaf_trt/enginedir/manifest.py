"""Reading and validating an engine directory's ``manifest.json`` (the schema:
:mod:`gaf_trt.enginedir.schema`). Loading verifies the sha256 of every file it reads
(:mod:`gaf_trt.enginedir.files`) and checks a plan's TensorRT version and GPU *before*
deserialising it (:mod:`gaf_trt.enginedir.compat`)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from gaf_trt.enginedir.files import inside
from gaf_trt.enginedir.schema import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MANIFEST_SCHEMA,
    MAX_MANIFEST_BYTES,
    MAX_PROFILE_BATCH,
    MAX_PROFILE_CLASSES,
    EngineDirError,
    Invalid,
    short,
)
from gaf_trt.errors import GAFError


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
                raise Invalid(f"{label}.{axis} is {ranges[axis]}; must be [min, opt, max] "
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
        raise Invalid("files lists a file twice, or lists manifest.json itself")
    unhashed = [f for f in files if f not in man["sha256"]]
    if unhashed:
        raise Invalid(f"files lists {unhashed[0]} but sha256 has no hash for it")
    stray = [f for f in man["sha256"] if f not in files]
    if stray:
        raise Invalid(f"sha256 hashes {stray[0]}, which files does not list")
    for name, where in named_files(man).items():
        if name not in files:
            raise Invalid(f"{where} names {name}, which files does not list (nothing "
                           "unlisted and unhashed is ever read)")
    for p, rec in (man.get("plans") or {}).items():
        if rec["graph"] not in man["graphs"]:
            raise Invalid(f"plans.{p}.graph is {short(rec['graph'])}, not a graph of this "
                           f"directory ({', '.join(man['graphs'])})")
    if not man["graphs"]:
        raise Invalid("graphs is empty")
    _check_triples(man.get("profiles"), "profiles")
    cfg = man["config"]
    want = [cfg["in_channels"], cfg["input_size"], cfg["input_size"]]
    for g, rec in man["graphs"].items():
        for spec in rec["inputs"]:
            if spec["name"] == "x" and list(spec["shape"][1:]) != want:
                raise Invalid(f"graphs.{g}.inputs x has shape {spec['shape']}, but the config "
                               f"says [batch, {', '.join(map(str, want))}]")
    names = man.get("class_names")
    if names is not None and len(names) != cfg["num_classes"]:
        raise Invalid(f"class_names has {len(names)} names for {cfg['num_classes']} classes")


def validate_manifest(man: Any, path: str | Path) -> dict[str, Any]:
    """Check a parsed manifest against :data:`MANIFEST_SCHEMA` and its cross-field rules;
    returns it, or raises an :class:`EngineDirError` naming the field and the problem."""
    from gaf_trt.model.config import GAFConfig

    try:
        MANIFEST_SCHEMA.check(man, "manifest")
        _cross_check(man)
        GAFConfig.from_dict(man["config"])
    except Invalid as err:
        raise EngineDirError(f"{path} is not a valid engine manifest: {err}") from None
    except GAFError as err:
        raise EngineDirError(f"{path} is not a valid engine manifest: config: {err}") from None
    return man


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
    inside(folder, MANIFEST)
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
        raise EngineDirError(f"{path} has format version {short(man.get('format_version'))}; "
                             f"this gaf-trt reads version {FORMAT_VERSION}: re-export the engine")
    for key in ("config", "graphs", "files", "sha256"):
        if key not in man:
            raise EngineDirError(f"{path} lacks the {key!r} entry")
    validate_manifest(man, path)
    for name in man["files"]:  # no link may lead a listed file out of the directory
        inside(folder, name)
    return man

