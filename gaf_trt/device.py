"""Facts about the hardware a command runs on: which device a name means (``auto``, ``cpu``,
``cuda:N``), read the same way by every command; the device's name, the CPU model, a GPU's
datasheet peak and the peak memory a run used (``gaf-trt bench``, ``auto``'s measured choice).
"""

from __future__ import annotations

import platform
import resource
from typing import TYPE_CHECKING

import torch

from gaf_trt.errors import ConfigError

if TYPE_CHECKING:
    from gaf_trt.precision import Precision

#: dense datasheet peaks in TFLOP/s (fp32 without TF32) for MFU; unknown GPUs get no MFU
GPU_PEAK_TFLOPS = {"H200": {"fp32": 66.9, "bf16": 989.4, "fp16": 989.4, "int8": 1978.9,
                            "fp8": 1978.9},
                   "H100": {"fp32": 66.9, "bf16": 989.4, "fp16": 989.4, "int8": 1978.9,
                            "fp8": 1978.9},
                   "A100": {"fp32": 19.5, "bf16": 312.0, "fp16": 312.0, "int8": 624.0}}


def resolve_device(device: str) -> str:
    """The one device resolution (sampling, bench, training): ``auto`` -> ``cuda`` when
    available else ``cpu``; explicit choices are validated."""
    if not isinstance(device, str) or not device.strip():
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto")
    device = device.strip()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA "
                              "device(s) are visible")
    elif dev.type != "cpu":
        raise ConfigError(f"unsupported device {device!r}; use cpu, cuda, cuda:N or auto")
    return device



def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else the platform's machine type."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo`` ``flags``; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


#: x86 flags of integer dot-product instructions (8-bit VNNI, AMX tiles).
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def int8_dot_flags(flags: frozenset[str] | None = None) -> list[str]:
    """The :data:`INT8_DOT_FLAGS` this x86 CPU has (empty on other architectures)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return []
    have = cpu_flags() if flags is None else flags
    return [f for f in INT8_DOT_FLAGS if f in have]


def device_name(device: str) -> str:
    """The GPU's name on CUDA, else the CPU model and torch's thread count."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({torch.get_num_threads()} threads)"


def gpu_peak_tflops(device: str, precision: Precision) -> float | None:
    """The datasheet dense peak (TFLOP/s) of the CUDA ``device`` at ``precision``; None on
    the CPU and for GPUs not in :data:`GPU_PEAK_TFLOPS`."""
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in GPU_PEAK_TFLOPS.items():
        if key in name:
            return peaks.get(precision.value)
    return None


def peak_memory(device: str) -> tuple[float, str]:
    """(MiB, kind): CUDA peak allocated since the last reset, else the process's peak RSS."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda-allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process-rss-highwater"
