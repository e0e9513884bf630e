"""The ``gaf-trt transport`` job: run a transport experiment of
:mod:`gaf_trt.compose.transport` (cycle, interpolation, barycentric), decode (VAE or the
engine directory's VAE graph for latent models), write grids, a GIF for interpolation and
``transport.json`` with the metrics. ``gaf-trt translate`` (:mod:`gaf_trt.pipeline.translate`)
shares the checks, metrics and writer of this module.

Everything is validated and computed before anything is written; files go through
:class:`~gaf_trt.io.files.OutputDir`, so a failed run leaves the folder as it was and a
second run into the same folder at the same time fails at once.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from gaf_trt.compose import transport as tr
from gaf_trt.compose.cache import (
    CachedNetwork,
    check_cache_solver,
    check_split,
    parse_cache,
    uncached,
    with_cache,
)
from gaf_trt.compose.composition import resolve_classes
from gaf_trt.compose.solvers import StepCallback, check_steps
from gaf_trt.errors import ConfigError
from gaf_trt.io import images as img
from gaf_trt.io.files import OutputDir, check_output_dir, write_json
from gaf_trt.pipeline.generation import ProgressFactory
from gaf_trt.pipeline.source import Loaded, ModelSource, load_source
from gaf_trt.records import TRANSPORT
from gaf_trt.registry import Registry

log = logging.getLogger(__name__)

RECORD = TRANSPORT.record  # translate writes the same record
#: Bounds of ``--size`` (long side of a written picture, pixels) and ``--batch``.
MIN_SIZE, MAX_SIZE = 16, 8192
MAX_BATCH = 64
#: Frames per second of the interpolation GIF.
GIF_FPS = img.GIF_FPS  # 250 ms a frame


@dataclass
class TransportConfig:
    """Arguments of one ``gaf-trt transport`` run."""

    mode: str
    classes: list[str]
    out: str = "transport"
    steps: int = 50
    solver: str = "rk4"
    reverse_solver: str | None = None
    n_interp: int = 5
    grid_size: int = 5
    batch: int = 1
    seed: int = 0
    size: int | None = None
    t_eps: float | None = None
    cache: str = "off"  # feature-cache policy (gaf_trt.compose.cache)
    model: ModelSource = field(default_factory=ModelSource)

    def to_dict(self) -> dict[str, Any]:
        """The record's ``args``: the options, the model source nested under ``model``."""
        return job_args(self)


@dataclass
class TransportResult:
    """What a run produced: the folder, files written, the record and the library result."""

    out_dir: Path
    files: list[Path]
    record: dict[str, Any]
    result: Any


# --------------------------------------------------------------------------- checks


def check_common(steps: int, solver: str, reverse_solver: str | None, size: int | None,
                 src: ModelSource, out: str, command: str = "transport",
                 cache: str = "off") -> None:
    """The options ``transport`` and ``translate`` share, checked before any work (the
    cache policy against the forward and the reverse solver)."""
    check_steps(steps)
    reverse = tr.resolve_reverse_solver(solver, reverse_solver)
    check_cache_solver(cache, solver)
    check_cache_solver(cache, reverse)
    src.check()
    if size is not None and not MIN_SIZE <= size <= MAX_SIZE:
        raise ConfigError(f"--size must be in {MIN_SIZE}..{MAX_SIZE} pixels, got {size}")
    check_output_dir(out, command=command)


def with_feature_cache(loaded: Loaded, cache: str, solver: str) -> Loaded:
    """``loaded`` with its network wrapped by the feature cache ``cache`` (every leg starts
    it empty); ``loaded`` itself when the policy is ``off``. Raises when the network cannot
    run its trunk apart."""
    if parse_cache(cache).active:
        check_split(loaded.network)
    network = with_cache(loaded.network, cache, solver)
    return loaded if network is loaded.network else dataclasses.replace(loaded, network=network)


def cache_record(network: Any) -> dict[str, Any]:
    """``{"cache": {policy, calls, trunk_calls, saved}}`` of a cached run, else nothing."""
    if not isinstance(network, CachedNetwork):
        return {}
    return {"cache": {"policy": network.policy.text, "calls": network.calls,
                      "trunk_calls": network.trunk_calls, "saved": round(network.saved, 4)}}


# --------------------------------------------------------------------------- pictures


def noise_picture(z: Tensor, hw: tuple[int, int]) -> Tensor:
    """A noise state ``[B, C, S, S]`` as ``[B, 3, H, W]`` in ``[0, 1]`` (first 3 channels,
    nearest-resized to the decoded image size)."""
    x = img.to_rgb01(z.detach().float().cpu().clamp(-1, 1))
    return x if tuple(x.shape[-2:]) == hw else F.interpolate(x, size=hw, mode="nearest")


# --------------------------------------------------------------------------- metrics


def lpips_distance(a: Tensor, b: Tensor) -> tuple[float | None, str | None]:
    """Mean LPIPS (AlexNet) between images ``[B, C, H, W]`` in ``[-1, 1]``, or ``(None,
    reason)`` when the ``lpips`` package or its weights are not available locally (this never
    downloads). Images smaller than 64 px are enlarged (nearest) for the backbone."""
    try:
        import lpips  # type: ignore[import-not-found]
    except ImportError:
        return None, "the lpips package is not installed"
    linear = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    backbone = Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth"
    for p in (linear, backbone):
        if not p.is_file():
            return None, f"LPIPS weights not found locally ({p}); not downloading"
    try:
        metric = lpips.LPIPS(net="alex", verbose=False).eval()
        x, y = (_lpips_input(t) for t in (a, b))
        with torch.no_grad():
            return float(metric(x, y).mean()), None
    except Exception as err:  # noqa: BLE001 - an optional metric must not fail the run
        return None, f"LPIPS failed: {type(err).__name__}: {str(err)[:120]}"


def _lpips_input(x: Tensor) -> Tensor:
    x = x.detach().float().cpu()
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]
    if x.shape[-1] < 64:
        x = F.interpolate(x, scale_factor=math.ceil(64 / x.shape[-1]), mode="nearest")
    return x


def image_metrics(first: Tensor, last: Tensor, loaded: Loaded) -> dict[str, Any]:
    """``latent_mse`` (model space), ``pixel_mse`` (decoded images in [0, 1]) and LPIPS
    between two states ``[B, C, S, S]``."""
    a, b = loaded.decode(first), loaded.decode(last)
    value, why = lpips_distance(a, b)
    return {"latent_mse": tr.mse(first, last),
            "pixel_mse": tr.mse((a + 1) / 2, (b + 1) / 2),
            "lpips": value, "lpips_note": why}


# --------------------------------------------------------------------------- modes


@dataclass
class ModeOutput:
    """What one experiment produced: the library result, pictures ``[3, H, W]`` and GIF
    frames to write (by file name), the metrics and the picture layout for the record."""

    result: Any
    pictures: dict[str, Tensor]
    gifs: dict[str, list[Tensor]]
    metrics: dict[str, Any]
    layout: dict[str, Any]


@dataclass(frozen=True)
class TransportMode:
    """A registered experiment: its class-count rule and its runner."""

    name: str
    description: str
    at_least: int
    exactly: int | None
    run: Callable[[TransportConfig, Loaded, list[int], Tensor, StepCallback | None], ModeOutput]


TRANSPORT_MODES: Registry[TransportMode] = Registry("transport mode")


def cells01(states: Tensor, loaded: Loaded) -> Tensor:
    """States ``[M, C, S, S]`` -> decoded cells ``[M, 3, H, W]`` in ``[0, 1]``."""
    return img.to_rgb01(loaded.decode(states))


def _run_cycle(cfg: TransportConfig, loaded: Loaded, classes: list[int], noise: Tensor,
               callback: StepCallback | None) -> ModeOutput:
    res = tr.cycle(loaded.network, classes, noise, steps=cfg.steps, solver=cfg.solver,
                   reverse_solver=cfg.reverse_solver, t_eps=cfg.t_eps, callback=callback)
    images = {i: cells01(x, loaded) for i, x in enumerate(res.stops) if i % 2 == 1}
    hw = tuple(next(iter(images.values())).shape[-2:])
    cols = [images[i] if i in images else noise_picture(x, hw) for i, x in enumerate(res.stops)]
    b = noise.shape[0]
    cells = torch.stack(cols, dim=1).reshape(b * len(cols), 3, *hw)  # row per sample
    metrics = image_metrics(res.first, res.last, loaded)
    metrics["noise_mse"] = res.noise_mse
    picture = img.tile_cells(cells, len(cols), cfg.size)
    picture = img.with_header(picture, res.labels, img.column_px(picture, len(cols)))
    return ModeOutput(res, {"cycle.png": picture}, {}, metrics,
                      {"cycle.png": {"rows": "samples", "columns": res.labels}})


def _run_interpolation(cfg: TransportConfig, loaded: Loaded, classes: list[int], noise: Tensor,
                       callback: StepCallback | None) -> ModeOutput:
    res = tr.interpolation(loaded.network, classes, noise, n_interp=cfg.n_interp,
                           steps=cfg.steps, solver=cfg.solver,
                           reverse_solver=cfg.reverse_solver, t_eps=cfg.t_eps,
                           callback=callback)
    f, b = res.frames.shape[:2]
    frames = cells01(res.frames.reshape(f * b, *res.frames.shape[2:]), loaded)
    frames = frames.view(f, b, *frames.shape[1:])
    cells = frames.transpose(0, 1).reshape(b * f, *frames.shape[2:])  # row per sample
    side = max(1, round(math.sqrt(b)))
    labels = [f"{ci}->{cj} a={a:.3f}" for ci, cj, a in res.steps]
    gif = []
    for i in range(f):
        frame = img.tile_cells(frames[i], side, cfg.size)
        gif.append(img.caption(frame, labels[i], img.column_px(frame, side)))
    metrics = image_metrics(res.frames[0], res.frames[-1], loaded)
    metrics = {f"closure_{k}" if k != "lpips_note" else k: v for k, v in metrics.items()}
    picture = img.tile_cells(cells, f, cfg.size)
    heads = [f"{ci}->{cj}" if a not in (0.0, 1.0) else str(cj if a == 1.0 else ci)
             for ci, cj, a in res.steps]
    px = img.column_px(picture, f)
    picture = img.with_header(img.with_header(picture, [f"a={a:.2f}" for *_, a in res.steps],
                                              px), heads, px)
    return ModeOutput(res, {"interpolation.png": picture},
                      {"interpolation.gif": gif}, metrics,
                      {"interpolation.png": {"rows": "samples", "columns": labels},
                       "interpolation.gif": {"frames": labels}})


def _run_barycentric(cfg: TransportConfig, loaded: Loaded, classes: list[int], noise: Tensor,
                     callback: StepCallback | None) -> ModeOutput:
    g, b = cfg.grid_size, noise.shape[0]
    res = tr.barycentric(loaded.network, classes, noise, grid_size=g, steps=cfg.steps,
                         solver=cfg.solver, t_eps=cfg.t_eps, callback=callback,
                         chunk=_cells_per_call(loaded.network, 3 * b))
    cells = cells01(res.cells.reshape(g * g * b, *res.cells.shape[3:]), loaded)
    cells = cells.view(g, g, b, *cells.shape[1:]).flip(0)  # v = 1 (third class) on top
    grids = [img.grid(img.upscale(cells[:, :, i].reshape(g * g, *cells.shape[3:]),
                                  img.display_scale(cells.shape[-1])), g) for i in range(b)]
    picture = img.fit_long_side(img.strip(grids) if b > 1 else grids[0], cfg.size)
    px = img.column_px(picture, g * b)
    names = [str(c) for c in classes]
    picture = img.with_header(picture, [f"top row: class {names[2]}"] * b, px)
    picture = img.with_header(picture, [f"class {names[1]}", f"class {names[0]}"] * b, px,
                              below=True)  # bottom-left, bottom-right corners
    layout = {"barycentric.png": {
        "panels": "one g x g grid per sample, left to right",
        "rows": "v = j/(g-1) from 1 (top) to 0", "columns": "u = i/(g-1) from 0 to 1",
        "weights": "(u(1-v), (1-u)(1-v), v) for the classes in order",
        "corners": {"top": classes[2], "bottom-left": classes[1], "bottom-right": classes[0]}}}
    metrics = {"cells": g * g, "weights": res.weights.tolist()}
    return ModeOutput(res, {"barycentric.png": picture}, {}, metrics, layout)


def _cells_per_call(network: Any, rows_per_cell: int) -> int:
    """Barycentric cells per network call: within an engine's largest batch profile (``M``
    in its manifest) when it has one, else :data:`~gaf_trt.compose.transport.BARYCENTRIC_CHUNK`."""
    manifest = getattr(uncached(network), "manifest", None)
    profiles = manifest.get("profiles") if isinstance(manifest, dict) else None
    m = profiles.get("M") if isinstance(profiles, dict) else None
    if isinstance(m, (list, tuple)) and m and isinstance(m[-1], int):
        return max(1, min(tr.BARYCENTRIC_CHUNK, m[-1] // rows_per_cell))
    return tr.BARYCENTRIC_CHUNK


TRANSPORT_MODES.add("cycle", TransportMode(
    "cycle", "noise -> c1 -> noise -> c2 -> ... -> c1; error between the first and last c1",
    2, None, _run_cycle))
TRANSPORT_MODES.add("interpolation", TransportMode(
    "interpolation", "alpha blends between consecutive classes, chained back to the first",
    2, None, _run_interpolation))
TRANSPORT_MODES.add("barycentric", TransportMode(
    "barycentric", "g x g grid of three-class blends from one noise", 3, 3, _run_barycentric))


# --------------------------------------------------------------------------- transport job


@dataclass
class TransportPlan:
    """Validated inputs of a transport run."""

    mode: TransportMode
    loaded: Loaded
    classes: list[int]


def prepare_transport(cfg: TransportConfig) -> TransportPlan:
    """Validate every option and load the model; raises before anything is written."""
    mode = TRANSPORT_MODES.get(cfg.mode)
    if not cfg.classes:
        raise ConfigError("give the classes with --classes")
    tr.check_range(cfg.n_interp, 2, tr.MAX_INTERP, "--n-interp")
    tr.check_range(cfg.grid_size, 2, tr.MAX_GRID, "--grid-size")
    tr.check_range(cfg.batch, 1, MAX_BATCH, "--batch")
    check_common(cfg.steps, cfg.solver, cfg.reverse_solver, cfg.size, cfg.model, cfg.out,
                 cache=cfg.cache)
    if mode.exactly is not None and len(cfg.classes) != mode.exactly:
        raise ConfigError(f"{mode.name} needs exactly {mode.exactly} distinct classes, got "
                          f"{len(cfg.classes)}: {' '.join(map(str, cfg.classes))}")
    loaded = load_source(cfg.model)
    classes = resolve_classes(cfg.classes, loaded.config)
    tr.require_distinct(classes, mode.name, at_least=mode.at_least, exactly=mode.exactly)
    return TransportPlan(mode, with_feature_cache(loaded, cfg.cache, cfg.solver), classes)


def run_transport(cfg: TransportConfig, progress: ProgressFactory | None = None,
                  plan: TransportPlan | None = None) -> TransportResult:
    """Validate, load, run the experiment, then write its pictures and ``transport.json``."""
    plan = plan if plan is not None else prepare_transport(cfg)
    loaded = plan.loaded
    c, s = loaded.config.in_channels, loaded.config.input_size
    gen = torch.Generator().manual_seed(cfg.seed)
    noise = torch.randn(cfg.batch, c, s, s, generator=gen).to(loaded.device)
    label = f"{plan.mode.name} {' '.join(map(str, plan.classes))}"
    callback = progress(label, cfg.steps) if progress is not None else None
    start = time.perf_counter()
    output = plan.mode.run(cfg, loaded, plan.classes, noise, callback)
    run_s = time.perf_counter() - start
    record = job_record(cfg.to_dict(), loaded, output, run_s)
    record.update(mode=plan.mode.name, classes=plan.classes, **cache_record(loaded.network))
    files = write_outputs(Path(cfg.out), output, record)
    return TransportResult(Path(cfg.out), files, record, output.result)


def job_args(cfg: Any) -> dict[str, Any]:
    """A transport / translate config as the record's ``args`` (``model`` nested)."""
    own = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "model"}
    return {**copy.deepcopy(own), "model": cfg.model.to_record()}


def job_record(args: dict[str, Any], loaded: Loaded, output: ModeOutput,
               run_s: float) -> dict[str, Any]:
    """``transport.json`` (without the mode's own keys and ``files``)."""
    settings: tr.LegSettings = output.result.settings
    return {
        "args": args,
        "checkpoint": loaded.source_record(),
        "model": loaded.config.to_dict(),
        "backend": loaded.backend,  # what ran (auto resolved)
        "backend_requested": loaded.source.backend,
        "device": loaded.device,
        "device_name": (torch.cuda.get_device_name(loaded.device)
                        if loaded.device.startswith("cuda") else platform.processor() or "cpu"),
        "precision": loaded.precision.value,
        "torch": torch.__version__,
        "steps": settings.steps,
        "solver": settings.solver,
        "reverse_solver": settings.reverse_solver,
        "t_eps": settings.t_eps,
        "metrics": output.metrics,
        "layout": output.layout,
        "timings_s": {"load": round(loaded.load_s, 4), "run": round(run_s, 4)},
    }


def write_outputs(out: Path, output: ModeOutput, record: dict[str, Any]) -> list[Path]:
    """Write the pictures, GIFs and the record through a staged, locked output folder."""
    names = list(output.pictures) + list(output.gifs)
    record["files"] = names + [RECORD]
    command = "translate" if record.get("mode") == "translate" else "transport"
    with OutputDir(out, record=RECORD, command=command) as od:
        for name, picture in output.pictures.items():
            img.save_png(picture, od.staging / name)
        for name, frames in output.gifs.items():
            img.save_gif(frames, od.staging / name, fps=GIF_FPS)
        write_json(od.staging / RECORD, record)
        return od.commit()
