"""The one composition spec (compose/spec.py): each field valid and invalid, each source's
wording of a bad value, class names and ids, regions and custom mask images."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gaf_trt.compose.composition import Composition, Mode, resolve_classes
from gaf_trt.compose.spec import CLI, REQUEST, CompositionSpec, Source
from gaf_trt.errors import ConfigError
from gaf_trt.model.config import GAFConfig

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CONFIG = GAFConfig(in_channels=1, input_size=8, patch_size=2, hidden_size=32, depth=1,
                   num_heads=2, mlp_ratio=4.0, num_classes=10, class_names=NAMES)
FILE = Source.entry("comps.json", 3)
SOURCES = {"cli": CLI, "request": REQUEST, "file": FILE}


def spelled(source: str, key: str) -> str:
    """How each source names a field in its errors."""
    flags = {"classes": "--classes", "weights": "--weight", "alpha": "--alpha",
             "mask_type": "--mask-type", "mask_image": "--mask-img", "regions": "--regions",
             "sigma": "--sigma"}
    return {"cli": flags[key], "request": key, "file": f"compositions[3].{key}"}[source]


def spec(source: str = "request", **raw) -> CompositionSpec:
    return CompositionSpec.validate(raw, source=SOURCES[source])


@pytest.fixture()
def gray(tmp_path):
    """A two-level gray image (left 0, right 200) as an array and as a PNG file."""
    a = np.zeros((16, 16), np.uint8)
    a[:, 6:] = 200
    Image.fromarray(a).save(tmp_path / "mask.png")
    return a, tmp_path / "mask.png"


# --------------------------------------------------------------------------- valid


def test_pure_class_and_defaults():
    s = spec(classes=[3])
    assert (s.classes, s.weights, s.alpha, s.mask_type, s.sigma) == (("3",), None, None, None, 1.25)
    assert not s.composing
    built = s.build(CONFIG)
    assert built.classes == [3] and built.composition is None and built.masks is None


def test_names_and_ids_build_the_same():
    by_name = spec(classes=["Three", " eight "], weights=[2, 1]).build(CONFIG)
    by_id = spec(classes=[3, "8"], weights=[2.0, 1.0]).build(CONFIG)
    assert by_name.classes == by_id.classes == [3, 8]
    assert torch.equal(by_name.composition.coefficients, by_id.composition.coefficients)
    assert resolve_classes(["nine", 0], CONFIG) == [9, 0]


@pytest.mark.parametrize("raw,mode", [
    (dict(classes=[1, 4, 7], weights=[0.5, 0.3, 0.2]), Mode.WEIGHTED),
    (dict(classes=[0, 6], alpha=0.6), Mode.ALPHA),
    (dict(classes=[3, 8], mask_type="horizontal_2"), Mode.SPATIAL),
    (dict(classes=[3, 8], mask_type="horizontal_2", weights=[1, 2]), Mode.SPATIAL_WEIGHTED),
    (dict(classes=[1, 2, 3], regions=["eyes", "nose"]), Mode.SPATIAL),
    (dict(classes=[5], weights=[2]), Mode.WEIGHTED),
])
def test_each_mode(raw, mode):
    built = spec(**raw).build(CONFIG)
    assert built.composition.mode == mode
    if mode in (Mode.SPATIAL, Mode.SPATIAL_WEIGHTED):
        assert built.masks.shape[1:] == (1, 8, 8)


def test_same_as_composition_build():
    from gaf_trt.compose import masks

    s = spec(classes=[1, 2, 3, 4], mask_type="quadrant", sigma=0.5)
    want = Composition.build([1, 2, 3, 4], masks=masks.build("quadrant", 8, 8, sigma=0.5))
    assert torch.equal(s.build(CONFIG).composition.coefficients, want.coefficients)


def test_empty_lists_are_not_given():
    s = spec(classes=[3], weights=[], regions=[])
    assert s.weights is None and s.regions is None and not s.composing


def test_regions_imply_afhq():
    s = spec(classes=[1, 2, 3], regions=["eyes", "nose"])
    assert s.mask_type == "afhq" and s.regions == ("eyes", "nose")
    assert s.build(CONFIG).masks.shape[0] == 3  # eyes, nose and the rest


def test_mask_image_array_and_file_build_the_same(gray, tmp_path):
    a, png = gray
    from_array = spec(classes=[3, 7], mask_image=a)
    from_file = spec("cli", classes=[3, 7], mask_image=str(png))
    assert from_array.mask_type == from_file.mask_type == "custom"
    assert torch.equal(from_array.build(CONFIG).masks, from_file.build(CONFIG).masks)
    assert from_file.mask_sha256 == hashlib.sha256(png.read_bytes()).hexdigest()
    assert from_array.mask_sha256 and from_array.mask_sha256 != from_file.mask_sha256
    assert spec(classes=[3, 7], mask_image=a.copy()) == from_array  # equal by content


def test_file_mask_image_is_relative_to_the_file(gray, tmp_path):
    _, png = gray
    source = Source.entry(tmp_path / "comps.json", 0)
    s = CompositionSpec.validate({"classes": [1, 2], "mask_image": "mask.png"}, source=source)
    assert s.mask_image == "mask.png" and s.mask_source == str(png)
    assert s.to_dict() == {"classes": ["1", "2"], "weights": None, "alpha": None,
                           "mask_type": "custom", "sigma": 1.25, "mask_image": "mask.png",
                           "mask_sha256": hashlib.sha256(png.read_bytes()).hexdigest()}
    assert s.build(CONFIG).composition.mode == Mode.SPATIAL


def test_one_generation():
    spec(classes=[3]).require_one_generation()
    spec(classes=[3, 8], alpha=0.5).require_one_generation()
    for source in SOURCES:
        s = spec(source, classes=[3, 8])  # accepted: the CLI runs them as pure rows
        with pytest.raises(ConfigError, match="2 classes need a composition") as err:
            s.require_one_generation()
        assert spelled(source, "weights") in str(err.value)


# --------------------------------------------------------------------------- invalid


BAD = [  # (raw fields, field named, words of the error)
    (dict(classes=[]), "classes", "give at least one class"),
    (dict(classes="3"), "classes", "must be a list of class ids or names"),
    (dict(classes=[1.5]), "classes", "must be a list of class ids or names"),
    (dict(classes=[True]), "classes", "must be a list of class ids or names"),
    (dict(classes=[1, 2], weights=[1]), "weights", "1 weight(s) [1.0] for 2 class(es)"),
    (dict(classes=[1, 2], weights=["a", "b"]), "weights", "must be a list of numbers"),
    (dict(classes=[1, 2], weights=[float("nan"), 1]), "weights", "[0] must be a finite number"),
    (dict(classes=[1, 2], weights=[1, 1e9]), "weights", "[1] must be a finite number"),
    (dict(classes=[1, 2], alpha="x"), "alpha", "must be a number, got 'x'"),
    (dict(classes=[1, 2], alpha=1e30), "alpha", "must be a finite number in [-100, 100]"),
    (dict(classes=[1, 2, 3], alpha=0.5), "alpha", "blends exactly 2 classes, got 3"),
    (dict(classes=[1, 2], alpha=0.5, weights=[1, 1]), "alpha", "cannot be combined"),
    (dict(classes=[1, 2], alpha=0.5, mask_type="vertical_2"), "alpha", "cannot be combined"),
    (dict(classes=[1, 2], mask_type="stripes"), "mask_type", "unknown mask type 'stripes'"),
    (dict(classes=[1, 2], mask_type=3), "mask_type", "unknown mask type 3"),
    (dict(classes=[1, 2], mask_type="custom"), "mask_image", "needs an image file's gray"),
    (dict(classes=[1, 2], mask_type="afhq"), "regions", "needs"),
    (dict(classes=[1, 2], regions=["eyes"], mask_type="quadrant"), "regions",
     "is only used with mask type 'afhq', not 'quadrant'"),
    (dict(classes=[1, 2], regions="eyes"), "regions", "must be a list of region names"),
    (dict(classes=[1, 2], mask_image=np.zeros((4, 4), np.float32)), "mask_image",
     "must be uint8 [H, W], got float32 [4, 4]"),
    (dict(classes=[1, 2], mask_image=np.zeros((4, 4), np.uint8), mask_type="quadrant"),
     "mask_image", "a mask image goes with mask type 'custom' (or none), not 'quadrant'"),
    (dict(classes=[3], sigma=-1), "sigma", "must be in [0, 16], got -1"),
    (dict(classes=[3], sigma=float("inf")), "sigma", "must be in [0, 16]"),
    (dict(classes=[3], sigma="1"), "sigma", "must be in [0, 16], got '1'"),
]


@pytest.mark.parametrize("source", sorted(SOURCES))
@pytest.mark.parametrize("raw,key,words", BAD, ids=[f"{k}-{w[:24]}" for _, k, w in BAD])
def test_bad_field_named_in_the_source_wording(source, raw, key, words):
    with pytest.raises(ConfigError) as err:
        spec(source, **raw)
    text = str(err.value)
    assert words in text and spelled(source, key) in text and "\n" not in text
    if source == "file":
        assert text.startswith("compositions file comps.json, entry 3: ")


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_unknown_key_lists_the_valid_ones(source):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['colour'\]; valid: alpha, "
                                          r"classes, mask_image, mask_type, regions, sigma"):
        spec(source, classes=[1], colour="red")


@pytest.mark.parametrize("raw,words", [
    (dict(classes=[3, 18]), "class id(s) [18] out of range"),
    (dict(classes=["zebra"]), "unknown class name 'zebra'; known names: zero, one"),
    (dict(classes=[1, 2, 3], mask_type="horizontal_2"), "the mask has 2 region(s) but 3"),
    (dict(classes=[1, 2], regions=["tail"]), "unknown AFHQ region(s) 'tail'"),
    (dict(classes=[1, 2], mask_type="horizontal_2", weights=[0, 0]), "are all 0"),
    (dict(classes=[1, 2], weights=[1, -1]), "sum to 0"),
])
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_bad_against_the_model(source, raw, words):
    s = spec(source, **raw)  # valid on its own; the model (or the mask) refuses it
    with pytest.raises(ConfigError) as err:
        s.build(CONFIG)
    assert words in str(err.value)
    assert str(err.value).startswith("compositions file") == (source == "file")


def test_mask_image_path_missing_or_from_a_request(tmp_path):
    with pytest.raises(ConfigError, match=r"mask image not found: /nonexistent.png \(--mask-img\)"):
        spec("cli", classes=[1, 2], mask_image="/nonexistent.png")
    where = Source.entry(tmp_path / "c.json", 0)
    with pytest.raises(ConfigError, match=r"not found: .*m.png \(compositions\[0\].mask_image\)"):
        CompositionSpec.validate({"classes": [1, 2], "mask_image": "m.png"}, source=where)
    (tmp_path / "m.png").write_bytes(b"x")
    with pytest.raises(ConfigError, match="mask_image must be uint8 \\[H, W\\], got str"):
        spec("request", classes=[1, 2], mask_image=str(tmp_path / "m.png"))  # no server files


def test_unreadable_mask_image_at_build(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"no image here")
    s = spec("cli", classes=[1, 2], mask_image=str(tmp_path / "bad.png"))
    with pytest.raises(ConfigError, match="is unreadable"):
        s.build(CONFIG)


def test_not_a_mapping():
    with pytest.raises(ConfigError, match="compositions file comps.json, entry 3: a composition "
                                          "is an object"):
        CompositionSpec.validate([1, 2], source=FILE)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="source kind"):
        Source("yaml")


def test_to_dict_is_json():
    s = spec(classes=["three", 8], weights=[1, 2], sigma=0)
    assert json.loads(json.dumps(s.to_dict())) == {
        "classes": ["three", "8"], "weights": [1.0, 2.0], "alpha": None, "mask_type": None,
        "sigma": 0.0}
