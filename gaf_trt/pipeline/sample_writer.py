"""The picture and record writer of ``gaf-trt sample``: per-sample strips, pages of
``pure_{c}.png``, trajectory GIFs, ``summary.png`` and the ``run.json`` record."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from gaf_trt.io import images as img
from gaf_trt.pipeline.source import source_record
from gaf_trt.pipeline.generation import SUMMARY_COLUMNS, Generated, SamplePlan, tag

if TYPE_CHECKING:
    from gaf_trt.pipeline.sample import SampleConfig

GRID_COLUMNS = 16  # at most this many samples per row of pure_{c}.png and GIF frames
PAGE_SAMPLES = GRID_COLUMNS * GRID_COLUMNS  # samples per pure_{c}.png page (2,082 px square)


def grid_columns(n: int) -> int:
    """Columns of a grid of ``n`` samples: a square when ``n`` is a square of at most
    :data:`GRID_COLUMNS` per side, else rows of at most :data:`GRID_COLUMNS`."""
    side = int(round(n ** 0.5))
    return side if side * side == n and side <= GRID_COLUMNS else max(1, min(n, GRID_COLUMNS))


class SampleWriter:
    """Turns each chunk's states into pictures and writes them at once: per-sample strips,
    pages of ``pure_{c}.png``; keeps only the summary's tiles. ``finish`` writes the last
    pages, the GIFs and ``summary.png``."""

    def __init__(self, folder: Path, cfg: SampleConfig, plan: SamplePlan) -> None:
        self.folder, self.cfg, self.plan = folder, cfg, plan
        self.decoder = plan.decoder
        self.names: list[str] = []
        self.pages: dict[int, list[np.ndarray]] = {}  # class -> uint8 tiles [H, W, 3]
        self.page_no: dict[int, int] = {}
        self.factor: int | None = None
        self.panels: dict[tuple[int, ...], tuple[Tensor, str]] = {}

    # ------------------------------------------------------------------ pictures

    def decode(self, z: Tensor) -> Tensor:
        """``[B, C, S, S]`` state -> images ``[B, 3|1, H, W]`` in ``[-1, 1]``."""
        return z.clamp(-1, 1) if self.decoder is None else self.decoder.decode(z).cpu()

    def show(self, z: Tensor) -> Tensor:
        """State -> upscaled RGB tiles ``[B, 3, H', W']`` in ``[0, 1]``."""
        x = img.to_rgb01(self.decode(z))
        if self.factor is None:
            self.factor = img.display_scale(x.shape[-1])
        return img.upscale(x, self.factor)

    def name(self, c: int) -> str:
        """A class as a person reads it: its name when the model has names, else its id."""
        names = self.plan.config.class_names
        return str(names[c]) if names and 0 <= c < len(names) else str(c)

    def panel(self, comp_classes: tuple[int, ...], size: int) -> tuple[Tensor, str]:
        """The first tile of a strip / summary row for a composition and its header: the
        mask with a legend (colour -> class, weight), or the weights as bars."""
        if comp_classes in self.panels:
            return self.panels[comp_classes]
        comp = self.plan.composition
        if comp is None:
            raise ValueError("a pure run has no composition panel")
        names = [self.name(c) for c in comp_classes]
        if self.plan.masks is not None:
            weights = self.cfg.weights
            labels = [f"{n}: {w:g}" if weights else n
                      for n, w in zip(names, weights or [None] * len(names))]
            out = (img.mask_legend(self.plan.masks, size, labels), "mask")
        else:
            coeffs = comp.coefficients.view(-1).tolist()
            alpha = comp.mode.value == "alpha"
            out = (img.weight_panel(names, coeffs, size, "alpha blend" if alpha else
                                    "weighted blend"), "alpha" if alpha else "weights")
        self.panels[comp_classes] = out
        return out

    def _header_colour(self, i: int) -> tuple[int, int, int]:
        return img.region_colour(i) if self.plan.masks is not None else img.INK

    # ------------------------------------------------------------------ per chunk

    def chunk(self, start: int, pure: dict[int, Tensor],
              mixes: dict[tuple[int, ...], Tensor]) -> None:
        """Write one chunk: pages of the pure grids, one strip per sample and composition."""
        shown = {c: self.show(z) for c, z in pure.items()}
        for c, tiles in shown.items():
            self._add_to_page(c, tiles)
        for classes, z in mixes.items():
            tiles = self.show(z)
            panel, head = self.panel(classes, tiles.shape[-1])
            labels = [head] + [(f"pure {self.name(c)}", self._header_colour(i))
                               for i, c in enumerate(classes) if c in shown] + ["composite"]
            band = None  # the same header over every strip of this composition
            for j in range(tiles.shape[0]):
                row = img.strip([panel] + [shown[c][j] for c in classes if c in shown]
                                + [tiles[j]])
                if band is None:
                    band = img.header_band(row.shape[-1], labels, img.text_px(tiles.shape[-1]))
                path = self.folder / f"{start + j}_mix_{tag(classes)}.png"
                self.names.append(img.save_png(torch.cat([band, row], dim=1), path).name)

    def _add_to_page(self, c: int, tiles: Tensor) -> None:
        for t in tiles:
            page = self.pages.setdefault(c, [])
            page.append(img.to_uint8(t))
            if len(page) == PAGE_SAMPLES and self.cfg.batch > PAGE_SAMPLES:
                self._write_page(c)  # a full page is written and dropped

    def _write_page(self, c: int) -> None:
        """``pure_{c}.png`` (samples 0..255), then ``pure_{c}_page2.png`` (256..511), ..."""
        tiles = self.pages.pop(c, [])
        if not tiles:
            return
        no = self.page_no[c] = self.page_no.get(c, 0) + 1
        name = f"pure_{c}.png" if no == 1 else f"pure_{c}_page{no}.png"
        picture = img.grid_uint8(np.stack(tiles), grid_columns(len(tiles)))
        self.names.append(img.save_png_array(picture, self.folder / name).name)

    # ------------------------------------------------------------------ at the end

    def finish(self, gen: Generated) -> list[str]:
        """The last pure pages, the GIFs and ``summary.png``; returns every file name."""
        for c in list(self.pages):
            self._write_page(c)
        if self.cfg.gif:
            for c, frames in gen.pure_frames.items():
                self._gif(frames, self.folder / f"pure_{c}.gif")
            for classes, frames in gen.mix_frames.items():
                self._gif(frames, self.folder / f"mix_{tag(classes)}.gif")
        self.names.append(img.save_png(self._summary(gen), self.folder / "summary.png").name)
        return self.names

    def _gif(self, frames: list[Tensor], path: Path) -> None:
        """One frame per solver step (frame 0 the noise), each a grid of the first
        :data:`GIF_SAMPLES` samples captioned with its step."""
        n = len(frames) - 1
        pics = []
        for k, f in enumerate(frames):
            tiles = self.show(f)
            pic = img.grid(tiles, grid_columns(tiles.shape[0]))
            pics.append(img.caption(pic, "noise" if k == 0 else f"step {k}/{n}"))
        self.names.append(img.save_gif(pics, path).name)

    def _summary(self, gen: Generated) -> Tensor:
        """A row per pure class (its name, then its first samples) and per composition (its
        mask / weights panel, then its first samples), under a line saying how many of the
        batch are shown."""
        rows = []
        size = None
        for c, z in gen.pure.items():
            tiles = self.show(z)
            size = tiles.shape[-1]
            rows.append(img.strip([img.label_tile(["pure", self.name(c)], size), *tiles]))
        for classes, z in gen.mixes.items():
            tiles = self.show(z)
            size = tiles.shape[-1]
            panel, _ = self.panel(classes, size)
            rows.append(img.strip([panel, *tiles]))
        shown = min(self.cfg.batch, SUMMARY_COLUMNS)
        title = (f"all {shown} samples" if shown == self.cfg.batch
                 else f"samples 0-{shown - 1} of {self.cfg.batch}")
        return img.with_header(img.stack_rows(rows), [title], img.text_px(size or 128))


def run_record(cfg: SampleConfig, plan: SamplePlan, timings: dict[str, float],
            files: list[str]) -> dict[str, Any]:
    return {
        "args": cfg.to_dict(),
        "checkpoint": source_record(cfg.model.artifact),
        "model": plan.config.to_dict(),
        "classes": plan.classes,
        "composition": plan.composition.mode.value if plan.composition else "pure",
        "backend": getattr(plan.network, "name", cfg.model.resolved().backend),
        "device": plan.device,
        "device_name": (torch.cuda.get_device_name(plan.device)
                        if plan.device.startswith("cuda") else platform.processor() or "cpu"),
        "precision": cfg.model.resolved().precision.value,
        "torch": torch.__version__,
        "timings_s": {"load": round(plan.load_s, 4), **{k: round(v, 4) for k, v in timings.items()}},
        "files": files,
    }
