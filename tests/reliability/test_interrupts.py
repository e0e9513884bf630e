"""Interrupted runs (issue 10, items 3 and 6): real SIGINT / SIGKILL sent to a real
``gaf-trt sample`` that reruns into a folder holding a complete previous run of another
--batch, during sampling and during the writes; and kill -9 during a training checkpoint
write. Afterwards the folder holds the old run intact (run.json and exactly its files, same
bytes), or no run.json at all -- never an old run.json beside new PNGs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.reliability.conftest import (
    REF_CKPT,
    REPO,
    TIMEOUT_S,
    Result,
    assert_bad_input,
    assert_consistent,
    base_env,
    hashes,
    present_files,
    run_cli,
    run_training,
    staging_dirs,
    temp_files,
    training_module,
)
from tests.reliability.gate import gate_cmd, wait_reached

OLD_BATCH = 4


def mix_args(out: Path, *, batch: int, steps: int, seed: int = 0) -> list[str]:
    return ["sample", "--ckpt", str(REF_CKPT), "--classes", "1", "2", "--alpha", "0.5",
            "--skip", "--steps", str(steps), "--batch", str(batch), "--seed", str(seed),
            "--device", "cpu", "--out", str(out)]


@pytest.fixture(scope="module")
def old_run(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A complete previous run (--batch 4) and the sha256 of each of its files."""
    out = tmp_path_factory.mktemp("old_run") / "out"
    res = run_cli(*mix_args(out, batch=OLD_BATCH, steps=2, seed=1), "-q")
    assert res.rc == 0, res.describe()
    assert_consistent(out)
    return out, hashes(out)


def _copy_old(old_run, tmp_path: Path) -> Path:
    src, _ = old_run
    out = tmp_path / "out"
    shutil.copytree(src, out)
    return out


def _signal_run(tmp_path: Path, out: Path, args: list[str], sig: int, point: str) -> Result:
    """Start the rerun gated at ``point`` (see :mod:`tests.reliability.gate`), wait until it
    is there, send ``sig`` and wait for the end. The child is *at* the point when the signal
    arrives, whatever the machine's speed."""
    gate_dir = tmp_path / f"gate-{point}"
    gate_dir.mkdir()
    out_f, err_f = open(tmp_path / "run.out", "w"), open(tmp_path / "run.err", "w")
    start = time.perf_counter()
    cmd = gate_cmd(point, gate_dir, "gaf_trt.cli", *args, "-q")
    proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, env=base_env(), cwd=REPO)
    reached = wait_reached(gate_dir, proc, 2 * TIMEOUT_S)
    alive = proc.poll() is None
    if alive:
        proc.send_signal(sig)
    try:
        rc = proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = None
    out_f.close()
    err_f.close()
    res = Result(cmd, rc, (tmp_path / "run.out").read_text(),
                 (tmp_path / "run.err").read_text(errors="replace"),
                 time.perf_counter() - start, timed_out=rc is None)
    assert reached and alive, f"the run never reached the {point} gate{res.describe()}"
    return res


def _assert_old_run_or_none(out: Path, old: dict[str, str], new_batch: int,
                            killed: bool) -> str:
    """The folder after the interruption: old run intact, or no run.json, (or, if the
    signal came after the commit, the complete new run). Returns which."""
    record = assert_consistent(out, allow_staging=killed, allow_temps=killed)
    if record is None:
        return "no run.json"
    if record["args"]["batch"] == OLD_BATCH:
        now = hashes(out)
        changed = sorted(n for n in old if now.get(n) != old[n])
        assert not changed, f"old run.json kept but its files changed or vanished: {changed}"
        assert set(now) == set(old), f"files beside the old run: {sorted(set(now) - set(old))}"
        return "old run intact"
    assert record["args"]["batch"] == new_batch, record["args"]
    return "new run complete"


#: (signal, point): inside the solver loop, while the pictures are written into the staging
#: folder, and in the middle of the commit (old record removed, some new files moved in).
CASES = [
    pytest.param(sig, point, id=f"{sig.name}-{point}")
    for point in ("sampling", "staging", "commit") for sig in (signal.SIGINT, signal.SIGKILL)
]
#: What the folder holds after a signal at each point: before the commit the old run is
#: untouched; during it the old record is gone (never an old record beside new files).
EXPECTED = {"sampling": "old run intact", "staging": "old run intact", "commit": "no run.json"}
NEW_BATCH = 8


@pytest.mark.parametrize("sig,point", CASES)
def test_interrupted_rerun_keeps_the_folder_consistent(old_run, tmp_path, sig, point):
    out = _copy_old(old_run, tmp_path)
    _, old = old_run
    res = _signal_run(tmp_path, out, mix_args(out, batch=NEW_BATCH, steps=3, seed=2), sig,
                      point)
    killed = sig == signal.SIGKILL
    if killed:
        assert res.rc == -signal.SIGKILL, res.describe()
    else:
        assert "Traceback" not in res.output, f"traceback on Ctrl-C{res.describe()}"
        assert res.rc == 130, f"Ctrl-C should exit 130{res.describe()}"
        assert not [ln for ln in res.stderr.splitlines() if "internal error" in ln], res.describe()
    state = _assert_old_run_or_none(out, old, NEW_BATCH, killed)
    assert state == EXPECTED[point], f"{sig.name} at {point}: {state}{res.describe()}"
    if killed and point in ("staging", "commit"):
        assert staging_dirs(out), "a killed run cannot remove its staging folder"


@pytest.mark.parametrize("sig,point", [
    pytest.param(sig, point, id=f"{sig.name}-{point}")
    for sig in (signal.SIGTERM, signal.SIGHUP) for point in ("sampling", "staging")])
def test_sigterm_and_sighup_clean_up_as_ctrl_c(old_run, tmp_path, sig, point):
    """Issue 23 item 8: SIGTERM and SIGHUP stop a run as Ctrl-C does -- one ``aborted (SIG...)``
    line, exit code 128 + the signal, the old run intact, and neither the lock file nor the
    staging folder left beside ``--out``."""
    out = _copy_old(old_run, tmp_path)
    _, old = old_run
    res = _signal_run(tmp_path, out, mix_args(out, batch=NEW_BATCH, steps=3, seed=2), sig,
                      point)
    assert res.rc == 128 + sig, res.describe()
    assert [ln for ln in res.stderr.splitlines() if ln.strip()] == [f"aborted ({sig.name})"], \
        res.describe()
    assert _assert_old_run_or_none(out, old, NEW_BATCH, killed=False) == "old run intact"
    assert not staging_dirs(out), f"staging folder left: {staging_dirs(out)}"
    lock = out.parent / f".{out.name}.lock"
    assert not lock.exists(), f"lock file left: {lock}"


def test_rerun_after_sigkill_cleans_up(old_run, tmp_path):
    """After a run killed with SIGKILL during its writes, the next run into the folder
    succeeds and leaves no staging folder of the dead run (it holds the lock, so none of
    them belongs to a live run)."""
    out = _copy_old(old_run, tmp_path)
    _, old = old_run
    _signal_run(tmp_path, out, mix_args(out, batch=NEW_BATCH, steps=3, seed=2),
                signal.SIGKILL, "staging")
    assert staging_dirs(out), "the killed run left no staging folder to clean up"
    res = run_cli(*mix_args(out, batch=2, steps=2, seed=3), "-q")
    assert res.rc == 0, res.describe()
    record = assert_consistent(out, allow_temps=True)
    assert record is not None and record["args"]["batch"] == 2, record
    assert not staging_dirs(out), f"staging folders of the killed run remain: {staging_dirs(out)}"


def test_failed_rerun_keeps_the_old_run(old_run, tmp_path, bad_ckpt):
    """A rerun that fails after its work started (finite weights whose state overflows to
    inf/NaN during sampling) exits 2 with one line about the non-finite state, and the old
    run stays intact: same run.json, same files, same bytes; no staging folder."""
    out = _copy_old(old_run, tmp_path)
    _, old = old_run
    args = mix_args(out, batch=NEW_BATCH, steps=3, seed=2)
    args[args.index("--ckpt") + 1] = str(bad_ckpt("overflow"))
    res = run_cli(*args, "-q")
    assert_bad_input(res, ("nan", "non-finite", "not finite", "infinite", "inf"))
    assert_consistent(out)
    assert hashes(out) == old, "the failed rerun changed the old run"


def test_consistency_check_catches_a_mixed_folder(old_run, tmp_path):
    """The checks above can fail: an old run.json beside a new PNG, or beside a rewritten
    one, is caught."""
    out = _copy_old(old_run, tmp_path)
    _, old = old_run
    (out / "7_mix_1_2.png").write_bytes(b"new run")
    with pytest.raises(AssertionError, match="present but not listed"):
        assert_consistent(out)
    (out / "7_mix_1_2.png").unlink()
    (out / "0_mix_1_2.png").write_bytes(b"new run")
    with pytest.raises(AssertionError, match="files changed"):
        _assert_old_run_or_none(out, old, NEW_BATCH, killed=False)


# --------------------------------------------------------------------------- training


def _train_args(out: Path, iters: int, ckpt_every: int) -> list[str]:
    """A small digits network whose checkpoint (~13 MB with optimiser state) takes a moment
    to write."""
    sets = ["dit_hidden=128", "dit_depth=4", "dit_heads=4", "patch_size=4", "batch_size=8",
            "log_every=0", "preview_every=0", f"ckpt_every={ckpt_every}", "warmup=1",
            "device=cpu", f"iters={iters}"]
    return ["train", "--preset", "digits", *[x for kv in sets for x in ("--set", kv)],
            "--out", str(out), "-q"]


def test_kill9_during_checkpoint_write(tmp_path):
    """kill -9 while the trainer writes last.pt (gated: the checkpoint is in its temp file,
    not yet renamed): last.pt is absent (never half a file); what is left is a temp file of
    our own naming (``.last.pt.*.gaftmp``). The next checkpoint write removes temps older
    than an hour (aged here with os.utime) and keeps a fresh one (it may belong to a live
    writer)."""
    out = tmp_path / "run"
    gate_dir = tmp_path / "gate"
    gate_dir.mkdir()
    cmd = gate_cmd("checkpoint", gate_dir, training_module(), *_train_args(out, 4, 1))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=base_env(), cwd=REPO)
    try:
        reached = wait_reached(gate_dir, proc, 2 * TIMEOUT_S)
    finally:
        alive = proc.poll() is None
        proc.kill()
        stderr = proc.communicate(timeout=TIMEOUT_S)[1].decode(errors="replace")
    assert reached and alive, f"the training run never reached the checkpoint write: " \
                              f"{stderr[-800:]}"
    assert not (out / "last.pt").exists(), "last.pt appeared before its temp file was renamed"
    leftovers = sorted(p.name for p in out.iterdir()
                       if p.name not in ("last.pt", "config.yaml") and not p.is_dir())
    assert leftovers and all(re.fullmatch(r"\.last\.pt\..+\.gaftmp", n) for n in leftovers), (
        f"expected only the checkpoint's temp file after kill -9: {leftovers}")

    hour_ago = time.time() - 2 * 3600
    planted_old = out / ".last.pt.planted_old.gaftmp"
    planted_old.write_bytes(b"orphan")
    for p in [planted_old, *temp_files(out)]:
        os.utime(p, (hour_ago, hour_ago))
    fresh = out / ".last.pt.planted_fresh.gaftmp"
    fresh.write_bytes(b"live writer")
    aged = [p for p in temp_files(out) if p.name.startswith(".last.pt.") and p != fresh]

    res = run_training(*_train_args(out, 1, 0))
    assert res.rc == 0, res.describe()
    assert torch.load(out / "last.pt", map_location="cpu", weights_only=True)["step"] == 1
    assert not [p for p in aged if p.exists()], (
        f"aged orphans survived the next checkpoint write: {[p.name for p in aged]}")
    assert fresh.exists(), "a fresh temp file (maybe a live writer's) was removed"


def test_atomic_write_errors_name_the_target(tmp_path):
    """A failed write reports the target path, not the temp file; no temp is left."""
    from gaf_trt.io.files import atomic_write

    target = tmp_path / "model.pt"

    def fail(tmp: Path) -> None:
        raise OSError(28, "No space left on device", str(tmp))

    with pytest.raises(OSError) as info:
        atomic_write(target, fail)
    assert str(target) in str(info.value) and ".gaftmp" not in str(info.value), info.value
    assert not target.exists() and not temp_files(tmp_path)
    assert present_files(tmp_path) == set()
