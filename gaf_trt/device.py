"""Facts about the hardware a command runs on: which device a name means (``auto``, ``cpu``,
``cuda:N``), read the same way by every command."""

from __future__ import annotations

import torch

from gaf_trt.errors import ConfigError


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

