"""Issue 23 item 6 as a user meets it: input that used to reach an internal error (exit 1)
is refused in one ``error:`` line, exit code 2, before any work, nothing written.

- a class token ``--3`` (``sample``, ``generate``, a compositions file, ``labels.txt``), a
  5,000-digit class id, a non-ASCII digit in ``labels.txt``: the one integer reading of
  ``gaf_trt.checks.int_text``;
- 100,000-deep JSON in a compositions file;
- a truncated ``.npz`` and a ``.npy`` named ``.npz`` given to ``evaluate``;
- ``--calib-seed`` of 10**23, refused before the checkpoint is even read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.reliability.conftest import (
    REF_CKPT,
    assert_bad_input,
    assert_nothing_written,
    cli_cmd,
    run_many,
)

TINY_GEN = ["--steps", "1", "--batch", "2", "--shard-size", "2", "--device", "cpu", "-q"]
TINY_SAMPLE = ["--steps", "1", "--batch", "1", "--device", "cpu", "-q"]
HUGE_ID = "9" * 5000
DEEP = 100_000


def _pictures(folder: Path, labels: str) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    for k in range(2):
        Image.new("RGB", (8, 8), (k * 50, 0, 0)).save(folder / f"{k}.png")
    (folder / "labels.txt").write_text(labels, encoding="utf-8")
    return folder


def _inputs(tmp: Path) -> dict[str, Path]:
    files = {"comp_dashes": json.dumps([{"classes": ["--3", 1]}]),
             "comp_deep": "[" * DEEP + "]" * DEEP,
             "comp_huge": json.dumps([{"classes": [HUGE_ID, 1]}])}
    out = {name: tmp / f"{name}.json" for name in files}
    for name, text in files.items():
        out[name].write_text(text)
    full = tmp / "full.npz"
    np.savez(full, arr_0=np.zeros((4, 8, 8, 3), np.uint8), labels=np.arange(4))
    data = full.read_bytes()
    (tmp / "truncated.npz").write_bytes(data[: len(data) // 2])
    np.save(tmp / "array.npy", np.zeros((4, 8, 8, 3), np.uint8))
    (tmp / "array_named.npz").write_bytes((tmp / "array.npy").read_bytes())
    for name, text in (("labels_dashes", "1\n--3\n"), ("labels_superscript", "1\n\u00b3\n"),
                       ("labels_arabic", "1\n\u0663\n")):
        out[name] = _pictures(tmp / "pictures" / name, text)
    return out


#: case -> needles of the one error line
NEEDLES = {
    "sample_dashes": ["'--3'"],
    "sample_huge": ["5,000 digits"],
    "generate_dashes": ["'--3'"],
    "comp_dashes": ["compositions file", "'--3'"],
    "comp_deep": ["compositions file", "nested too deeply"],
    "comp_huge": ["compositions file", "5,000 digits"],
    "labels_dashes": ["labels.txt line 2", "'--3'"],
    "labels_superscript": ["labels.txt line 2", "'\u00b3'"],
    "labels_arabic": ["labels.txt line 2", "'\u0663'"],
    "truncated_npz": ["truncated.npz", "not a readable .npz"],
    "npy_named_npz": ["array_named.npz", ".npy", "not an .npz"],
    "calib_seed": ["--calib-seed", "100000000000000000000000"],
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("input_text")
    files = _inputs(tmp)
    ckpt = ["--ckpt", REF_CKPT]
    cases = {
        "sample_dashes": cli_cmd("sample", *ckpt, "--classes=--3", *TINY_SAMPLE,
                                 "--out", tmp / "sample_dashes"),
        "sample_huge": cli_cmd("sample", *ckpt, "--classes", HUGE_ID, *TINY_SAMPLE,
                               "--out", tmp / "sample_huge"),
        "generate_dashes": cli_cmd("generate", *ckpt, "--classes=--3", "--per-class", "1",
                                   *TINY_GEN, "--out", tmp / "generate_dashes"),
        "truncated_npz": cli_cmd("evaluate", tmp / "truncated.npz", "--metrics", "digits"),
        "npy_named_npz": cli_cmd("evaluate", tmp / "array_named.npz", "--metrics", "digits"),
        "calib_seed": cli_cmd("export", *ckpt, "--precision", "int8", "--calib-seed",
                              str(10 ** 23), "--out", tmp / "calib_seed"),
    }
    for name in ("comp_dashes", "comp_deep", "comp_huge"):
        cases[name] = cli_cmd("generate", *ckpt, "--compositions", files[name], "--per-class",
                              "1", *TINY_GEN, "--out", tmp / name)
    for name in ("labels_dashes", "labels_superscript", "labels_arabic"):
        cases[name] = cli_cmd("evaluate", files[name], "--metrics", "digits")
    return tmp, run_many(cases)


@pytest.mark.parametrize("case", sorted(NEEDLES))
def test_refused_in_one_line(results, case):
    tmp, res = results
    assert_bad_input(res[case], *NEEDLES[case])
    assert_nothing_written(tmp / case)


def test_calib_seed_refused_before_work(results):
    _, res = results
    # refused by the option check, before the checkpoint is read or calibration runs
    assert res["calib_seed"].seconds < 30, res["calib_seed"].describe()
