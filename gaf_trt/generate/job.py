"""What a ``gaf-trt generate`` job is: its arguments, its conditions, and the fixed list of
shards every runner works through.

Determinism (docs: README "Datasets at scale"): sample ``i``'s noise and its condition (class
or composition) depend only on ``(seed, i)``; samples are integrated in fixed micro-batches of
``batch`` rows aligned to global indices (``[k·batch, (k+1)·batch)``), and a shard is a whole
number of micro-batches. fp32 results of this network change in the last bits with the batch
size (measured on the digits model), so a batch that did not depend on the global index would
make the bytes depend on the shard size or the worker count; with aligned micro-batches they
depend on neither.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gaf_trt.compose import masks as mask_lib
from gaf_trt.compose.composition import Composition, check_class_ids, resolve_classes
from gaf_trt.compose.spec import CompositionSpec, Source
from gaf_trt.compose.cache import check_cache_solver
from gaf_trt.compose.solvers import SOLVERS, check_steps
from gaf_trt.errors import ConfigError
from gaf_trt.model.config import GAFConfig
from gaf_trt.pipeline.generation import MAX_SEED
from gaf_trt.pipeline.source import ModelSource, flat_args, split_args

MAX_SAMPLES = 10_000_000
MAX_BATCH = 4096
FORMATS = ("npz", "png", "both")


@dataclass
class GenerateConfig:
    """Arguments of one generation job (recorded in ``dataset.json``)."""

    out: str = "dataset"
    classes: list[str] = field(default_factory=lambda: ["all"])
    per_class: int | None = None
    num: int | None = None
    compositions: str | None = None  # a JSON file: a list of compositions
    solver: str = "euler"
    cache: str = "off"  # feature-cache policy (gaf_trt.compose.cache); in the identity unless off
    steps: int = 20
    seed: int = 0
    batch: int = 64  # rows per solver loop, aligned to global sample indices
    shard_size: int | None = None  # samples per shard (a multiple of batch; see __post_init__)
    format: str = "npz"
    model: ModelSource = field(default_factory=ModelSource)

    def __post_init__(self) -> None:
        if self.shard_size is None:
            self.shard_size = default_shard_size(self.batch)

    def to_dict(self) -> dict[str, Any]:
        """The record's ``job`` arguments (the model source in its flat keys)."""
        return flat_args(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> GenerateConfig:
        """The config :meth:`to_dict` wrote (a Ray actor rebuilds the job from it)."""
        own, model = split_args(record)
        return cls(**own, model=model)


#: Samples per shard when ``--shard-size`` is not given: the smallest multiple of ``--batch``
#: at least this large.
SHARD_TARGET = 1024


def default_shard_size(batch: object) -> int | None:
    """The smallest multiple of ``batch`` that is at least :data:`SHARD_TARGET` (None for a
    ``batch`` that is no positive integer: :func:`check_bounds` names it)."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        return None
    return -(-SHARD_TARGET // batch) * batch


@dataclass(frozen=True)
class Condition:
    """What one sample is generated from: a pure class (``spec`` None, from ``--classes``) or
    an entry of the compositions file (its classes resolved to ids)."""

    classes: tuple[int, ...]
    spec: CompositionSpec | None = None

    @property
    def pure(self) -> bool:
        return len(self.classes) == 1 and (self.spec is None or not self.spec.composing)

    @property
    def label(self) -> int:
        """The label stored beside the image: the class, or the first class of a mix."""
        return self.classes[0]

    def composition(self, config: GAFConfig) -> Composition:
        """The composition of this condition on ``config``'s grid (a pure one for a class)."""
        built = self.spec.build(config).composition if self.spec is not None else None
        if built is None:
            check_class_ids(self.classes, config)
            return Composition.pure(self.classes[0])
        return built

    def to_dict(self) -> dict[str, Any]:
        """Its record in ``dataset.json`` (part of the job's identity): classes as ids, and a
        mask image's path (as written in the file) with its sha256."""
        if self.spec is None:
            return {"classes": list(self.classes), "weights": None, "alpha": None,
                    "mask_type": None, "sigma": mask_lib.DEFAULT_SIGMA}
        return {**self.spec.to_dict(), "classes": list(self.classes)}


# --------------------------------------------------------------------------- determinism


def _hash64(*parts: object) -> int:
    """A 63-bit integer from ``parts`` (sha256; the same on every machine and process)."""
    digest = hashlib.sha256("/".join(map(str, ("gaf-trt", *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "little") & MAX_SEED


def sample_noise(seed: int, indices: range, shape: tuple[int, int, int]) -> Tensor:
    """Noise ``[len(indices), C, S, S]`` (CPU float32): row ``i`` from a generator seeded by
    ``(seed, i)`` only."""
    rows = [torch.randn(shape, generator=torch.Generator().manual_seed(_hash64("noise", seed, i)))
            for i in indices]
    return torch.stack(rows)


def condition_index(seed: int, i: int, num_conditions: int, per_class: int | None) -> int:
    """The condition of sample ``i``: ``i // per_class`` (class-major blocks), else drawn
    uniformly from ``(seed, i)``."""
    if per_class is not None:
        return i // per_class
    return _hash64("condition", seed, i) % num_conditions


def job_labels(identity: dict[str, Any], start: int, stop: int) -> list[int]:
    """The labels of samples ``start .. stop-1`` of the job whose identity (``dataset.json``
    ``job``) is given: they follow from its seed, its conditions and the sample index alone.
    A malformed identity is a :class:`~gaf_trt.errors.ConfigError`."""
    try:
        conds = [int(c["classes"][0]) for c in identity["conditions"]]
        seed, per_class = identity["seed"], identity["per_class"]
        return [conds[condition_index(seed, i, len(conds), per_class)]
                for i in range(start, stop)]
    except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError):
        raise ConfigError("the dataset record's job is malformed (conditions, seed, per_class)"
                          ) from None


def micro_batches(start: int, stop: int, batch: int) -> list[range]:
    """The global micro-batches ``[k·batch, (k+1)·batch) ∩ [0, stop)`` inside a shard."""
    return [range(s, min(s + batch, stop)) for s in range(start, stop, batch)]


def plan_shards(num_samples: int, shard_size: int) -> list[tuple[int, int]]:
    """The shards of a job: consecutive ``[start, stop)`` ranges of ``shard_size``."""
    return [(s, min(s + shard_size, num_samples)) for s in range(0, num_samples, shard_size)]


# --------------------------------------------------------------------------- validation


def _int_in(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
    return value


def check_bounds(cfg: GenerateConfig) -> None:
    """Every option with a bound, checked before the model is loaded."""
    SOLVERS.get(cfg.solver)
    check_cache_solver(cfg.cache, cfg.solver)
    cfg.model.check()
    check_steps(cfg.steps)
    if cfg.format not in FORMATS:
        raise ConfigError(f"unknown format {cfg.format!r}; valid: {', '.join(FORMATS)}")
    if (cfg.per_class is None) == (cfg.num is None):
        raise ConfigError("give exactly one of --per-class N or --num N")
    if cfg.per_class is not None:
        _int_in("--per-class", cfg.per_class, 1, MAX_SAMPLES)
    if cfg.num is not None:
        _int_in("--num", cfg.num, 1, MAX_SAMPLES)
    _int_in("--seed", cfg.seed, 0, MAX_SEED)
    _int_in("--batch", cfg.batch, 1, MAX_BATCH)
    _int_in("--shard-size", cfg.shard_size, 1, MAX_SAMPLES)
    if cfg.shard_size % cfg.batch:
        raise ConfigError(f"--shard-size {cfg.shard_size} must be a multiple of --batch "
                          f"{cfg.batch} (micro-batches are aligned to sample indices)")
    if cfg.compositions is not None and cfg.classes not in ([], ["all"]):
        raise ConfigError("give either --classes or --compositions, not both")


def resolve_conditions(cfg: GenerateConfig, config: GAFConfig) -> list[Condition]:
    """The job's conditions: the classes (``all``, ids or names), or the compositions file."""
    if cfg.compositions is not None:
        conditions = read_compositions(cfg.compositions, config)
    else:
        tokens = [str(t) for t in cfg.classes]
        if not tokens:
            raise ConfigError("give at least one class with --classes (or 'all')")
        if [t.lower() for t in tokens] == ["all"]:
            ids = list(range(config.num_classes))
        else:
            ids = resolve_classes(tokens, config)
        conditions = [Condition((c,)) for c in ids]
    for cond in conditions:
        cond.composition(config)  # validates classes, weights, masks against the model
    return conditions


def read_compositions(path: str, config: GAFConfig) -> list[Condition]:
    """A JSON list of compositions ``{"classes": [...], "weights" | "alpha" | "mask_type" |
    "regions" | "mask_image": ..., "sigma": ...}`` (classes as ids or names; ``mask_image`` a
    path relative to the file), each parsed by :class:`CompositionSpec` and checked against
    the model; an entry is one generation."""
    where = f"compositions file {path}"
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{where} not found") from None
    except RecursionError:  # json's own recursion on deeply nested lists / objects
        raise ConfigError(f"{where} is not valid JSON: nested too deeply") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"{where} is not valid JSON: {str(err).splitlines()[0]}") from None
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{where} must hold a non-empty JSON list of compositions")
    out = []
    for k, entry in enumerate(data):
        spec = CompositionSpec.validate(entry, source=Source.entry(path, k))
        classes = spec.build(config).classes  # class ids and masks checked first
        spec.require_one_generation()
        out.append(Condition(tuple(classes), spec))
    return out


def num_samples(cfg: GenerateConfig, conditions: list[Condition]) -> int:
    n = cfg.per_class * len(conditions) if cfg.per_class is not None else int(cfg.num or 0)
    if n > MAX_SAMPLES:
        raise ConfigError(f"{n:,} samples requested; the limit is {MAX_SAMPLES:,}")
    return n
