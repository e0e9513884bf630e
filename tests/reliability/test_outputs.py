"""One consistent output folder (issue 10, items 3 and 6): bad ``--out`` values are refused
before sampling; a rerun replaces the previous run as a whole; a run into an ``--out`` whose
lock is held (by the test, or by a run stopped at a gate) fails on the lock and writes nothing.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.reliability.conftest import (
    REF_CKPT,
    REPO,
    TIMEOUT_S,
    Result,
    assert_bad_input,
    assert_consistent,
    assert_nothing_written,
    base_env,
    cli_cmd,
    present_files,
    read_record,
    run_cli,
    run_many,
    staging_dirs,
    unwritable_folder,
)
from tests.reliability.gate import gate_cmd, release, wait_reached

LOCK_WORDS = ("lock", "another", "in use", "busy", "already")


def mix_args(out: Path | str, *, batch: int, seed: int = 0, steps: int = 2) -> list[str]:
    """A 2-class alpha blend of the reference checkpoint, compositions only."""
    return ["sample", "--ckpt", str(REF_CKPT), "--classes", "1", "2", "--alpha", "0.5",
            "--skip", "--steps", str(steps), "--batch", str(batch), "--seed", str(seed),
            "--device", "cpu", "--out", str(out)]


def pngs(out: Path) -> set[str]:
    return {n for n in present_files(out) if n.endswith(".png")}


# --------------------------------------------------------------------------- bad --out


@pytest.fixture(scope="module")
def bad_out_runs(tmp_path_factory) -> tuple[Path, dict[str, Result]]:
    root = tmp_path_factory.mktemp("bad_out")
    (root / "a_file").write_text("not a folder\n")
    (root / "cwd").mkdir()
    results = run_many({
        "existing_file": cli_cmd(*mix_args(root / "a_file", batch=1), "-q"),
        "file_as_parent": cli_cmd(*mix_args(root / "a_file" / "sub", batch=1), "-q"),
    })
    results["empty"] = run_cli(*mix_args("", batch=1), "-q", cwd=root / "cwd")
    return root, results


def test_out_is_an_existing_file(bad_out_runs):
    root, runs = bad_out_runs
    for case in ("existing_file", "file_as_parent"):
        assert_bad_input(runs[case], ("a_file", "--out"))
    assert (root / "a_file").read_text() == "not a folder\n", "the file was modified"
    assert not staging_dirs(root / "a_file")


def test_out_empty_string_writes_nowhere(bad_out_runs):
    root, runs = bad_out_runs
    assert_bad_input(runs["empty"], "--out")
    assert not any((root / "cwd").iterdir()), (
        f"--out '' wrote into the current folder: {sorted((root / 'cwd').iterdir())}")


def test_out_unwritable(tmp_path):
    parent = unwritable_folder(tmp_path)
    if parent is None:
        pytest.skip("running as root (or with CAP_DAC_OVERRIDE): chmod 0500 does not make a "
                    "folder unwritable, and no /proc/1 to use instead")
    try:
        out = parent / "gaf-out"
        res = run_cli(*mix_args(out, batch=1), "-q")
        assert_bad_input(res, str(out))
        assert not out.exists()
        if parent != Path("/proc/1"):
            assert_nothing_written(out)
    finally:
        if parent != Path("/proc/1"):
            parent.chmod(0o700)


# --------------------------------------------------------------------------- rerun


def test_rerun_replaces_the_previous_run(tmp_path):
    """A complete rerun with another --batch leaves exactly the new run: run.json lists the
    files present, no PNG of the old batch is left, no staging folder, no temp file."""
    out = tmp_path / "out"
    first = run_cli(*mix_args(out, batch=3, seed=1), "-q")
    assert first.rc == 0, first.describe()
    rec1 = assert_consistent(out)
    assert rec1 is not None and pngs(out), "the first run wrote no run.json / PNG"
    second = run_cli(*mix_args(out, batch=1, seed=2), "-q")
    assert second.rc == 0, second.describe()
    rec2 = assert_consistent(out)
    assert rec2 is not None and rec2["args"]["batch"] == 1, rec2
    assert not [n for n in pngs(out) if re.match(r"[12]_mix_", n)], (
        f"PNGs of the old batch survived the rerun: {sorted(pngs(out))}")


def test_unrelated_files_survive_a_rerun(tmp_path):
    """Files that no run.json of ours listed are the user's: a rerun leaves them alone."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    res = run_cli(*mix_args(out, batch=1), "-q")
    assert res.rc == 0, res.describe()
    assert (out / "notes.txt").read_text() == "mine\n"
    record = read_record(out)
    assert record is not None and "notes.txt" not in record["files"]


# --------------------------------------------------------------------------- concurrency


def test_a_held_lock_refuses_a_run(tmp_path):
    """The test holds --out's lock through the library's own lock API: a run into the folder
    exits 2 with one line about the lock and writes nothing (no folder, no staging); once the
    lock is released the same command succeeds."""
    from gaf_trt.io.lock import DirLock

    out = tmp_path / "out"
    with DirLock(out):
        res = run_cli(*mix_args(out, batch=1), "-q")
        assert_bad_input(res, LOCK_WORDS, "--out")
        assert_nothing_written(out)
    res = run_cli(*mix_args(out, batch=1), "-q")
    assert res.rc == 0, res.describe()
    assert assert_consistent(out) is not None


def test_two_concurrent_runs_into_one_out(tmp_path):
    """Run A stops inside its solver loop (gated: it holds the lock and waits for the test);
    run B into the same --out then exits 2 with one line about the lock and writes nothing;
    released, A finishes: run.json lists exactly the PNGs present, and they are A's."""
    out = tmp_path / "out"
    gate_dir = tmp_path / "gate"
    gate_dir.mkdir()
    cmd = gate_cmd("sampling", gate_dir, "gaf_trt.cli", *mix_args(out, batch=2, seed=11), "-q")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=base_env(), cwd=REPO)
    try:
        reached = wait_reached(gate_dir, proc, 2 * TIMEOUT_S)
        rival = run_cli(*mix_args(out, batch=3, seed=22), "-q") if reached else None
    finally:
        release(gate_dir)
        try:
            stdout, stderr = proc.communicate(timeout=2 * TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
    first = Result(cmd, proc.returncode, stdout, stderr, 0.0)
    assert reached and rival is not None, f"run A never reached its solver loop{first.describe()}"
    assert_bad_input(rival, LOCK_WORDS)
    assert first.rc == 0 and "Traceback" not in first.output, first.describe()
    record = assert_consistent(out)
    assert record is not None, "run A left no run.json"
    assert record["args"]["seed"] == 11 and record["args"]["batch"] == 2, record["args"]
    strips = {n for n in pngs(out) if re.match(r"\d+_mix_", n)}
    assert len(strips) == 2, f"expected A's 2 strips, found {sorted(strips)}"
