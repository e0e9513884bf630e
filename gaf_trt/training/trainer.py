"""The training loop: AdamW, warm-up + cosine, EMA, clipping, accumulation, bf16 autocast on
CUDA, DDP through ``torchrun``, atomic checkpoints in the published format, exact resume.

:func:`train` runs named steps: :func:`init_distributed`, :func:`prepare_run` (data, model,
optimiser, EMA, resume), :func:`train_step` per optimiser step, and :func:`after_step`
(progress, logging, checkpoints, previews). The output folder is locked for the whole run.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from gaf_trt.device import resolve_device
from gaf_trt.errors import ConfigError, GAFError
from gaf_trt.io.files import atomic_write, check_output_dir
from gaf_trt.io.owners import check_owner
from gaf_trt.io.lock import DirLock
from gaf_trt.model.gaf import GAF
from gaf_trt.records import TRAINING
from gaf_trt.training.config import TrainConfig
from gaf_trt.training.data import ShardedSampler, TensorDataset, build_dataset
from gaf_trt.training.objective import EMA, gaf_loss, sample_t, warmup_cosine
from gaf_trt.training.resume import ResumePoint, load_resume_point, restore

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"


class TrainingDiverged(GAFError):
    """The loss became NaN or infinite (the settings, usually ``lr``, are too aggressive)."""


@dataclass
class TrainState:
    """What one optimiser step reports."""

    step: int
    loss: float
    pair: float
    residual: float
    time_swap: float
    velocity_cos: float
    lr: float


@dataclass
class TrainResult:
    history: list[TrainState] = field(default_factory=list)
    checkpoint: Path | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class Run:
    """Everything a run holds while its loop runs."""

    cfg: TrainConfig
    dist: DistInfo
    device: str
    outdir: Path
    dataset: TensorDataset
    model: GAF
    net: torch.nn.Module  # the model, or its DDP wrapper
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    ema: EMA
    sampler: ShardedSampler
    start: int
    end: int
    overrides: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------- set-up steps


def init_distributed(device: str) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (it sets WORLD_SIZE, RANK)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device.startswith("cuda"):
        torch.cuda.set_device(info.local_rank)
    return info


def rank_device(device: str, info: DistInfo) -> str:
    """Under DDP each rank takes the GPU of its ``LOCAL_RANK`` when ``device`` (already
    resolved by :func:`~gaf_trt.device.resolve_device`) names no index."""
    if device == "cuda" and info.world > 1:
        return f"cuda:{info.local_rank}"
    return device


def load_data(cfg: TrainConfig) -> TensorDataset:
    """The dataset; class names the config leaves open come from the data."""
    dataset = build_dataset(cfg)
    if cfg.class_names is None:
        cfg.class_names = list(dataset.class_names) + [
            str(i) for i in range(len(dataset.class_names), cfg.num_classes)]
    return dataset


def build_model(cfg: TrainConfig, device: str, retrunk: str | Path | None) -> GAF:
    """A freshly initialised GAF (seeded by ``cfg.seed``), optionally trunk-seeded from DiT."""
    torch.manual_seed(cfg.seed)
    model = GAF(cfg.model_config())
    model.initialize_weights()
    if retrunk is not None:
        from gaf_trt.training.retrunk import retrunk_from_dit

        retrunk_from_dit(model, retrunk)
    return model.to(device)


def build_optimizer(model: GAF, cfg: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                             weight_decay=cfg.weight_decay)


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig,
                    start: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up + cosine as a pure function of the step; a resumed run starts it at ``start``
    from ``cfg.lr`` (so an overridden lr / warmup / iters / min_lr takes effect at once)."""
    lr_lambda = functools.partial(warmup_cosine, warmup=cfg.warmup, total=cfg.iters, lr=cfg.lr,
                                  min_lr=cfg.min_lr)
    for group in opt.param_groups:
        group["initial_lr"] = cfg.lr
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda, last_epoch=start - 1)


def prepare_run(cfg: TrainConfig, info: DistInfo, device: str, outdir: Path,
                resume: str | Path | None, retrunk: str | Path | None,
                override: Iterable[str], stop_after: int | None) -> Run:
    """Data, model, optimiser, EMA and (when resuming) their restored state."""
    dataset = load_data(cfg)
    point: ResumePoint | None = None
    if resume is not None:
        point = load_resume_point(resume, cfg, override)
    start = point.step if point is not None else 0
    end = cfg.iters if stop_after is None else min(cfg.iters, stop_after)
    if end <= start:
        raise ConfigError(f"--stop-after {stop_after} is not after the checkpoint's step {start}")
    model = build_model(cfg, device, retrunk)
    opt = build_optimizer(model, cfg)
    ema = EMA(model, cfg.ema_decay, cfg.ema_warmup_decay, cfg.warmup)
    if point is not None:
        restore(point, model, ema, opt, cfg)
    net: torch.nn.Module = model
    if info.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if device.startswith("cuda") else None)
    sampler = ShardedSampler(len(dataset), cfg.batch_size, seed=cfg.seed, rank=info.rank,
                             world=info.world)
    return Run(cfg, info, device, outdir, dataset, model, net, opt,
               build_scheduler(opt, cfg, start), ema, sampler, start, end,
               point.overrides if point is not None else [])


def write_config(run: Run) -> None:
    """``OUT/config.yaml``: the run's config (YAML, so it can be edited and passed back)."""
    import yaml

    text = yaml.safe_dump(run.cfg.to_dict(), sort_keys=True)
    atomic_write(run.outdir / "config.yaml", lambda tmp: tmp.write_text(text))


# --------------------------------------------------------------------------- the loop


def _micro_batch(run: Run, draw: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Data ``x [B, C, S, S]``, labels ``y [B]``, noise like ``x`` and times ``t [B]`` of the
    ``draw``-th micro-batch: a function of ``(seed, draw, rank)``, so resume is exact."""
    cfg = run.cfg
    x, y = run.dataset.get(run.sampler.indices(draw))
    g = torch.Generator().manual_seed((cfg.seed * 7919 + draw) * 131 + run.dist.rank)
    noise = torch.randn(x.shape, generator=g)
    t = sample_t(x.shape[0], cfg.t_eps, g)
    return x.to(run.device), y.to(run.device), noise.to(run.device), t.to(run.device)


def _accumulate(run: Run, step: int) -> Tensor:
    """Forward + backward over ``grad_accum`` micro-batches; returns the mean of
    ``[total, pair, residual, time_swap, velocity_cos]`` (``[5]``, CPU)."""
    cfg = run.cfg
    use_amp = cfg.bf16 and run.device.startswith("cuda")
    terms_acc = torch.zeros(5)
    for micro in range(cfg.grad_accum):
        x, y, noise, t = _micro_batch(run, step * cfg.grad_accum + micro)
        # DDP all-reduces gradients on the last micro-batch only
        sync = (contextlib.nullcontext() if run.dist.world == 1 or micro == cfg.grad_accum - 1
                else run.net.no_sync())
        with sync:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                terms = gaf_loss(run.net, x, y, noise, t, pair=cfg.pair_loss,
                                 res_reg=cfg.res_reg, lam_time=cfg.lam_time)
            (terms.total / cfg.grad_accum).backward()
        terms_acc += torch.stack([terms.total.detach(), terms.pair, terms.residual,
                                  terms.time_swap, terms.velocity_cos]).cpu() / cfg.grad_accum
    return terms_acc


def train_step(run: Run, step: int) -> TrainState:
    """One optimiser step (0-based ``step``); returns what it reports (1-based step)."""
    run.model.train()
    run.opt.zero_grad(set_to_none=True)
    terms = _accumulate(run, step)
    if run.cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
    lr = run.opt.param_groups[0]["lr"]
    run.opt.step()
    run.sched.step()
    run.ema.update(run.model, step)
    if run.dist.world > 1:
        dist.all_reduce(terms)
        terms /= run.dist.world
    if not math.isfinite(float(terms[0])):
        raise TrainingDiverged(f"the loss became {float(terms[0])} at step {step + 1} (lr "
                               f"{lr:.3g}); nothing was saved for this step: lower lr or set "
                               "grad_clip > 0 (a run can resume from its last checkpoint)")
    return TrainState(step + 1, *map(float, terms[:4]), float(terms[4]), lr)


# --------------------------------------------------------------------------- after a step


def checkpoint_dict(run: Run, step: int) -> dict[str, Any]:
    """The published layout: ``model``, ``ema``, ``opt``, ``sched``, ``step``, ``cfg``, plus
    ``rng`` and ``overrides`` (the schedule changes made on resume, in order)."""
    return {
        "model": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
        "ema": {k: v.cpu() for k, v in run.ema.state_dict().items()},
        "opt": run.opt.state_dict(),
        "sched": run.sched.state_dict(),
        "step": step,
        "cfg": run.cfg.to_dict(),
        "rng": {"torch": torch.get_rng_state()},  # data order and noise derive from cfg.seed
        "overrides": list(run.overrides),
    }


def save_checkpoint(obj: dict[str, Any], path: Path) -> Path:
    """Atomic ``torch.save`` (a killed write leaves no partial file; stale temps are swept)."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_previews(model: GAF, cfg: TrainConfig, outdir: Path, step: int, device: str) -> None:
    """One row of Euler samples (first 10 classes) as ``OUT/previews/step_N.png``."""
    if cfg.mode == "latent":
        return  # previews need the VAE; latent runs log losses only
    from gaf_trt.compose import sample
    from gaf_trt.io import images as img

    n = min(cfg.num_classes, 10)
    g = torch.Generator().manual_seed(1234)
    noise = torch.randn(n, *model.config.sample_shape, generator=g).to(device)
    model.eval()
    with torch.no_grad():
        rows = [sample(model, [c], noise[c:c + 1], steps=cfg.preview_steps, solver="euler",
                       t_eps=cfg.t_eps) for c in range(n)]
    pics = img.upscale(img.to_rgb01(torch.cat(rows)), img.display_scale(cfg.input_size, 64))
    img.save_png(img.grid(pics, nrow=n), outdir / "previews" / f"step_{step:07d}.png")


def _due(every: int, step: int) -> bool:
    return bool(every) and step % every == 0


def after_step(run: Run, state: TrainState, result: TrainResult,
               progress: Callable[[TrainState], None] | None) -> None:
    """Progress callback, log line, checkpoint and preview of the main rank."""
    if not run.dist.is_main:
        return
    cfg, step = run.cfg, state.step
    if progress is not None:
        progress(state)
    if _due(cfg.log_every, step):
        log.info("step %d loss %.5f vcos %.4f lr %.2e", step, state.loss, state.velocity_cos,
                 state.lr)
    last = step == run.end
    if last or _due(cfg.ckpt_every, step):
        result.checkpoint = save_checkpoint(checkpoint_dict(run, step),
                                            run.outdir / CHECKPOINT_NAME)
    if cfg.preview_every and (last or _due(cfg.preview_every, step)):
        preview = GAF(run.model.config).to(run.device)
        preview.load_state_dict(run.ema.state_dict())
        write_previews(preview, cfg, run.outdir, step, run.device)


# --------------------------------------------------------------------------- entry point


def run_loop(run: Run, progress: Callable[[TrainState], None] | None = None) -> TrainResult:
    """Steps ``run.start .. run.end - 1``; returns the history and the last checkpoint."""
    result = TrainResult()
    t0 = time.perf_counter()
    for step in range(run.start, run.end):
        state = train_step(run, step)
        result.history.append(state)
        after_step(run, state, result, progress)
    if run.dist.world > 1:
        dist.barrier()
    result.seconds = time.perf_counter() - t0
    last = run.outdir / CHECKPOINT_NAME
    if result.checkpoint is None and run.dist.is_main and last.exists():
        result.checkpoint = last
    return result


def train(cfg: TrainConfig, *, resume: str | Path | None = None,
          retrunk: str | Path | None = None, override: Iterable[str] = (),
          progress: Callable[[TrainState], None] | None = None,
          stop_after: int | None = None) -> TrainResult:
    """Run (or continue) a training run; returns the loss history and the last checkpoint.

    ``override`` names the schedule fields of ``cfg`` that may differ from the ``resume``
    checkpoint's (any other difference is refused). ``stop_after`` ends the run early at that
    step (the schedule still spans ``cfg.iters``), writing a checkpoint there, as an
    interrupted run would. ``cfg.outdir`` is checked before any work and locked for the
    whole run, so a second run into the same folder fails at once.
    """
    override = tuple(override)
    if override and resume is None:
        raise ConfigError(f"--override {', '.join(override)} only applies when resuming "
                          "(--resume); for a new run use --set")
    if stop_after is not None and stop_after < 1:
        raise ConfigError(f"--stop-after must be >= 1, got {stop_after}")
    outdir = check_output_dir(cfg.outdir, "--out")
    device = resolve_device(cfg.device)  # the one device resolution of gaf-trt
    info = init_distributed(device)
    device = rank_device(device, info)
    lock = DirLock(outdir, what="--out") if info.is_main else contextlib.nullcontext()
    with lock:
        if info.is_main:  # one folder, one command's output (checked under the lock)
            check_owner(outdir, TRAINING.command, "--out")
        run = prepare_run(cfg, info, device, outdir, resume, retrunk, override, stop_after)
        if info.is_main:
            write_config(run)
        return run_loop(run, progress)

