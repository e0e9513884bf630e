"""Options without upper bounds and hostile inputs (issue 10, items 1, 2, 4, 6): each is
refused before any work with one line naming the option, rc 2, and nothing written. Real
subprocesses with a timeout, so a case that hangs (``--steps 1e9``) fails alone.
"""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from tests.reliability.conftest import (
    REF_CKPT,
    Result,
    assert_bad_input,
    assert_nothing_written,
    cli_cmd,
    run_many,
)

NON_FINITE = ("nan", "non-finite", "not finite", "nonfinite", "inf")
#: The reference checkpoint's latent grid (masks are resized to it).
GRID = 8


def png_bomb(path: Path, width: int = 20000, height: int = 10000) -> Path:
    """A valid 8-bit grayscale PNG of ``width x height`` zeros (a few hundred kB on disk,
    200 MB once decoded) -- written chunk by chunk, never held decoded in memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    comp = zlib.compressobj(6)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))
    return path


def png16_levels(path: Path, levels: int = 300) -> tuple[Path, int]:
    """A 16-bit grayscale PNG with ``levels`` distinct gray values, all above 255 but the
    first (an 8-bit reading collapses them); returns the path and how many distinct levels a
    nearest resize to the model grid keeps."""
    from PIL import Image

    w = 20
    h = -(-levels // w)
    values = (np.arange(w * h) % levels) * (65535 // levels)
    img = Image.fromarray(values.reshape(h, w).astype(np.uint16))  # mode I;16
    assert img.mode.startswith("I;16"), img.mode
    img.save(path)
    with Image.open(path) as back:
        grid = np.asarray(back.convert("I").resize((GRID, GRID), Image.NEAREST))
        assert len(np.unique(np.asarray(back.convert("I")))) == levels
    return path, int(len(np.unique(grid)))


@pytest.fixture(scope="module")
def outs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bounds_outs")


@pytest.fixture(scope="module")
def mask16(outs) -> tuple[Path, int]:
    return png16_levels(outs / "gray16.png")


def _sample(out: Path, *args: str) -> list[str]:
    return cli_cmd("sample", "--ckpt", REF_CKPT, "--device", "cpu", "-q", "--out", out, *args)


@pytest.fixture(scope="module")
def runs(outs, mask16) -> dict[str, Result]:
    bomb = png_bomb(outs / "bomb_20000x10000.png")
    two = ["--classes", "1", "2"]
    cases = {
        "alpha_1e30": _sample(outs / "alpha_1e30", *two, "--alpha", "1e30", "--steps", "2",
                              "--batch", "1"),
        "alpha_nan": _sample(outs / "alpha_nan", *two, "--alpha", "nan", "--steps", "2",
                             "--batch", "1"),
        "seed_huge": _sample(outs / "seed_huge", "--classes", "1", "--steps", "2", "--batch",
                             "1", "--seed", "99999999999999999999999"),
        "mask_bomb": _sample(outs / "mask_bomb", *two, "--mask-type", "custom", "--mask-img",
                             str(bomb), "--steps", "2", "--batch", "1"),
        "mask_16bit": _sample(outs / "mask_16bit", *two, "--mask-type", "custom",
                              "--mask-img", str(mask16[0]), "--steps", "2", "--batch", "1"),
        "batch_100000": _sample(outs / "batch_100000", "--classes", "1", "--steps", "2",
                                "--batch", "100000"),
        "steps_1e9": _sample(outs / "steps_1e9", "--classes", "1", "--batch", "1", "--steps",
                             "1000000000"),
        "steps_1e10": _sample(outs / "steps_1e10", "--classes", "1", "--batch", "1",
                              "--steps", "1e10"),
        "sigma_1e6": _sample(outs / "sigma_1e6", *two, "--mask-type", "horizontal_2",
                             "--sigma", "1e6", "--steps", "2", "--batch", "1"),
        "permute_9": _sample(outs / "permute_9", "--classes", *map(str, range(1, 10)),
                             "--weight", *["1"] * 9, "--permute", "--steps", "2", "--batch",
                             "1"),
        "bench_warmup": cli_cmd("bench", "--ckpt", REF_CKPT, "--warmup", "-3", "--steps", "2",
                                "--batch", "1", "--repeats", "1", "--device", "cpu"),
    }
    return run_many(cases)


# case -> words the one error line must contain (a tuple is a set of alternatives): the
# option, and the bad value as given (standards: name the bad value and the allowed ones)
REFUSED = {
    "alpha_1e30": [("alpha", *NON_FINITE), ("1e30", "1e+30", "1e+030")],
    "alpha_nan": [("alpha", *NON_FINITE)],
    "seed_huge": ["seed", "99999999999999999999999"],
    "mask_bomb": [("20000", "pixels", "too large", "decompression")],
    "batch_100000": ["batch", "100000"],
    "steps_1e9": ["steps", "1000000000"],
    "steps_1e10": ["steps", "1e10"],
    "sigma_1e6": ["sigma", ("1e6", "1e+06", "1000000")],
    "permute_9": [("permut",), ("9 classes", "362,880", "362880")],
    "bench_warmup": ["warmup", "-3"],
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_before_work(runs, outs, case):
    """rc 2, one line naming the option, no traceback, nothing written (and no hang: the
    subprocess timeout fails a case that starts the work)."""
    assert_bad_input(runs[case], *REFUSED[case])
    if case != "bench_warmup":
        out = outs / case
        assert not list(out.glob("**/*.png")), f"{case}: PNG written: {sorted(out.iterdir())}"
        assert_nothing_written(out)


def test_16bit_mask_keeps_its_levels(runs, outs, mask16):
    """A 16-bit mask with 300 gray levels is not read as 1-2 regions: with 2 classes it is
    refused by the region count, and the message gives the real count (the image's 300
    levels, or the levels left on the model's 8x8 grid)."""
    path, on_grid = mask16
    assert on_grid > 2, "fixture: the resized mask must keep more levels than classes"
    res = runs["mask_16bit"]
    line = assert_bad_input(res, "mask").replace(str(path), "<mask>")
    counts = {int(n) for n in re.findall(r"(?<![\w.])(\d+)(?![\w.])", line)}
    assert counts & {on_grid, 300}, (
        f"the message should give the real level count ({on_grid} on the grid, 300 in the "
        f"image), saw numbers {sorted(counts)}{res.describe()}")
    assert_nothing_written(outs / "mask_16bit")


def test_new_sample_options_refused_before_work(tmp_path):
    """The options added with the engines and chunking: --chunk, --max-runs, --engine with a
    folder that is no engine directory, --compile on a backend that is not torch."""
    (tmp_path / "not_an_engine").mkdir()
    common = ["sample", "--ckpt", str(REF_CKPT), "--classes", "1", "2", "--alpha", "0.5",
              "--steps", "2", "--device", "cpu", "-q"]
    cases = {
        "chunk_0": [*common, "--chunk", "0", "--out", str(tmp_path / "o1")],
        "max_runs_0": [*common, "--max-runs", "0", "--out", str(tmp_path / "o2")],
        "engine_not_dir": ["sample", "--engine", str(tmp_path / "not_an_engine"), "--backend",
                           "ort", "--classes", "1", "--device", "cpu", "-q",
                           "--out", str(tmp_path / "o3")],
    }
    needles = {"chunk_0": "--chunk", "max_runs_0": "--max-runs", "engine_not_dir": "manifest"}
    for name, res in run_many({k: cli_cmd(*v) for k, v in cases.items()}).items():
        assert_bad_input(res, needles[name])
    for o in ("o1", "o2", "o3"):
        assert_nothing_written(tmp_path / o)
