"""A human description of an engine directory (``gaf-trt info DIR``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gaf_trt.enginedir.files import verify_files
from gaf_trt.enginedir.manifest import read_manifest


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
        "quantization": quantization_summary(man.get("quantization")),
        "profiles": man.get("profiles"),
        "exporter": man.get("exporter"),
        "verified": verify,
    }


def quantization_summary(q: Any) -> dict[str, Any] | None:
    """The recipe of a quantised directory: mode, INT8 scheme (and the CPU flags it was
    chosen for), whether TensorRT takes it, its shared weights file and quality."""
    if not isinstance(q, dict):
        return None
    storage = q.get("storage") if isinstance(q.get("storage"), dict) else {}
    quality = q.get("quality") if isinstance(q.get("quality"), dict) else {}
    return {"mode": q.get("mode", "static"), "scheme": q.get("scheme"),
            "requested": q.get("scheme_requested"), "cpu": q.get("cpu"),
            "tensorrt": q.get("tensorrt", True),
            "weights_file": storage.get("file"), "weights_bytes": storage.get("bytes"),
            "velocity_rel": quality.get("velocity"),
            "final_state_rel": quality.get("final_state")}


def _quant_line(q: dict[str, Any]) -> str:
    cpu = q.get("cpu") if isinstance(q.get("cpu"), dict) else {}
    flags = ", ".join(cpu.get("int8_dot_flags") or []) or "no VNNI / AMX"
    scheme = (f" {str(q['scheme']).upper()} ({q.get('requested') or 'auto'}; chosen on "
              f"{cpu.get('model', '?')}: {flags})") if q.get("scheme") else ""
    store = (f"; weights once in {q['weights_file']} ({q['weights_bytes']:,} bytes)"
             if q.get("weights_file") and isinstance(q.get("weights_bytes"), int) else "")
    trt = "" if q.get("tensorrt") else "; not for TensorRT"
    return f"quantized   {q['mode']}{scheme}{store}{trt}"


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
    if info.get("quantization"):
        lines.append(_quant_line(info["quantization"]))
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
    backends = info.get("backends")
    if isinstance(backends, dict):
        here = [n for n, why in backends.items() if why is None]
        lines.append(f"backends    {', '.join(here) or 'none'} here" + "".join(
            f"; {n}: {why}" for n, why in backends.items() if why is not None))
    return lines
