"""The TensorRT runtime's side of gaf-trt: which TensorRT versions it runs, whether TensorRT
and a GPU are here, TensorRT's log captured (never printed) and this machine's TensorRT version
and GPU (checked against a plan's before it is deserialised,
:func:`gaf_trt.enginedir.compat.check_plan_compatible`). The plan builder
(:mod:`gaf_trt.export.tensorrt`) uses the same helpers.
"""

from __future__ import annotations

import collections
import logging

from gaf_trt.errors import ConfigError

log = logging.getLogger(__name__)

#: The oldest TensorRT gaf-trt runs on: 10.9 has ``HardwareCompatibilityLevel.
#: SAME_COMPUTE_CAPABILITY``, ``ICudaEngine.device_memory_size_v2`` and
#: ``IExecutionContext.set_device_memory`` (user-managed activation memory shared by the
#: contexts of one plan), ``BuilderFlag.STRIP_PLAN`` and ``OnnxParserRefitter``.
MIN_TENSORRT = (10, 9)
#: Graphs exported at opset 23 hold ONNX ``Attention`` nodes, which the parser reads from 10.14.
MIN_TENSORRT_OPSET = {23: (10, 14)}


class TensorRTVersionError(ConfigError):
    """The installed TensorRT is older than gaf-trt needs."""


def version_tuple(version: str) -> tuple[int, int]:
    """``"10.13.0.35"`` -> ``(10, 13)`` (non-digits ignored)."""
    parts = []
    for p in str(version).split(".")[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def version_problem(version: str, opset: int | None = None) -> str | None:
    """Why TensorRT ``version`` cannot serve gaf-trt (or a graph of ``opset``), else None."""
    have = version_tuple(version)
    need = max(MIN_TENSORRT, MIN_TENSORRT_OPSET.get(int(opset or 0), (0, 0)))
    if have >= need:
        return None
    why = ("the parser reads opset-23 Attention nodes from TensorRT 10.14"
           if need > MIN_TENSORRT else "gaf-trt needs TensorRT >= 10.9 (SAME_COMPUTE_CAPABILITY,"
           " user-managed context memory, weight-stripped plans)")
    return (f"TensorRT {version} is too old: {why}; install tensorrt>="
            f"{need[0]}.{need[1]} (pip install 'gaf-trt[tensorrt]')")


def require_version(trt, opset: int | None = None) -> None:
    """Raise :class:`TensorRTVersionError` (one line) when the installed TensorRT is too old."""
    why = version_problem(str(getattr(trt, "__version__", "0")), opset)
    if why is not None:
        raise TensorRTVersionError(why)


def unavailable() -> str | None:
    """None when plans can be built and run here, else why not."""
    try:
        import tensorrt
    except ImportError:
        return "the tensorrt Python package is not installed"
    except Exception as err:  # noqa: BLE001 - broken installs raise OSError / RuntimeError
        return f"tensorrt fails to import ({str(err).splitlines()[0][:120]})"
    why = version_problem(str(getattr(tensorrt, "__version__", "0")))
    if why is not None:
        return why
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    return None


def trt_major(trt) -> int:
    return version_tuple(trt.__version__)[0]


def make_logger(trt, keep: int = 64):
    """A ``trt.ILogger`` that records TensorRT's messages instead of printing them.

    ``logger.errors`` holds the recent ERROR / INTERNAL_ERROR messages (newest last),
    ``logger.reason()`` the last of them as one line for a :class:`GAFError`; every message
    also goes to ``logging`` at DEBUG (WARNING for TensorRT's errors)."""
    sev = trt.ILogger.Severity

    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: collections.deque = collections.deque(maxlen=keep)
            self.errors: collections.deque = collections.deque(maxlen=keep)
            self.error_count = 0  # errors ever logged (the deque keeps the last ``keep``)

        def log(self, severity, msg) -> None:  # called by TensorRT, any thread
            text = " ".join(str(msg).split())
            self.messages.append((severity, text))
            if severity in (sev.ERROR, sev.INTERNAL_ERROR):
                self.errors.append(text)
                self.error_count += 1
                log.debug("TensorRT error: %s", text)
            else:
                log.debug("TensorRT: %s", text)

        def mark(self) -> int:
            """The error count now, for :meth:`reason` (errors logged after the mark)."""
            return self.error_count

        def reason(self, since: int = 0, limit: int = 240) -> str:
            """The last error logged (after the mark ``since``) as one line, or ``"no
            TensorRT error was logged"``."""
            if self.error_count <= since or not self.errors:
                return "no TensorRT error was logged"
            text = self.errors[-1]
            return text if len(text) <= limit else text[:limit - 1] + "…"

    return CapturingLogger()


def runtime_info(device_index: int | None = None):
    """TensorRT version, GPU name and compute capability of this machine."""
    import tensorrt as trt
    import torch

    from gaf_trt.enginedir.compat import RuntimeInfo

    idx = torch.cuda.current_device() if device_index is None else device_index
    major, minor = torch.cuda.get_device_capability(idx)
    return RuntimeInfo(str(trt.__version__), torch.cuda.get_device_name(idx), f"{major}.{minor}")
