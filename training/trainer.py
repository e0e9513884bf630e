"""The training loop: AdamW, warm-up + cosine, EMA, clipping, accumulation, bf16 autocast on
CUDA, DDP through ``torchrun``, atomic checkpoints in the published format, exact resume."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from gaf_trt.errors import CheckpointError, ConfigError
from gaf_trt.io.files import atomic_write
from gaf_trt.model.checkpoint import strip_prefixes
from gaf_trt.model.gaf import GAF
from training.config import TrainConfig
from training.data import ShardedSampler, build_dataset
from training.objective import EMA, gaf_loss, sample_t, warmup_cosine

log = logging.getLogger(__name__)


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


def pick_device(cfg: TrainConfig, info: DistInfo) -> str:
    if cfg.device == "auto":
        return f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu"
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but CUDA is not available")
    return cfg.device


def checkpoint_dict(model: GAF, ema: EMA, opt: torch.optim.Optimizer, sched: Any, step: int,
                    cfg: TrainConfig) -> dict[str, Any]:
    """The published layout: ``model``, ``ema``, ``opt``, ``sched``, ``step``, ``cfg`` (+ rng)."""
    return {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "ema": {k: v.cpu() for k, v in ema.state_dict().items()},
        "opt": opt.state_dict(),
        "sched": sched.state_dict(),
        "step": step,
        "cfg": cfg.to_dict(),
        "rng": {"torch": torch.get_rng_state()},  # data order and noise derive from cfg.seed
    }


def save_checkpoint(obj: dict[str, Any], path: Path) -> Path:
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_resume(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"resume checkpoint not found: {p}")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any read failure is a bad file here
        raise CheckpointError(f"resume checkpoint {p} is unreadable: "
                              f"{str(err).splitlines()[0][:200]}") from None
    if not isinstance(ck, dict) or not {"model", "opt", "step"} <= set(ck):
        raise CheckpointError(f"{p} is not a training checkpoint (needs model, opt, step)")
    return ck


def check_same_architecture(model: GAF, sd: dict[str, Tensor], where: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    wrong = [f"{k} {list(sd[k].shape)} vs {list(v.shape)}" for k, v in own.items()
             if k in sd and sd[k].shape != v.shape]
    if missing or wrong:
        detail = (f"missing {missing[:3]}" if missing else "") + (f" shape {wrong[:2]}" if wrong else "")
        raise CheckpointError(f"{where} holds another architecture than this config: {detail.strip()}")


def _previews(model: GAF, cfg: TrainConfig, outdir: Path, step: int, device: str) -> None:
    from gaf_trt.compose import sample
    from gaf_trt.io import images as img

    n = min(cfg.num_classes, 10)
    g = torch.Generator().manual_seed(1234)
    noise = torch.randn(n, *model.config.sample_shape, generator=g).to(device)
    model.eval()
    rows = []
    with torch.no_grad():
        for c in range(n):
            z = sample(model, [c], noise[c:c + 1], steps=cfg.preview_steps, solver="euler",
                       t_eps=cfg.t_eps)
            rows.append(z)
    if cfg.mode == "latent":
        return  # previews need the VAE; latent runs log losses only
    pics = img.upscale(img.to_rgb01(torch.cat(rows)), img.display_scale(cfg.input_size, 64))
    img.save_png(img.grid(pics, nrow=n), outdir / "previews" / f"step_{step:07d}.png")


def train(cfg: TrainConfig, *, resume: str | Path | None = None, retrunk: str | Path | None = None,
          progress: Callable[[TrainState], None] | None = None,
          stop_after: int | None = None) -> TrainResult:
    """Run (or continue) a training run; returns the loss history and the last checkpoint.

    ``stop_after`` ends the run early at that step (the schedule still spans ``cfg.iters``),
    writing a checkpoint there, as an interrupted run would.
    """
    info = init_distributed(cfg.device if cfg.device != "auto" else
                            ("cuda" if torch.cuda.is_available() else "cpu"))
    device = pick_device(cfg, info)
    dataset = build_dataset(cfg)
    if cfg.class_names is None:
        cfg.class_names = list(dataset.class_names) + [
            str(i) for i in range(len(dataset.class_names), cfg.num_classes)]
    torch.manual_seed(cfg.seed)
    model = GAF(cfg.model_config())
    model.initialize_weights()
    if retrunk is not None:
        from training.retrunk import retrunk_from_dit

        retrunk_from_dit(model, retrunk)
    model.to(device)

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas,
                            weight_decay=cfg.weight_decay)
    lr_lambda = functools.partial(warmup_cosine, warmup=cfg.warmup, total=cfg.iters, lr=cfg.lr,
                                  min_lr=cfg.min_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    ema = EMA(model, cfg.ema_decay, cfg.ema_warmup_decay, cfg.warmup)
    start = 0
    if resume is not None:
        ck = load_resume(resume)
        sd = strip_prefixes(ck["model"])
        check_same_architecture(model, sd, str(resume))
        model.load_state_dict(sd)
        ema.load_state_dict(strip_prefixes(ck["ema"]) if ck.get("ema") else sd)
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        start = int(ck["step"])
        if "rng" in ck:
            torch.set_rng_state(ck["rng"]["torch"])
        log.info("resumed from %s at step %d", resume, start)

    net: torch.nn.Module = model
    if info.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if device.startswith("cuda") else None)
    sampler = ShardedSampler(len(dataset), cfg.batch_size, seed=cfg.seed, rank=info.rank,
                             world=info.world)
    outdir = Path(cfg.outdir)
    if info.is_main:
        import yaml

        atomic_write(outdir / "config.yaml",
                     lambda tmp: tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=True)))
    use_amp = cfg.bf16 and device.startswith("cuda")
    result = TrainResult()
    t0 = time.perf_counter()
    end = cfg.iters if stop_after is None else min(cfg.iters, stop_after)
    for step in range(start, end):
        model.train()
        opt.zero_grad(set_to_none=True)
        terms_acc = torch.zeros(5)
        for micro in range(cfg.grad_accum):
            draw = step * cfg.grad_accum + micro
            x, y = dataset.get(sampler.indices(draw))
            g = torch.Generator().manual_seed((cfg.seed * 7919 + draw) * 131 + info.rank)
            noise = torch.randn(x.shape, generator=g)
            t = sample_t(x.shape[0], cfg.t_eps, g)
            x, y, noise, t = x.to(device), y.to(device), noise.to(device), t.to(device)
            # DDP all-reduces gradients on the last micro-batch only
            sync = (contextlib.nullcontext() if info.world == 1 or micro == cfg.grad_accum - 1
                    else net.no_sync())
            with sync:
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                    terms = gaf_loss(net, x, y, noise, t, pair=cfg.pair_loss,
                                     res_reg=cfg.res_reg, lam_time=cfg.lam_time)
                (terms.total / cfg.grad_accum).backward()
            terms_acc += torch.stack([terms.total.detach(), terms.pair, terms.residual,
                                      terms.time_swap, terms.velocity_cos]).cpu() / cfg.grad_accum
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        ema.update(model, step)
        if info.world > 1:
            dist.all_reduce(terms_acc)
            terms_acc /= info.world
        if not math.isfinite(float(terms_acc[0])):
            raise RuntimeError(f"loss became {float(terms_acc[0])} at step {step}")
        state = TrainState(step + 1, *map(float, terms_acc[:4]), float(terms_acc[4]), lr)
        result.history.append(state)
        if info.is_main:
            if progress is not None:
                progress(state)
            if cfg.log_every and (step + 1) % cfg.log_every == 0:
                log.info("step %d loss %.5f vcos %.4f lr %.2e", state.step, state.loss,
                         state.velocity_cos, lr)
            last = step + 1 == end
            if last or (cfg.ckpt_every and (step + 1) % cfg.ckpt_every == 0):
                ck = checkpoint_dict(model, ema, opt, sched, step + 1, cfg)
                result.checkpoint = save_checkpoint(ck, outdir / "last.pt")
            if cfg.preview_every and ((step + 1) % cfg.preview_every == 0 or last):
                preview = GAF(model.config).to(device)
                preview.load_state_dict(ema.state_dict())
                _previews(preview, cfg, outdir, step + 1, device)
    if info.world > 1:
        dist.barrier()
    result.seconds = time.perf_counter() - t0
    if result.checkpoint is None and info.is_main and (outdir / "last.pt").exists():
        result.checkpoint = outdir / "last.pt"
    return result
