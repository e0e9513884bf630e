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
#: ``--int8-scheme``: activation / weight types of INT8 Q/DQ graphs. ``auto``: U8S8 on an x86
#: CPU with 8-bit dot products (VNNI / AMX: ONNX Runtime's own guidance, quantize_static's
#: docstring, 1.32), else S8S8; S8S8 whenever the export builds TensorRT plans (TensorRT takes
#: only symmetric S8S8 Q/DQ).
INT8_SCHEMES = ("auto", "u8s8", "s8s8")
#: ``--quant``: ``static`` Q/DQ calibrated on solver trajectories, or ONNX Runtime's
#: ``dynamic`` quantisation of the same MatMuls (activation ranges computed per call).
QUANT_MODES = ("static", "dynamic")
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
    scheme: str = "auto"  # INT8_SCHEMES (resolved to u8s8 | s8s8 at export)
    mode: str = "static"  # QUANT_MODES
    requested: str | None = None  # the --int8-scheme given, when ``scheme`` was resolved

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
        for flag, value, allowed in (("--int8-scheme", self.scheme, INT8_SCHEMES),
                                     ("--quant", self.mode, QUANT_MODES)):
            if value not in allowed:
                raise ConfigError(f"{flag} must be one of {', '.join(allowed)}, got {value!r}")
        if self.mode == "dynamic" and self.scheme == "s8s8":
            raise ConfigError("--quant dynamic quantises activations to uint8 (ONNX Runtime's "
                              "DynamicQuantizeLinear): use --int8-scheme auto or u8s8 with it")
        if self.mode == "dynamic" and self.smoothquant is not None:
            raise ConfigError("--smoothquant applies to --quant static only (dynamic "
                              "quantisation has no calibrated activation ranges)")

    def check_precision(self, precision: Precision) -> None:
        """FP8 is static E4M3 only: ``--quant dynamic`` and an INT8 scheme are refused."""
        if precision is not Precision.FP8:
            return
        if self.mode != "static" or self.scheme != "auto":
            raise ConfigError("--precision fp8 is static E4M3 Q/DQ: --quant dynamic and "
                              "--int8-scheme u8s8|s8s8 apply to --precision int8 only")


def resolved(qcfg: QuantConfig, precision: Precision, *, tensorrt: bool) -> QuantConfig:
    """``qcfg`` with its INT8 scheme resolved on this machine (``requested`` keeps what was
    asked); dynamic quantisation is U8S8 and has no TensorRT form (refused with plans)."""
    from dataclasses import replace

    if precision is not Precision.INT8 or qcfg.requested is not None:
        return qcfg
    if qcfg.mode == "dynamic":
        if tensorrt:
            raise ConfigError(f"--quant dynamic: {TRT_INT8_ONLY}; add --onnx-only (plans are "
                              "not built) or use --quant static --int8-scheme s8s8")
        return replace(qcfg, scheme="u8s8", requested=qcfg.scheme)
    return replace(qcfg, scheme=resolve_scheme(qcfg.scheme, tensorrt=tensorrt),
                   requested=qcfg.scheme)


def resolve_scheme(scheme: str, *, tensorrt: bool, flags: list[str] | None = None) -> str:
    """``--int8-scheme`` resolved on this machine: ``u8s8`` or ``s8s8`` (``auto``: S8S8 when
    TensorRT plans are built, else U8S8 on x86 with VNNI / AMX, else S8S8). An explicit
    ``u8s8`` with TensorRT plans to build is refused."""
    from gaf_trt.device import int8_dot_flags

    if scheme == "u8s8" and tensorrt:
        raise ConfigError(f"--int8-scheme u8s8: {TRT_INT8_ONLY}; add --onnx-only (plans "
                          "are not built) or use --int8-scheme s8s8")
    if scheme != "auto":
        return scheme
    if tensorrt:
        return "s8s8"
    return "u8s8" if (int8_dot_flags() if flags is None else flags) else "s8s8"


#: Why TensorRT refuses U8S8 and dynamic INT8 graphs.
TRT_INT8_ONLY = ("TensorRT takes only static, symmetric S8S8 Q/DQ graphs (zero point 0), not "
                 "U8S8 or dynamic quantisation")

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

