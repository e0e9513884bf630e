"""The PyTorch backend: a :class:`~gaf_trt.model.GAF` in eval mode at one precision, eager or
through ``torch.compile``.

Reduced precision (bf16 / fp16) runs the trunk and heads at that dtype but forms the anchors'
skip terms ``(1 - t) x`` and ``t x`` from the float32 state, so only the learned residuals
carry the rounding (the solver state stays float32: docs/design.md §4, docs/bench.md).
Attention is ``scaled_dot_product_attention`` (the model's own), which picks the fused
kernel for the device and dtype.

``LoadRequest.options`` keys read here:

- ``compile`` (bool, default False): wrap the forward in ``torch.compile`` (inductor);
- ``compile_mode`` (``default`` or ``max-autotune``): ``max-autotune`` lets inductor
  benchmark its own GEMM templates against the vendor library (slow to compile the first
  time; the choice is cached). CUDA-graph modes are refused: the whole loop is captured by
  :class:`~gaf_trt.compose.capture.CapturedLoop` instead, and graphs must not nest;
- ``freeze`` (bool, default False): inductor freezing — weights become constants, so they
  are pre-packed for the CPU GEMM kernels (inference only);
- ``threads`` (int, default 0): ``torch.set_num_threads`` (the process's intra-op threads)
  when positive; 0 leaves torch's default.

:func:`best_compile_options` is what ``auto`` and ``gaf-trt bench --backend torch-compile``
use, chosen by measurement (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch
from torch import Tensor

from gaf_trt.device import resolve_device
from gaf_trt.engine.base import BACKENDS, Backend, LoadRequest, check_threads
from gaf_trt.errors import ConfigError
from gaf_trt.model.checkpoint import load_model
from gaf_trt.model.config import GAFConfig
from gaf_trt.model.gaf import GAF
from gaf_trt.precision import Precision

log = logging.getLogger(__name__)

COMPILE_MODES = (None, "default", "max-autotune")
OPTION_KEYS = ("compile", "compile_mode", "freeze", "threads")


def best_compile_options(device: str) -> dict[str, object]:
    """The fastest measured compile settings: CPU — max-autotune (with coordinate-descent
    tuning) and freezing (bf16 DiT-S/2 forward of 16 samples: 157 ms vs 196 ms for the
    default mode and 216 ms eager on a 2-core EPYC); CUDA — the default mode (max-autotune
    on DiT-XL/2 would compile for many minutes; not measured on a GPU yet)."""
    if torch.device(device).type == "cpu":
        return {"compile": True, "compile_mode": "max-autotune", "freeze": True}
    return {"compile": True}


def precision_support(device: str, precision: Precision) -> str | None:
    """None when ``precision`` runs natively on ``device``, else the reason it does not.

    CPU: bf16 needs AVX-512-BF16 or AMX (else oneDNN emulates it, slower than fp32); fp16
    has no fast CPU matmul in torch. CUDA: bf16 needs compute capability >= 8.0.
    """
    if precision is Precision.FP32:
        return None
    if precision.quantized:
        return (f"{precision.value} runs as an exported engine (gaf-trt export --precision "
                f"{precision.value}) with --backend ort or trt, not in torch")
    if torch.device(device).type == "cuda":
        if precision is Precision.BF16 and not torch.cuda.is_bf16_supported():
            return "this GPU has no native bf16 (needs compute capability >= 8.0)"
        return None
    if precision is Precision.BF16:
        fast = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return None if fast else "this CPU has neither AVX-512-BF16 nor AMX"
    return "fp16 matmuls on the CPU are emulated in torch (about 1 GFLOP/s); use bf16 or fp32"


def _anchors_fp32(model: GAF, dtype: torch.dtype) -> Callable[[Tensor, Tensor, Tensor],
                                                              tuple[Tensor, Tensor]]:
    """``(x [M,C,S,S] f32, t [M] f32, y [M]) -> (J, K)`` float32, residuals at ``dtype``."""

    def forward(x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return _skip_fp32(model, model.trunk(x.to(dtype), t, y), x, t, y)

    return forward


def _skip_fp32(model: GAF, f: Tensor, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Heads at the model's dtype on ``f [M, L, D]``, skip terms from the float32 ``x``."""
    j_res, k_res = model.heads(f, y)
    tt = t.view(-1, 1, 1, 1)
    return (1 - tt) * x + j_res.float(), tt * x + k_res.float()


class TorchEngine:
    """``(x [M,C,S,S] float32, t [M], y [M]) -> (J, K)`` through a GAF, eager or compiled.

    fp32: the model's forward unchanged. bf16 / fp16: residuals at that dtype, anchors
    float32. ``compile_seconds`` sums the wall time of the calls that triggered a
    (re)compilation (one per new input shape, minus one eager-speed call each); it is 0 for
    eager engines.
    """

    name = "torch"

    def __init__(self, model: GAF, precision: Precision = Precision.FP32, *,
                 compile: bool = False, compile_mode: str | None = None,
                 freeze: bool = False) -> None:
        if compile_mode not in COMPILE_MODES:
            raise ConfigError(f"unknown compile_mode {compile_mode!r}; valid: "
                              f"{', '.join(m for m in COMPILE_MODES if m)}")
        self.model = model.eval()
        self.precision = precision
        self.config: GAFConfig = model.config
        self.compiled = bool(compile)
        self.compile_seconds = 0.0
        dtype = precision.torch_dtype
        fn = model.forward if precision is Precision.FP32 else _anchors_fp32(model, dtype)
        if self.compiled:  # inductor options, not ``mode``: no CUDA graphs of its own
            autotune = compile_mode == "max-autotune"
            fn = torch.compile(fn, dynamic=False, options={
                "max_autotune": autotune, "coordinate_descent_tuning": autotune,
                "freezing": bool(freeze), "triton.cudagraphs": False})
        self._forward = fn
        self._seen: set[tuple[int, ...]] = set()

    @property
    def variant(self) -> str:
        """``torch`` or ``torch-compile`` (what bench tables and run records show)."""
        return "torch-compile" if self.compiled else "torch"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @staticmethod
    def _inputs(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        x = x.float()
        return x, torch.as_tensor(t, device=x.device).float().reshape(-1).expand(x.shape[0])

    @torch.no_grad()
    def features(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """The trunk's tokens ``f [M, L, D]`` (at the engine's dtype) for ``x [M,C,S,S]``,
        ``t [M] | scalar``, ``y [M]``. Runs eager, also in a compiled engine."""
        x, t = self._inputs(x, t)
        return self.model.features(x.to(self.precision.torch_dtype), t, y)

    @torch.no_grad()
    def anchors_from(self, f: Tensor, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """``(J, K)`` float32, each ``[M, C, S, S]``, from trunk tokens ``f [M, L, D]`` and
        the current ``x``, ``t`` (the same arithmetic as a whole call)."""
        x, t = self._inputs(x, t)
        if self.precision is Precision.FP32:
            return self.model.anchors_from(f, x, t, y)
        return _skip_fp32(self.model, f, x, t, y)

    @torch.no_grad()
    def __call__(self, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x, t = self._inputs(x, t)
        if not self.compiled or tuple(x.shape) in self._seen:
            return self._forward(x, t, y)
        # first call at this shape compiles (torch's FX-graph cache makes repeats cheap)
        t0 = time.perf_counter()
        out = self._forward(x, t, y)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        self.compile_seconds += time.perf_counter() - t0
        self._seen.add(tuple(x.shape))
        log.info("torch.compile for input %s took %.1f s", list(x.shape),
                 time.perf_counter() - t0)
        return out


def engine_from_model(model: GAF, precision: Precision,
                      options: dict[str, object] | None = None) -> TorchEngine:
    """Wrap an already built model (weights at any dtype) as a :class:`TorchEngine` at
    ``precision``; ``options`` as in :class:`LoadRequest` (keys :data:`OPTION_KEYS`)."""
    options = dict(options or {})
    unknown = set(options) - set(OPTION_KEYS)
    if unknown:
        raise ConfigError(f"unknown torch backend option(s) {sorted(unknown)}; valid: "
                          f"{', '.join(OPTION_KEYS)}")
    for key in ("compile", "freeze"):
        if not isinstance(options.get(key, False), bool):
            raise ConfigError(f"option {key} must be true or false, got {options[key]!r}")
    threads = check_threads(options.get("threads", 0))
    if threads:
        torch.set_num_threads(threads)
        log.info("torch backend: %d intra-op threads", threads)
    mode = options.get("compile_mode")
    return TorchEngine(model.to(precision.torch_dtype), precision,
                       compile=bool(options.get("compile", False)),
                       compile_mode=mode if mode is None else str(mode),
                       freeze=bool(options.get("freeze", False)))


def load_torch(req: LoadRequest) -> TorchEngine:
    """Load a checkpoint file or bundled model name into a :class:`TorchEngine`."""
    device = resolve_device(req.device)
    why = precision_support(device, req.precision)
    if why is not None:
        if req.precision is Precision.FP16 and device == "cpu":
            log.warning("fp16 on the CPU: %s", why)
        else:
            raise ConfigError(f"precision {req.precision.value} on {device}: {why}; "
                              f"available: {', '.join(available_precisions(device))}")
    model = load_model(req.artifact, num_heads=req.num_heads, use_ema=req.use_ema,
                       device=device, trust_pickle=req.trust_pickle,
                       dtype=req.precision.torch_dtype)
    return engine_from_model(model, req.precision, req.options)


def available_precisions(device: str) -> list[str]:
    """Precisions that run natively on ``device``."""
    return [p.value for p in Precision if precision_support(device, p) is None]


BACKENDS.add("torch", Backend("torch", "PyTorch eager or torch.compile (CPU or CUDA)",
                              load_torch))
