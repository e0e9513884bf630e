"""The same contract for the newer commands: ``gaf-trt export`` (bad options, engine
directories with a file missing or altered) and ``gaf-trt transport`` (class counts and frame
counts the experiments cannot use). Skipped, with the reason, where a command is absent.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.reliability.conftest import (
    REF_CKPT,
    Result,
    assert_bad_input,
    assert_nothing_written,
    cli_cmd,
    hashes,
    run_many,
)


def need(cli_commands: set[str], name: str) -> None:
    if name not in cli_commands:
        pytest.skip(f"`gaf-trt {name}` does not exist yet (commands: "
                    f"{', '.join(sorted(cli_commands))})")


# --------------------------------------------------------------------------- transport


@pytest.fixture(scope="module")
def transport_runs(cli_commands, tmp_path_factory) -> tuple[Path, dict[str, Result]]:
    need(cli_commands, "transport")
    root = tmp_path_factory.mktemp("transport")

    def cmd(case: str, *args: str) -> list[str]:
        return cli_cmd("transport", "--ckpt", REF_CKPT, "--steps", "2", "--device", "cpu",
                       "-q", "--out", root / case, *args)

    return root, run_many({
        "barycentric_2": cmd("barycentric_2", "--mode", "barycentric", "--classes", "1", "2"),
        "cycle_1": cmd("cycle_1", "--mode", "cycle", "--classes", "1"),
        "n_interp_1": cmd("n_interp_1", "--mode", "interpolation", "--classes", "1", "2",
                          "--n-interp", "1"),
        "unknown_mode": cmd("unknown_mode", "--mode", "teleport", "--classes", "1", "2"),
    })


TRANSPORT = {
    "barycentric_2": ["barycentric", "3"],
    "cycle_1": ["cycle", ("2", "two", "at least")],
    "n_interp_1": [("--n-interp", "n_interp")],
    "unknown_mode": ["teleport", "cycle"],
}


@pytest.mark.parametrize("case", list(TRANSPORT))
def test_transport_refuses_before_work(transport_runs, case):
    root, runs = transport_runs
    assert_bad_input(runs[case], *TRANSPORT[case])
    assert_nothing_written(root / case)


# --------------------------------------------------------------------------- export


@pytest.fixture(scope="module")
def export_runs(cli_commands, tmp_path_factory) -> tuple[Path, dict[str, Result]]:
    need(cli_commands, "export")
    root = tmp_path_factory.mktemp("export")
    (root / "a_file").write_text("keep\n")

    def cmd(out: Path, *args: str) -> list[str]:
        return cli_cmd("export", "--ckpt", REF_CKPT, "--out", out, "--no-parity", *args)

    return root, run_many({
        "graphs_unknown": cmd(root / "graphs_unknown", "--graphs", "split,trunks"),
        "max_classes_0": cmd(root / "max_classes_0", "--max-classes", "0"),
        "out_is_file": cmd(root / "a_file"),
    })


@pytest.mark.parametrize("case,needles", [
    ("graphs_unknown", ["trunks", "split"]),
    ("max_classes_0", ["--max-classes"]),
    ("out_is_file", ["a_file"]),
])
def test_export_refuses_before_work(export_runs, case, needles):
    root, runs = export_runs
    assert_bad_input(runs[case], *needles)
    if case == "out_is_file":
        assert (root / "a_file").read_text() == "keep\n"
    else:
        assert_nothing_written(root / case)


@pytest.fixture(scope="module")
def engine_dir(cli_commands, ref_engine) -> Path:
    """The reference checkpoint exported once per session (split graphs, no parity run)."""
    need(cli_commands, "export")
    return ref_engine


@pytest.fixture(scope="module")
def damaged_runs(engine_dir, tmp_path_factory) -> tuple[Path, dict[str, Result]]:
    root = tmp_path_factory.mktemp("damaged")
    missing, altered = root / "missing", root / "altered"
    shutil.copytree(engine_dir, missing)
    shutil.copytree(engine_dir, altered)
    (missing / "trunk.onnx").unlink()
    with open(altered / "trunk.onnx", "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))

    def sample(eng: Path, case: str) -> list[str]:
        return cli_cmd("sample", "--ckpt", eng, "--backend", "ort", "--classes", "1",
                       "--steps", "2", "--batch", "1", "--device", "cpu", "-q", "--out",
                       root / f"out_{case}")

    return root, run_many({
        "missing_sample": sample(missing, "missing_sample"),
        "missing_info": cli_cmd("info", missing),
        "altered_sample": sample(altered, "altered_sample"),
        "good_sample": sample(engine_dir, "good_sample"),
    })


def test_engine_dir_intact_samples(damaged_runs):
    """Control: the undamaged engine directory samples with ONNX Runtime."""
    root, runs = damaged_runs
    res = runs["good_sample"]
    assert res.rc == 0 and "Traceback" not in res.output, res.describe()
    assert hashes(root / "out_good_sample"), "no output written"


@pytest.mark.parametrize("case,needles", [
    ("missing_sample", ["trunk.onnx", "missing"]),
    ("missing_info", ["trunk.onnx", "missing"]),
    ("altered_sample", ["trunk.onnx", ("altered", "sha256", "re-export")]),
])
def test_damaged_engine_dir(damaged_runs, case, needles):
    root, runs = damaged_runs
    assert_bad_input(runs[case], *needles)
    if case.endswith("_sample"):
        assert_nothing_written(root / f"out_{case}")
