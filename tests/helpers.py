"""Helpers shared by test modules (import them from here, not from conftest or another test
module)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

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


def shared_dir(basetemp: Path, name: str, build: Callable[[Path], object]) -> Path:
    """``shared/NAME`` made once per test run by ``build(folder)`` (which creates ``folder``):
    under pytest-xdist in the run's root temp folder (the parent of each worker's basetemp,
    as the pytest-xdist docs show for session fixtures), so the first worker that needs it
    builds it under a file lock and the others wait and reuse it; without xdist in
    ``basetemp`` itself. Read-only for its users: a test that changes anything works on a
    copy (``shutil.copytree``). A build that fails leaves nothing marked done: the next user
    builds it again (and meets the same error)."""
    from filelock import FileLock  # a torch dependency

    root = basetemp.parent if os.environ.get("PYTEST_XDIST_WORKER") else basetemp
    shared = root / "shared"
    shared.mkdir(exist_ok=True)
    folder, done = shared / name, shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            if folder.exists():
                shutil.rmtree(folder)
            build(folder)
            done.touch()
    return folder
