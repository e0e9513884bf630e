"""Spatial masks on the latent grid (docs/design.md §3): presets, custom images, AFHQ face regions,
and softening.

:func:`build` returns softened masks ``[N, 1, H, W]`` that sum to 1 at every covered pixel.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gaf_trt.errors import ConfigError
from gaf_trt.registry import Registry

DEFAULT_SIGMA = 1.25

#: A mask builder: ``(H, W) -> hard masks [N, H, W]`` (float 0/1) and region names.
HardMasks = tuple[Tensor, list[str]]


@dataclass(frozen=True)
class MaskPreset:
    """One registered mask layout."""

    name: str
    regions: int | None  # fixed region count, None when it depends on the input
    describe: str
    build: Callable[..., HardMasks]
    options: frozenset[str] = frozenset()  # keyword options build() takes: image, regions

    def takes(self, option: str) -> bool:
        return option in self.options


#: The command-line flag of each mask option (for error messages).
OPTION_FLAGS = {"image": "--mask-img", "regions": "--regions"}
#: Softening above this is refused: the masks are uniform long before, and the box filters'
#: cost grows with sigma³.
MAX_SIGMA = 16.0
#: A custom mask image may have at most this many pixels (decompression bombs are refused).
MAX_MASK_PIXELS = 64_000_000


MASKS: Registry[MaskPreset] = Registry("mask type")

AFHQ_REGIONS = ("ears", "eyes", "nose", "mouth")


def _bands(n: int, length: int) -> list[tuple[int, int]]:
    return [(math.floor(length * i / n), math.floor(length * (i + 1) / n)) for i in range(n)]


def _horizontal(n: int) -> Callable[[int, int], HardMasks]:
    def build(h: int, w: int) -> HardMasks:
        out = torch.zeros(n, h, w)
        for i, (a, b) in enumerate(_bands(n, h)):
            out[i, a:b, :] = 1
        names = ["top", "bottom"] if n == 2 else [f"band{i}" for i in range(n)]
        return out, names
    return build


def _vertical(n: int) -> Callable[[int, int], HardMasks]:
    def build(h: int, w: int) -> HardMasks:
        out = torch.zeros(n, h, w)
        for i, (a, b) in enumerate(_bands(n, w)):
            out[i, :, a:b] = 1
        names = ["left", "right"] if n == 2 else [f"column{i}" for i in range(n)]
        return out, names
    return build


def _quadrant(h: int, w: int) -> HardMasks:
    out = torch.zeros(4, h, w)
    hh, hw = h // 2, w // 2
    out[0, :hh, :hw] = 1
    out[1, :hh, hw:] = 1
    out[2, hh:, :hw] = 1
    out[3, hh:, hw:] = 1
    return out, ["top-left", "top-right", "bottom-left", "bottom-right"]


def _thresholds(field: Tensor, cuts: Sequence[float], prefix: str) -> HardMasks:
    """Regions ``field < c0``, ``c0 <= field < c1``, ..., ``field >= c_last``."""
    out, lower = [], torch.zeros_like(field, dtype=torch.bool)
    for c in cuts:
        inside = field < c
        out.append((inside & ~lower).float())
        lower = lower | inside
    out.append((~lower).float())
    return torch.stack(out), [f"{prefix}{i}" for i in range(len(out))]


def _radial(cuts: Sequence[float]) -> Callable[[int, int], HardMasks]:
    def build(h: int, w: int) -> HardMasks:
        u = torch.linspace(-1, 1, h).view(h, 1)
        v = torch.linspace(-1, 1, w).view(1, w)
        return _thresholds(torch.sqrt(u * u + v * v), cuts, "ring")
    return build


def _diagonal(cuts: Sequence[float]) -> Callable[[int, int], HardMasks]:
    def build(h: int, w: int) -> HardMasks:
        s = torch.linspace(0, 1, h).view(h, 1) + torch.linspace(0, 1, w).view(1, w)
        return _thresholds(s, cuts, "diagonal")
    return build


def _read_gray(path: str, h: int, w: int) -> Tensor:
    """Gray levels of an image resized (nearest) to ``h x w`` as int64 ``[h, w]``; 8-bit,
    16-bit and 32-bit images keep their full range (no clipping to 8 bits)."""
    from PIL import Image, UnidentifiedImageError

    from gaf_trt.io.images import open_image

    try:
        with open_image(path) as im:
            if im.width * im.height > MAX_MASK_PIXELS:
                raise ConfigError(f"mask image {path} is {im.width}x{im.height} pixels; at most "
                                  f"{MAX_MASK_PIXELS:,} are read (it is resized to {h}x{w} "
                                  "anyway): give a smaller image")
            if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                im = im.convert("I")  # 16/32-bit gray, full range
            elif im.mode == "F":
                raise ConfigError(f"mask image {path} has float pixels; give an 8- or 16-bit "
                                  "grayscale image (one region per gray level)")
            else:
                im = im.convert("L")
            gray = im.resize((w, h), Image.NEAREST)
            return torch.from_numpy(np.asarray(gray, dtype=np.int64).copy())
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise ConfigError(f"mask image {path} is unreadable: {err}") from None


def gray_levels(gray: np.ndarray, h: int, w: int) -> Tensor:
    """Gray levels of an 8-bit image given as an array ``[H0, W0]`` (uint8), resized
    (nearest) to ``h x w`` exactly as a mask image file is: int64 ``[h, w]``."""
    from PIL import Image

    if not isinstance(gray, np.ndarray) or gray.dtype != np.uint8 or gray.ndim != 2 \
            or 0 in gray.shape:
        raise ConfigError(f"a mask image array must be uint8 [H, W], got "
                          f"{getattr(gray, 'dtype', type(gray).__name__)} "
                          f"{list(getattr(gray, 'shape', []))}")
    if gray.size > MAX_MASK_PIXELS:
        raise ConfigError(f"mask image is {gray.shape[1]}x{gray.shape[0]} pixels; at most "
                          f"{MAX_MASK_PIXELS:,} are read: give a smaller image")
    resized = Image.fromarray(np.ascontiguousarray(gray), mode="L").resize((w, h), Image.NEAREST)
    return torch.from_numpy(np.asarray(resized, dtype=np.int64).copy())


MaskImage = str | os.PathLike | np.ndarray  # a file, or an 8-bit gray array [H, W]


def _custom(h: int, w: int, image: MaskImage | None = None) -> HardMasks:
    """One region per distinct gray value (ascending) of an image (a file, or a uint8 array
    ``[H0, W0]``) resized (nearest) to H×W."""
    if image is None:
        raise ConfigError("mask type 'custom' needs a mask image (--mask-img)")
    if isinstance(image, np.ndarray):
        values = gray_levels(image, h, w)
    else:
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise ConfigError(f"mask image not found: {path}")
        values = _read_gray(path, h, w)
    levels = torch.unique(values)  # ascending
    return torch.stack([(values == lv).float() for lv in levels]), [f"gray{int(v)}" for v in levels]


def _afhq_box(h: int, w: int, rows: tuple[float, float], cols: Sequence[tuple[float, float]]) -> Tensor:
    m = torch.zeros(h, w)
    r0, r1 = int(rows[0] * h), int(rows[1] * h)
    for c0, c1 in cols:
        m[r0:r1, int(c0 * w):int(c1 * w)] = 1
    return m


def _afhq_region(name: str, h: int, w: int) -> Tensor:
    if name == "ears":
        return _afhq_box(h, w, (0.0, 0.3), [(0.0, 0.3), (0.7, 1.0)])
    if name == "eyes":
        return _afhq_box(h, w, (0.2, 0.45), [(0.15, 0.85)])
    if name == "nose":
        return _afhq_box(h, w, (0.4, 0.65), [(0.3, 0.7)])
    return _afhq_box(h, w, (0.65, 0.85), [(0.25, 0.75)])  # mouth


def _afhq(h: int, w: int, regions: Sequence[str] | None = None) -> HardMasks:
    """Face regions; with 1–2 regions the last mask is the rest ``clamp(1 - Σ, 0, 1)``."""
    if not regions:
        raise ConfigError(f"mask type 'afhq' needs --regions (from {', '.join(AFHQ_REGIONS)})")
    bad = [r for r in regions if r not in AFHQ_REGIONS]
    if bad:
        raise ConfigError(f"unknown AFHQ region(s) {', '.join(map(repr, bad))}; "
                          f"valid: {', '.join(AFHQ_REGIONS)}")
    masks = [_afhq_region(r, h, w) for r in regions]
    names = list(regions)
    if len(regions) <= 2:
        masks.append((1 - torch.stack(masks).sum(0)).clamp(0, 1))
        names.append("rest")
    return torch.stack(masks), names


for _n, _k in ((2, "_2"), (3, ""), (4, "_4")):
    MASKS.add(f"horizontal{_k}", MaskPreset(f"horizontal{_k}", _n, f"{_n} horizontal bands",
                                            _horizontal(_n)))
    MASKS.add(f"vertical{_k}", MaskPreset(f"vertical{_k}", _n, f"{_n} vertical bands",
                                          _vertical(_n)))
MASKS.add("quadrant", MaskPreset("quadrant", 4, "4 quadrants TL, TR, BL, BR", _quadrant))
MASKS.add("radial_2", MaskPreset("radial_2", 2, "disc d<0.5 and the rest", _radial([0.5])))
MASKS.add("radial", MaskPreset("radial", 3, "rings at d 0.45, 0.85", _radial([0.45, 0.85])))
MASKS.add("radial_4", MaskPreset("radial_4", 4, "rings at d 0.35, 0.6, 0.85",
                                 _radial([0.35, 0.6, 0.85])))
MASKS.add("diagonal_2", MaskPreset("diagonal_2", 2, "split along the anti-diagonal",
                                   _diagonal([1.0])))
MASKS.add("diagonal", MaskPreset("diagonal", 3, "3 diagonal bands", _diagonal([0.67, 1.33])))
MASKS.add("custom", MaskPreset("custom", None, "one region per gray level of --mask-img "
                               "(8 or 16 bit)", _custom, frozenset({"image"})))
MASKS.add("afhq", MaskPreset("afhq", None, "face regions (--regions ears eyes nose mouth); "
                             "1-2 regions add a 'rest'", _afhq, frozenset({"regions"})))


def soften(masks: Tensor, sigma: float = DEFAULT_SIGMA) -> Tensor:
    """Blur ``[N, H, W]`` (or ``[N, 1, H, W]``) masks with repeated box filters and
    renormalise them to sum to 1. ``sigma = 0`` keeps them hard (renormalised only).
    Returns ``[N, 1, H, W]``."""
    if not math.isfinite(sigma) or not 0 <= sigma <= MAX_SIGMA:
        raise ConfigError(f"sigma must be a number in [0, {MAX_SIGMA:g}], got {sigma:g}")
    m = masks.float()
    if m.dim() == 3:
        m = m.unsqueeze(1)  # [N, 1, H, W]
    if sigma > 0:
        k = max(3, 2 * round(2 * sigma) + 1)
        reps = max(1, round(sigma))
        for _ in range(reps):
            m = F.avg_pool2d(m, kernel_size=k, stride=1, padding=k // 2, count_include_pad=True)
    return m / m.sum(dim=0, keepdim=True).clamp_min(1e-8)


def presets_taking(option: str) -> list[str]:
    """Names of the mask presets that take ``option`` (``image`` or ``regions``)."""
    return [n for n in MASKS.names() if MASKS.get(n).takes(option)]


def hard_masks(name: str, height: int, width: int, *, image: MaskImage | None = None,
               regions: Sequence[str] | None = None) -> HardMasks:
    """The unsoftened masks ``[N, H, W]`` of a preset and their region names."""
    preset = MASKS.get(name)
    if height < 1 or width < 1:
        raise ConfigError(f"mask size must be positive, got {height}x{width}")
    given = {k: v for k, v in (("image", image), ("regions", regions))
             if v is not None and (isinstance(v, np.ndarray) or v)}
    for option in given:
        if not preset.takes(option):
            raise ConfigError(f"{OPTION_FLAGS[option]} is only used with mask type "
                              f"{', '.join(map(repr, presets_taking(option)))}, not {name!r}")
    return preset.build(height, width, **given)


def build(name: str, height: int, width: int, *, sigma: float = DEFAULT_SIGMA,
          image: MaskImage | None = None,
          regions: Sequence[str] | None = None) -> Tensor:
    """Softened masks ``[N, 1, H, W]`` of preset ``name`` on an ``H x W`` grid."""
    masks, _ = hard_masks(name, height, width, image=image, regions=regions)
    return soften(masks, sigma)


def region_count(name: str, *, image: str | os.PathLike[str] | None = None,
                 regions: Sequence[str] | None = None, height: int = 64, width: int = 64) -> int:
    """How many regions (so classes) a mask layout has."""
    preset = MASKS.get(name)
    if preset.regions is not None:
        return preset.regions
    return hard_masks(name, height, width, image=image, regions=regions)[0].shape[0]


def list_masks() -> list[tuple[str, str]]:
    """``(name, description)`` of every registered mask type."""
    return [(n, MASKS.get(n).describe) for n in MASKS.names()]


__all__ = ["build", "soften", "gray_levels", "hard_masks", "region_count", "list_masks", "presets_taking",
           "MASKS", "AFHQ_REGIONS", "DEFAULT_SIGMA", "MAX_SIGMA", "OPTION_FLAGS"]
