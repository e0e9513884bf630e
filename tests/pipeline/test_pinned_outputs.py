"""Bytes pinned across refactors: `gaf-trt sample` on the bundled model must keep writing the
same samples (hashes taken from the pre-refactor release, f17cc49).

- ``pure_{c}.png``: the whole file is pinned (unchanged since that release).
- ``{b}_mix_*.png`` strips: since issue 13 they carry column headers and a mask legend /
  weight panel, so the file bytes changed on purpose. What must not change is the samples in
  them: :data:`SAMPLE_TILES` pins the raw RGB bytes of every sample tile of each strip (the
  pure tiles and the composite), measured on the release's strips before the labels were
  added (tile 0, the mask or an empty white square then, is a legend now and is not a
  sample). :data:`STRIPS` then pins the labelled files themselves, so the layout does not
  drift unnoticed either.

summary.png is not pinned: it became one picture of the whole run on purpose.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from gaf_trt.cli import app

TILE, PAD = 128, 2  # 8x8 samples upscaled x16; 2-px white gaps

PURE = {
    "--classes 3 8 --mask-type horizontal_2": {
        "pure_3.png": "d57f5cd70ae9d6945d9c154fe64ace34ae8c1f8a3f6a60f539c1703ffb56852e",
        "pure_8.png": "d0d996f082bc95d57669b3e20aaecf95d90c5e4e1330ba89d3d31e6d7641e4b4",
    },
    "--classes 1 4 7 --weight 0.5 0.3 0.2 --solver heun --steps 8": {
        "pure_4.png": "33d1f743e57c1bd95eadf9c628c696c5c272699d6458f22e45363f6dff09ca87",
        "pure_7.png": "718fc34e91a84dd4f9fd7edaee1806a0808b6fee486d97e5cfba07a658c37165",
    },
    "--classes 0 6 --alpha 0.6 --solver ier --steps 6 --batch 2": {
        "pure_0.png": "95791df8cf43c6c64def95fb01c464dcbbc23b7fe8221d824b1ddf3aeedbe174",
        "pure_6.png": "6b1699f5872b61d8f01a325aaf1668cb29b626607667a73e32dfc0e013c721af",
    },
    "--classes 2 5 9 0 --mask-type quadrant --weight 1 1 1 1 --batch 1 --steps 4 --solver rk4": {
        "pure_0.png": "48ca24c574bc8c9fc3d77ffa7ed5e43fce1f117c7ef563abeaad71b2fc2b777c",
        "pure_9.png": "4476e475f1b4b46f19c49de9462c20daf7715cfb1467782d597378407ac21c92",
    },
}

#: sha256 of each sample tile's RGB bytes (pure classes, then the composite), left to right,
#: cut from the release's strips (f17cc49 layout: one row of tiles, no header)
SAMPLE_TILES = {
    "--classes 3 8 --mask-type horizontal_2": {
        "0_mix_3_8.png": [
            "b17ab617b8937fa21ea3009288a9e6a1bf6306b97cbd0860cc7595ca2e7a9d59",
            "306b1ff8d982afe66485d7541e2cbfb11736813dd0b4a9807c2438ec6d005d41",
            "90a23e2d7cd9aff81f81aced069611a06577f11a9e77b3e8c7411e4281682ac5",
        ],
        "3_mix_3_8.png": [
            "e8ec5eb64c072e73a2302a21ba277e059bbd881344fbe91988a8d73a60d7de0e",
            "637aaeeef14ffbe1f1dd23c74b04283d00a5b3190fc0f54d046b0e7d59924fc2",
            "516418ef1bc11fd094beafb41e09b4aad5097116031ce40245a4372826617ec3",
        ],
    },
    "--classes 1 4 7 --weight 0.5 0.3 0.2 --solver heun --steps 8": {
        "1_mix_1_4_7.png": [
            "9cdb4568b28bd41deabe5f9a2152219a58f7ab7199f7344aeb3255426ff0a76c",
            "a2db237522bcafb2357e016b22d72b12ce32e793d0359a29f3c86f8f1074a05b",
            "b26dcabd8368501d73dd2c5e82292c1e1cb8384a06765525c1c231cb5c93ad08",
            "93beb367c9ddf0d7543d6f9f46dd9708f4e87a83441b9e4122073b0eb79ce0e0",
        ],
    },
    "--classes 0 6 --alpha 0.6 --solver ier --steps 6 --batch 2": {
        "0_mix_0_6.png": [
            "145ace462c9fc3e6d03e93b9d48373a9db333ea1673b06b26c128a8d2a677740",
            "927ba170321e12b4d4ef5afe9159617abe0845d2802bc785d7dbe2c8682606bb",
            "222192778e7bac513227e4657bbe3d780bc3e843550e26b30288d0028e4783ff",
        ],
        "1_mix_0_6.png": [
            "8fb288905d68bbcfd141edb3b22289060eaf580201735aa17725332d90fd6fc3",
            "8eaa95f913e37ec2e042882dda7e74894e335eb693a6ffcaae8c9df62ef319c1",
            "31ca65916518a47c2259bf3e3db31bad412c4bc88773208e478a786895f81bb3",
        ],
    },
    "--classes 2 5 9 0 --mask-type quadrant --weight 1 1 1 1 --batch 1 --steps 4 --solver rk4": {
        "0_mix_2_5_9_0.png": [
            "4c4bcdad30f3d6c1c5a229ccd9ae54fa1c6e05c08b2d4d56d0e4f61c01d24b51",
            "30121df1d7582dd3772b7e2eebff16c31cd37b19ee95618e447a4e1b9bf12286",
            "04baa8d42d0cc60ecfae16376afb569463972e9a459434787cf1b8c61f917859",
            "f7713cbd7ba71c221794645627e7f51c6e52371d554e65d92ce5ce8b7f8f0ca5",
            "2bd37963f500110ae5a552bd62c808b23213e168bcb99860b6d17be80781b1f5",
        ],
    },
}

#: sha256 of the labelled strip files (this layout), as drawn by Pillow :data:`STRIPS_PILLOW`
#: (the header text is rendered by Pillow's bundled font, which may change between releases)
STRIPS_PILLOW = "13.0.0"
STRIPS = {
    "--classes 3 8 --mask-type horizontal_2": {
        "0_mix_3_8.png": "bc1b14f26ca6965807c915a7c32755d8b062b66fc7cd50d26134266830ae9906",
        "3_mix_3_8.png": "e3ea44a916f3458caadeeddf40ce3195d585cb06718aacd634714ef78a65bad4",
    },
    "--classes 1 4 7 --weight 0.5 0.3 0.2 --solver heun --steps 8": {
        "1_mix_1_4_7.png": "49161117c5daae9fc417614df7f29907fb9ffc5cacf54707ca77fb4475dd810f",
    },
    "--classes 0 6 --alpha 0.6 --solver ier --steps 6 --batch 2": {
        "0_mix_0_6.png": "564c6e48092eb5100af64f33afad7537d42c5e23df91162b7dc19410f55fc160",
        "1_mix_0_6.png": "25bd5ac65d0d1553a2831a25ca9fca65b375135ed054d38328368b02a7d808c5",
    },
    "--classes 2 5 9 0 --mask-type quadrant --weight 1 1 1 1 --batch 1 --steps 4 --solver rk4": {
        "0_mix_2_5_9_0.png": "928d040ac99e3864c74afee04b12cd28003477e279085f7ff3e2828542303760",
    },
}


def sample_tiles(path) -> list[str]:
    """Hashes of the sample tiles of a strip: the bottom row of ``TILE``-pixel tiles (under
    the header band), tile 0 (mask legend / weights) left out."""
    a = np.asarray(Image.open(path).convert("RGB"))
    h, w, _ = a.shape
    n = (w - PAD) // (TILE + PAD)
    assert w == n * (TILE + PAD) + PAD, f"{path}: {w} px is not a strip of {TILE}-px tiles"
    y0 = h - PAD - TILE
    return [hashlib.sha256(a[y0:y0 + TILE, PAD + i * (TILE + PAD):PAD + i * (TILE + PAD) + TILE]
                           .tobytes()).hexdigest() for i in range(1, n)]


@pytest.fixture(scope="module", params=list(PURE))
def run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("pinned") / "out"
    res = CliRunner().invoke(app, ["sample", *request.param.split(), "--out", str(out),
                                   "--quiet", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    return request.param, out


def test_pure_grids_byte_identical(run):
    args, out = run
    got = {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in PURE[args]}
    assert got == PURE[args]


def test_strip_samples_unchanged(run):
    """The numerics: every pure and composite tile of the labelled strips holds exactly the
    release's pixels."""
    args, out = run
    got = {name: sample_tiles(out / name) for name in SAMPLE_TILES[args]}
    assert got == SAMPLE_TILES[args]


def test_strip_files_pinned(run):
    import PIL

    if PIL.__version__ != STRIPS_PILLOW:
        pytest.skip(f"strip files pinned with Pillow {STRIPS_PILLOW} (its font draws the "
                    f"labels); this is {PIL.__version__}: the sample tiles are still checked")
    args, out = run
    got = {name: hashlib.sha256((out / name).read_bytes()).hexdigest()
           for name in SAMPLE_TILES[args]}
    assert got == STRIPS.get(args), got
