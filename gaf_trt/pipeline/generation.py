"""The generation loop of a sampling job, shared by ``gaf-trt sample`` and the server.

:func:`generate` draws one noise from the seed and integrates, chunk by chunk, the pure
classes (one batched loop) and every composition (or permutation) of a
:class:`SamplePlan`; each chunk's states go to a sink (the picture writer of
:mod:`gaf_trt.pipeline.sample_writer`, or nothing when the server keeps the states).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from gaf_trt.compose.composition import Composition, permutations
from gaf_trt.compose.sampling import sample, sample_pure
from gaf_trt.compose.solvers import StepCallback
from gaf_trt.engine.base import AnchorNetwork
from gaf_trt.model.config import GAFConfig

if TYPE_CHECKING:
    from gaf_trt.pipeline.sample import SampleConfig

#: ``progress(label, total) -> per-step callback``; lets the CLI draw a progress bar.
ProgressFactory = Callable[[str, int], StepCallback]

MAX_SEED = 2 ** 63 - 1
SUMMARY_COLUMNS = 8  # samples shown per row of summary.png
GIF_SAMPLES = 64  # samples in each trajectory GIF (the first of the batch)


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


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def tag(classes: Sequence[int]) -> str:
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
                               solver=self.cfg.solver, t_eps=self.t_eps, callback=cb,
                               cache=self.cfg.cache)

        def rows(x: Tensor) -> Tensor:  # [k*n] class-major -> [k, keep]: the first of each
            return x.view(k, n, *x.shape[1:])[:, :keep]

        state = self._loop(_pure_label(classes), i, keep, rows, fn, sample_dim=1)  # [k, n, ...]
        return {c: state[j] for j, c in enumerate(classes)}

    def mix(self, i: int, chunk: Tensor, comp: Composition, keep: int) -> Tensor:
        def fn(cb: StepCallback | None) -> Tensor:
            return sample(self.plan.network, comp, chunk, steps=self.cfg.steps,
                          solver=self.cfg.solver, t_eps=self.t_eps, callback=cb,
                          cache=self.cfg.cache)

        return self._loop(_mix_label(comp), i, keep, lambda x: x[:keep], fn)


def _pure_label(classes: Sequence[int]) -> str:
    return f"pure {tag(classes)}"


def _mix_label(comp: Composition) -> str:
    return f"{comp.mode.value} {tag(comp.classes)}"


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
