"""Turn samples into files a person can look at: PNG grids, strips, GIFs.

Images are tensors in ``[-1, 1]``, ``[B, C, H, W]`` with ``C`` 1 or 3. Tiny images are
upscaled (nearest) so that they are visible.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gaf_trt.io.files import atomic_write

MIN_DISPLAY = 128
PAD = 2

#: Distinct colours for mask regions (RGB in [0, 1]).
PALETTE = torch.tensor([
    [0.90, 0.30, 0.24], [0.20, 0.60, 0.86], [0.18, 0.80, 0.44], [0.95, 0.77, 0.06],
    [0.61, 0.35, 0.71], [0.90, 0.49, 0.13], [0.10, 0.74, 0.61], [0.93, 0.44, 0.64],
])


def display_scale(size: int, min_size: int = MIN_DISPLAY) -> int:
    """Integer upscale factor that makes an image at least ``min_size`` pixels."""
    return max(1, -(-min_size // size))


def to_rgb01(images: Tensor) -> Tensor:
    """``[B, C, H, W]`` in ``[-1, 1]`` -> ``[B, 3, H, W]`` in ``[0, 1]``."""
    x = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)
    x = torch.nan_to_num(x, nan=0.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        x = x[:, :3]
    return x


def upscale(images01: Tensor, factor: int) -> Tensor:
    return images01 if factor == 1 else F.interpolate(images01, scale_factor=factor, mode="nearest")


def mask_visual(masks: Tensor, size: int) -> Tensor:
    """Soft masks ``[N, 1, h, w]`` -> colour picture ``[3, size, size]`` in ``[0, 1]``."""
    colours = PALETTE[torch.arange(masks.shape[0]) % len(PALETTE)]  # [N, 3]
    m = masks.detach().float().cpu()
    vis = (m * colours.view(-1, 3, 1, 1)).sum(0)  # [3, h, w]
    return F.interpolate(vis.unsqueeze(0), size=(size, size), mode="nearest")[0].clamp(0, 1)


def grid(images01: Tensor, nrow: int, pad: int = PAD, fill: float = 1.0) -> Tensor:
    """Tile ``[B, 3, H, W]`` into ``[3, rows*(H+pad)+pad, nrow*(W+pad)+pad]``."""
    b, c, h, w = images01.shape
    nrow = max(1, min(nrow, b))
    rows = -(-b // nrow)
    out = torch.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), fill)
    for i in range(b):
        r, col = divmod(i, nrow)
        out[:, pad + r * (h + pad): pad + r * (h + pad) + h,
            pad + col * (w + pad): pad + col * (w + pad) + w] = images01[i]
    return out


def to_uint8(picture01: Tensor) -> np.ndarray:
    """``[3, H, W]`` in ``[0, 1]`` -> ``[H, W, 3]`` uint8."""
    return (picture01.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)


def save_png(picture01: Tensor, path: str | os.PathLike[str]) -> Path:
    from PIL import Image

    arr = to_uint8(picture01)
    return atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG"))


def save_gif(frames01: Sequence[Tensor], path: str | os.PathLike[str], fps: float = 8.0) -> Path:
    """Frames ``[3, H, W]`` in ``[0, 1]`` -> looping GIF (last frame held a little longer)."""
    import imageio.v2 as imageio

    arrays = [to_uint8(f) for f in frames01]
    durations = [1.0 / fps] * (len(arrays) - 1) + [1.0]
    return atomic_write(path, lambda tmp: imageio.mimsave(tmp, arrays, format="GIF",
                                                          duration=durations, loop=0))


def strip(parts01: Sequence[Tensor], pad: int = PAD) -> Tensor:
    """Concatenate same-size pictures ``[3, H, W]`` side by side with white gaps."""
    return grid(torch.stack(list(parts01)), nrow=len(parts01), pad=pad)


def stack_rows(rows01: Sequence[Tensor], pad: int = PAD) -> Tensor:
    """Stack pictures of equal width vertically (pads narrower ones on the right)."""
    width = max(r.shape[-1] for r in rows01)
    padded = [torch.cat([r, torch.ones(3, r.shape[1], width - r.shape[-1])], dim=-1)
              if r.shape[-1] < width else r for r in rows01]
    gap = torch.ones(3, pad, width)
    out = [padded[0]]
    for r in padded[1:]:
        out += [gap, r]
    return torch.cat(out, dim=1)


@contextmanager
def open_image(path: str | os.PathLike[str]) -> Iterator[Any]:
    """``PIL.Image.open(path)`` without Pillow's ``DecompressionBombWarning`` (images of
    89-178 M pixels): every reader of gaf-trt applies its own, lower pixel cap and refuses
    larger images in its one error line, so the warning would only add a second line.
    Images over Pillow's hard limit still raise ``DecompressionBombError``."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(path)
    with im:
        yield im
