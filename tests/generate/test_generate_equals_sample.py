"""``gaf-trt generate`` gives what ``gaf_trt.sample`` gives (issue 22, item 6), over everything a
compositions file admits: 1..4 classes by id or name, weights, an alpha for two classes, every
mask preset with as many classes as regions, AFHQ regions (the digits model's 16x16 grid takes
them), a custom mask image (a PNG beside the file, one region per gray level), sigma, every
solver of ``SOLVERS``, 1..4 steps, any seed, micro-batch and shard sizes, ``--per-class`` or
``--num`` -- and, as a variant, ``--classes`` by id or name.

The reference is built from the drawn entry with the public API only (``gaf_trt.masks.build``,
``gaf_trt.sample``, class names looked up in the model's config), from the noise generate
draws (row ``i`` from ``(seed, i)``, :func:`~gaf_trt.generate.job.sample_noise`; condition of
``i`` from :func:`~gaf_trt.generate.job.condition_index`) and with the model's ``t_eps`` (what
``gaf-trt sample`` uses); pictures through the one rounding, ``to_uint8_hwc(z.clamp(-1, 1))``.

What holds, from reading ``generate/render.py``: generate integrates each micro-batch
``[k·batch, (k+1)·batch)`` as one loop over its pure rows (one network call for all of them,
whatever their classes) plus one :func:`gaf_trt.sample` per composition over that
composition's rows. So

- **bit-identical** (float states and uint8 images) to ``gaf_trt.sample(model, composition,
  noise[rows])`` over the same rows: a composition's rows of one micro-batch, and the pure rows
  of a micro-batch whose pure rows are all of one class (a pure composition's field is
  ``1.0 · (K - J)``, exactly the class-batched field's ``K - J``);
- **within float32 rounding** of ``gaf_trt.sample`` over all the samples of a condition in one
  call (other rows per network call; CPU fp32 results move in the last bits with the batch):
  relative error (max abs difference over max abs value) < 1e-5 on the float states, and uint8
  images at most 1 level apart on at most 1 % of the values. Pure rows of several classes in
  one micro-batch have only this check (no public call batches several classes' rows).

Same count and same labels (an entry's first class) in every case.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

import gaf_trt
from gaf_trt.compose.masks import AFHQ_REGIONS, DEFAULT_SIGMA, MASKS
from gaf_trt.compose.solvers import SOLVERS
from gaf_trt.generate import GenerateConfig, render, run_generate, store
from gaf_trt.generate.job import MAX_SEED, condition_index, micro_batches, sample_noise
from gaf_trt.io import images as img
from gaf_trt.pipeline.source import ModelSource
from tests.helpers import mask_images

RTOL = 1e-5  # relative error of the float states where the batching differs
MAX_SHARE = 0.01  # share of uint8 values allowed to differ (by 1 level) where it differs


#: Mask images with 1, 2 and 3 gray levels on the 16x16 grid.
IMAGES = {"one.png": np.full((9, 9), 77, np.uint8), **mask_images()}
IMAGE_REGIONS = {"one.png": 1, "two.png": 2, "three.png": 3}
NAMES = tuple(str(c) for c in range(10))  # the digits model's class names
PRESETS = [n for n in MASKS.names() if MASKS.get(n).regions is not None]
KINDS = ("pure", "weights", "alpha", "preset", "preset+weights", "regions", "image",
         "image+weights")
CLASS = st.one_of(st.integers(0, 9), st.sampled_from(NAMES))
WEIGHT = st.sampled_from([0.25, 0.5, 1, 2.0, 3.5])
SIGMA = st.one_of(st.none(), st.sampled_from([0.0, 0.75, 1.25, 2.5]))


@st.composite
def entries(draw) -> dict:
    """One valid entry of a compositions file (a drawn kind; keys left out when not given)."""
    kind = draw(st.sampled_from(KINDS))
    entry: dict = {}
    n = draw(st.integers(1, 4))
    if kind == "alpha":
        n, entry["alpha"] = 2, draw(st.sampled_from([0.0, 0.3, 0.5, 1.0, -0.5, 1.5]))
    elif kind.startswith("preset"):
        entry["mask_type"] = draw(st.sampled_from(PRESETS))
        n = MASKS.get(entry["mask_type"]).regions
    elif kind == "regions":
        entry["regions"] = draw(st.lists(st.sampled_from(AFHQ_REGIONS), min_size=1,
                                         max_size=4, unique=True))
        n = len(entry["regions"]) + (len(entry["regions"]) <= 2)  # 1-2 regions add the rest
        if draw(st.booleans()):
            entry["mask_type"] = "afhq"
    elif kind.startswith("image"):
        name = draw(st.sampled_from(sorted(IMAGES)))
        entry["mask_image"] = f"masks/{name}"
        n = IMAGE_REGIONS[name]
        if draw(st.booleans()):
            entry["mask_type"] = "custom"
    elif kind == "pure":
        n = 1
    entry["classes"] = draw(st.lists(CLASS, min_size=n, max_size=n))
    if kind.endswith("weights"):
        entry["weights"] = draw(st.lists(WEIGHT, min_size=n, max_size=n))
    sigma = draw(SIGMA)
    if sigma is not None:
        entry["sigma"] = sigma
    return entry


@st.composite
def jobs(draw) -> dict:
    """A generate job: a compositions file (or, a quarter of the time, ``--classes``), the
    solver, steps, seed, micro-batch, shard size and ``--per-class`` or ``--num``."""
    job: dict = {"solver": draw(st.sampled_from(SOLVERS.names())),
                 "steps": draw(st.integers(1, 4)),
                 "seed": draw(st.one_of(st.integers(0, 3), st.integers(0, MAX_SEED))),
                 "batch": draw(st.integers(1, 4))}
    job["shard_size"] = job["batch"] * draw(st.integers(1, 3))
    if draw(st.integers(0, 3)) == 0:
        job["classes"] = draw(st.lists(CLASS, min_size=1, max_size=3, unique_by=str))
        count = len(job["classes"])
    else:
        job["entries"] = draw(st.lists(entries(), min_size=1, max_size=3))
        count = len(job["entries"])
    if draw(st.booleans()):
        job["per_class"] = draw(st.integers(1, max(1, 6 // count)))
    else:
        job["num"] = draw(st.integers(1, 7))
    return job


# --------------------------------------------------------------------------- reference


def class_id(c: int | str, model) -> int:
    return c if isinstance(c, int) else list(model.config.class_names).index(c)


def reference_args(entry: dict, folder: Path, model) -> tuple[list[int], dict]:
    """The entry as ``gaf_trt.sample(model, classes, noise, **kwargs)`` takes it."""
    classes = [class_id(c, model) for c in entry["classes"]]
    kwargs: dict = {"weights": entry.get("weights"), "alpha": entry.get("alpha")}
    mask_type = entry.get("mask_type") or ("custom" if "mask_image" in entry else
                                           "afhq" if "regions" in entry else None)
    if mask_type is not None:
        s = model.config.input_size
        image = folder / entry["mask_image"] if "mask_image" in entry else None
        kwargs["masks"] = gaf_trt.masks.build(mask_type, s, s,
                                              sigma=entry.get("sigma", DEFAULT_SIGMA),
                                              image=image, regions=entry.get("regions"))
    return classes, kwargs


def is_pure(entry: dict) -> bool:
    return len(entry["classes"]) == 1 and not any(
        k in entry for k in ("weights", "alpha", "mask_type", "mask_image", "regions"))


def run_sample(model, entry_args: tuple[list[int], dict], noise: torch.Tensor, job: dict):
    """``gaf_trt.sample`` of one condition from ``noise [B, C, S, S]``: final states."""
    classes, kwargs = entry_args
    z = gaf_trt.sample(model, classes, noise, steps=job["steps"], solver=job["solver"],
                       t_eps=model.config.t_eps, **kwargs)
    return z.float()


def generate(job: dict, folder: Path) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Run generate in-process: images ``[n, H, W, 3]``, labels ``[n]`` and the final float
    states ``[n, C, S, S]`` it integrated (seen on their way out of its micro-batch loop)."""
    opts = {k: job[k] for k in ("solver", "steps", "seed", "batch", "shard_size")}
    count = {k: job[k] for k in ("per_class", "num") if k in job}
    if "entries" in job:
        (folder / "masks").mkdir()
        for name, array in IMAGES.items():
            Image.fromarray(array).save(folder / "masks" / name)
        (folder / "comps.json").write_text(json.dumps(job["entries"]))
        what = {"compositions": str(folder / "comps.json"), "classes": []}
    else:
        what = {"classes": [str(c) for c in job["classes"]]}
    cfg = GenerateConfig(out=str(folder / "ds"), format="npz", model=ModelSource(device="cpu"),
                         **opts, **count, **what)
    states: list[torch.Tensor] = []
    integrate_rows = render._integrate_rows

    def spy(*args):
        states.append(integrate_rows(*args))
        return states[-1]

    with mock.patch.object(render, "_integrate_rows", spy):
        run_generate(cfg)
    with np.load(folder / "ds" / store.FINAL_NPZ) as z:
        return z["arr_0"], z["labels"], torch.cat(states)


def picture(z: torch.Tensor) -> np.ndarray:
    """Final states ``[B, C, S, S]`` -> uint8 ``[B, H, W, 3]``: the one rounding."""
    return img.to_uint8_hwc(z.clamp(-1, 1))


def assert_close(got: torch.Tensor, want: torch.Tensor, got8: np.ndarray, what: str) -> None:
    """Within float32 rounding: relative error < RTOL, uint8 at most 1 level apart on at most
    MAX_SHARE of the values."""
    err = (got - want).abs().max().item() / max(want.abs().max().item(), 1e-6)
    assert err < RTOL, f"{what}: relative error {err:.3g}"
    want8 = picture(want)
    diff = np.abs(got8.astype(int) - want8.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() <= MAX_SHARE, \
        f"{what}: uint8 differs by up to {diff.max()} on {(diff > 0).mean():.2%} of the values"


def micro_batch_groups(job: dict, conds: list[int], pure: list[bool], labels: list[int],
                       n: int) -> list[list[int]]:
    """Row groups of generate's network calls that one public call reproduces: each
    composition's rows of a micro-batch, and the pure rows of a micro-batch when all are of
    one class."""
    groups = []
    for idx in micro_batches(0, n, job["batch"]):
        pure_rows = [i for i in idx if pure[conds[i]]]
        if pure_rows and len({labels[conds[i]] for i in pure_rows}) == 1:
            groups.append(pure_rows)
        for k in sorted({conds[i] for i in idx if not pure[conds[i]]}):
            groups.append([i for i in idx if conds[i] == k])
    return groups


# --------------------------------------------------------------------------- the property


@pytest.fixture(scope="module")
def model():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model; the same threads for generate and the reference
    yield gaf_trt.load_model("digits")
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gensame")


#: Always run besides the drawn ones: a file with every kind of entry (mask image by a path
#: relative to the file, AFHQ regions, a preset with weights, an alpha, a pure class by name),
#: and ``--classes`` whose micro-batches mix pure classes (the rounding-only case).
EVERY_KIND = {"solver": "ier", "steps": 3, "seed": 7, "batch": 3, "shard_size": 6,
              "per_class": 2,
              "entries": [{"classes": [4, "9"], "mask_image": "masks/two.png", "sigma": 0.0},
                          {"classes": [1, 2, 3], "regions": ["eyes", "nose"]},
                          {"classes": [0, 5, 6], "mask_type": "radial", "weights": [1, 2.0, 0.5]},
                          {"classes": ["7", 1], "alpha": 0.3}, {"classes": ["8"]}]}
MIXED_PURE = {"solver": "heun", "steps": 2, "seed": 1, "batch": 4, "shard_size": 4,
              "per_class": 3, "classes": [2, "6"]}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(job=jobs())
@example(job=EVERY_KIND)
@example(job=MIXED_PURE)
def test_generate_equals_sample(model, workdir, job):
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        folder = Path(d)
        images, labels, states = generate(job, folder)
        entries = job.get("entries") or [{"classes": [c]} for c in job["classes"]]
        args = [reference_args(e, folder, model) for e in entries]
    first = [a[0][0] for a in args]  # the label: an entry's first class
    n = job["per_class"] * len(entries) if "per_class" in job else job["num"]
    assert images.shape[0] == labels.shape[0] == states.shape[0] == n
    noise = sample_noise(job["seed"], range(n), model.config.sample_shape)
    conds = [condition_index(job["seed"], i, len(entries), job.get("per_class"))
             for i in range(n)]
    assert labels.tolist() == [first[k] for k in conds]
    for k in sorted(set(conds)):  # all of a condition's samples in one call
        rows = [i for i in range(n) if conds[i] == k]
        want = run_sample(model, args[k], noise[rows], job)
        assert_close(states[rows], want, images[rows], f"entry {k} {entries[k]}, rows {rows}")
    pure = [is_pure(e) for e in entries]
    for rows in micro_batch_groups(job, conds, pure, first, n):  # the same rows per call
        want = run_sample(model, args[conds[rows[0]]], noise[rows], job)
        assert torch.equal(states[rows], want), f"entry {conds[rows[0]]}, rows {rows}"
        assert np.array_equal(images[rows], picture(want)), rows
