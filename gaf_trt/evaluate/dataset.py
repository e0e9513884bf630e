"""Read a ``gaf-trt generate`` folder for evaluation, trusting nothing its record does not
vouch for: every shard of the job must be sealed, its files must have their sealed hashes and
its labels must be the job's (they follow from the seed and the sample index). The images are
read from the verified shards, so a stale ``samples.npz`` or an edited ``labels.txt`` is
never scored. A dataset with missing or unsealed shards is refused, naming them, unless
``allow_incomplete`` (then the finished shards are scored, and a warning says so)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from gaf_trt.errors import ConfigError
from gaf_trt.generate import store
from gaf_trt.generate.job import job_labels, plan_shards

log = logging.getLogger(__name__)

#: Shards named in a refusal (the rest are counted).
NAMED_SHARDS = 5


def is_generated(folder: Path) -> bool:
    """Whether ``folder`` is (or was) a ``gaf-trt generate`` folder: its record or shards."""
    return (folder / store.RECORD).exists() or (folder / "shards").is_dir()


def _job(folder: Path) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    """The record's job and its planned shards (a ConfigError for a missing or malformed
    record)."""
    rec = store.read_record(folder)
    if rec is None:
        raise ConfigError(f"dataset {folder} holds a generate folder's files (shards/ or "
                          f"{store.RECORD}) but no readable {store.RECORD} written by gaf-trt; "
                          "its samples cannot be checked")
    job = rec.get("job")
    try:
        n, size = job["num_samples"], job["shard_size"]
        if isinstance(n, bool) or isinstance(size, bool) or not (
                isinstance(n, int) and isinstance(size, int) and n >= 1 and size >= 1):
            raise TypeError
    except (KeyError, TypeError):
        raise ConfigError(f"dataset {folder}: {store.RECORD} is malformed (job num_samples / "
                          "shard_size)") from None
    return job, plan_shards(n, size)


def _shard_images(folder: Path, seal: dict[str, Any], fmt: str) -> np.ndarray:
    """A verified shard's images ``[n, H, W, 3]`` uint8, from its npz or its PNGs."""
    s, e = seal["start"], seal["stop"]
    if fmt in ("npz", "both"):
        with np.load(folder / f"{store.shard_stem(s, e)}.npz", allow_pickle=False) as z:
            return z["images"]
    from PIL import Image

    pics = []
    for i in range(s, e):
        with Image.open(folder / store.png_name(i)) as im:
            pics.append(np.asarray(im.convert("RGB")))
    return np.stack(pics)


def _span(shards: list[tuple[int, int]]) -> str:
    named = ", ".join(f"{s}..{e - 1}" for s, e in shards[:NAMED_SHARDS])
    more = len(shards) - NAMED_SHARDS
    return named + (f" and {more} more" if more > 0 else "")


def load_generated(folder: Path, allow_incomplete: bool = False
                   ) -> tuple[np.ndarray, np.ndarray, str]:
    """Images ``[N, H, W, 3]`` uint8 and labels ``[N]`` int64 of the verified shards of the
    generate folder ``folder``, and a note on what was left out ("" when complete)."""
    job, shards = _job(folder)
    digest = store.identity_digest(job)
    fmt = job.get("format", "npz")
    seals, bad = [], []
    for s, e in shards:
        seal = store.read_seal(folder, digest, s, e, labels=job_labels(job, s, e))
        (seals if seal is not None else bad).append(seal if seal is not None else (s, e))
    note = ""
    if bad:
        what = (f"dataset {folder} is incomplete: {len(bad)} of {len(shards)} shards are "
                f"missing, unsealed or do not verify (samples {_span(bad)})")
        if not allow_incomplete or not seals:
            hint = ("none is finished" if seals == [] and allow_incomplete else
                    "run the same gaf-trt generate command again to finish it, or pass "
                    "--allow-incomplete to score the finished shards")
            raise ConfigError(f"{what}; {hint}")
        note = f"{len(bad)} of {len(shards)} shards left out (--allow-incomplete)"
        log.warning("%s; scoring the %d finished shards only", what, len(seals))
    shapes = {tuple(seal.get("shape", ())) for seal in seals}
    if len(shapes) != 1:
        raise ConfigError(f"dataset {folder}: its shards hold images of different shapes "
                          f"{sorted(shapes)}")
    images = np.concatenate([_shard_images(folder, seal, fmt) for seal in seals])
    labels = np.concatenate([np.asarray(seal["labels"], dtype=np.int64) for seal in seals])
    return images, labels, note
