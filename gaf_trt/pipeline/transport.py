"""The ``gaf-trt transport`` and ``gaf-trt translate`` jobs: run a transport experiment of
:mod:`gaf_trt.compose.transport`, decode (VAE for latent models), write grids, a GIF for
interpolation and ``transport.json`` with the metrics.

Everything is validated and computed before anything is written; files go through
:class:`~gaf_trt.io.files.OutputDir`, so a failed run leaves the folder as it was and a
second run into the same folder at the same time fails at once.
"""

from __future__ import annotations

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
from gaf_trt.compose.composition import resolve_classes
from gaf_trt.compose.solvers import StepCallback, check_steps
from gaf_trt.device import resolve_device
from gaf_trt.engine.base import BACKENDS, LoadRequest, load_backend
from gaf_trt.errors import ConfigError
from gaf_trt.io import images as img
from gaf_trt.io.files import OutputDir, check_output_dir, file_sha256, write_json
from gaf_trt.model.config import GAFConfig
from gaf_trt.pipeline.generation import ProgressFactory
from gaf_trt.precision import Precision
from gaf_trt.records import TRANSPORT
from gaf_trt.registry import Registry

log = logging.getLogger(__name__)

RECORD = TRANSPORT.record  # translate writes the same record
#: Bounds of ``--size`` (long side of a written picture, pixels) and ``--batch``.
MIN_SIZE, MAX_SIZE = 16, 8192
MAX_BATCH = 64
#: Frames per second of the interpolation GIF.
GIF_FPS = img.GIF_FPS  # 250 ms a frame
#: Largest input image read by ``translate`` (pixels before cropping and resizing).
MAX_IMAGE_PIXELS = 1 << 26
#: Images decoded through the VAE per call.
DECODE_CHUNK = 16


@dataclass
class ModelSource:
    """Which network to load and how (shared by both jobs; serialised into the record)."""

    ckpt: str = "digits"
    backend: str = "torch"
    device: str = "cpu"
    precision: Precision = Precision.FP32
    vae: str | None = None
    num_heads: int | None = None
    use_ema: bool = True
    trust_pickle: bool = False


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
    model: ModelSource = field(default_factory=ModelSource)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


@dataclass
class TranslateConfig:
    """Arguments of one ``gaf-trt translate`` run."""

    image: str
    source: str
    target: str
    out: str = "translate"
    steps: int = 50
    solver: str = "rk4"
    reverse_solver: str | None = None
    snapshots: int = 6
    size: int | None = None
    t_eps: float | None = None
    model: ModelSource = field(default_factory=ModelSource)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (_plain(v) if isinstance(v, dict) else v.value if isinstance(v, Precision) else v)
            for k, v in d.items()}


@dataclass
class TransportResult:
    """What a run produced: the folder, files written, the record and the library result."""

    out_dir: Path
    files: list[Path]
    record: dict[str, Any]
    result: Any


# --------------------------------------------------------------------------- loading


@dataclass
class Loaded:
    """A loaded network with its config, decoder (latent models) and device."""

    network: Any
    config: GAFConfig
    decoder: Any
    device: str
    load_s: float

    def decode(self, z: Tensor) -> Tensor:
        """``z [B, C, S, S]`` -> images ``[B, 3|1, H, W]`` in ``[-1, 1]`` on the CPU."""
        if self.decoder is None:
            return z.detach().float().cpu().clamp(-1, 1)
        parts = [self.decoder.decode(z[i:i + DECODE_CHUNK]).cpu()
                 for i in range(0, z.shape[0], DECODE_CHUNK)]
        return torch.cat(parts)


def _check_common(steps: int, solver: str, reverse_solver: str | None, size: int | None,
                  src: ModelSource, out: str, command: str = "transport") -> None:
    check_steps(steps)
    tr.resolve_reverse_solver(solver, reverse_solver)
    BACKENDS.get(src.backend)
    if size is not None and not MIN_SIZE <= size <= MAX_SIZE:
        raise ConfigError(f"--size must be in {MIN_SIZE}..{MAX_SIZE} pixels, got {size}")
    check_output_dir(out, command=command)


def load(src: ModelSource, *, need_vae: bool = True) -> Loaded:
    """Load the network (and the VAE of a latent model); raises before anything is written."""
    t0 = time.perf_counter()
    device = resolve_device(src.device)
    network = load_backend(src.backend, LoadRequest(
        artifact=src.ckpt, device=device, precision=src.precision, num_heads=src.num_heads,
        use_ema=src.use_ema, trust_pickle=src.trust_pickle))
    config: GAFConfig = network.config
    decoder = None
    if config.mode == "latent" and need_vae:
        if src.vae is None:
            raise ConfigError("this is a latent checkpoint: give the VAE with --vae DIR "
                              "(a diffusers AutoencoderKL directory)")
        from gaf_trt.model.vae import load_vae

        decoder = load_vae(src.vae, scale=config.vae_scale, device=device)
    return Loaded(network, config, decoder, device, time.perf_counter() - t0)


# --------------------------------------------------------------------------- pictures


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


def render(cells01: Tensor, nrow: int, size: int | None) -> Tensor:
    """Tile ``[B, 3, h, w]`` (``[0, 1]``) into a picture: cells upscaled like ``sample``'s
    (at least 128 px) or, with ``size``, so that the long side is ``size`` pixels."""
    h = cells01.shape[-2]
    if size is None:
        return img.grid(img.upscale(cells01, img.display_scale(h)), nrow)
    rows = -(-cells01.shape[0] // nrow)
    native = max(rows, nrow) * (h + img.PAD)
    factor = max(1, math.ceil(size / native))
    return fit_long_side(img.grid(img.upscale(cells01, factor), nrow), size)


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


def _cells(states: Tensor, loaded: Loaded) -> Tensor:
    """States ``[M, C, S, S]`` -> decoded cells ``[M, 3, H, W]`` in ``[0, 1]``."""
    return img.to_rgb01(loaded.decode(states))


def _run_cycle(cfg: TransportConfig, loaded: Loaded, classes: list[int], noise: Tensor,
               callback: StepCallback | None) -> ModeOutput:
    res = tr.cycle(loaded.network, classes, noise, steps=cfg.steps, solver=cfg.solver,
                   reverse_solver=cfg.reverse_solver, t_eps=cfg.t_eps, callback=callback)
    images = {i: _cells(x, loaded) for i, x in enumerate(res.stops) if i % 2 == 1}
    hw = tuple(next(iter(images.values())).shape[-2:])
    cols = [images[i] if i in images else noise_picture(x, hw) for i, x in enumerate(res.stops)]
    b = noise.shape[0]
    cells = torch.stack(cols, dim=1).reshape(b * len(cols), 3, *hw)  # row per sample
    metrics = image_metrics(res.first, res.last, loaded)
    metrics["noise_mse"] = res.noise_mse
    picture = render(cells, len(cols), cfg.size)
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
    frames = _cells(res.frames.reshape(f * b, *res.frames.shape[2:]), loaded)
    frames = frames.view(f, b, *frames.shape[1:])
    cells = frames.transpose(0, 1).reshape(b * f, *frames.shape[2:])  # row per sample
    side = max(1, round(math.sqrt(b)))
    labels = [f"{ci}->{cj} a={a:.3f}" for ci, cj, a in res.steps]
    gif = []
    for i in range(f):
        frame = render(frames[i], side, cfg.size)
        gif.append(img.caption(frame, labels[i], img.column_px(frame, side)))
    metrics = image_metrics(res.frames[0], res.frames[-1], loaded)
    metrics = {f"closure_{k}" if k != "lpips_note" else k: v for k, v in metrics.items()}
    picture = render(cells, f, cfg.size)
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
    cells = _cells(res.cells.reshape(g * g * b, *res.cells.shape[3:]), loaded)
    cells = cells.view(g, g, b, *cells.shape[1:]).flip(0)  # v = 1 (third class) on top
    grids = [img.grid(img.upscale(cells[:, :, i].reshape(g * g, *cells.shape[3:]),
                                  img.display_scale(cells.shape[-1])), g) for i in range(b)]
    picture = fit_long_side(img.strip(grids) if b > 1 else grids[0], cfg.size)
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
    manifest = getattr(network, "manifest", None)
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
    _check_common(cfg.steps, cfg.solver, cfg.reverse_solver, cfg.size, cfg.model, cfg.out)
    if mode.exactly is not None and len(cfg.classes) != mode.exactly:
        raise ConfigError(f"{mode.name} needs exactly {mode.exactly} distinct classes, got "
                          f"{len(cfg.classes)}: {' '.join(map(str, cfg.classes))}")
    loaded = load(cfg.model)
    classes = resolve_classes(cfg.classes, loaded.config)
    tr.require_distinct(classes, mode.name, at_least=mode.at_least, exactly=mode.exactly)
    return TransportPlan(mode, loaded, classes)


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
    record = _record(cfg.to_dict(), cfg.model, loaded, output, run_s)
    record.update(mode=plan.mode.name, classes=plan.classes)
    files = _write(Path(cfg.out), output, record)
    return TransportResult(Path(cfg.out), files, record, output.result)


def _record(args: dict[str, Any], src: ModelSource, loaded: Loaded, output: ModeOutput,
            run_s: float) -> dict[str, Any]:
    settings: tr.LegSettings = output.result.settings
    return {
        "args": args,
        "checkpoint": _checkpoint_info(src.ckpt),
        "model": loaded.config.to_dict(),
        "backend": getattr(loaded.network, "name", src.backend),  # what ran (auto resolved)
        "backend_requested": src.backend,
        "device": loaded.device,
        "device_name": (torch.cuda.get_device_name(loaded.device)
                        if loaded.device.startswith("cuda") else platform.processor() or "cpu"),
        "precision": src.precision.value,
        "torch": torch.__version__,
        "steps": settings.steps,
        "solver": settings.solver,
        "reverse_solver": settings.reverse_solver,
        "t_eps": settings.t_eps,
        "metrics": output.metrics,
        "layout": output.layout,
        "timings_s": {"load": round(loaded.load_s, 4), "run": round(run_s, 4)},
    }


def _checkpoint_info(ckpt: str) -> dict[str, Any]:
    from gaf_trt.model.checkpoint import resolve_path

    p = resolve_path(ckpt)
    return {"path": str(p), "sha256": file_sha256(p) if p.is_file() else None}


def _write(out: Path, output: ModeOutput, record: dict[str, Any]) -> list[Path]:
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


# --------------------------------------------------------------------------- translate job


def read_image(path: str, channels: int, side: int) -> Tensor:
    """An image file -> ``[1, channels, side, side]`` in ``[-1, 1]``: centre-cropped to a
    square and resized (bicubic, antialiased). ``channels`` is 1 (grayscale) or 3 (RGB);
    16-bit images keep their full range. Images over :data:`MAX_IMAGE_PIXELS` are refused."""
    from PIL import Image

    if channels not in (1, 3):
        raise ConfigError(f"translate reads grayscale or RGB images; this model has {channels} "
                          "pixel channels")
    try:
        with img.open_image(path) as im:
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


def _pixels01(im: Any, channels: int) -> Any:
    """A PIL image -> ``[H, W, channels]`` float32 array in ``[0, 1]`` (16-bit aware)."""
    import numpy as np

    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float64)
        scale = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        a = np.clip(a / scale, 0, 1)[..., None]
        return np.repeat(a, channels, axis=2).astype(np.float32)
    a = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
    return a[..., None] if a.ndim == 2 else a


def _vae_factor(decoder: Any) -> int:
    blocks = getattr(getattr(decoder.vae, "config", None), "block_out_channels", None)
    return 2 ** (len(blocks) - 1) if blocks else 8


def image_to_latent(path: str, loaded: Loaded) -> Tensor:
    """Read ``path`` into the model's data space ``[1, C, S, S]``: pixels in [-1, 1] for pixel
    models, scaled VAE latent means for latent models."""
    cfg = loaded.config
    if loaded.decoder is None:
        return read_image(path, cfg.in_channels, cfg.input_size).to(loaded.device)
    pixels = read_image(path, 3, cfg.input_size * _vae_factor(loaded.decoder))
    z = loaded.decoder.encode(pixels).to(loaded.device)
    if tuple(z.shape[1:]) != tuple(cfg.sample_shape):
        raise ConfigError(f"the VAE encodes to {list(z.shape[1:])}, the model expects "
                          f"{list(cfg.sample_shape)}: wrong --vae for this checkpoint")
    return z


@dataclass
class TranslatePlan:
    """Validated inputs of a translate run: model, the image in model space, classes."""

    loaded: Loaded
    latent: Tensor
    source: int
    target: int


def prepare_translate(cfg: TranslateConfig) -> TranslatePlan:
    """Validate, load the model (and VAE) and read the image; raises before writing."""
    tr.check_range(cfg.snapshots, 1, 64, "--snapshots")
    _check_common(cfg.steps, cfg.solver, cfg.reverse_solver, cfg.size, cfg.model, cfg.out,
                  "translate")
    if not Path(cfg.image).is_file():
        raise ConfigError(f"cannot read image {cfg.image}: no such file")
    loaded = load(cfg.model)
    source, target = resolve_classes([cfg.source, cfg.target], loaded.config)
    return TranslatePlan(loaded, image_to_latent(cfg.image, loaded), source, target)


def run_translate(cfg: TranslateConfig, progress: ProgressFactory | None = None,
                  plan: TranslatePlan | None = None) -> TransportResult:
    """Invert the image with the source class, generate with the target; write
    ``translation.png`` (source | result), ``trajectory.png`` (rows x_t, J, K over both legs)
    and ``transport.json``."""
    plan = plan if plan is not None else prepare_translate(cfg)
    loaded = plan.loaded
    callback = progress(f"translate {plan.source}->{plan.target}", cfg.steps) if progress else None
    start = time.perf_counter()
    res = tr.translate(loaded.network, plan.latent, plan.source, plan.target, steps=cfg.steps,
                       solver=cfg.solver, reverse_solver=cfg.reverse_solver, t_eps=cfg.t_eps,
                       snapshots=cfg.snapshots, callback=callback)
    run_s = time.perf_counter() - start
    pair = _cells(torch.cat([res.source, res.result]), loaded)
    snaps = res.snapshots
    rows = [torch.cat([getattr(sn, key) for sn in snaps]) for key in ("x", "j", "k")]
    traj = _cells(torch.cat(rows), loaded)
    metrics = image_metrics(res.source, res.result, loaded)
    layout = {"translation.png": {"columns": ["source", "result"]},
              "trajectory.png": {"rows": ["x_t", "J (noise anchor)", "K (data anchor)"],
                                 "columns": [f"{sn.leg} t={sn.t:.3f}" for sn in snaps]}}
    pair_pic = render(pair, 2, cfg.size)
    pair_pic = img.with_header(pair_pic, [f"source (class {plan.source})",
                                          f"result (class {plan.target})"],
                               img.column_px(pair_pic, 2))
    raw = render(traj, len(snaps), cfg.size)
    px = img.column_px(raw, len(snaps))
    traj_pic = img.with_header(raw, [f"{sn.leg[:3]} t={sn.t:.2f}" for sn in snaps], px)
    traj_pic = img.with_row_labels(traj_pic, ["x_t", "J", "K"], px,
                                   top=traj_pic.shape[1] - raw.shape[1])
    output = ModeOutput(res, {"translation.png": pair_pic, "trajectory.png": traj_pic},
                        {}, metrics, layout)
    record = _record(cfg.to_dict(), cfg.model, loaded, output, run_s)
    record.update(mode="translate", source=plan.source, target=plan.target)
    files = _write(Path(cfg.out), output, record)
    return TransportResult(Path(cfg.out), files, record, res)
