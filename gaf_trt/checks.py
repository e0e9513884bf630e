"""Bounds checks for values that come from users (CLI options, request fields, JSON files).

Each raises :class:`~gaf_trt.errors.ConfigError` with one line naming the value and what is
allowed, and returns the value as a plain Python number. ``bool`` is never a number here, and
numpy scalars (``np.int32(8)``, ``np.float32(1.0)``) count as the Python numbers they hold, so
an in-process caller and a decoded request validate alike.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable

from gaf_trt.errors import ConfigError


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def int_in(name: str, value: object, lo: int, hi: int) -> int:
    """``value`` as an ``int`` in ``lo..hi``; else "NAME must be an integer in LO..HI"."""
    if not _is_int(value) or not lo <= value <= hi:  # type: ignore[operator]
        raise ConfigError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
    return int(value)  # type: ignore[call-overload]


def positive_int(name: str, value: object, hi: int = 1 << 20) -> int:
    """``value`` as an ``int`` in ``1..hi``."""
    return int_in(name, value, 1, hi)


def number_in(name: str, value: object, lo: float = -math.inf, hi: float = math.inf) -> float:
    """``value`` as a finite ``float`` in ``[lo, hi]``; NaN and infinities are refused."""
    if not _is_number(value) or not math.isfinite(value) \
            or not lo <= value <= hi:  # type: ignore[arg-type,operator]
        where = "a finite number" if (lo, hi) == (-math.inf, math.inf) else f"in [{lo:g}, {hi:g}]"
        raise ConfigError(f"{name} must be {where}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def numbers_list(name: str, values: object) -> list[float]:
    """``values`` (a list or tuple of finite numbers) as a list of ``float``."""
    if not isinstance(values, (list, tuple)) or not all(
            _is_number(v) and math.isfinite(v) for v in values):  # type: ignore[arg-type]
        raise ConfigError(f"{name} must be a list of finite numbers, got {values!r}")
    return [float(v) for v in values]


def choice(name: str, value: object, valid: Iterable[str]) -> str:
    """``value`` when it is one of ``valid``; else "unknown NAME 'x'; valid: a, b"."""
    valid = tuple(valid)
    if not isinstance(value, str) or value not in valid:
        raise ConfigError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    return value


#: A plain integer as users type it: an optional minus sign, ASCII digits only.
_INT_TEXT = re.compile(r"-?[0-9]+")
#: Digits accepted in an integer given as text (it fits 64 bits, beyond any id or index; Python's
#: ``int()`` refuses strings of over 4,300 digits with an error of its own).
MAX_INT_DIGITS = 18


def int_text(name: str, text: str) -> int | None:
    """``text`` as an ``int`` when it is a plain ASCII integer (``-?[0-9]+``), else ``None``
    (so a caller can try other readings, e.g. a class name). ``--3``, ``+3``, ``3.0`` and
    non-ASCII digits (``³``, ``٣``) are not integers; one of over :data:`MAX_INT_DIGITS`
    digits is refused: "NAME has N digits; at most 18 are accepted" (so it fits 64 bits)."""
    s = text.strip()
    if not _INT_TEXT.fullmatch(s):
        return None
    if len(s.lstrip("-")) > MAX_INT_DIGITS:
        raise ConfigError(f"{name} {s[:20]}... has {len(s.lstrip('-')):,} digits; at most "
                          f"{MAX_INT_DIGITS} are accepted")
    return int(s)


__all__ = ["choice", "int_in", "int_text", "number_in", "numbers_list", "positive_int"]
