"""The ``gaf-trt sample`` job: pure classes, compositions, strips, summary grid, GIFs, run.json.

Everything is validated before anything is written: a bad class, weight count, mask or
checkpoint raises a :class:`~gaf_trt.errors.GAFError` and leaves no output directory behind.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gaf_trt.compose import masks as mask_lib
from gaf_trt.compose.composition import ComposedField, Composition, permutations
from gaf_trt.compose.solvers import SOLVERS, StepCallback, check_steps, integrate
from gaf_trt.engine.base import BACKENDS, LoadRequest, Precision, load_backend, resolve_device
from gaf_trt.errors import ConfigError
from gaf_trt.io import images as img
from gaf_trt.io.files import atomic_write, file_sha256
from gaf_trt.model.checkpoint import resolve_path
from gaf_trt.model.config import GAFConfig

log = logging.getLogger(__name__)

#: ``progress(label, total) -> per-step callback``; lets the CLI draw a progress bar.
ProgressFactory = Callable[[str, int], StepCallback]


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
    backend: str = "torch"
    device: str = "cpu"
    precision: Precision = Precision.FP32
    vae: str | None = None
    num_heads: int | None = None
    use_ema: bool = True
    trust_pickle: bool = False
    t_eps: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["precision"] = self.precision.value
        return d


@dataclass
class SampleResult:
    """What a job produced: files written, timings in seconds, and the final states."""

    out_dir: Path
    files: list[Path]
    timings: dict[str, float]
    pure: dict[int, Tensor] = field(default_factory=dict)
    mixes: dict[tuple[int, ...], Tensor] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)


def resolve_classes(tokens: Sequence[str | int], config: GAFConfig) -> list[int]:
    """Class ids from indices or class names (case-insensitive), checked against the model."""
    names = {n.lower(): i for i, n in enumerate(config.class_names or ())}
    out = []
    for tok in tokens:
        s = str(tok).strip()
        if s.lstrip("-").isdigit():
            c = int(s)
        elif s.lower() in names:
            c = names[s.lower()]
        else:
            known = ", ".join(list(config.class_names or ())[:12]) or "none (this model has no names)"
            raise ConfigError(f"unknown class name {s!r}; known names: {known}")
        if not 0 <= c < config.num_classes:
            raise ConfigError(f"class id {c} out of range: the model has {config.num_classes} "
                              f"classes (0..{config.num_classes - 1})")
        out.append(c)
    return out


@dataclass
class SamplePlan:
    """Validated inputs of a job: the loaded network, classes, composition, masks, decoder."""

    network: Any
    config: GAFConfig
    classes: list[int]
    composition: Composition | None
    masks: Tensor | None
    decoder: Any
    device: str
    load_s: float = 0.0  # validation, checkpoint and VAE loading


def _validate_options(cfg: SampleConfig) -> None:
    if not cfg.classes:
        raise ConfigError("give at least one class with --classes")
    SOLVERS.get(cfg.solver)
    BACKENDS.get(cfg.backend)
    check_steps(cfg.steps)
    if cfg.batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {cfg.batch}")
    if cfg.mask_type is not None:
        mask_lib.MASKS.get(cfg.mask_type)
    if cfg.mask_img is not None and cfg.mask_type not in (None, "custom"):
        raise ConfigError(f"--mask-img is only used with --mask-type custom, not {cfg.mask_type!r}")
    if cfg.regions and cfg.mask_type not in (None, "afhq"):
        raise ConfigError(f"--regions is only used with --mask-type afhq, not {cfg.mask_type!r}")
    if cfg.mask_img is not None and not Path(cfg.mask_img).is_file():
        raise ConfigError(f"mask image not found: {cfg.mask_img}")


def prepare_sample(cfg: SampleConfig) -> SamplePlan:
    """Validate every option and load the model; raises before anything is written."""
    t0 = time.perf_counter()
    _validate_options(cfg)
    mask_type = cfg.mask_type
    if mask_type is None and cfg.mask_img is not None:
        mask_type = "custom"
    if mask_type is None and cfg.regions:
        mask_type = "afhq"
    device = resolve_device(cfg.device)
    network = load_backend(cfg.backend, LoadRequest(
        artifact=cfg.ckpt, device=device, precision=cfg.precision, num_heads=cfg.num_heads,
        use_ema=cfg.use_ema, trust_pickle=cfg.trust_pickle))
    config: GAFConfig = network.config
    classes = resolve_classes(cfg.classes, config)
    s = config.input_size
    masks = None
    if mask_type is not None:
        masks = mask_lib.build(mask_type, s, s, sigma=cfg.sigma, image=cfg.mask_img,
                               regions=cfg.regions)
    composing = len(classes) > 1 or any(v is not None for v in (cfg.weights, cfg.alpha, masks))
    composition = None
    if composing:
        composition = Composition.build(classes, weights=cfg.weights, alpha=cfg.alpha, masks=masks)
        composition.validate_for(config)
    elif cfg.skip:
        raise ConfigError("--skip with a single pure class generates nothing; drop --skip or "
                          "give a composition")
    decoder = None
    if config.mode == "latent":
        if cfg.vae is None:
            raise ConfigError("this is a latent checkpoint: give the VAE with --vae DIR "
                              "(a diffusers AutoencoderKL directory)")
        from gaf_trt.model.vae import load_vae

        decoder = load_vae(cfg.vae, scale=config.vae_scale, device=device)
    return SamplePlan(network, config, classes, composition, masks, decoder, device,
                      time.perf_counter() - t0)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class _Runner:
    """Runs compositions on one network from one noise, recording trajectories on request."""

    def __init__(self, plan: SamplePlan, noise: Tensor, cfg: SampleConfig,
                 progress: ProgressFactory | None) -> None:
        self.plan, self.noise, self.cfg, self.progress = plan, noise, cfg, progress
        self.t_eps = cfg.t_eps if cfg.t_eps is not None else plan.config.t_eps
        self.timings: dict[str, float] = {}

    def run(self, label: str, composition: Composition) -> tuple[Tensor, list[Tensor]]:
        frames: list[Tensor] = [self.noise.detach().cpu()] if self.cfg.gif else []
        bar = self.progress(label, self.cfg.steps) if self.progress else None

        def on_step(k: int, n: int, x: Tensor) -> None:
            if self.cfg.gif:
                frames.append(x.detach().float().cpu())
            if bar is not None:
                bar(k, n, x)

        field_ = ComposedField(self.plan.network, composition)
        start = time.perf_counter()
        with torch.no_grad():
            z = integrate(field_, self.noise, steps=self.cfg.steps, solver=self.cfg.solver,
                          t_eps=self.t_eps, callback=on_step)
        _sync(self.plan.device)
        self.timings[label] = time.perf_counter() - start
        return z.detach().float().cpu(), frames

    def decode(self, z: Tensor) -> Tensor:
        if self.plan.decoder is None:
            return z.clamp(-1, 1)
        return self.plan.decoder.decode(z).cpu()


def _tag(classes: Sequence[int]) -> str:
    return "_".join(map(str, classes))


def run_sample(cfg: SampleConfig, progress: ProgressFactory | None = None,
               plan: SamplePlan | None = None) -> SampleResult:
    """Validate, load, generate and write every output of one sampling job (``plan`` from
    :func:`prepare_sample` when the caller validated first)."""
    plan = plan if plan is not None else prepare_sample(cfg)
    c, s = plan.config.in_channels, plan.config.input_size
    gen = torch.Generator().manual_seed(cfg.seed)
    noise = torch.randn(cfg.batch, c, s, s, generator=gen).to(plan.device)
    runner = _Runner(plan, noise, cfg, progress)
    out = Path(cfg.out)
    files: list[Path] = []
    result = SampleResult(out, files, runner.timings)

    pure_imgs: dict[int, Tensor] = {}
    pure_frames: dict[int, list[Tensor]] = {}
    if not cfg.skip:
        for cls in sorted(set(plan.classes)):
            z, frames = runner.run(f"pure {cls}", Composition.pure(cls))
            result.pure[cls] = z
            pure_imgs[cls] = runner.decode(z)
            pure_frames[cls] = frames

    mix_imgs: dict[tuple[int, ...], Tensor] = {}
    mix_frames: dict[tuple[int, ...], list[Tensor]] = {}
    if plan.composition is not None:
        orders = permutations(len(plan.classes)) if cfg.permute else [tuple(range(len(plan.classes)))]
        for order in orders:
            comp = plan.composition.permuted(order)
            z, frames = runner.run(f"{comp.mode.value} {_tag(comp.classes)}", comp)
            result.mixes[comp.classes] = z
            mix_imgs[comp.classes] = runner.decode(z)
            mix_frames[comp.classes] = frames

    files += _write_outputs(out, cfg, plan, runner, pure_imgs, pure_frames, mix_imgs, mix_frames)
    record = _record(cfg, plan, runner.timings, files, out)
    files.append(atomic_write(out / "run.json",
                              lambda tmp: tmp.write_text(json.dumps(record, indent=2))))
    result.record = record
    return result


def _write_outputs(out: Path, cfg: SampleConfig, plan: SamplePlan, runner: _Runner,
                   pure_imgs: dict[int, Tensor], pure_frames: dict[int, list[Tensor]],
                   mix_imgs: dict[tuple[int, ...], Tensor],
                   mix_frames: dict[tuple[int, ...], list[Tensor]]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = []
    size = next(iter({**pure_imgs, **mix_imgs}.values())).shape[-1]
    factor = img.display_scale(size)
    side = int(round(cfg.batch ** 0.5))
    nrow = side if side * side == cfg.batch else cfg.batch  # square grid when B is a square
    show = {c: img.upscale(img.to_rgb01(v), factor) for c, v in pure_imgs.items()}
    for cls, pic in show.items():
        files.append(img.save_png(img.grid(pic, nrow), out / f"pure_{cls}.png"))
        if cfg.gif:
            files.append(_save_traj_gif(runner, pure_frames[cls], factor, nrow,
                                        out / f"pure_{cls}.gif"))
    if not mix_imgs:
        return files
    big = size * factor
    mask_pic = (img.mask_visual(plan.masks, big) if plan.masks is not None
                else torch.ones(3, big, big))
    summary_rows = []
    for classes, mix in mix_imgs.items():
        mix01 = img.upscale(img.to_rgb01(mix), factor)
        for b in range(mix01.shape[0]):
            parts = [mask_pic] + [show[c][b] for c in classes if c in show] + [mix01[b]]
            pic = img.strip(parts)
            files.append(img.save_png(pic, out / f"{b}_mix_{_tag(classes)}.png"))
            if b == 0:
                summary_rows.append(pic)
        if cfg.gif:
            files.append(_save_traj_gif(runner, mix_frames[classes], factor, nrow,
                                        out / f"mix_{_tag(classes)}.gif"))
    files.append(img.save_png(img.stack_rows(summary_rows), out / "summary.png"))
    return files


def _save_traj_gif(runner: _Runner, frames: list[Tensor], factor: int, nrow: int,
                   path: Path) -> Path:
    pics = [img.grid(img.upscale(img.to_rgb01(runner.decode(f)), factor), nrow) for f in frames]
    return img.save_gif(pics, path)


def _record(cfg: SampleConfig, plan: SamplePlan, timings: dict[str, float],
            files: list[Path], out: Path) -> dict[str, Any]:
    ckpt = resolve_path(cfg.ckpt)
    return {
        "args": cfg.to_dict(),
        "checkpoint": {"path": str(ckpt), "sha256": file_sha256(ckpt)},
        "model": plan.config.to_dict(),
        "classes": plan.classes,
        "composition": plan.composition.mode.value if plan.composition else "pure",
        "backend": cfg.backend,
        "device": plan.device,
        "device_name": (torch.cuda.get_device_name(plan.device)
                        if plan.device.startswith("cuda") else platform.processor() or "cpu"),
        "precision": cfg.precision.value,
        "torch": torch.__version__,
        "timings_s": {"load": round(plan.load_s, 4), **{k: round(v, 4) for k, v in timings.items()}},
        "files": [str(f.relative_to(out)) for f in files],
    }
