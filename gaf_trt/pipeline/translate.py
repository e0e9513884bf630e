"""The ``gaf-trt translate`` job: invert an image with its source class, generate from that
noise with the target class, write ``translation.png``, ``trajectory.png`` and
``transport.json`` (the checks, metrics and writer of :mod:`gaf_trt.pipeline.transport`).

Everything is validated and computed before anything is written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gaf_trt.compose import transport as tr
from gaf_trt.compose.composition import resolve_classes
from gaf_trt.errors import ConfigError
from gaf_trt.io import images as img
from gaf_trt.pipeline.source import Loaded, ModelSource, load_source
from gaf_trt.pipeline.transport import (
    ModeOutput,
    ProgressFactory,
    TransportResult,
    cache_record,
    cells01,
    check_common,
    image_metrics,
    job_args,
    job_record,
    with_feature_cache,
    write_outputs,
)


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
    cache: str = "off"  # feature-cache policy (gaf_trt.compose.cache)
    model: ModelSource = field(default_factory=ModelSource)

    def to_dict(self) -> dict[str, Any]:
        """The record's ``args``: the options, the model source nested under ``model``."""
        return job_args(self)


def _vae_factor(decoder: Any) -> int:
    blocks = getattr(getattr(decoder.vae, "config", None), "block_out_channels", None)
    return 2 ** (len(blocks) - 1) if blocks else 8


def image_to_latent(path: str, loaded: Loaded) -> Tensor:
    """Read ``path`` into the model's data space ``[1, C, S, S]``: pixels in [-1, 1] for pixel
    models, scaled VAE latent means for latent models (which need an encoder: ``--vae``)."""
    cfg = loaded.config
    if loaded.decoder is None:
        return img.read_image(path, cfg.in_channels, cfg.input_size).to(loaded.device)
    if not hasattr(loaded.decoder, "encode"):
        raise ConfigError("translate encodes the image with the VAE: give --vae DIR (a "
                          "diffusers AutoencoderKL directory); an engine directory's VAE graph "
                          "only decodes")
    pixels = img.read_image(path, 3, cfg.input_size * _vae_factor(loaded.decoder))
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
    check_common(cfg.steps, cfg.solver, cfg.reverse_solver, cfg.size, cfg.model, cfg.out,
                 "translate", cache=cfg.cache)
    if not Path(cfg.image).is_file():
        raise ConfigError(f"cannot read image {cfg.image}: no such file")
    loaded = load_source(cfg.model)
    source, target = resolve_classes([cfg.source, cfg.target], loaded.config)
    return TranslatePlan(with_feature_cache(loaded, cfg.cache, cfg.solver),
                         image_to_latent(cfg.image, loaded), source, target)


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
    output = _pictures(cfg, plan, res, loaded)
    record = job_record(cfg.to_dict(), loaded, output, run_s)
    record.update(mode="translate", source=plan.source, target=plan.target,
                  **cache_record(loaded.network))
    files = write_outputs(Path(cfg.out), output, record)
    return TransportResult(Path(cfg.out), files, record, res)


def _pictures(cfg: TranslateConfig, plan: TranslatePlan, res: Any, loaded: Loaded) -> ModeOutput:
    """``translation.png`` (source | result) and ``trajectory.png`` (rows x_t, J, K)."""
    pair = cells01(torch.cat([res.source, res.result]), loaded)
    snaps = res.snapshots
    rows = [torch.cat([getattr(sn, key) for sn in snaps]) for key in ("x", "j", "k")]
    traj = cells01(torch.cat(rows), loaded)
    metrics = image_metrics(res.source, res.result, loaded)
    layout = {"translation.png": {"columns": ["source", "result"]},
              "trajectory.png": {"rows": ["x_t", "J (noise anchor)", "K (data anchor)"],
                                 "columns": [f"{sn.leg} t={sn.t:.3f}" for sn in snaps]}}
    pair_pic = img.tile_cells(pair, 2, cfg.size)
    pair_pic = img.with_header(pair_pic, [f"source (class {plan.source})",
                                          f"result (class {plan.target})"],
                               img.column_px(pair_pic, 2))
    raw = img.tile_cells(traj, len(snaps), cfg.size)
    px = img.column_px(raw, len(snaps))
    traj_pic = img.with_header(raw, [f"{sn.leg[:3]} t={sn.t:.2f}" for sn in snaps], px)
    traj_pic = img.with_row_labels(traj_pic, ["x_t", "J", "K"], px,
                                   top=traj_pic.shape[1] - raw.shape[1])
    return ModeOutput(res, {"translation.png": pair_pic, "trajectory.png": traj_pic},
                      {}, metrics, layout)
