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


def to_unit01(images: Tensor) -> Tensor:
    """``[B, C, H, W]`` in ``[-1, 1]`` -> ``[B, C, H, W]`` in ``[0, 1]`` on the CPU (values
    outside clamped, NaN -> 0)."""
    x = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)
    return torch.nan_to_num(x, nan=0.0)


def to_rgb01(images: Tensor) -> Tensor:
    """``[B, C, H, W]`` in ``[-1, 1]`` -> ``[B, 3, H, W]`` in ``[0, 1]``."""
    x = to_unit01(images)
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


def round_uint8(x01: np.ndarray) -> np.ndarray:
    """Values in ``[0, 1]`` (any shape) -> uint8 ``0..255``, rounded half up: the one
    rounding of every picture gaf-trt writes (PNGs, GIFs, datasets) or serves."""
    return (x01 * 255 + 0.5).clip(0, 255).astype(np.uint8)


def to_uint8(picture01: Tensor) -> np.ndarray:
    """``[3, H, W]`` in ``[0, 1]`` -> ``[H, W, 3]`` uint8."""
    return round_uint8(picture01.permute(1, 2, 0).numpy())


def to_uint8_hwc(images: Tensor, *, rgb: bool = True) -> np.ndarray:
    """``[B, C, H, W]`` in ``[-1, 1]`` -> ``[B, H, W, 3]`` uint8 (grey images repeated), or
    with ``rgb=False`` ``[B, H, W, C]`` (the channels as they are)."""
    x = to_rgb01(images) if rgb else to_unit01(images)
    return round_uint8(x.permute(0, 2, 3, 1).numpy())


def save_png(picture01: Tensor, path: str | os.PathLike[str]) -> Path:
    from PIL import Image

    arr = to_uint8(picture01)
    return atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG"))


#: GIF frame rate of every trajectory GIF: 4 frames/s (250 ms a frame), the last frame held
#: 1 s, so each step can be looked at.
GIF_FPS = 4.0


def save_gif(frames01: Sequence[Tensor], path: str | os.PathLike[str],
             fps: float = GIF_FPS) -> Path:
    """Frames ``[3, H, W]`` in ``[0, 1]`` -> looping GIF, ``1000/fps`` ms a frame, the last
    one held 1 s. Written with Pillow, whose ``duration`` is in milliseconds (imageio's v2
    API took seconds in some releases and milliseconds in others: 0 ms frames)."""
    from PIL import Image

    images = [Image.fromarray(to_uint8(f)) for f in frames01]
    ms = [max(20, round(1000 / fps))] * (len(images) - 1) + [1000]

    def write(tmp: Path) -> None:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=ms if len(images) > 1 else ms[0], loop=0, disposal=1)

    return atomic_write(path, write)


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


#: Largest input image :func:`read_image` reads (pixels before cropping and resizing).
MAX_IMAGE_PIXELS = 1 << 26


def read_image(path: str | os.PathLike[str], channels: int, side: int) -> Tensor:
    """An image file -> ``[1, channels, side, side]`` in ``[-1, 1]``: centre-cropped to a
    square and resized (bicubic, antialiased). ``channels`` is 1 (grayscale) or 3 (RGB);
    16-bit images keep their full range. Images over :data:`MAX_IMAGE_PIXELS` are refused
    (:class:`~gaf_trt.errors.ConfigError`, as is an unreadable file)."""
    from PIL import Image

    from gaf_trt.errors import ConfigError

    if channels not in (1, 3):
        raise ConfigError(f"only grayscale or RGB images are read; this model has {channels} "
                          "pixel channels")
    try:
        with open_image(path) as im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ConfigError(f"image {path} is {w}x{h} pixels; at most "
                                  f"{MAX_IMAGE_PIXELS:,} pixels are read")
            m = min(w, h)
            left, top = (w - m) // 2, (h - m) // 2
            arr = _pixels01(im.crop((left, top, left + m, top + m)), channels)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ConfigError(f"cannot read image {path}: {reason.splitlines()[0][:160]}") from None
    x = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).float()  # [1, C, m, m] in [0, 1]
    x = F.interpolate(x, size=(side, side), mode="bicubic", antialias=True, align_corners=False)
    return (x.clamp(0, 1) * 2 - 1).contiguous()


def _pixels01(im: Any, channels: int) -> np.ndarray:
    """A PIL image -> ``[H, W, channels]`` float32 array in ``[0, 1]`` (16-bit aware)."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float64)
        scale = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        a = np.clip(a / scale, 0, 1)[..., None]
        return np.repeat(a, channels, axis=2).astype(np.float32)
    a = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
    return a[..., None] if a.ndim == 2 else a


def fit_long_side(picture01: Tensor, size: int | None) -> Tensor:
    """Resize ``[3, H, W]`` so that its long side is ``size`` (nearest when enlarging, area
    averaging when shrinking); ``None`` leaves it as is."""
    if size is None:
        return picture01
    h, w = picture01.shape[-2:]
    scale = size / max(h, w)
    new = (max(1, round(h * scale)), max(1, round(w * scale)))
    mode = "nearest" if scale >= 1 else "area"
    return F.interpolate(picture01.unsqueeze(0), size=new, mode=mode)[0].clamp(0, 1)


def tile_cells(cells01: Tensor, nrow: int, size: int | None) -> Tensor:
    """Tile ``[B, 3, h, w]`` (``[0, 1]``) into a picture ``[3, H, W]``: cells upscaled to at
    least :data:`MIN_DISPLAY` px or, with ``size``, so that the long side is ``size`` px."""
    h = cells01.shape[-2]
    if size is None:
        return grid(upscale(cells01, display_scale(h)), nrow)
    rows = -(-cells01.shape[0] // nrow)
    native = max(rows, nrow) * (h + PAD)
    factor = max(1, -(-size // native))
    return fit_long_side(grid(upscale(cells01, factor), nrow), size)


# --------------------------------------------------------------------------- labels
#
# Pictures that explain themselves: column headers over strips, a legend on the mask tile,
# a weight panel for weighted blends, row labels in summaries, captions under frames. Text
# is drawn with Pillow's bundled font (FreeType, scalable) when this Pillow has one, else
# its bitmap font enlarged by an integer factor (nearest): legible either way, no download.

INK = (0, 0, 0)
TEXT_PX = 14  # text height on a 128-px tile; scaled with the tile size


def text_px(tile: int) -> int:
    """Text height for tiles ``tile`` pixels wide (14 px at 128 px, at least 10)."""
    return max(10, round(TEXT_PX * tile / 128))


def _font(px: int) -> tuple[Any, int]:
    """``(font, enlarge)``: a ``px``-pixel FreeType font (enlarge 1), or the bitmap default
    font and the integer factor to enlarge what it draws."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=px), 1
    except (TypeError, ImportError, OSError, AttributeError):  # Pillow < 10.1 / no FreeType
        return ImageFont.load_default(), max(1, round(px / 11))


def draw_text(canvas01: Tensor, lines: Sequence[tuple[str, tuple[int, int, int]]], *,
              px: int, xy: tuple[int, int] = (3, 2), center: bool = False) -> Tensor:
    """Draw ``(text, rgb)`` lines onto a copy of ``canvas01 [3, H, W]`` (top-left at ``xy``,
    or centred horizontally), ``px`` pixels high each, anti-aliased over the canvas; text
    that does not fit is cut at the picture's edge."""
    from PIL import Image, ImageDraw

    font, enlarge = _font(px)
    h, w = canvas01.shape[-2:]
    small = (-(-w // enlarge), -(-h // enlarge))
    out = canvas01.clone()
    x0, y = xy[0] // enlarge, xy[1] // enlarge
    step = (px + max(2, px // 4)) // enlarge
    for text, rgb in lines:
        cover = Image.new("L", small, 0)  # the text's coverage, 0..255
        draw = ImageDraw.Draw(cover)
        x = x0
        if center:
            box = draw.textbbox((0, 0), text, font=font)
            x = max(0, (small[0] - (box[2] - box[0])) // 2 - box[0])
        draw.text((x, y), text, font=font, fill=255)
        if enlarge > 1:
            cover = cover.resize((small[0] * enlarge, small[1] * enlarge), Image.NEAREST)
        a = torch.from_numpy(np.asarray(cover, dtype=np.float32)[:h, :w] / 255.0)
        ink = torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1) / 255.0
        out = out * (1 - a) + ink * a
        y += step
    return out


def blank(h: int, w: int) -> Tensor:
    """A white picture ``[3, h, w]``."""
    return torch.ones(3, h, w)


def header_band(width: int, labels: Sequence[tuple[str, tuple[int, int, int]] | str],
                px: int) -> Tensor:
    """A white band ``[3, h, width]`` with ``labels`` centred in ``len(labels)`` equal column
    slots. A label is ``text`` (black) or ``(text, rgb)``."""
    n = max(1, len(labels))
    band = blank(px + 2 * max(2, px // 4), width)
    for i, lab in enumerate(labels):
        text, rgb = (lab, INK) if isinstance(lab, str) else lab
        lo, hi = round(i * width / n), round((i + 1) * width / n)
        band[:, :, lo:hi] = draw_text(band[:, :, lo:hi], [(text, rgb)], px=px,
                                      xy=(0, max(2, px // 4)), center=True)
    return band


def with_header(picture01: Tensor, labels: Sequence[tuple[str, tuple[int, int, int]] | str],
                px: int, *, below: bool = False) -> Tensor:
    """``picture01 [3, H, W]`` under a :func:`header_band` of ``labels`` over its columns (the
    columns of a :func:`grid` / :func:`strip`): ``[3, h + H, W]`` (the band under the picture
    with ``below``)."""
    band = header_band(picture01.shape[-1], labels, px)
    return torch.cat([picture01, band] if below else [band, picture01], dim=1)


def column_px(picture01: Tensor, columns: int) -> int:
    """Text height for labels over ``columns`` equal columns of ``picture01``."""
    return text_px(max(1, picture01.shape[-1] // max(1, columns)))


def with_row_labels(picture01: Tensor, labels: Sequence[str], px: int,
                    width: int | None = None, top: int = 0) -> Tensor:
    """``picture01 [3, H, W]`` with a white column on its left holding ``labels`` centred
    vertically in ``len(labels)`` equal row slots below its first ``top`` rows (a header
    band): ``[3, H, w + W]``."""
    h = picture01.shape[-2] - top
    n = max(1, len(labels))
    width = width or max(px * 3, max((len(t) for t in labels), default=1) * px * 6 // 10 + 8)
    col = blank(h + top, width)
    for i, text in enumerate(labels):
        lo, hi = top + round(i * h / n), top + round((i + 1) * h / n)
        y = max(0, (hi - lo - px) // 2)
        col[:, lo:hi] = draw_text(col[:, lo:hi], [(text, INK)], px=px, xy=(3, y))
    return torch.cat([col, picture01], dim=2)


def labelled_strip(parts01: Sequence[Tensor], labels: Sequence[tuple[str, tuple[int, int, int]]],
                   pad: int = PAD) -> Tensor:
    """:func:`strip` of ``parts01`` under a header with one label per part. The tiles keep
    their pixels and spacing (the header band only sits above them)."""
    return with_header(strip(parts01, pad), labels, text_px(parts01[0].shape[-1]))


def region_colour(i: int) -> tuple[int, int, int]:
    """The 0-255 RGB of mask region ``i`` in :func:`mask_visual`, darkened for text."""
    rgb = PALETTE[i % len(PALETTE)] * 0.8
    return tuple(int(v * 255) for v in rgb.tolist())  # type: ignore[return-value]


def mask_legend(masks: Tensor, size: int, labels: Sequence[str]) -> Tensor:
    """``[3, size, size]``: :func:`mask_visual` (whole, shrunk to a centred square) above a
    legend of each region's colour swatch and ``labels[i]`` (its class, and its weight when
    weighted); one column of entries, two when there are more than fit in one."""
    px = text_px(size)
    line = px + max(2, px // 4)
    n = len(labels)
    max_rows = max(1, (size * 2 // 5) // line)
    cols = 1 if n <= max_rows else 2
    rows = min(max_rows, -(-n // cols))
    band_h = rows * line + 4
    side = size - band_h
    vis = mask_visual(masks, side)
    top = blank(side, size)
    left = (size - side) // 2
    top[:, :, left:left + side] = vis
    band = blank(band_h, size)
    swatch = max(4, px - 4)
    col_w = size // cols
    fits = rows * cols
    for i in range(min(n, fits)):
        r, c = i % rows, i // rows
        x, y = 3 + c * col_w, 2 + r * line
        band[:, y + (px - swatch) // 2 + 1: y + (px - swatch) // 2 + 1 + swatch,
             x:x + swatch] = PALETTE[i % len(PALETTE)].view(3, 1, 1)
        text = labels[i] if not (i == fits - 1 and n > fits) else f"+{n - fits + 1} more"
        band[:, :, x + swatch + 3:x + col_w] = draw_text(
            band[:, :, x + swatch + 3:x + col_w], [(text, INK)], px=px, xy=(0, y))
    return torch.cat([top, band], dim=1)


def weight_panel(classes: Sequence[str], weights: Sequence[float], size: int,
                 title: str) -> Tensor:
    """A ``[3, size, size]`` panel for a weighted blend: ``title``, then one bar per class,
    its length the weight's share of the largest |weight|, labelled ``class: weight``."""
    px = text_px(size)
    line = px + max(2, px // 4)
    panel = draw_text(blank(size, size), [(title, INK)], px=px)
    top = 2 + line + 2
    room = max(1, (size - top) // (2 * line))
    peak = max((abs(w) for w in weights), default=1.0) or 1.0
    for i, (name, wt) in enumerate(list(zip(classes, weights))[:room]):
        y = top + i * 2 * line
        panel = draw_text(panel, [(f"{name}: {wt:.3g}", INK)], px=px, xy=(3, y))
        length = max(1, int((size - 8) * abs(wt) / peak))
        colour = PALETTE[i % len(PALETTE)].view(3, 1, 1)
        panel[:, y + line: y + line + max(3, px // 2), 3:3 + length] = colour
    return panel


def label_tile(lines: Sequence[str], size: int) -> Tensor:
    """A white ``[3, size, size]`` tile with ``lines`` of text (a summary row's label)."""
    return draw_text(blank(size, size), [(s, INK) for s in lines], px=text_px(size),
                     xy=(3, 4))


def caption(picture01: Tensor, text: str, px: int | None = None) -> Tensor:
    """``picture01 [3, H, W]`` with a white caption band under it (for GIF frames)."""
    w = picture01.shape[-1]
    px = px or text_px(min(w, 128))
    band = draw_text(blank(px + 6, w), [(text, INK)], px=px, xy=(3, 3))
    return torch.cat([picture01, band], dim=1)


def grid_uint8(tiles: np.ndarray, nrow: int, pad: int = PAD) -> np.ndarray:
    """:func:`grid` for uint8 tiles ``[B, H, W, 3]`` -> ``[rows*(H+pad)+pad, ...,  3]``
    (white gaps); the same pixels as ``to_uint8(grid(...))`` at a quarter of the memory."""
    b, h, w, c = tiles.shape
    nrow = max(1, min(nrow, b))
    rows = -(-b // nrow)
    out = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(b):
        r, col = divmod(i, nrow)
        out[pad + r * (h + pad): pad + r * (h + pad) + h,
            pad + col * (w + pad): pad + col * (w + pad) + w] = tiles[i]
    return out


def save_png_array(arr: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write a uint8 ``[H, W, 3]`` array as a PNG, atomically."""
    from PIL import Image

    return atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG"))


def resize_images(x01: Tensor, size: int) -> Tensor:
    """``[N, C, h, w]`` in ``[0, 1]`` -> ``[N, C, size, size]`` (bilinear, antialiased down)."""
    if x01.shape[-1] == size and x01.shape[-2] == size:
        return x01
    down = size < x01.shape[-1]
    return F.interpolate(x01, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=down).clamp(0, 1)
