"""Mask geometry (docs/design.md §3), softening, custom images and AFHQ regions."""

from __future__ import annotations

import pytest
import torch

from gaf_trt import ConfigError, masks
from gaf_trt.compose.masks import MASKS, hard_masks, soften
from tests.helpers import rel_err

PRESETS = [n for n in MASKS.names() if n not in ("custom", "afhq")]


def test_fixture_masks(expected):
    got = masks.build("horizontal_2", 8, 8, sigma=1.25)
    assert rel_err(got, expected["rk4_spatial_h2.masks"]) < 1e-6


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("sigma", [0.0, 0.6, 1.25, 2.5])
def test_masks_partition_unity(name, sigma):
    m = masks.build(name, 12, 10, sigma=sigma)
    assert m.shape == (MASKS.get(name).regions, 1, 12, 10)
    assert torch.allclose(m.sum(0), torch.ones(1, 12, 10), atol=1e-6)
    assert (m >= 0).all() and torch.isfinite(m).all()
    assert (m.flatten(1).max(1).values > 0.05).all()  # no region vanishes


@pytest.mark.parametrize("name", PRESETS)
def test_hard_masks_are_a_partition(name):
    m, names = hard_masks(name, 9, 7)
    assert len(names) == m.shape[0]
    assert torch.equal(m.sum(0), torch.ones(9, 7))


def test_band_boundaries_use_floor():
    m, _ = hard_masks("horizontal", 10, 4)  # rows [0,3), [3,6), [6,10)
    assert m[0, :3].all() and not m[0, 3:].any()
    assert m[1, 3:6].all() and m[2, 6:].all()
    v, _ = hard_masks("vertical_4", 3, 10)  # cols [0,2), [2,5), [5,7), [7,10)
    assert v[1, :, 2:5].all() and v[3, :, 7:].all()


def test_quadrant_split():
    q, _ = hard_masks("quadrant", 5, 7)  # split at 2 and 3
    assert q[0, :2, :3].all() and q[1, :2, 3:].all() and q[2, 2:, :3].all() and q[3, 2:, 3:].all()


def test_radial_and_diagonal_thresholds():
    r, _ = hard_masks("radial_2", 9, 9)
    assert r[0, 4, 4] == 1 and r[1, 0, 0] == 1  # centre inside d<0.5, corner outside
    d, _ = hard_masks("diagonal_2", 9, 9)
    assert d[0, 0, 0] == 1 and d[1, 8, 8] == 1
    assert d[1, 4, 4] == 1  # s = 0.5 + 0.5 = 1, not < 1


def test_soften_kernel_rule():
    # sigma 1.25: k = max(3, 2*round(2.5)+1) = 5 (round half to even: 2), reps = round(1.25) = 1
    hard = torch.zeros(2, 9, 9)
    hard[0, :4] = 1
    hard[1, 4:] = 1
    m = soften(hard, 1.25)
    # one 5x5 mean filter with zero padding, then normalisation
    box = torch.nn.functional.avg_pool2d(hard.unsqueeze(1), 5, 1, 2, count_include_pad=True)
    assert rel_err(m, box / box.sum(0, keepdim=True)) < 1e-6


def test_soften_rejects_negative_sigma():
    with pytest.raises(ConfigError, match="sigma"):
        masks.build("horizontal_2", 8, 8, sigma=-1)


def test_custom_mask_image(tmp_path):
    from PIL import Image

    arr = torch.zeros(20, 20, dtype=torch.uint8)
    arr[:, 10:] = 200
    arr[15:, :] = 90
    Image.fromarray(arr.numpy()).save(tmp_path / "m.png")
    m, names = hard_masks("custom", 10, 10, image=tmp_path / "m.png")
    assert names == ["gray0", "gray90", "gray200"]  # ascending gray values
    assert torch.equal(m.sum(0), torch.ones(10, 10))
    assert m[2, 0, 9] == 1 and m[1, 9, 0] == 1


def test_custom_mask_errors(tmp_path):
    with pytest.raises(ConfigError, match="needs a mask image"):
        masks.build("custom", 8, 8)
    with pytest.raises(ConfigError, match="not found"):
        masks.build("custom", 8, 8, image=tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ConfigError, match="unreadable"):
        masks.build("custom", 8, 8, image=tmp_path / "bad.png")


def test_afhq_regions_with_rest():
    m, names = hard_masks("afhq", 20, 20, regions=["eyes"])
    assert names == ["eyes", "rest"]
    assert m[0, 4:9, 3:17].all() and not m[0, 0].any()  # rows [0.2,0.45), cols [0.15,0.85)
    assert torch.equal(m[1], (1 - m[0]).clamp(0, 1))
    soft = masks.build("afhq", 20, 20, regions=["ears", "mouth"])
    assert soft.shape[0] == 3 and torch.allclose(soft.sum(0), torch.ones(1, 20, 20), atol=1e-6)


def test_afhq_three_regions_have_no_rest():
    m = masks.build("afhq", 20, 20, regions=["ears", "eyes", "nose"], sigma=0)
    assert m.shape[0] == 3
    assert m.sum(0)[0, 19, 0] == 0  # the bottom-left corner belongs to no region: stays noise


def test_afhq_errors():
    with pytest.raises(ConfigError, match="needs --regions"):
        masks.build("afhq", 8, 8)
    with pytest.raises(ConfigError, match="unknown AFHQ region.*'tail'.*valid: ears"):
        masks.build("afhq", 8, 8, regions=["tail"])


def test_unknown_mask_lists_valid():
    with pytest.raises(ConfigError, match="unknown mask type 'stripes'; valid: .*horizontal_2"):
        masks.build("stripes", 8, 8)


def test_custom_mask_reads_16_bit_images_with_all_their_levels(tmp_path):
    import numpy as np
    from PIL import Image

    levels = np.repeat(np.arange(300, dtype=np.uint16) * 200, 4).reshape(30, 40)  # 300 levels
    Image.fromarray(levels).save(tmp_path / "m16.png")
    assert Image.open(tmp_path / "m16.png").mode.startswith("I")
    m, names = masks.hard_masks("custom", 30, 40, image=tmp_path / "m16.png")
    assert m.shape[0] == 300 and names[-1] == f"gray{299 * 200}"


def test_custom_mask_refuses_huge_images(tmp_path, monkeypatch):
    from PIL import Image

    Image.new("L", (300, 200)).save(tmp_path / "big.png")
    monkeypatch.setattr(masks, "MAX_MASK_PIXELS", 300 * 200 - 1)
    with pytest.raises(ConfigError, match="is 300x200 pixels; at most 59,999 are read"):
        masks.hard_masks("custom", 8, 8, image=tmp_path / "big.png")


@pytest.mark.parametrize("sigma", [-1.0, 16.5, float("nan"), 1e6])
def test_sigma_bounds(sigma):
    with pytest.raises(ConfigError, match=r"sigma must be a number in \[0, 16\]"):
        masks.build("horizontal_2", 8, 8, sigma=sigma)


def test_options_belong_to_their_presets():
    assert masks.presets_taking("image") == ["custom"]
    assert masks.presets_taking("regions") == ["afhq"]
    with pytest.raises(ConfigError, match="--mask-img is only used with mask type 'custom'"):
        masks.hard_masks("radial", 8, 8, image="x.png")
