"""The ``gaf-trt sample`` job: pure classes, compositions, strips, summary, GIFs, run.json.

Everything is validated before anything is written: a bad class, weight count, mask,
output folder or checkpoint raises a :class:`~gaf_trt.errors.GAFError`. The files are
written into a staging folder beside ``--out`` and moved in at the end, ``run.json`` last
(:class:`~gaf_trt.io.files.OutputDir`), so the folder never mixes two runs; a lock makes a
concurrent run into the same folder fail at once.
"""

from __future__ import annotations

import logging
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gaf_trt.compose import masks as mask_lib
from gaf_trt.compose.composition import Composition, permutations
from gaf_trt.compose.sampling import sample, sample_pure
from gaf_trt.compose.solvers import SOLVERS, StepCallback, check_steps, check_t_eps
from gaf_trt.engine.base import AnchorNetwork
from gaf_trt.errors import ConfigError
from gaf_trt.io import images as img
from gaf_trt.io.files import OutputDir, check_output_dir, write_json
from gaf_trt.model.config import GAFConfig
from gaf_trt.pipeline.source import (
    ModelSource,
    flat_args,
    load_decoder,
    load_source,
    source_record,
)

log = logging.getLogger(__name__)

#: ``progress(label, total) -> per-step callback``; lets the CLI draw a progress bar.
ProgressFactory = Callable[[str, int], StepCallback]

MAX_BATCH = 4096  # samples per composition (each gets its own strip PNG)
MAX_SEED = 2 ** 63 - 1
DEFAULT_CHUNK = 256  # samples per solver loop; larger batches run in chunks
DEFAULT_MAX_RUNS = 24  # compositions per job (--permute with 4 classes = 24)
SUMMARY_COLUMNS = 8  # samples shown per row of summary.png
GRID_COLUMNS = 16  # at most this many samples per row of pure_{c}.png and GIF frames
PAGE_SAMPLES = GRID_COLUMNS * GRID_COLUMNS  # samples per pure_{c}.png page (2,082 px square)
GIF_SAMPLES = 64  # samples in each trajectory GIF (the first of the batch)


@dataclass
class SampleConfig:
    """Arguments of one sampling job (serialised into ``run.json``)."""

    classes: list[str]
    out: str = "samples"
    weights: list[float] | None = None
    alpha: float | None = None
    mask_type: str | None = None
    mask_img: str | None = None
    regions: list[str] | None = None
    sigma: float = mask_lib.DEFAULT_SIGMA
    steps: int = 20
    solver: str = "euler"
    seed: int = 0
    permute: bool = False
    gif: bool = False
    skip: bool = False
    batch: int = 4
    chunk: int = DEFAULT_CHUNK
    max_runs: int = DEFAULT_MAX_RUNS
    t_eps: float | None = None
    model: ModelSource = field(default_factory=ModelSource)  # backend options in its options

    def to_dict(self) -> dict[str, Any]:
        """The record's ``args`` (the model source in its flat keys)."""
        return flat_args(self)


@dataclass
class Generated:
    """What a job keeps after streaming its chunks to disk: the final states (CPU, float32)
    of the first :data:`SUMMARY_COLUMNS` samples of each generation (what ``summary.png``
    shows) and, with ``--gif``, trajectory frames of the first :data:`GIF_SAMPLES`."""

    pure: dict[int, Tensor] = field(default_factory=dict)  # class -> [<=8, C, S, S]
    mixes: dict[tuple[int, ...], Tensor] = field(default_factory=dict)  # classes -> [<=8, ...]
    pure_frames: dict[int, list[Tensor]] = field(default_factory=dict)  # [<=64, ...] a step
    mix_frames: dict[tuple[int, ...], list[Tensor]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # label -> seconds
    frames: dict[str, list[Tensor]] = field(default_factory=dict)  # label -> steps (internal)


@dataclass
class SampleResult:
    """What a job produced: files written, timings in seconds, and the final states of the
    samples ``summary.png`` shows (the whole batch was streamed to disk chunk by chunk)."""

    out_dir: Path
    files: list[Path]
    timings: dict[str, float]
    pure: dict[int, Tensor] = field(default_factory=dict)
    mixes: dict[tuple[int, ...], Tensor] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class SamplePlan:
    """Validated inputs of a job: the loaded network, classes, composition, masks, decoder."""

    network: AnchorNetwork
    config: GAFConfig
    classes: list[int]
    composition: Composition | None
    masks: Tensor | None
    decoder: Any  # a LatentDecoder for latent models, else None
    device: str
    load_s: float = 0.0  # validation, checkpoint and VAE loading


def resolve_classes(tokens: Sequence[str | int], config: GAFConfig) -> list[int]:
    """Class ids from indices or class names (case-insensitive), checked against the model."""
    from gaf_trt.compose.composition import check_class_ids

    names = {n.lower(): i for i, n in enumerate(config.class_names or ())}
    out = []
    for tok in tokens:
        s = str(tok).strip()
        if s.lstrip("-").isascii() and s.lstrip("-").isdigit():
            out.append(int(s))
        elif s.lower() in names:
            out.append(names[s.lower()])
        else:
            known = ", ".join(list(config.class_names or ())[:12]) or "none (this model has no names)"
            raise ConfigError(f"unknown class name {s!r}; known names: {known}")
    check_class_ids(out, config)
    return out


def _check_bounds(cfg: SampleConfig) -> None:
    """Every option with a bound, checked before any work."""
    if not cfg.classes:
        raise ConfigError("give at least one class with --classes")
    SOLVERS.get(cfg.solver)
    cfg.model.check()
    check_steps(cfg.steps)
    if cfg.t_eps is not None:
        check_t_eps(cfg.t_eps)
    for name, value, lo, hi in (("--batch", cfg.batch, 1, MAX_BATCH),
                                ("--seed", cfg.seed, 0, MAX_SEED),
                                ("--chunk", cfg.chunk, 1, MAX_BATCH),
                                ("--max-runs", cfg.max_runs, 1, 100_000)):
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
    if cfg.mask_type is not None:
        mask_lib.MASKS.get(cfg.mask_type)
    if not math.isfinite(cfg.sigma) or not 0 <= cfg.sigma <= mask_lib.MAX_SIGMA:
        raise ConfigError(f"--sigma must be in [0, {mask_lib.MAX_SIGMA:g}], got {cfg.sigma:g}")
    runs = math.factorial(len(cfg.classes)) if cfg.permute else 1
    if runs > cfg.max_runs:
        raise ConfigError(f"--permute with {len(cfg.classes)} classes is {runs:,} compositions; "
                          f"the limit is --max-runs {cfg.max_runs} (raise it to run them all)")
    if cfg.mask_img is not None and not Path(cfg.mask_img).is_file():
        raise ConfigError(f"mask image not found: {cfg.mask_img}")
    check_output_dir(cfg.out, command="sample")


def _mask_type(cfg: SampleConfig) -> str | None:
    """The mask preset, implied by --mask-img (custom) or --regions (afhq) when not given."""
    if cfg.mask_type is not None:
        return cfg.mask_type
    if cfg.mask_img is not None:
        return next(iter(mask_lib.presets_taking("image")))
    if cfg.regions:
        return next(iter(mask_lib.presets_taking("regions")))
    return None


def prepare_sample(cfg: SampleConfig) -> SamplePlan:
    """Validate every option and load the model; raises before anything is written."""
    t0 = time.perf_counter()
    _check_bounds(cfg)
    loaded = load_source(cfg.model, decoder=False)
    network, config, device = loaded.network, loaded.config, loaded.device
    classes = resolve_classes(cfg.classes, config)
    mask_type = _mask_type(cfg)
    masks = None
    if mask_type is not None:
        s = config.input_size
        masks = mask_lib.build(mask_type, s, s, sigma=cfg.sigma, image=cfg.mask_img,
                               regions=cfg.regions)
    # several classes and no weighting: the pure classes only (what the pure rows show)
    composing = any(v is not None for v in (cfg.weights, cfg.alpha, masks))
    composition = None
    if composing:
        composition = Composition.build(classes, weights=cfg.weights, alpha=cfg.alpha, masks=masks)
        composition.validate_for(config)
    elif cfg.skip:
        raise ConfigError("--skip without a composition generates nothing; drop --skip or "
                          "give a composition (--weight, --alpha, --mask-type, --mask-img or "
                          "--regions)")
    decoder = load_decoder(loaded.source, config, device)
    return SamplePlan(network, config, classes, composition, masks, decoder, device,
                      time.perf_counter() - t0)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _tag(classes: Sequence[int]) -> str:
    return "_".join(map(str, classes))


class _Generator:
    """Runs the generations of one job from one noise, chunk by chunk: for each chunk of at
    most ``--chunk`` noise rows, the pure classes (one batched loop), then every composition;
    each chunk's states go to ``sink`` and are dropped, so memory holds one chunk (plus the
    few samples the summary and GIFs show), whatever ``--batch`` is."""

    def __init__(self, plan: SamplePlan, noise: Tensor, cfg: SampleConfig,
                 progress: ProgressFactory | None) -> None:
        self.plan, self.noise, self.cfg, self.progress = plan, noise, cfg, progress
        self.t_eps = cfg.t_eps if cfg.t_eps is not None else plan.config.t_eps
        self.out = Generated()
        self.chunks = noise.split(cfg.chunk)
        self.bars: dict[str, StepCallback] = {}

    def bar(self, label: str) -> StepCallback | None:
        """The progress callback of one generation (one bar over all its chunks)."""
        if self.progress is None:
            return None
        if label not in self.bars:
            self.bars[label] = self.progress(label, self.cfg.steps * len(self.chunks))
        return self.bars[label]

    def _loop(self, label: str, i: int, keep: int, rows: Callable[[Tensor], Tensor],
              fn: Callable[[StepCallback | None], Tensor], sample_dim: int = 0) -> Tensor:
        """One solver loop ``fn(callback) -> state`` of chunk ``i``; timing per label, GIF
        frames (``rows(x)`` picks the first ``keep`` samples of a step's state; chunks are
        joined along ``sample_dim``)."""
        bar, frames = self.bar(label), self.out.frames.setdefault(label, [])
        first = not frames
        collected: list[Tensor] = []

        def on_step(k: int, n: int, x: Tensor) -> None:
            if keep > 0:
                collected.append(rows(x).detach().float().cpu())
            if bar is not None:
                bar(i * n + k, n * len(self.chunks), x)

        start = time.perf_counter()
        with torch.no_grad():
            state = fn(on_step if (keep > 0 or bar is not None) else None)
        _sync(self.plan.device)
        self.out.timings[label] = self.out.timings.get(label, 0.0) + time.perf_counter() - start
        if keep > 0:
            if first:
                frames.append(torch.Tensor())  # the noise frame, filled in by generate
            for k, f in enumerate(collected):
                if first:
                    frames.append(f)
                else:
                    frames[k + 1] = torch.cat([frames[k + 1], f], dim=sample_dim)
        return state.float().cpu()

    def pure(self, i: int, chunk: Tensor, classes: list[int], keep: int) -> dict[int, Tensor]:
        """Every pure class of chunk ``i`` in one batched loop: ``{class: [n, C, S, S]}``."""
        k, n = len(classes), chunk.shape[0]

        def fn(cb: StepCallback | None) -> Tensor:
            return sample_pure(self.plan.network, classes, chunk, steps=self.cfg.steps,
                               solver=self.cfg.solver, t_eps=self.t_eps, callback=cb)

        def rows(x: Tensor) -> Tensor:  # [k*n] class-major -> [k, keep]: the first of each
            return x.view(k, n, *x.shape[1:])[:, :keep]

        state = self._loop(_pure_label(classes), i, keep, rows, fn, sample_dim=1)  # [k, n, ...]
        return {c: state[j] for j, c in enumerate(classes)}

    def mix(self, i: int, chunk: Tensor, comp: Composition, keep: int) -> Tensor:
        def fn(cb: StepCallback | None) -> Tensor:
            return sample(self.plan.network, comp, chunk, steps=self.cfg.steps,
                          solver=self.cfg.solver, t_eps=self.t_eps, callback=cb)

        return self._loop(_mix_label(comp), i, keep, lambda x: x[:keep], fn)


def _pure_label(classes: Sequence[int]) -> str:
    return f"pure {_tag(classes)}"


def _mix_label(comp: Composition) -> str:
    return f"{comp.mode.value} {_tag(comp.classes)}"


#: ``sink(start, pure, mixes)``: the states of one chunk (first sample index ``start``),
#: ``pure {class: [n, C, S, S]}`` and ``mixes {classes: [n, C, S, S]}`` (CPU, float32).
ChunkSink = Callable[[int, dict[int, Tensor], dict[tuple[int, ...], Tensor]], None]


def generate(cfg: SampleConfig, plan: SamplePlan, progress: ProgressFactory | None = None,
             sink: ChunkSink | None = None) -> Generated:
    """Run every generation of a job (pure classes, then each composition / permutation),
    chunk by chunk; each chunk goes to ``sink``. Returns the first
    :data:`SUMMARY_COLUMNS` samples of every generation, GIF frames of the first
    :data:`GIF_SAMPLES` (with ``--gif``) and the timings."""
    c, s = plan.config.in_channels, plan.config.input_size
    gen = torch.Generator().manual_seed(cfg.seed)
    noise = torch.randn(cfg.batch, c, s, s, generator=gen).to(plan.device)
    runner = _Generator(plan, noise, cfg, progress)
    pure_classes = [] if cfg.skip else sorted(set(plan.classes))
    comps = []
    if plan.composition is not None:
        n = len(plan.classes)
        comps = [plan.composition.permuted(o)
                 for o in (permutations(n) if cfg.permute else [tuple(range(n))])]
    if pure_classes:  # every bar shown from the start, in the order they run
        runner.bar(_pure_label(pure_classes))
    for comp in comps:
        runner.bar(_mix_label(comp))
    out, start = runner.out, 0
    for i, chunk in enumerate(runner.chunks):
        n = chunk.shape[0]
        keep = max(0, min(n, GIF_SAMPLES - start)) if cfg.gif else 0
        pure = runner.pure(i, chunk, pure_classes, keep) if pure_classes else {}
        mixes = {comp.classes: runner.mix(i, chunk, comp, keep) for comp in comps}
        if sink is not None:
            sink(start, pure, mixes)
        room = max(0, SUMMARY_COLUMNS - start)
        for cls, z in pure.items():
            out.pure[cls] = torch.cat([out.pure[cls], z[:room]]) if cls in out.pure else z[:room]
        for key, z in mixes.items():
            out.mixes[key] = torch.cat([out.mixes[key], z[:room]]) if key in out.mixes else z[:room]
        start += n
    _split_frames(out, noise, pure_classes, comps, cfg.gif)
    return out


def _split_frames(out: Generated, noise: Tensor, pure_classes: list[int],
                  comps: list[Composition], gif: bool) -> None:
    """Per-label frames -> per-generation frames (frame 0 the noise of the GIF samples)."""
    if not gif:
        return
    start = noise[:GIF_SAMPLES].detach().float().cpu()
    if pure_classes:
        frames = out.frames.pop(_pure_label(pure_classes))  # steps of [k, m, C, S, S]
        for j, c in enumerate(pure_classes):
            out.pure_frames[c] = [start] + [f[j] for f in frames[1:]]
    for comp in comps:
        frames = out.frames.pop(_mix_label(comp))
        out.mix_frames[comp.classes] = [start] + frames[1:]


def run_sample(cfg: SampleConfig, progress: ProgressFactory | None = None,
               plan: SamplePlan | None = None) -> SampleResult:
    """Validate, load, generate and write every output of one sampling job (``plan`` from
    :func:`prepare_sample` when the caller validated first). Each chunk's pictures are
    written into the staging folder as soon as it is integrated, then dropped; the result
    keeps the samples ``summary.png`` shows (the first :data:`SUMMARY_COLUMNS`)."""
    plan = plan if plan is not None else prepare_sample(cfg)
    with OutputDir(cfg.out, record="run.json") as od:
        writer = _Writer(od.staging, cfg, plan)
        gen = generate(cfg, plan, progress, sink=writer.chunk)
        names = writer.finish(gen)
        record = _record(cfg, plan, gen.timings, [*names, "run.json"])
        write_json(od.staging / "run.json", record)
        files = od.commit()
    return SampleResult(od.out, files, gen.timings, gen.pure, gen.mixes, record)


def grid_columns(n: int) -> int:
    """Columns of a grid of ``n`` samples: a square when ``n`` is a square of at most
    :data:`GRID_COLUMNS` per side, else rows of at most :data:`GRID_COLUMNS`."""
    side = int(round(n ** 0.5))
    return side if side * side == n and side <= GRID_COLUMNS else max(1, min(n, GRID_COLUMNS))


class _Writer:
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
                path = self.folder / f"{start + j}_mix_{_tag(classes)}.png"
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
                self._gif(frames, self.folder / f"mix_{_tag(classes)}.gif")
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


def _record(cfg: SampleConfig, plan: SamplePlan, timings: dict[str, float],
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
