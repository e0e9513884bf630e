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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gaf_trt.errors import GAFError
from gaf_trt.io.files import file_sha256

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "gaf-trt-engine"
FORMAT_VERSION = 1
REBUILD_HINT = "rebuild the plans on this machine with `gaf-trt export --from-onnx {dir}`"


class EngineDirError(GAFError):
    """An engine directory is missing, incomplete, altered or not an engine directory."""


class EngineCompatibilityError(GAFError):
    """A TensorRT plan was built for another GPU or TensorRT version."""


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """Read and sanity-check ``folder/manifest.json`` (no hashing; see :func:`verify_files`)."""
    folder = Path(folder)
    if not folder.exists():
        raise EngineDirError(f"engine directory not found: {folder}")
    if not folder.is_dir():
        raise EngineDirError(f"{folder} is a file, not an engine directory")
    path = folder / MANIFEST
    if not path.is_file():
        raise EngineDirError(f"{folder} is not an engine directory (no {MANIFEST}); "
                             "create one with `gaf-trt export --ckpt CKPT --out DIR`")
    try:
        man = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise EngineDirError(f"{path} is unreadable or not JSON: {err}") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise EngineDirError(f"{path} is not a gaf-trt engine manifest")
    if man.get("format_version") != FORMAT_VERSION:
        raise EngineDirError(f"{path} has format version {man.get('format_version')!r}; this "
                             f"gaf-trt reads version {FORMAT_VERSION}: re-export the engine")
    for key in ("config", "graphs", "files", "sha256"):
        if key not in man:
            raise EngineDirError(f"{path} lacks the {key!r} entry")
    return man


def files_of(man: dict[str, Any], *, graphs: list[str] | None = None,
             plans: list[str] | None = None) -> list[str]:
    """The files a loader needs for the named graphs / plans (all files when both None)."""
    if graphs is None and plans is None:
        return list(man["files"])
    names: list[str] = []
    for g in graphs or []:
        rec = man["graphs"][g]
        names += [rec["file"]] + ([rec["data_file"]] if rec.get("data_file") else [])
    for p in plans or []:
        names.append(man["plans"][p]["file"])
    return names


def verify_files(folder: str | Path, man: dict[str, Any], names: list[str] | None = None) -> None:
    """Every listed file exists and has the recorded sha256, else an :class:`EngineDirError`."""
    folder = Path(folder)
    for name in man["files"] if names is None else names:
        p = folder / name
        want = man["sha256"].get(name)
        if not p.is_file():
            raise EngineDirError(f"engine directory {folder} is incomplete: {name} is missing; "
                                 "re-export it")
        if want is None:
            raise EngineDirError(f"{folder}/{MANIFEST} has no sha256 for {name}")
        got = file_sha256(p)
        if got != want:
            raise EngineDirError(f"{p} was altered since export (sha256 {got[:12]}… != "
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
