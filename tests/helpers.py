"""Helpers shared by test modules (import them from here, not from conftest or another test
module)."""

from __future__ import annotations

import numpy as np
import torch


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Relative L2 error against a non-zero reference; NaN never passes (returns inf)."""
    expected = expected.double()
    if not bool(expected.abs().max() > 0):
        raise ValueError("the reference must not be all zeros")
    err = ((actual.double() - expected).norm() / expected.norm()).item()
    return err if err == err else float("inf")


def mask_images() -> dict[str, np.ndarray]:
    """Custom mask images (uint8 gray ``[H, W]``) whose gray levels survive a nearest resize
    to 8x8 and 16x16: ``two.png`` (2 regions, left | right) and ``three.png`` (3 bands)."""
    two = np.zeros((12, 12), np.uint8)
    two[:, 5:] = 255
    three = np.zeros((20, 10), np.uint8)
    three[7:14] = 90
    three[14:] = 180
    return {"two.png": two, "three.png": three}
