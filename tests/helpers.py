"""Helpers shared by test modules (import them from here, not from conftest or another test
module)."""

from __future__ import annotations

import torch


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Relative L2 error against a non-zero reference; NaN never passes (returns inf)."""
    expected = expected.double()
    if not bool(expected.abs().max() > 0):
        raise ValueError("the reference must not be all zeros")
    err = ((actual.double() - expected).norm() / expected.norm()).item()
    return err if err == err else float("inf")
