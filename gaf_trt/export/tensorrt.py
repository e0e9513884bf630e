"""TensorRT plans from the engine directory's ONNX graphs (TensorRT 10.x and 11.x).

Written against the documented Python API: ``Builder.create_network`` (strongly typed: the
precision is the ONNX graph's, as TensorRT 11 requires and 10.x offers with the
``STRONGLY_TYPED`` flag), ``OnnxParser.parse_from_file`` (external data is found beside the
graph), one optimisation profile per plan (``set_shape(min, opt, max)``), a timing cache
reused across builds, TF32 cleared for FP32 parity builds, ``build_serialized_network``
(``None`` is an error), plans written atomically. No FP16/BF16 builder flag is ever set:
TensorRT 11 removed them, and a reduced-precision engine comes from a reduced-precision
graph (gaf_trt.export.precision).

The manifest records, per plan: TensorRT version, GPU name and compute capability, the
hardware-compatibility level, version compatibility, TF32, the shapes of its profile.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gaf_trt.errors import ConfigError
from gaf_trt.io.files import atomic_write

log = logging.getLogger(__name__)

HW_COMPAT_LEVELS = ("NONE", "AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY")


class PlanBuildError(RuntimeError):
    """TensorRT could not parse a graph or build a plan (message lists its errors)."""


def unavailable() -> str | None:
    """None when plans can be built here, else why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt Python package is not installed"
    except Exception as err:  # noqa: BLE001 - broken installs raise OSError / RuntimeError
        return f"tensorrt fails to import ({str(err).splitlines()[0][:120]})"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    return None


def trt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


def runtime_info(device_index: int | None = None):
    """TensorRT version, GPU name and compute capability of this machine."""
    import tensorrt as trt
    import torch

    from gaf_trt.export.manifest import RuntimeInfo

    idx = torch.cuda.current_device() if device_index is None else device_index
    major, minor = torch.cuda.get_device_capability(idx)
    return RuntimeInfo(str(trt.__version__), torch.cuda.get_device_name(idx), f"{major}.{minor}")


def network_flags(trt) -> int:
    """Strongly typed where the flag exists (10.x; deprecated and ignored in 11.x)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return (1 << int(flag)) if flag is not None else 0


def default_timing_cache() -> Path:
    """One timing cache per TensorRT version and GPU, reused by every build on the machine."""
    info = runtime_info()
    tag = f"{info.tensorrt}_{info.compute_capability}"
    safe = "".join(ch if ch.isalnum() else "_" for ch in tag)
    return Path.home() / ".cache" / "gaf-trt" / f"timing_{safe}.cache"


def _parse(trt, builder, logger, onnx_path: Path):
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise PlanBuildError(f"TensorRT cannot parse {onnx_path.name}: " + "; ".join(errors[:5]))
    return network, parser


def _configure(trt, builder, network, shapes: dict[str, tuple[tuple[int, ...], ...]],
               opts: dict[str, Any], cache_bytes: bytes):
    config = builder.create_builder_config()
    if opts.get("workspace_gb"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE,
                                     int(float(opts["workspace_gb"]) * (1 << 30)))
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if tf32 is not None and not opts.get("tf32", False):
        config.clear_flag(tf32)  # FP32 parity: no TF32 tensor-core rounding
    if opts.get("optimization_level") is not None:
        config.builder_optimization_level = int(opts["optimization_level"])
    level = str(opts.get("hardware_compatibility", "NONE")).upper()
    if level not in HW_COMPAT_LEVELS:
        raise ConfigError(f"unknown hardware compatibility {level!r}; valid: "
                          f"{', '.join(HW_COMPAT_LEVELS)}")
    if level != "NONE":
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, level)
    if opts.get("version_compatible"):
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    for name, (lo, opt, hi) in shapes.items():
        if name not in inputs:
            raise PlanBuildError(f"profile input {name!r} is not an input of the network "
                                 f"({', '.join(sorted(inputs))})")
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    return config, level


def build_plan(onnx_path: Path, plan_path: Path, shapes: dict[str, tuple[tuple[int, ...], ...]],
               opts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build one plan for ``shapes`` (``input -> (min, opt, max)``); returns its manifest
    record (without ``graph`` / ``file``)."""
    import tensorrt as trt

    opts = dict(opts or {})
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, onnx_path)
    cache_path = Path(opts.get("timing_cache") or default_timing_cache())
    cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
    config, level = _configure(trt, builder, network, shapes, opts, cache_bytes)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise PlanBuildError(f"TensorRT failed to build a plan from {onnx_path.name} (see the "
                             "TensorRT log above)")
    atomic_write(plan_path, lambda tmp: tmp.write_bytes(memoryview(serialized)))
    timing = config.get_timing_cache()
    if timing is not None:
        data = timing.serialize()
        atomic_write(cache_path, lambda tmp: tmp.write_bytes(memoryview(data)))
    info = runtime_info()
    return {
        "tensorrt": info.tensorrt,
        "gpu": {"name": info.gpu_name, "compute_capability": info.compute_capability},
        "hardware_compatibility_level": level,
        "version_compatible": bool(opts.get("version_compatible", False)),
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
            rec = build_plan(folder / graph["file"], folder / f"{plan_name}.plan", shapes, opts)
            man.setdefault("plans", {})[plan_name] = {
                "graph": name, "file": f"{plan_name}.plan", "static": static, **rec}
            built.append(plan_name)
    return built
