"""The ``gaf-trt sample`` job: pure classes, compositions, strips, summary, GIFs, run.json.

Everything is validated before anything is written: a bad class, weight count, mask,
output folder or checkpoint raises a :class:`~gaf_trt.errors.GAFError`. The files are
written into a staging folder beside ``--out`` and moved in at the end, ``run.json`` last
(:class:`~gaf_trt.io.files.OutputDir`), so the folder never mixes two runs; a lock makes a
concurrent run into the same folder fail at once.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gaf_trt.compose import masks as mask_lib
from gaf_trt.compose.composition import Composition, permutations
from gaf_trt.compose.sampling import sample, sample_pure
from gaf_trt.compose.solvers import SOLVERS, StepCallback, check_steps, check_t_eps
from gaf_trt.engine.base import (BACKENDS, AnchorNetwork, LoadRequest, Precision, load_backend,
                                 resolve_device)
from gaf_trt.errors import ConfigError
from gaf_trt.io import images as img
from gaf_trt.io.files import OutputDir, check_output_dir, file_sha256, write_json
from gaf_trt.model.checkpoint import resolve_path
from gaf_trt.model.config import GAFConfig

log = logging.getLogger(__name__)

#: ``progress(label, total) -> per-step callback``; lets the CLI draw a progress bar.
ProgressFactory = Callable[[str, int], StepCallback]

MAX_BATCH = 4096  # samples per composition (each gets its own strip PNG)
MAX_SEED = 2 ** 63 - 1
DEFAULT_CHUNK = 256  # samples per solver loop; larger batches run in chunks
DEFAULT_MAX_RUNS = 24  # compositions per job (--permute with 4 classes = 24)
SUMMARY_COLUMNS = 8  # samples shown per row of summary.png


@dataclass
class SampleConfig:
    """Arguments of one sampling job (serialised into ``run.json``)."""

    classes: list[str]
    ckpt: str = "digits"
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
    backend: str = "torch"
    device: str = "auto"
    precision: Precision = Precision.FP32
    vae: str | None = None
    num_heads: int | None = None
    use_ema: bool = True
    trust_pickle: bool = False
    t_eps: float | None = None
    options: dict[str, Any] = field(default_factory=dict)  # backend options (e.g. compile)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["precision"] = self.precision.value
        return d


@dataclass
class Generated:
    """What a job generated, before anything is written: final states (CPU, float32) and,
    with ``--gif``, the trajectory frames of each generation."""

    pure: dict[int, Tensor] = field(default_factory=dict)  # class -> [B, C, S, S]
    mixes: dict[tuple[int, ...], Tensor] = field(default_factory=dict)  # classes -> [B, ...]
    pure_frames: dict[int, list[Tensor]] = field(default_factory=dict)
    mix_frames: dict[tuple[int, ...], list[Tensor]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # label -> seconds


@dataclass
class SampleResult:
    """What a job produced: files written, timings in seconds, and the final states."""

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
    BACKENDS.get(cfg.backend)
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
    check_output_dir(cfg.out)


def _mask_type(cfg: SampleConfig) -> str | None:
    """The mask preset, implied by --mask-img (custom) or --regions (afhq) when not given."""
    if cfg.mask_type is not None:
        return cfg.mask_type
    if cfg.mask_img is not None:
        return next(iter(mask_lib.presets_taking("image")))
    if cfg.regions:
        return next(iter(mask_lib.presets_taking("regions")))
    return None


def _load_decoder(cfg: SampleConfig, config: GAFConfig, device: str) -> Any:
    """The latent decoder: ``--vae DIR`` (diffusers), else an engine directory's exported
    VAE decoder graph; None for pixel models."""
    if config.mode != "latent":
        return None
    if cfg.vae is None and Path(cfg.ckpt).is_dir():
        from gaf_trt.export.manifest import read_manifest

        if "vae_decoder" in read_manifest(cfg.ckpt)["graphs"]:
            from gaf_trt.engine.loader import load_vae_decoder

            backend = cfg.backend if cfg.backend in ("ort", "trt") else "auto"
            return load_vae_decoder(cfg.ckpt, backend, device)
    if cfg.vae is None:
        raise ConfigError("this is a latent model: give the VAE with --vae DIR (a diffusers "
                          "AutoencoderKL directory), or export its decoder into the engine "
                          "directory (gaf-trt export --graphs split,fused,vae --vae DIR)")
    from gaf_trt.model.vae import load_vae

    return load_vae(cfg.vae, scale=config.vae_scale, device=device)


def prepare_sample(cfg: SampleConfig) -> SamplePlan:
    """Validate every option and load the model; raises before anything is written."""
    t0 = time.perf_counter()
    _check_bounds(cfg)
    device = resolve_device(cfg.device)
    network = load_backend(cfg.backend, LoadRequest(
        artifact=cfg.ckpt, device=device, precision=cfg.precision, num_heads=cfg.num_heads,
        use_ema=cfg.use_ema, trust_pickle=cfg.trust_pickle, options=dict(cfg.options)))
    config = network.config
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
    decoder = _load_decoder(cfg, config, device)
    return SamplePlan(network, config, classes, composition, masks, decoder, device,
                      time.perf_counter() - t0)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _tag(classes: Sequence[int]) -> str:
    return "_".join(map(str, classes))


class _Generator:
    """Runs the generations of one job from one noise, in chunks of at most ``chunk``
    samples, recording trajectories (``--gif``) and per-generation timings."""

    def __init__(self, plan: SamplePlan, noise: Tensor, cfg: SampleConfig,
                 progress: ProgressFactory | None) -> None:
        self.plan, self.noise, self.cfg, self.progress = plan, noise, cfg, progress
        self.t_eps = cfg.t_eps if cfg.t_eps is not None else plan.config.t_eps
        self.out = Generated()

    def _run(self, label: str, fn: Callable[[Tensor, StepCallback | None], Tensor],
             batch_dim: int) -> tuple[Tensor, list[Tensor]]:
        """``fn(noise_chunk, callback) -> state`` over every chunk; returns the whole state
        (CPU float32, concatenated along ``batch_dim``) and its frames (with ``--gif``)."""
        chunks = self.noise.split(self.cfg.chunk)
        bar = self.progress(label, self.cfg.steps * len(chunks)) if self.progress else None
        states, frames = [], []
        start = time.perf_counter()
        for i, chunk in enumerate(chunks):
            chunk_frames: list[Tensor] = []

            def on_step(k: int, n: int, x: Tensor, i: int = i, acc: list = chunk_frames) -> None:
                if self.cfg.gif:
                    acc.append(x.detach().float().cpu())
                if bar is not None:
                    bar(i * n + k, n * len(chunks), x)

            with torch.no_grad():
                states.append(fn(chunk, on_step if (self.cfg.gif or bar) else None).float().cpu())
            frames.append(chunk_frames)
        _sync(self.plan.device)
        self.out.timings[label] = time.perf_counter() - start
        state = torch.cat(states, dim=batch_dim)
        if not self.cfg.gif:
            return state, []
        start_frame = self.noise.detach().float().cpu()
        steps = [torch.cat([f[k] for f in frames], dim=0) for k in range(len(frames[0]))]
        return state, [start_frame, *steps]

    def pure(self, classes: list[int]) -> None:
        """Every pure class in one batched loop (one network call of ``len(classes)·B``)."""
        k = len(classes)

        def fn(noise: Tensor, cb: StepCallback | None) -> Tensor:
            return sample_pure(self.plan.network, classes, noise, steps=self.cfg.steps,
                               solver=self.cfg.solver, t_eps=self.t_eps, callback=cb)

        state, frames = self._run(f"pure {_tag(classes)}", fn, batch_dim=1)  # [k, B, ...]
        b = self.noise.shape[0]
        for i, c in enumerate(classes):
            self.out.pure[c] = state[i]
            if frames:  # frame 0 is the noise [B]; later frames are [k*chunk] per chunk
                self.out.pure_frames[c] = [frames[0]] + [_class_rows(f, i, k, b, self.cfg.chunk)
                                                         for f in frames[1:]]

    def mix(self, comp: Composition) -> None:
        def fn(noise: Tensor, cb: StepCallback | None) -> Tensor:
            return sample(self.plan.network, comp, noise, steps=self.cfg.steps,
                          solver=self.cfg.solver, t_eps=self.t_eps, callback=cb)

        state, frames = self._run(f"{comp.mode.value} {_tag(comp.classes)}", fn, batch_dim=0)
        self.out.mixes[comp.classes] = state
        if frames:
            self.out.mix_frames[comp.classes] = frames


def _class_rows(frame: Tensor, i: int, k: int, b: int, chunk: int) -> Tensor:
    """Rows of class ``i`` in a frame of the batched pure loop: each chunk of ``n`` noise
    rows contributes ``[k, n]`` class-major rows."""
    rows, start = [], 0
    for n in [min(chunk, b - s) for s in range(0, b, chunk)]:
        rows.append(frame[start + i * n: start + (i + 1) * n])
        start += k * n
    return torch.cat(rows)


def generate(cfg: SampleConfig, plan: SamplePlan, progress: ProgressFactory | None = None
             ) -> Generated:
    """Run every generation of a job (pure classes, then each composition / permutation)."""
    c, s = plan.config.in_channels, plan.config.input_size
    gen = torch.Generator().manual_seed(cfg.seed)
    noise = torch.randn(cfg.batch, c, s, s, generator=gen).to(plan.device)
    runner = _Generator(plan, noise, cfg, progress)
    if not cfg.skip:
        runner.pure(sorted(set(plan.classes)))
    if plan.composition is not None:
        n = len(plan.classes)
        for order in (permutations(n) if cfg.permute else [tuple(range(n))]):
            runner.mix(plan.composition.permuted(order))
    return runner.out


def run_sample(cfg: SampleConfig, progress: ProgressFactory | None = None,
               plan: SamplePlan | None = None) -> SampleResult:
    """Validate, load, generate and write every output of one sampling job (``plan`` from
    :func:`prepare_sample` when the caller validated first)."""
    plan = plan if plan is not None else prepare_sample(cfg)
    with OutputDir(cfg.out, record="run.json") as od:
        gen = generate(cfg, plan, progress)
        names = _write_outputs(od.staging, cfg, plan, gen)
        record = _record(cfg, plan, gen.timings, [*names, "run.json"])
        write_json(od.staging / "run.json", record)
        files = od.commit()
    return SampleResult(od.out, files, gen.timings, gen.pure, gen.mixes, record)


class _Pictures:
    """Decodes states and turns them into display pictures (``[3, H, W]`` in ``[0, 1]``)."""

    def __init__(self, plan: SamplePlan, batch: int, size: int) -> None:
        self.decoder = plan.decoder
        self.factor = img.display_scale(size)
        side = int(round(batch ** 0.5))
        self.nrow = side if side * side == batch else batch  # square grid when B is a square

    def decode(self, z: Tensor) -> Tensor:
        """``[B, C, S, S]`` state -> images ``[B, 3|1, H, W]`` in ``[-1, 1]``."""
        return z.clamp(-1, 1) if self.decoder is None else self.decoder.decode(z).cpu()

    def show(self, z: Tensor) -> Tensor:
        """State -> upscaled RGB tiles ``[B, 3, H', W']`` in ``[0, 1]``."""
        return img.upscale(img.to_rgb01(self.decode(z)), self.factor)

    def gif(self, frames: list[Tensor], path: Path) -> Path:
        return img.save_gif([img.grid(self.show(f), self.nrow) for f in frames], path)


def _write_outputs(folder: Path, cfg: SampleConfig, plan: SamplePlan, gen: Generated) -> list[str]:
    """Write every picture of a job into ``folder``; returns the file names."""
    states = {**gen.pure, **gen.mixes}
    pics = _Pictures(plan, cfg.batch, plan.config.input_size if plan.decoder is None
                     else plan.decoder.decode(next(iter(states.values()))[:1]).shape[-1])
    names: list[str] = []
    show = {c: pics.show(z) for c, z in gen.pure.items()}
    for cls, tiles in show.items():
        names.append(img.save_png(img.grid(tiles, pics.nrow), folder / f"pure_{cls}.png").name)
        if cfg.gif:
            names.append(pics.gif(gen.pure_frames[cls], folder / f"pure_{cls}.gif").name)
    tile = next(iter(show.values()))[0] if show else pics.show(next(iter(states.values()))[:1])[0]
    mask_pic = (img.mask_visual(plan.masks, tile.shape[-1]) if plan.masks is not None
                else torch.ones_like(tile))
    mix_rows = []
    for classes, z in gen.mixes.items():
        tiles = pics.show(z)
        for b in range(tiles.shape[0]):
            parts = [mask_pic] + [show[c][b] for c in classes if c in show] + [tiles[b]]
            names.append(img.save_png(img.strip(parts), folder / f"{b}_mix_{_tag(classes)}.png").name)
        if cfg.gif:
            names.append(pics.gif(gen.mix_frames[classes], folder / f"mix_{_tag(classes)}.gif").name)
        mix_rows.append(img.strip([mask_pic, *tiles[:SUMMARY_COLUMNS]]))
    pure_rows = [img.strip([torch.ones_like(tile), *t[:SUMMARY_COLUMNS]]) for t in show.values()]
    summary = img.stack_rows(pure_rows + mix_rows)
    names.append(img.save_png(summary, folder / "summary.png").name)
    return names


def _artifact_record(artifact: str) -> dict[str, Any]:
    path = resolve_path(artifact)
    if path.is_dir():  # an engine directory: its manifest pins every file
        manifest = path / "manifest.json"
        return {"path": str(path), "manifest_sha256": file_sha256(manifest)
                if manifest.is_file() else None}
    return {"path": str(path), "sha256": file_sha256(path)}


def _record(cfg: SampleConfig, plan: SamplePlan, timings: dict[str, float],
            files: list[str]) -> dict[str, Any]:
    return {
        "args": cfg.to_dict(),
        "checkpoint": _artifact_record(cfg.ckpt),
        "model": plan.config.to_dict(),
        "classes": plan.classes,
        "composition": plan.composition.mode.value if plan.composition else "pure",
        "backend": getattr(plan.network, "name", cfg.backend),
        "device": plan.device,
        "device_name": (torch.cuda.get_device_name(plan.device)
                        if plan.device.startswith("cuda") else platform.processor() or "cpu"),
        "precision": cfg.precision.value,
        "torch": torch.__version__,
        "timings_s": {"load": round(plan.load_s, 4), **{k: round(v, 4) for k, v in timings.items()}},
        "files": files,
    }
