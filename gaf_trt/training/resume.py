"""Resuming a run: read a training checkpoint, compare its ``cfg`` with the new config, and
restore model, EMA, optimiser and RNG.

The rule (docs/training.md, resume): architecture and objective fields
(:data:`~gaf_trt.training.config.FROZEN_ON_RESUME`) never change on resume; schedule fields
(:data:`~gaf_trt.training.config.SCHEDULE_FIELDS`) change only when the caller names them
(``--override KEY=VALUE``), and then the optimiser and scheduler really use the new values
(see :func:`apply_schedule`) and the next checkpoint records them; bookkeeping fields are
free.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gaf_trt.errors import CheckpointError, ConfigError
from gaf_trt.model.checkpoint import strip_prefixes
from gaf_trt.model.gaf import GAF
from gaf_trt.training.config import FROZEN_ON_RESUME, SCHEDULE_FIELDS, TrainConfig
from gaf_trt.training.objective import EMA

log = logging.getLogger(__name__)


@dataclass
class ResumePoint:
    """What a training checkpoint hands to the next run (state dicts on the CPU)."""

    path: Path
    step: int
    model: dict[str, Tensor]
    ema: dict[str, Tensor]
    opt: dict[str, Any]
    rng: Tensor | None
    #: Every schedule change applied so far: ``{"step", "field", "old", "new"}`` records.
    overrides: list[dict[str, Any]] = field(default_factory=list)


def read_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw dict of a training checkpoint (``weights_only`` load)."""
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
    step = ck["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{p}: step must be a non-negative integer, got {step!r}")
    for key in ("model", "opt"):
        if not isinstance(ck[key], dict):
            raise CheckpointError(f"{p}: {key} must be a state dict, got "
                                  f"{type(ck[key]).__name__}")
    return ck


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _fmt(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def config_changes(saved: dict[str, Any], cfg: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """``{field: (saved value, new value)}`` for every field the two configs both have and
    that differs. Keys a foreign checkpoint's cfg lacks are not compared (its weights still
    are, by :func:`check_same_architecture`)."""
    new = cfg.to_dict()
    return {k: (saved[k], new[k]) for k in new if k in saved and not _same(saved[k], new[k])}


def check_resume_config(saved: dict[str, Any], cfg: TrainConfig, override: Iterable[str],
                        where: str) -> dict[str, tuple[Any, Any]]:
    """Refuse architecture/objective changes and schedule changes not named in ``override``;
    returns the accepted schedule changes."""
    override = set(override)
    bad = sorted(k for k in override if k not in SCHEDULE_FIELDS)
    if bad:
        raise ConfigError(f"--override {', '.join(bad)}: only schedule fields can change on "
                          f"resume ({', '.join(SCHEDULE_FIELDS)})")
    changes = config_changes(saved, cfg)
    frozen = {k: v for k, v in changes.items() if k in FROZEN_ON_RESUME}
    if frozen:
        listed = "; ".join(f"{k} {_fmt(a)} -> {_fmt(b)}" for k, (a, b) in sorted(frozen.items()))
        raise ConfigError(f"cannot resume {where} with another architecture or objective "
                          f"({listed}); use the checkpoint's values or start a new run")
    unasked = {k: v for k, v in changes.items() if k in SCHEDULE_FIELDS and k not in override}
    if unasked:
        listed = "; ".join(f"{k} {_fmt(a)} -> {_fmt(b)}" for k, (a, b) in sorted(unasked.items()))
        flags = " ".join(f"--override {k}={_fmt(b)}" for k, (_, b) in sorted(unasked.items()))
        raise ConfigError(f"the config differs from {where} in schedule field(s) ({listed}); "
                          f"to change them on resume pass {flags}, or use the checkpoint's "
                          "values")
    return {k: v for k, v in changes.items() if k in SCHEDULE_FIELDS}


def load_resume_point(path: str | Path, cfg: TrainConfig,
                      override: Iterable[str] = ()) -> ResumePoint:
    """Read ``path`` and check it may continue as ``cfg`` (see the module docstring)."""
    ck = read_training_checkpoint(path)
    saved = ck.get("cfg") if isinstance(ck.get("cfg"), dict) else {}
    changes = check_resume_config(saved, cfg, override, str(path))
    step = int(ck["step"])
    if step >= cfg.iters:
        raise ConfigError(f"{path} is already at step {step} and iters={cfg.iters}: nothing "
                          f"left to train; raise it with --override iters=N (N > {step})")
    raw = ck.get("overrides")
    history = [o for o in raw if isinstance(o, dict)] if isinstance(raw, list) else []
    history += [{"step": step, "field": k, "old": a, "new": b} for k, (a, b) in changes.items()]
    for k, (a, b) in sorted(changes.items()):
        log.info("resume override at step %d: %s %s -> %s", step, k, _fmt(a), _fmt(b))
    model_sd = strip_prefixes(ck["model"])
    ema = ck.get("ema")
    ema_sd = strip_prefixes(ema) if isinstance(ema, dict) and ema else model_sd
    rng = ck.get("rng", {}).get("torch") if isinstance(ck.get("rng"), dict) else None
    return ResumePoint(Path(path), step, model_sd, ema_sd, ck["opt"], rng, history)


def check_same_architecture(model: GAF, sd: dict[str, Tensor], where: str) -> None:
    """The weights of ``sd`` fit ``model`` (names and shapes)."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    wrong = [f"{k} {list(sd[k].shape)} vs {list(v.shape)}" for k, v in own.items()
             if k in sd and sd[k].shape != v.shape]
    if missing or wrong:
        detail = " ".join(([f"missing {missing[:3]}"] if missing else [])
                          + ([f"shape {wrong[:2]}"] if wrong else []))
        raise CheckpointError(f"{where} holds another architecture than this config: {detail}")


def apply_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig) -> None:
    """Make the optimiser's hyper-parameters those of ``cfg`` (a loaded optimiser state
    carries the old ones). The learning rate itself is set by the scheduler built after
    (:func:`~gaf_trt.training.trainer.build_scheduler`)."""
    for group in opt.param_groups:
        group["betas"] = tuple(cfg.betas)
        group["weight_decay"] = cfg.weight_decay


def restore(point: ResumePoint, model: GAF, ema: EMA, opt: torch.optim.Optimizer,
            cfg: TrainConfig) -> None:
    """Load weights, EMA, optimiser state and RNG of ``point``; apply ``cfg``'s schedule."""
    check_same_architecture(model, point.model, str(point.path))
    model.load_state_dict(point.model)
    ema.load_state_dict(point.ema)
    try:
        opt.load_state_dict(point.opt)
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{point.path}: optimiser state does not fit this model: "
                              f"{str(err).splitlines()[0][:200]}") from None
    apply_schedule(opt, cfg)
    if point.rng is not None:
        torch.set_rng_state(point.rng)
    log.info("resumed from %s at step %d", point.path, point.step)
