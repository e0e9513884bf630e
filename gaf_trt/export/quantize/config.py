"""Options, bounds and availability of quantised exports (``--precision int8|fp8``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gaf_trt.checks import int_in
from gaf_trt.errors import ConfigError, GAFError
from gaf_trt.precision import Precision

#: Precisions produced by this module.
QUANT_PRECISIONS = (Precision.INT8, Precision.FP8)
#: Inclusive bounds of the calibration options.
CALIB_LIMITS = {"samples": (4, 4096), "steps": (2, 200), "rows": (1, 4096)}
#: ONNX Runtime calibrators selectable for INT8 (FP8 always uses ``distribution``).
CALIB_METHODS = ("minmax", "percentile", "entropy")
#: Kept in high precision, recorded in the manifest.
HIGH_PRECISION = ("patch embedder (Conv)", "timestep embedder", "class embedder",
                  "adaLN modulation linears", "final layer (J head, K bank)", "LayerNorm",
                  "Softmax", "attention products Q·K and P·V", "anchor and blend arithmetic")
#: Relative-error bounds against FP32: ``velocity`` is the worst graph's error over the
#: held-out trajectory items (``sqrt(Σ||Δv||² / Σ||v||²)``), ``final_state`` the worst image
#: of the short solver runs. W8A8 with per-tensor activations costs the trained digits model
#: about 0.1 in velocity but 0.02 in final state (benchmarks/RESULTS.md, quantisation); a
#: broken calibration (wrong ranges, clipped outliers) gives errors of order 1.
ERROR_BOUNDS = {Precision.INT8: {"velocity": 0.2, "final_state": 0.05},
                Precision.FP8: {"velocity": 0.2, "final_state": 0.05}}
#: Held-out items per graph for the quality report.
QUALITY_ITEMS = 8


class QuantizationError(GAFError):
    """A quantised engine cannot be written (bad scales, error above the bound)."""


#: Largest --calib-seed: the plan's generator takes it and the noise's ``seed + 1``, both
#: within torch's 64-bit seeds.
MAX_CALIB_SEED = 2 ** 63 - 2


@dataclass(frozen=True)
class QuantConfig:
    """Calibration options of ``gaf-trt export --precision int8|fp8``.

    ``samples`` trajectories of ``steps`` solver steps; items of ``rows`` rows each.
    """

    samples: int = 32
    steps: int = 10
    seed: int = 0
    method: str = "minmax"
    rows: int = 16
    accept_error: bool = False
    symmetric: bool = True  # activations too: TensorRT takes only zero-point-0 Q/DQ
    smoothquant: float | None = None  # SmoothQuant alpha (0, 1]; None: off

    def validate(self) -> None:
        for name in ("samples", "steps", "rows"):
            lo, hi = CALIB_LIMITS[name]
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                flag = {"samples": "--calib-samples", "steps": "--calib-steps",
                        "rows": "calibration rows"}[name]
                raise ConfigError(f"{flag} must be an integer in [{lo}, {hi}], got {v!r}")
        if self.method not in CALIB_METHODS:
            raise ConfigError(f"unknown calibration method {self.method!r}; valid: "
                              f"{', '.join(CALIB_METHODS)}")
        sq = self.smoothquant
        if sq is not None and (isinstance(sq, bool) or not isinstance(sq, (int, float))
                               or not 0.0 < float(sq) <= 1.0):
            raise ConfigError(f"--smoothquant must be an alpha in (0, 1], got {sq!r}")
        int_in("--calib-seed", self.seed, 0, MAX_CALIB_SEED)


def is_quantized(precision: Precision) -> bool:
    return precision in QUANT_PRECISIONS


def check_fp8_device(device: int | None = None) -> None:
    """FP8 plans need compute capability >= 8.9 (Ada, Hopper): refuse an older visible GPU
    (the ONNX graphs themselves can be written anywhere, e.g. with ``--onnx-only``)."""
    if not torch.cuda.is_available():
        return
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        raise ConfigError(f"precision fp8 needs a GPU of compute capability >= 8.9; this GPU "
                          f"is {major}.{minor}: use --precision int8, fp16 or bf16, or "
                          "--onnx-only and build the plans on an FP8 GPU")


def quant_unavailable() -> str | None:
    """None when ONNX Runtime's quantisation tool is importable, else why not."""
    try:
        import onnxruntime.quantization  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed (pip install 'gaf-trt[quant]')"
    return None

