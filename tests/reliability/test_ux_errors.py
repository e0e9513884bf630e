"""Issue 14 (groups 1, 4, 7 and 8's command-line side) as a user meets them: real
subprocesses, exit code, stderr holding the one ``error:`` line and nothing else -- with the
progress bars on, as a user runs the commands -- and the state of every folder.

- transport / translate with a checkpoint whose finite weights blow up: refused like
  ``sample``, nothing written, no NaN in any JSON;
- bench checks its --json / --plot paths before the run, and its progress does not survive
  an error; an image of 89-178 M pixels, a protocol-4 pickle, a diverging training run and
  a bundle into a read-only folder each end in one line;
- ``export`` refuses profiles beyond the graphs' limits before any work.
"""

from __future__ import annotations

import copy
import json
import math
import struct
import zlib
from pathlib import Path

import pytest
import torch

from tests.reliability.conftest import (
    TINY_SAMPLE,
    Result,
    assert_bad_input,
    assert_nothing_written,
    cli_cmd,
    run_cli,
    run_many,
    run_training,
    unwritable_folder,
)

#: one layer's finite weights x1e36: the outputs overflow float32 (as the audit built it)
BLOWUP_KEY = "twins.K.weight"
BLOWUP = 1e36

#: the error line of a non-finite state (compose/sampling.check_finite)
NON_FINITE = "NaN or infinite"


def only_the_error(res: Result) -> str:
    """stderr holds exactly one non-blank line, the ``error:`` line (no progress bar left
    behind, no warning, no log line)."""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), (
        f"stderr should be the one error line{res.describe()}")
    return lines[0]


@pytest.fixture()
def ro_folder(tmp_path):
    folder = unwritable_folder(tmp_path)
    if folder is None:
        pytest.skip("no folder this process cannot write into (root without /proc/1)")
    yield folder
    if folder != Path("/proc/1"):
        folder.chmod(0o700)


# --------------------------------------------------------------------------- group 1: NaN


@pytest.fixture(scope="module")
def blowup_ckpt(ref_raw_ckpt, tmp_path_factory) -> Path:
    ck = copy.deepcopy(ref_raw_ckpt)
    for key in ("model", "ema"):
        ck[key][BLOWUP_KEY] = ck[key][BLOWUP_KEY] * BLOWUP
    assert all(bool(torch.isfinite(ck[k][BLOWUP_KEY]).all()) for k in ("model", "ema"))
    path = tmp_path_factory.mktemp("blowup") / "blowup.pt"
    torch.save(ck, path)
    return path


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "digit.png"
    Image.new("L", (16, 16), 128).save(path)
    return path


@pytest.fixture(scope="module")
def blowup_runs(blowup_ckpt, image_file, tmp_path_factory) -> tuple[Path, dict[str, Result]]:
    """Every integrating job on the blown-up checkpoint, progress bars on (no -q)."""
    root = tmp_path_factory.mktemp("blowup_runs")
    common = ["--ckpt", blowup_ckpt, "--steps", "2", "--device", "cpu"]
    cases = {
        "sample": ["sample", "--classes", "1", "2", "--alpha", "0.5", "--batch", "1"],
        "cycle": ["transport", "--mode", "cycle", "--classes", "1", "2"],
        "interpolation": ["transport", "--mode", "interpolation", "--classes", "1", "2",
                          "--n-interp", "2"],
        "barycentric": ["transport", "--mode", "barycentric", "--classes", "1", "2", "3",
                        "--grid-size", "2"],
        "translate": ["translate", "--image", image_file, "--source", "1", "--target", "2"],
    }
    runs = run_many({k: cli_cmd(*v, *common, "--out", root / k) for k, v in cases.items()})
    return root, runs


@pytest.mark.parametrize("case", ["sample", "cycle", "interpolation", "barycentric",
                                  "translate"])
def test_blown_up_weights_refused_before_writing(blowup_runs, case):
    root, runs = blowup_runs
    res = runs[case]
    assert_bad_input(res, NON_FINITE)
    only_the_error(res)
    assert_nothing_written(root / case)


def test_json_never_holds_nan(tmp_path):
    """The one JSON writer refuses NaN / Infinity instead of writing invalid JSON."""
    from gaf_trt.io.files import write_json

    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            write_json(tmp_path / "r.json", {"metrics": {"mse": bad}})
        assert not (tmp_path / "r.json").exists()
    write_json(tmp_path / "r.json", {"metrics": {"mse": 0.5}})
    assert json.loads((tmp_path / "r.json").read_text()) == {"metrics": {"mse": 0.5}}


# --------------------------------------------------------------------------- group 4: one line


def test_bench_checks_json_and_plot_before_the_run(ref_ckpt, ro_folder):
    common = ["bench", "--ckpt", ref_ckpt, "--device", "cpu", "--steps", "1", "--repeats",
              "1", "--batch", "1", "--classes", "1"]
    runs = run_many({
        "json": cli_cmd(*common, "--json", ro_folder / "b.json"),
        "plot": cli_cmd(*common, "--plot", ro_folder / "sub" / "b.png"),
    })
    for flag, res in runs.items():
        line = assert_bad_input(res, f"--{flag}", str(ro_folder))
        assert ".gaftmp" not in line, line
        only_the_error(res)
        assert res.stdout.strip() == "", f"the benchmark ran before the check{res.describe()}"


def test_bench_progress_does_not_survive_an_error(ref_ckpt):
    """--classes 11 is refused once the model is loaded (progress on by then)."""
    res = run_cli("bench", "--ckpt", ref_ckpt, "--device", "cpu", "--classes", "11")
    assert_bad_input(res, "--classes 11")
    only_the_error(res)


def _png_header_only(path: Path, side: int) -> Path:
    """A PNG whose header says ``side x side`` pixels (no real pixel data): Pillow warns
    at open (89-178 M pixels) before any reader decodes it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_images_are_one_line(ref_ckpt, tmp_path):
    bomb = _png_header_only(tmp_path / "bomb.png", 9500)  # 90.25 M pixels
    runs = run_many({
        "translate": cli_cmd("translate", "--image", bomb, "--source", "1", "--target", "2",
                             "--ckpt", ref_ckpt, "--out", tmp_path / "t", *TINY_SAMPLE[:2],
                             "--device", "cpu"),
        "mask": cli_cmd("sample", "--ckpt", ref_ckpt, "--classes", "1", "2", "--mask-img",
                        bomb, "--out", tmp_path / "s", *TINY_SAMPLE),
    })
    for name, res in runs.items():
        assert_bad_input(res, "9500x9500")
        assert "DecompressionBomb" not in res.stderr, res.describe()
        only_the_error(res)
        assert_nothing_written(tmp_path / ("t" if name == "translate" else "s"))


def test_decompression_bomb_in_an_evaluate_folder_is_one_line(tmp_path):
    """Issue 23 item 9: an image over evaluate's pixel cap (72 M and 90 M pixels) in the
    dataset folder is refused in one line naming it, before it is decoded; no Pillow
    warning."""
    cases = {}
    for side in (8500, 9500):
        folder = tmp_path / f"ds{side}"
        folder.mkdir()
        _png_header_only(folder / "bomb.png", side)
        cases[str(side)] = cli_cmd("evaluate", folder, "--metrics", "digits")
    for side, res in run_many(cases).items():
        assert_bad_input(res, "bomb.png", f"{side}x{side}", "64,000,000")
        assert "DecompressionBomb" not in res.stderr, res.describe()
        only_the_error(res)


def test_protocol_4_pickle_is_one_line(ref_raw_ckpt, tmp_path):
    path = tmp_path / "p4.pt"
    torch.save(ref_raw_ckpt, path, pickle_protocol=4)
    res = run_cli("info", path)
    if res.rc == 0:  # a torch that reads it: still no warning on stderr
        assert "UserWarning" not in res.stderr and res.stderr.strip() == "", res.describe()
        return
    assert_bad_input(res, str(path))
    assert "pickle protocol" not in res.stderr, res.describe()
    only_the_error(res)


def test_training_failure_leaves_no_progress_or_log_line(tmp_path):
    """A diverging run with its progress bar on and log_every=1: only the error line."""
    sets = ["dit_hidden=32", "dit_depth=1", "dit_heads=2", "patch_size=4", "batch_size=16",
            "log_every=1", "preview_every=0", "ckpt_every=0", "warmup=2", "device=cpu",
            "iters=8", "lr=1e30", "grad_clip=0"]
    args = [x for kv in sets for x in ("--set", kv)]
    res = run_training("train", "--preset", "digits", *args, "--out", tmp_path / "run")
    assert_bad_input(res, "loss became")
    only_the_error(res)


def test_bundle_into_a_read_only_folder_names_the_folder(ref_ckpt, ro_folder):
    res = run_training("bundle", "--ckpt", ref_ckpt, "--out", ro_folder / "m.safetensors")
    line = assert_bad_input(res, str(ro_folder))
    assert ".gaftmp" not in line and "tmp" not in line.split(str(ro_folder))[-1], line
    only_the_error(res)


def test_evaluate_checks_its_json_path_first(ro_folder):
    res = run_training("evaluate", "--per-class", "2", "--json", ro_folder / "e.json")
    assert_bad_input(res, "--json", str(ro_folder))
    only_the_error(res)
    assert res.stdout.strip() == "", res.describe()


# --------------------------------------------------------------------------- group 7: bounds


@pytest.mark.parametrize("args,needle", [
    (["--max-batch", "1000000000"], "--max-batch must be at most 4096"),
    (["--max-classes", "1000"], "--max-classes must be at most 256"),
    (["--max-batch", "4096", "--static-batch", "5000"], "--static-batch must be at most 4096"),
    # issue 23 item 9: refused with or without TensorRT here
    (["--hardware-compat", "foo"], "--hardware-compat foo"),
])
def test_export_profile_bounds_before_any_work(ref_ckpt, tmp_path, args, needle):
    out = tmp_path / "eng"
    res = run_cli("export", "--ckpt", ref_ckpt, "--out", out, *args)
    assert_bad_input(res, needle)
    only_the_error(res)
    assert_nothing_written(out)
