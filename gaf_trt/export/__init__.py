"""Export a GAF to an engine directory: ONNX graphs (split trunk / J head / K-head bank,
fused composed step, VAE decoder), reduced-precision graphs, a parity check against PyTorch,
TensorRT plans and ``manifest.json``.

Public names (imported lazily, so ``import gaf_trt`` stays light)::

    export_engine(ExportConfig(ckpt, out, ...)) -> ExportResult
    build_from_onnx(dir)                       # TensorRT plans on a GPU machine, later
    describe_engine(dir) / describe_lines(info)
    verify_engine(dir)                         # every file's sha256

Reading engine directories (manifest, files, compatibility) is :mod:`gaf_trt.enginedir`.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "ExportConfig": "gaf_trt.export.build",
    "ExportResult": "gaf_trt.export.build",
    "ProfileSpec": "gaf_trt.export.build",
    "export_engine": "gaf_trt.export.build",
    "build_from_onnx": "gaf_trt.export.build",
    "GRAPH_GROUPS": "gaf_trt.export.graphs",
    "parse_groups": "gaf_trt.export.graphs",
    "ParityError": "gaf_trt.export.parity",
    "describe_lines": "gaf_trt.enginedir",
}


def describe_engine(folder: str, *, verify: bool = False) -> dict[str, Any]:
    """Summary of an engine directory (``gaf-trt info DIR``)."""
    from gaf_trt.enginedir import describe

    return describe(folder, verify=verify)


def verify_engine(folder: str) -> dict[str, Any]:
    """Check every file of an engine directory against its manifest; returns the manifest."""
    from gaf_trt.enginedir import read_manifest, verify_files

    man = read_manifest(folder)
    verify_files(folder, man)
    return man


def is_engine_dir(path: str) -> bool:
    """True when ``path`` is a folder with a gaf-trt ``manifest.json``."""
    from pathlib import Path

    return Path(path).is_dir() and (Path(path) / "manifest.json").is_file()


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gaf_trt.export' has no attribute {name!r}")


__all__ = [*_LAZY, "describe_engine", "verify_engine", "is_engine_dir"]
