"""Training command line (issue 10, items 1, 5, 6): bad config values, changed config on
resume, bad output folders -- ``python -m gaf_trt.training train`` on a tiny digits network:
resume cases and a run into a locked --out as real subprocesses, config values
refused while parsing in-process (CliRunner).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from tests.reliability.conftest import (
    Result,
    assert_bad_input,
    assert_nothing_written,
    cli_cmd,
    invoke,
    present_files,
    run_cmd,
    run_many,
    run_training,
    training_app,
    training_module,
)

#: A CPU-sized digits network (as in tests/training): a few steps take well under a second.
TINY = ["dit_hidden=32", "dit_depth=1", "dit_heads=2", "patch_size=4", "batch_size=16",
        "log_every=0", "preview_every=0", "ckpt_every=0", "warmup=2", "device=cpu"]


def tiny_sets(*extra: str) -> list[str]:
    return [x for kv in [*TINY, *extra] for x in ("--set", kv)]


def train_cmd(out: Path | str, *extra: str, sets: tuple[str, ...] = ("iters=4",)) -> list[str]:
    return cli_cmd("train", "--preset", "digits", *tiny_sets(*sets), "--out", out, "-q",
                   *extra, module=training_module())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- bad values

#: sha256 of the source run's files, taken before any resume case runs
BASE_BEFORE: dict[str, str] = {}

#: ``--set`` value -> words the one error line must contain (tuples: alternatives)
BAD_SETS = {
    "lr=nan": ["lr"],
    "lr=-1": ["lr"],
    "betas=0.9": ["betas"],
    "device=banana": ["banana"],
    "t_eps=0.7": ["t_eps"],
}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny run of 4 steps stopped after 2, to resume from: ``base/last.pt``."""
    out = tmp_path_factory.mktemp("train_base") / "run"
    res = run_training(*train_cmd(out, "--stop-after", "2")[3:])
    assert res.rc == 0, res.describe()
    assert (out / "last.pt").is_file(), res.describe()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, base) -> tuple[Path, dict[str, Result]]:
    """Every case at once (the source run's hashes go to :data:`BASE_BEFORE` first)."""
    root = tmp_path_factory.mktemp("train_cases")
    BASE_BEFORE.update({name: sha(base / name) for name in present_files(base)})
    (root / "a_file").write_text("not a folder\n")
    last = base / "last.pt"
    cases = {}
    cases["resume_depth"] = train_cmd(root / "resume_depth", "--resume", str(last),
                                      sets=("iters=4", "dit_depth=2"))
    cases["resume_lr"] = train_cmd(root / "resume_lr", "--resume", str(last),
                                   sets=("iters=4", "lr=0.005"))
    cases["resume_override"] = train_cmd(root / "resume_override", "--resume", str(last),
                                         "--override", "lr=0.005")
    results = run_many(cases)
    # refused while parsing the config: in-process (CliRunner) is the same code path
    for kv in BAD_SETS:
        results[f"set_{kv}"] = invoke(training_app(),
                                      train_cmd(root / f"set_{kv}", sets=("iters=4", kv))[3:])
    results["out_is_file"] = invoke(training_app(), train_cmd(root / "a_file")[3:])
    return root, results


@pytest.mark.parametrize("kv", list(BAD_SETS))
def test_bad_config_value(runs, kv):
    """``--set lr=nan|-1``, ``betas=0.9``, ``device=banana``, ``t_eps=0.7`` (which ``sample``
    would refuse later): one line naming the field, rc 2, no run folder written."""
    root, results = runs
    assert_bad_input(results[f"set_{kv}"], *BAD_SETS[kv])
    assert_nothing_written(root / f"set_{kv}")


def test_out_is_a_file(runs):
    root, results = runs
    assert_bad_input(results["out_is_file"], ("a_file", "--out"))
    assert (root / "a_file").read_text() == "not a folder\n"


# --------------------------------------------------------------------------- resume


def test_resume_refuses_another_architecture(runs, base):
    root, results = runs
    assert_bad_input(results["resume_depth"], ("dit_depth", "depth"))
    assert not (root / "resume_depth" / "last.pt").exists()


def test_resume_refuses_a_silent_schedule_change(runs, base):
    """A changed lr without ``--override`` is refused, and the line says how to ask for it."""
    root, results = runs
    assert_bad_input(results["resume_lr"], "lr", "--override")
    assert not (root / "resume_lr" / "last.pt").exists()


def test_resume_override_is_applied_and_recorded(runs):
    """``--override lr=0.005``: the run continues from step 2 to step 4, the
    checkpoint's cfg says lr 0.005, and the optimiser's base lr is 0.005 too."""
    root, results = runs
    res = results["resume_override"]
    assert res.rc == 0 and "Traceback" not in res.output, res.describe()
    ck = torch.load(root / "resume_override" / "last.pt", map_location="cpu", weights_only=True)
    assert ck["step"] == 4, ck["step"]
    assert ck["cfg"]["lr"] == pytest.approx(0.005), ck["cfg"]["lr"]
    groups = ck["opt"]["param_groups"]
    assert all(g["initial_lr"] == pytest.approx(0.005) for g in groups), groups
    assert "lr" in repr(ck.get("overrides")), f"the override is not recorded: {ck.get('overrides')}"


def test_resume_left_the_source_run_alone(runs, base):
    """Refused and accepted resumes into other folders never touch the source run."""
    assert BASE_BEFORE, "fixture: the source run's hashes were not taken"
    after = {name: sha(base / name) for name in present_files(base)}
    assert after == BASE_BEFORE, "resuming from base/last.pt changed the base run folder"


# --------------------------------------------------------------------------- concurrency


def test_training_into_a_locked_out(tmp_path):
    """The test holds --out's lock through the library's lock API: a training run into the
    folder exits 2 with one line about the lock and writes no checkpoint; released, the same
    run succeeds and its checkpoint is whole."""
    from gaf_trt.io.lock import DirLock

    out = tmp_path / "run"
    args = train_cmd(out, sets=("iters=2", "seed=1"))
    with DirLock(out):
        res = run_cmd(args)
        assert_bad_input(res, ("lock", "another", "in use", "busy", "already"))
        assert not (out / "last.pt").exists()
    res = run_cmd(args)
    assert res.rc == 0, res.describe()
    ck = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert ck["step"] == 2 and ck["cfg"]["seed"] == 1, (ck["step"], ck["cfg"]["seed"])
