"""TensorRT plans from the engine directory's ONNX graphs (TensorRT 10.x and 11.x).

Written against the documented Python API: ``Builder.create_network`` (strongly typed: the
precision is the ONNX graph's, as TensorRT 11 requires and 10.x offers with the
``STRONGLY_TYPED`` flag), ``OnnxParser.parse_from_file`` (external data is found beside the
graph), one optimisation profile per plan (``set_shape(min, opt, max)``), a timing cache
reused across builds, TF32 cleared for FP32 parity builds, ``build_serialized_network``
(``None`` is an error), plans written atomically. No FP16/BF16 builder flag is ever set:
TensorRT 11 removed them, and a reduced-precision engine comes from a reduced-precision
graph (gaf_trt.export.precision). What the runtime shares with the builder (the TensorRT
version floor, the captured log, this machine's TensorRT and GPU) is
:mod:`gaf_trt.engine.trt_runtime`.

The manifest records, per plan: TensorRT version, GPU name and compute capability, the
hardware-compatibility level, version compatibility, TF32, the shapes of its profile.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gaf_trt.engine import trt_runtime
from gaf_trt.errors import ConfigError, GAFError
from gaf_trt.io.files import atomic_write

log = logging.getLogger(__name__)

HW_COMPAT_LEVELS = ("NONE", "AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY")


class PlanBuildError(GAFError):
    """TensorRT could not parse a graph or build a plan (message lists its errors)."""


def gpu_uuid(device_index: int | None = None) -> str:
    """The GPU's UUID as torch reports it ("" when unknown)."""
    import torch

    try:
        idx = torch.cuda.current_device() if device_index is None else device_index
        return str(getattr(torch.cuda.get_device_properties(idx), "uuid", "") or "")
    except (RuntimeError, AssertionError, AttributeError):
        return ""


def network_flags(trt) -> int:
    """Strongly typed where the flag exists (10.x; deprecated and ignored in 11.x)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return (1 << int(flag)) if flag is not None else 0


def timing_cache_name(tensorrt: str, gpu_name: str, compute_capability: str,
                      uuid: str = "") -> str:
    """The timing cache's file name: TensorRT version, GPU name, compute capability and the
    GPU's UUID (two GPU models of one compute capability, an H100 and an H200, time kernels
    differently and TensorRT refuses the other's cache)."""
    tag = f"{tensorrt}_{gpu_name}_{compute_capability}" + (f"_{uuid[:8]}" if uuid else "")
    safe = "".join(ch if ch.isalnum() or ch == "." else "_" for ch in tag)
    return f"timing_{safe}.cache"


def default_timing_cache() -> Path:
    """One timing cache per TensorRT version and GPU, reused by every build on the machine."""
    info = trt_runtime.runtime_info()
    return Path.home() / ".cache" / "gaf-trt" / timing_cache_name(
        info.tensorrt, info.gpu_name, info.compute_capability, gpu_uuid())


def check_trt_options(opts: dict[str, Any]) -> str:
    """Validate the builder options of an export before any work (with or without TensorRT
    here); returns the hardware-compatibility level, upper-case. A bad value is a
    :class:`~gaf_trt.errors.ConfigError` naming it and the allowed ones."""
    raw = opts.get("hardware_compatibility", "NONE")
    level = str(raw).upper()
    if level not in HW_COMPAT_LEVELS:
        raise ConfigError(f"unknown hardware compatibility {level[:60]!r} (--hardware-compat "
                          f"{str(raw)[:60]}); valid: "
                          f"{', '.join(v.lower() for v in HW_COMPAT_LEVELS)}")
    return level


def _parse(trt, builder, logger, onnx_path: Path):
    network = builder.create_network(network_flags(trt))
    if network is None:
        raise PlanBuildError(f"TensorRT could not create a network for {onnx_path.name}: "
                             f"{logger.reason()}")
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [" ".join(str(parser.get_error(i)).split()) for i in range(parser.num_errors)]
        raise PlanBuildError(f"TensorRT cannot parse {onnx_path.name}: "
                             + ("; ".join(errors[:3]) or logger.reason()))
    return network, parser


def _set_timing_cache(config, cache_bytes: bytes, logger, cache_path: Path) -> None:
    """Use the stored timing cache; a cache TensorRT refuses (another GPU or version wrote
    it) is replaced by an empty one, with a warning."""
    cache = config.create_timing_cache(cache_bytes)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return
    log.warning("TensorRT refused the timing cache %s (%s); building with a fresh one",
                cache_path, logger.reason())
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise PlanBuildError(f"TensorRT cannot use an empty timing cache: {logger.reason()}")


def _configure(trt, builder, network, shapes: dict[str, tuple[tuple[int, ...], ...]],
               opts: dict[str, Any], cache_bytes: bytes, logger=None,
               cache_path: Path = Path("timing.cache")):
    config = builder.create_builder_config()
    if config is None:
        raise PlanBuildError("TensorRT could not create a builder config: "
                             f"{logger.reason() if logger else ''}")
    if opts.get("workspace_gb"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE,
                                     int(float(opts["workspace_gb"]) * (1 << 30)))
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if tf32 is not None and not opts.get("tf32", False):
        config.clear_flag(tf32)  # FP32 parity: no TF32 tensor-core rounding
    if opts.get("optimization_level") is not None:
        config.builder_optimization_level = int(opts["optimization_level"])
    level = check_trt_options(opts)
    if level != "NONE":
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, level)
    if opts.get("version_compatible"):
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if opts.get("strip_plan"):
        # Weights left out of the plan, refitted from the ONNX weights at load (identical
        # weights: TensorRT may still fold and fuse them).
        config.set_flag(trt.BuilderFlag.STRIP_PLAN)
        config.set_flag(trt.BuilderFlag.REFIT_IDENTICAL)
    _set_timing_cache(config, cache_bytes, logger, cache_path)
    profile = builder.create_optimization_profile()
    inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    for name, (lo, opt, hi) in shapes.items():
        if name not in inputs:
            raise PlanBuildError(f"profile input {name!r} is not an input of the network "
                                 f"({', '.join(sorted(inputs))})")
        profile.set_shape(name, lo, opt, hi)
    if config.add_optimization_profile(profile) < 0:
        raise PlanBuildError(f"TensorRT refused the optimisation profile {shapes}: "
                             f"{logger.reason() if logger else ''}")
    return config, level


def build_plan(onnx_path: Path, plan_path: Path, shapes: dict[str, tuple[tuple[int, ...], ...]],
               opts: dict[str, Any] | None = None, opset: int | None = None) -> dict[str, Any]:
    """Build one plan for ``shapes`` (``input -> (min, opt, max)``); returns its manifest
    record (without ``graph`` / ``file``). TensorRT's log is captured: a failure is one
    :class:`PlanBuildError` line with TensorRT's reason, nothing is printed."""
    import tensorrt as trt

    trt_runtime.require_version(trt, opset)
    opts = dict(opts or {})
    logger = trt_runtime.make_logger(trt)
    builder = trt.Builder(logger)
    if builder is None:
        raise PlanBuildError(f"TensorRT could not create a builder: {logger.reason()}")
    network, _parser = _parse(trt, builder, logger, onnx_path)
    cache_path = Path(opts.get("timing_cache") or default_timing_cache())
    cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
    config, level = _configure(trt, builder, network, shapes, opts, cache_bytes, logger,
                               cache_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise PlanBuildError(f"TensorRT failed to build a plan from {onnx_path.name}: "
                             f"{logger.reason()}")
    atomic_write(plan_path, lambda tmp: tmp.write_bytes(memoryview(serialized)))
    timing = config.get_timing_cache()
    if timing is not None:
        data = timing.serialize()
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache_path, lambda tmp: tmp.write_bytes(memoryview(data)))
    info = trt_runtime.runtime_info()
    return {
        "tensorrt": info.tensorrt,
        "gpu": {"name": info.gpu_name, "compute_capability": info.compute_capability},
        "hardware_compatibility_level": level,
        "version_compatible": bool(opts.get("version_compatible", False)),
        "weights_stripped": bool(opts.get("strip_plan", False)),
        "tf32": bool(opts.get("tf32", False)),
        "strongly_typed": True,
        "shapes": {k: [list(v) for v in s] for k, s in shapes.items()},
    }


def profile_shapes(graph: dict[str, Any], ranges: dict[str, list[int]]
                   ) -> dict[str, tuple[tuple[int, ...], ...]]:
    """``input -> (min, opt, max)`` shapes from a graph's symbolic inputs and axis ranges."""
    out = {}
    for spec in graph["inputs"]:
        triple = []
        for k in range(3):
            triple.append(tuple(ranges[d][k] if isinstance(d, str) else int(d)
                                for d in spec["shape"]))
        out[spec["name"]] = tuple(triple)
    return out


def _graph_ranges(group: str, ranges: dict[str, list[int]]) -> dict[str, list[int]]:
    if group == "vae":  # the VAE decodes B images, not N·B
        return {"B": ranges["B"]}
    return ranges


def build_all(man: dict[str, Any], folder: Path, profile, opts: dict[str, Any],
              say) -> list[str]:
    """Build a dynamic plan per graph (and a static one with ``profile.static_batch``),
    recording each in ``man["plans"]``; returns the plan names."""
    built = []
    variants = [("", profile.ranges(), False)]
    if profile.static_ranges() is not None:
        st = profile.static_ranges()
        variants.append((f".b{st['B'][0]}n{st['N'][0]}", st, True))
    for name, graph in man["graphs"].items():
        for suffix, ranges, static in variants:
            plan_name = f"{name}{suffix}"
            say(f"building TensorRT plan {plan_name}")
            shapes = profile_shapes(graph, _graph_ranges(graph["group"], ranges))
            rec = build_plan(folder / graph["file"], folder / f"{plan_name}.plan", shapes, opts,
                             opset=man.get("opset"))
            man.setdefault("plans", {})[plan_name] = {
                "graph": name, "file": f"{plan_name}.plan", "static": static, **rec}
            built.append(plan_name)
    return built
