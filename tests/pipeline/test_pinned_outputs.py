"""Bytes pinned across refactors: `gaf-trt sample` on the bundled model must keep writing the
same pure-class and composition PNGs (hashes taken from the pre-refactor release, f17cc49).

summary.png is not pinned: it became one picture of the whole run on purpose.
"""

from __future__ import annotations

import hashlib

import pytest
from typer.testing import CliRunner

from gaf_trt.cli import app

PINNED = {
    "--classes 3 8 --mask-type horizontal_2": {
        "0_mix_3_8.png": "0c71f716ede4a0b28db6c5648990867469435c803f9a911ba7c60e856fc9a2c6",
        "3_mix_3_8.png": "8618ee83115d32749fe555087287bb4733a7cece8c645157bc64e06e98ff2079",
        "pure_3.png": "d57f5cd70ae9d6945d9c154fe64ace34ae8c1f8a3f6a60f539c1703ffb56852e",
        "pure_8.png": "d0d996f082bc95d57669b3e20aaecf95d90c5e4e1330ba89d3d31e6d7641e4b4",
    },
    "--classes 1 4 7 --weight 0.5 0.3 0.2 --solver heun --steps 8": {
        "1_mix_1_4_7.png": "bafeb01a03c74869f611507663056e6bd79812c32e1542e32dca7e0b8ea0d753",
        "pure_4.png": "33d1f743e57c1bd95eadf9c628c696c5c272699d6458f22e45363f6dff09ca87",
        "pure_7.png": "718fc34e91a84dd4f9fd7edaee1806a0808b6fee486d97e5cfba07a658c37165",
    },
    "--classes 0 6 --alpha 0.6 --solver ier --steps 6 --batch 2": {
        "0_mix_0_6.png": "4eb5aa9e18a7c2a90fb2bc61049cd25371daba5413253f2d41b45739c373b10b",
        "1_mix_0_6.png": "38d2d48170c002cd4f479c5ec878117ce71bf2881c9717ad3b48b6ce43cbc922",
        "pure_0.png": "95791df8cf43c6c64def95fb01c464dcbbc23b7fe8221d824b1ddf3aeedbe174",
        "pure_6.png": "6b1699f5872b61d8f01a325aaf1668cb29b626607667a73e32dfc0e013c721af",
    },
    "--classes 2 5 9 0 --mask-type quadrant --weight 1 1 1 1 --batch 1 --steps 4 --solver rk4": {
        "0_mix_2_5_9_0.png": "d099f528ea3d1fa2c216f3129cd9d57ee769e01726fad1d993e17d55a7bc5851",
        "pure_0.png": "48ca24c574bc8c9fc3d77ffa7ed5e43fce1f117c7ef563abeaad71b2fc2b777c",
        "pure_9.png": "4476e475f1b4b46f19c49de9462c20daf7715cfb1467782d597378407ac21c92",
    },
}


@pytest.mark.parametrize("args", list(PINNED))
def test_sample_bytes_pinned(tmp_path, args):
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["sample", *args.split(), "--out", str(out), "--quiet",
                                   "--device", "cpu"])
    assert res.exit_code == 0, res.output
    got = {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in PINNED[args]}
    assert got == PINNED[args]
