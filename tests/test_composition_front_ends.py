"""The three front ends of a composition -- ``gaf-trt sample``'s options (``SampleConfig``), a
served request (``ServeRequest``) and an entry of ``gaf-trt generate``'s compositions file --
accept the same compositions, build the same one (equal coefficient tensors) and refuse the
same ones (issue 22). Drawn by hypothesis from valid and invalid values of every field.

The one difference is deliberate: several classes with nothing composing them are the CLI's
pure rows (each class on its own), while a request or a file entry is one generation and
refuses them, with the same message."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from gaf_trt.compose.composition import Composition
from gaf_trt.compose.masks import AFHQ_REGIONS, MASKS
from gaf_trt.errors import ConfigError
from gaf_trt.generate.job import read_compositions
from gaf_trt.model.config import GAFConfig
from gaf_trt.pipeline.sample import SampleConfig, composition_spec
from gaf_trt.serve.requests import ServeLimits, ServeRequest, plan_request
from tests.helpers import mask_images

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CONFIG = GAFConfig(in_channels=1, input_size=8, patch_size=2, hidden_size=32, depth=1,
                   num_heads=2, mlp_ratio=4.0, num_classes=10, class_names=NAMES)
LIMITS = ServeLimits()


IMAGES = mask_images()

CLASS = st.one_of(st.integers(0, 9), st.sampled_from(NAMES))
#: Any value of each field, valid or not.
ANY = {
    "classes": st.lists(st.one_of(CLASS, st.integers(10, 11), st.just("zebra")), max_size=4),
    "weights": st.one_of(st.none(), st.lists(
        st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0, 1e3, math.nan]), max_size=4)),
    "alpha": st.one_of(st.none(), st.sampled_from([0.3, 0.5, -2.0, 150.0, math.nan])),
    "mask_type": st.one_of(st.none(), st.sampled_from([*MASKS.names(), "stripes"])),
    "regions": st.one_of(st.none(), st.lists(st.sampled_from([*AFHQ_REGIONS, "tail"]),
                                             min_size=1, max_size=3)),
    "mask_image": st.one_of(st.none(), st.sampled_from(sorted(IMAGES))),
    "sigma": st.sampled_from([0.0, 0.75, 1.25, 16.0, -1.0, 17.0]),
}
PRESETS = [n for n in MASKS.names() if MASKS.get(n).regions is not None]
KINDS = ["pure", "weights", "alpha", "preset", "preset+weights", "regions", "image",
         "image+weights"]


@st.composite
def compositions(draw) -> dict:
    """A valid composition of a drawn kind (classes by id or name; one class per region),
    then, half of the time, one field replaced by any value."""
    kind = draw(st.sampled_from(KINDS))
    raw = {k: None for k in ANY} | {"sigma": draw(st.sampled_from([0.0, 0.75, 1.25, 16.0]))}
    n = draw(st.integers(1, 4))
    if kind == "alpha":
        n, raw["alpha"] = 2, draw(st.sampled_from([0.3, 0.5, -2.0, 1.0]))
    elif kind.startswith("preset"):
        raw["mask_type"] = draw(st.sampled_from(PRESETS))
        n = MASKS.get(raw["mask_type"]).regions
    elif kind == "regions":
        raw["regions"] = draw(st.lists(st.sampled_from(AFHQ_REGIONS), min_size=1, max_size=3,
                                       unique=True))
        n = len(raw["regions"]) + (len(raw["regions"]) <= 2)  # 1-2 regions add the rest
    elif kind.startswith("image"):
        raw["mask_image"] = draw(st.sampled_from(sorted(IMAGES)))
        n = 2 if raw["mask_image"] == "two.png" else 3
    elif kind == "pure":
        n = 1
    raw["classes"] = draw(st.lists(CLASS, min_size=n, max_size=n))
    if kind.endswith("weights"):
        raw["weights"] = draw(st.lists(st.sampled_from([0.5, 1.0, 2.0, -1.0]), min_size=n,
                                       max_size=n))
    if draw(st.booleans()):
        key = draw(st.sampled_from(sorted(ANY)))
        raw[key] = draw(ANY[key])
    return raw


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The mask images as PNG files (what the CLI and the file name) beside the file."""
    out = tmp_path_factory.mktemp("front_ends")
    for name, array in IMAGES.items():
        Image.fromarray(array).save(out / name)
    return out


def _outcome(fn):
    """``("ok", composition)`` or ``("refused", message)``."""
    try:
        return "ok", fn()
    except ConfigError as err:
        return "refused", str(err)


def via_cli(raw: dict, folder) -> Composition | None:
    image = raw["mask_image"]
    cfg = SampleConfig(classes=[str(c) for c in raw["classes"]], weights=raw["weights"],
                       alpha=raw["alpha"], mask_type=raw["mask_type"], regions=raw["regions"],
                       mask_img=None if image is None else str(folder / image), sigma=raw["sigma"])
    return composition_spec(cfg).build(CONFIG).composition


def via_request(raw: dict) -> Composition | None:
    image = raw["mask_image"]
    req = ServeRequest(classes=raw["classes"], weights=raw["weights"], alpha=raw["alpha"],
                       mask_type=raw["mask_type"], regions=raw["regions"], sigma=raw["sigma"],
                       mask_image=None if image is None else IMAGES[image])
    return plan_request(req, CONFIG, LIMITS).composition


def via_file(raw: dict, folder) -> Composition:
    entry = {k: v for k, v in raw.items() if v is not None}
    path = folder / "compositions.json"
    path.write_text(json.dumps([entry]))
    [condition] = read_compositions(str(path), CONFIG)
    return condition.composition(CONFIG)


def same(a: Composition, b: Composition) -> bool:
    return (a.classes, a.mode) == (b.classes, b.mode) and a.coefficients.equal(b.coefficients)


def pure_rows(raw: dict) -> bool:
    """Several classes, nothing composing them: the CLI's pure rows."""
    composing = any(raw[k] for k in ("weights", "mask_type", "regions", "mask_image")) \
        or raw["alpha"] is not None
    return len(raw["classes"]) > 1 and not composing


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=compositions())
def test_front_ends_accept_build_and_refuse_alike(folder, raw):
    cli = _outcome(lambda: via_cli(raw, folder))
    request = _outcome(lambda: via_request(raw))
    file = _outcome(lambda: via_file(raw, folder))
    if pure_rows(raw) and cli[0] == "ok":  # the CLI's pure rows; refused as one generation
        assert cli[1] is None and request[0] == file[0] == "refused", (raw, request, file)
        assert "need a composition" in request[1] and "need a composition" in file[1]
        return
    assert cli[0] == request[0] == file[0], (raw, cli, request, file)
    if cli[0] == "refused":
        return
    if cli[1] is None:  # one class, nothing composing: the pure class everywhere
        assert request[1] is None and file[1].mode.value == "pure", raw
        return
    assert same(cli[1], request[1]) and same(cli[1], file[1]), raw


def test_the_space_is_covered(folder):
    """The drawn space holds each kind: accepted by all, refused by all, pure rows."""
    raws = [
        dict(classes=[1, "two"], weights=None, alpha=None, mask_type=None, regions=None,
             mask_image="two.png", sigma=0.75),
        dict(classes=[1, 2, 3], weights=None, alpha=None, mask_type=None,
             regions=["eyes", "nose"], mask_image=None, sigma=1.25),
        dict(classes=[1, 2, 3], weights=[1.0, 2.0, 0.5], alpha=None, mask_type=None,
             regions=None, mask_image="three.png", sigma=0.0),
    ]
    for raw in raws:
        got = [via_cli(raw, folder), via_request(raw), via_file(raw, folder)]
        assert same(got[0], got[1]) and same(got[0], got[2])
    raw = dict(classes=[1, 2], weights=None, alpha=None, mask_type=None, regions=None,
               mask_image=None, sigma=1.25)
    assert via_cli(raw, folder) is None
    with pytest.raises(ConfigError, match="need a composition"):
        via_request(raw)
