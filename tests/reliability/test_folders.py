"""Output folders as a user meets them (issue 13 item 2, issue 14 items 5 and 7): a finished or
failed run leaves nothing beside ``--out`` (no lock file); an ``--out`` through a looping or
dangling link, or a link at the lock's path, is bad input and nothing is created outside
``--out``; one folder holds one command's output -- a folder holding another command's record
is refused with one line naming that command, and is left exactly as it was.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.reliability.conftest import (
    REF_CKPT,
    Result,
    assert_bad_input,
    assert_consistent,
    cli_cmd,
    hashes,
    run_many,
    staging_dirs,
    training_module,
)

SAMPLE = ["--classes", "1", "2", "--alpha", "0.5", "--skip", "--steps", "2", "--batch", "1",
          "--device", "cpu", "-q"]
TRAIN_SETS = ["dit_hidden=32", "dit_depth=1", "dit_heads=2", "patch_size=4", "batch_size=8",
              "log_every=0", "preview_every=0", "ckpt_every=0", "warmup=1", "device=cpu",
              "iters=2"]


def sample_cmd(out: Path, *extra: str, ckpt: Path | str = REF_CKPT) -> list[str]:
    return cli_cmd("sample", "--ckpt", ckpt, *SAMPLE, "--out", out, *extra)


def transport_cmd(out: Path) -> list[str]:
    return cli_cmd("transport", "--ckpt", REF_CKPT, "--mode", "cycle", "--classes", "1", "2",
                   "--steps", "2", "--device", "cpu", "-q", "--out", out)


def translate_cmd(out: Path, image: Path) -> list[str]:
    return cli_cmd("translate", "--ckpt", REF_CKPT, "--image", image, "--source", "1",
                   "--target", "2", "--steps", "2", "--device", "cpu", "-q", "--out", out)


def train_cmd(out: Path) -> list[str]:
    return cli_cmd("train", "--preset", "digits", *[x for kv in TRAIN_SETS for x in ("--set", kv)],
                   "--out", out, "-q", module=training_module())


def export_cmd(out: Path) -> list[str]:
    return cli_cmd("export", "--ckpt", REF_CKPT, "--out", out, "--graphs", "split",
                   "--no-parity")


def beside(out: Path) -> list[str]:
    """What the parent of ``out`` holds (the folder itself included)."""
    return sorted(p.name for p in out.parent.iterdir())


# --------------------------------------------------------------------------- one run each


@pytest.fixture(scope="module")
def made(tmp_path_factory, bad_ckpt) -> tuple[Path, dict[str, Result]]:
    """One finished run of each command, each in a folder of its own, and a failed run."""
    root = tmp_path_factory.mktemp("folders")
    for name in ("sample", "transport", "train", "failed"):
        (root / name).mkdir()
    return root, run_many({
        "sample": sample_cmd(root / "sample" / "out"),
        "transport": transport_cmd(root / "transport" / "out"),
        "train": train_cmd(root / "train" / "out"),
        "failed": sample_cmd(root / "failed" / "out", ckpt=bad_ckpt("overflow")),
    }, timeout=120)


@pytest.mark.parametrize("case", ["sample", "transport", "train"])
def test_a_finished_run_leaves_nothing_beside_its_folder(made, case):
    root, runs = made
    assert runs[case].rc == 0, runs[case].describe()
    assert beside(root / case / "out") == ["out"], (
        f"{case} left files beside --out: {beside(root / case / 'out')}")


def test_a_failed_run_leaves_nothing_at_all(made):
    root, runs = made
    assert_bad_input(runs["failed"], ("non-finite", "nan", "inf"))
    assert sorted((root / "failed").iterdir()) == [], (
        f"a failed run left: {sorted(p.name for p in (root / 'failed').iterdir())}")


# --------------------------------------------------------------------------- links


@pytest.fixture(scope="module")
def links(tmp_path_factory) -> tuple[Path, dict[str, Result]]:
    root = tmp_path_factory.mktemp("links")
    for case in ("loop", "loop_parent", "dangling", "lock_dangling", "lock_loop"):
        (root / case).mkdir()
    (root / "loop" / "out").symlink_to(root / "loop" / "out")
    (root / "loop_parent" / "a").symlink_to(root / "loop_parent" / "b")
    (root / "loop_parent" / "b").symlink_to(root / "loop_parent" / "a")
    (root / "dangling" / "out").symlink_to(root / "outside_dangling" / "victim")
    (root / "outside_lock").mkdir()  # the link's target could be created: it must not be
    (root / "lock_dangling" / ".out.lock").symlink_to(root / "outside_lock" / "victim")
    (root / "lock_loop" / ".out.lock").symlink_to(root / "lock_loop" / ".out.lock")
    return root, run_many({
        "loop": sample_cmd(root / "loop" / "out"),
        "loop_parent": sample_cmd(root / "loop_parent" / "a" / "out"),
        "dangling": sample_cmd(root / "dangling" / "out"),
        "lock_dangling": sample_cmd(root / "lock_dangling" / "out"),
        "lock_loop": sample_cmd(root / "lock_loop" / "out"),
        "train_loop": train_cmd(root / "loop" / "out"),
    })


@pytest.mark.parametrize("case", ["loop", "loop_parent", "dangling", "train_loop"])
def test_out_through_a_bad_link_is_bad_input(links, case):
    root, runs = links
    assert_bad_input(runs[case], "--out", ("loop", "dangling", "resolved"))
    assert not (root / "outside_dangling").exists(), "a file was created outside --out"


@pytest.mark.parametrize("case", ["lock_dangling", "lock_loop"])
def test_a_link_at_the_lock_path_is_never_followed(links, case):
    root, runs = links
    assert_bad_input(runs[case], "lock", ".out.lock")
    assert not (root / "outside_lock" / "victim").exists(), (
        "the lock link was followed: a file was created outside --out")
    assert sorted(p.name for p in (root / case).iterdir()) == [".out.lock"]
    assert (root / case / ".out.lock").is_symlink(), "the user's link was replaced"


# --------------------------------------------------------------------------- mixed folders


OWNER_WORDS = {"sample": "gaf-trt sample", "transport": "gaf-trt transport",
               "train": "gaf_trt.training train", "export": "gaf-trt export"}


@pytest.fixture(scope="module")
def mixed(made, ref_engine, tmp_path_factory) -> tuple[dict[str, Path], dict[str, dict],
                                                        dict[str, Result]]:
    """Each command run into a copy of another command's finished folder."""
    root, runs = made
    assert all(runs[c].rc == 0 for c in ("sample", "transport", "train")), (
        "".join(runs[c].describe() for c in ("sample", "transport", "train")))
    work = tmp_path_factory.mktemp("mixed")
    sources = {"sample": root / "sample" / "out", "transport": root / "transport" / "out",
               "train": root / "train" / "out", "export": ref_engine}
    image = root / "sample" / "out" / next(
        p.name for p in (root / "sample" / "out").iterdir() if p.suffix == ".png")
    cases = {  # case: (folder of, command line maker)
        "sample_into_transport": ("transport", sample_cmd),
        "sample_into_train": ("train", sample_cmd),
        "sample_into_export": ("export", sample_cmd),
        "transport_into_sample": ("sample", transport_cmd),
        "translate_into_transport": ("transport", lambda out: translate_cmd(out, image)),
        "export_into_sample": ("sample", export_cmd),
        "train_into_sample": ("sample", train_cmd),
    }
    folders, before, cmds = {}, {}, {}
    for case, (owner, make) in cases.items():
        (work / case).mkdir()
        out = work / case / "out"
        shutil.copytree(sources[owner], out)
        folders[case], before[case], cmds[case] = out, hashes(out), make(out)
    return folders, before, run_many(cmds, timeout=120)


@pytest.mark.parametrize("case", ["sample_into_transport", "sample_into_train",
                                  "sample_into_export", "transport_into_sample",
                                  "translate_into_transport", "export_into_sample",
                                  "train_into_sample"])
def test_a_folder_of_another_command_is_refused(mixed, case):
    folders, before, runs = mixed
    owner = case.split("_into_")[1]
    assert_bad_input(runs[case], OWNER_WORDS[owner], "one command")
    out = folders[case]
    assert hashes(out) == before[case], f"{case}: the other command's folder was changed"
    assert beside(out) == ["out"], f"{case}: left {beside(out)} beside the folder"
    assert not staging_dirs(out)


def test_a_rerun_of_the_same_command_still_replaces_its_run(made, tmp_path):
    """The rule refuses other commands only: a rerun of ``sample`` into its own folder
    succeeds and leaves a consistent folder."""
    root, _ = made
    out = tmp_path / "out"
    shutil.copytree(root / "sample" / "out", out)
    res = run_many({"rerun": sample_cmd(out, "--seed", "5")})["rerun"]
    assert res.rc == 0, res.describe()
    record = assert_consistent(out)
    assert record is not None and record["args"]["seed"] == 5
    assert record["command"] == "sample"
