"""Compute precision of a network: one enum shared by the runtimes (``engine/``) and the
exporter (``export/``), so neither imports the other for it."""

from __future__ import annotations

import enum

import torch

from gaf_trt.errors import ConfigError


class Precision(str, enum.Enum):
    """Compute precision of an engine (the solver state stays float32). ``int8`` / ``fp8``
    are quantised engines (Q/DQ graphs, ``gaf_trt.export.quantize``): exported engine
    directories only, no torch dtype."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"
    FP8 = "fp8"

    @property
    def quantized(self) -> bool:
        return self in (Precision.INT8, Precision.FP8)

    @property
    def torch_dtype(self) -> torch.dtype:
        if self.quantized:
            raise ConfigError(f"precision {self.value} is a quantised engine (gaf-trt export "
                              f"--precision {self.value}), run with --backend ort or trt; "
                              "the torch backend runs fp32, bf16 or fp16")
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.value]

