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
    TIMEOUT_S,
    Result,
    assert_bad_input,
    assert_consistent,
    base_env,
    cli_cmd,
    hashes,
    present_files,
    run_cli,
    run_training,
    staging_dirs,
    temp_files,
    training_module,
)

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


def _sampling_seen(err: Path, out: Path) -> bool:
    """The run is generating: its staging folder exists (OutputDir is entered right before
    the solver loops), or the progress bar (forced on with FORCE_COLOR) counts >= 1 step."""
    if staging_dirs(out):
        return True
    text = err.read_text(errors="replace") if err.exists() else ""
    return bool(re.search(r"\b[1-9]\d*/\d+\b", text))


def _writes_seen(out: Path, old: dict[str, str]) -> bool:
    """A file of the new run exists: in a staging folder, or new / changed in ``out``, or the
    old run.json is gone. (Folders may vanish while we look: that counts as nothing yet.)"""
    try:
        if any(any(p.is_file() for p in d.rglob("*")) for d in staging_dirs(out)):
            return True
        if not (out / "run.json").exists():
            return True
        return any(entry.name not in old for entry in os.scandir(out))
    except OSError:
        return False


def _signal_run(tmp_path: Path, out: Path, args: list[str], sig: int, when: str,
                old: dict[str, str]) -> Result:
    """Start the rerun, send ``sig`` once ``when`` ("sampling" / "writes") is seen, wait."""
    env = base_env(FORCE_COLOR="1")
    env.pop("NO_COLOR", None)
    out_f, err_f = open(tmp_path / "run.out", "w"), open(tmp_path / "run.err", "w")
    start = time.perf_counter()
    proc = subprocess.Popen(cli_cmd(*args), stdout=out_f, stderr=err_f, env=env)
    deadline = start + 2 * TIMEOUT_S
    seen = False
    while time.perf_counter() < deadline and proc.poll() is None:
        seen = (_sampling_seen(tmp_path / "run.err", out) if when == "sampling"
                else _writes_seen(out, old))
        if seen:
            if when == "sampling":
                time.sleep(0.3)  # well inside the solver loop (seconds long)
            break
        time.sleep(0.002 if when == "writes" else 0.05)
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
    res = Result(cli_cmd(*args), rc, (tmp_path / "run.out").read_text(),
                 (tmp_path / "run.err").read_text(errors="replace"),
                 time.perf_counter() - start, timed_out=rc is None)
    assert alive, f"the run ended before the signal ({when} never seen){res.describe()}"
    assert seen, f"{when} not seen within {2 * TIMEOUT_S:.0f} s; signalled anyway{res.describe()}"
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


#: (signal, moment, new --batch, steps): sampling runs last seconds; the writes case has many
#: strips (64) so that the writes take a while. Every new batch differs from the old 4.
CASES = [
    pytest.param(signal.SIGINT, "sampling", 8, 300, id="SIGINT-sampling"),
    pytest.param(signal.SIGKILL, "sampling", 8, 300, id="SIGKILL-sampling"),
    pytest.param(signal.SIGINT, "writes", 64, 3, id="SIGINT-writes"),
    pytest.param(signal.SIGKILL, "writes", 64, 3, id="SIGKILL-writes"),
]
NEW_BATCH = 64


@pytest.mark.parametrize("sig,when,batch,steps", CASES)
def test_interrupted_rerun_keeps_the_folder_consistent(old_run, tmp_path, sig, when, batch,
                                                        steps):
    out = _copy_old(old_run, tmp_path)
    _, old = old_run
    res = _signal_run(tmp_path, out, mix_args(out, batch=batch, steps=steps, seed=2), sig,
                      when, old)
    killed = sig == signal.SIGKILL
    if killed:
        assert res.rc == -signal.SIGKILL, res.describe()
    else:
        assert "Traceback" not in res.output, f"traceback on Ctrl-C{res.describe()}"
        assert res.rc == 130, f"Ctrl-C should exit 130{res.describe()}"
        assert not [ln for ln in res.stderr.splitlines() if "internal error" in ln], res.describe()
    state = _assert_old_run_or_none(out, old, batch, killed)
    print(f"{sig.name} during {when}: {state}")
    if when == "sampling":
        assert state != "new run complete", "the signal sent during sampling did not stop it"


def test_rerun_after_sigkill_cleans_up(old_run, tmp_path):
    """After a run killed with SIGKILL during its writes, the next run into the folder
    succeeds and leaves no staging folder of the dead run (it holds the lock, so none of
    them belongs to a live run)."""
    out = _copy_old(old_run, tmp_path)
    _, old = old_run
    _signal_run(tmp_path, out, mix_args(out, batch=NEW_BATCH, steps=3, seed=2),
                signal.SIGKILL, "writes", old)
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
    """kill -9 while the trainer writes last.pt (a checkpoint every step): last.pt is whole
    (loads with weights_only=True) or absent; what is left is at most a temp file of our own
    naming (``.last.pt.*.gaftmp``). The next checkpoint write removes temps older than an
    hour (aged here with os.utime) and keeps a fresh one (it may belong to a live writer)."""
    out = tmp_path / "run"
    cmd = cli_cmd(*_train_args(out, 100000, 1), module=training_module())
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=base_env())
    deadline = time.perf_counter() + 2 * TIMEOUT_S
    caught = False
    try:
        while time.perf_counter() < deadline and proc.poll() is None:
            if out.is_dir() and any(e.name.endswith(".gaftmp") for e in os.scandir(out)):
                caught = True
                break
            time.sleep(0.0005)
    finally:
        alive = proc.poll() is None
        proc.kill()
        stderr = proc.communicate(timeout=TIMEOUT_S)[1].decode(errors="replace")
    assert alive, f"the training run ended before the kill: {stderr[-800:]}"
    assert caught, "no checkpoint write seen before the deadline (killed anyway)"
    if (out / "last.pt").exists():
        ck = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
        assert ck["step"] >= 1
    leftovers = sorted(p.name for p in out.iterdir()
                       if p.name not in ("last.pt", "config.yaml") and not p.is_dir())
    assert all(re.fullmatch(r"\.(last\.pt|config\.yaml)\..+\.gaftmp", n) for n in leftovers), (
        f"files that are not ours / not temp files after kill -9: {leftovers}")
    print(f"orphans after kill -9: {leftovers}")

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
