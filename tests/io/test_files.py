"""Atomic writes, JSON records, output folders written as a whole, and locks."""

from __future__ import annotations

import json
import os
import time

import pytest

from gaf_trt.errors import ConfigError
from gaf_trt.io.files import OutputDir, atomic_write, check_output_dir, file_sha256, write_json
from gaf_trt.io.lock import DirLock


def test_atomic_write_errors_name_the_target_and_leave_no_temp(tmp_path):
    target = tmp_path / "a.bin"

    def boom(tmp):
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError) as info:
        atomic_write(target, boom)
    assert info.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []


def test_stale_temps_of_killed_writers_are_removed(tmp_path):
    orphan = tmp_path / ".a.json.x1y2.gaftmp"
    orphan.write_text("{")
    old = time.time() - 7200
    os.utime(orphan, (old, old))
    fresh = tmp_path / ".a.json.zz.gaftmp"  # a writer that may still be alive: kept
    fresh.write_text("{")
    write_json(tmp_path / "a.json", {"k": 1})
    assert not orphan.exists() and fresh.exists()
    assert json.loads((tmp_path / "a.json").read_text()) == {"k": 1}


def test_check_output_dir(tmp_path):
    (tmp_path / "file").write_text("x")
    for bad, msg in (("", "is empty"), ("  ", "is empty"),
                     (str(tmp_path / "file"), "is an existing file")):
        with pytest.raises(ConfigError, match=msg):
            check_output_dir(bad)
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"


def _run(out, files, fail=False):
    with OutputDir(out) as od:
        for name in files:
            (od.staging / name).write_text(name)
        write_json(od.staging / "run.json", {"files": [*files, "run.json"]})
        if fail:
            raise RuntimeError("interrupted before commit")
        od.commit()


def test_output_dir_replaces_the_previous_run_as_a_whole(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("a file the user keeps here")
    _run(out, ["0.png", "1.png", "2.png"])
    _run(out, ["0.png"])  # a smaller rerun: the old 1.png, 2.png go with the old record
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "mine.txt", "run.json"]
    with pytest.raises(RuntimeError):
        _run(out, ["9.png"], fail=True)  # nothing of a failed run lands
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "mine.txt", "run.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging, no lock left
    (tmp_path / "ref").write_text("0.png")
    assert file_sha256(out / "0.png") == file_sha256(tmp_path / "ref")  # the rerun's file


def test_a_second_writer_fails_at_once(tmp_path):
    out = tmp_path / "out"
    with DirLock(out):
        with pytest.raises(ConfigError, match="another gaf-trt run is writing to --out"):
            _run(out, ["a.png"])
    _run(out, ["a.png"])  # released
    assert (out / "run.json").is_file()


def test_staging_of_a_killed_run_is_removed_by_the_next(tmp_path):
    dead = tmp_path / ".out.abc123_z.staging"
    dead.mkdir()
    (dead / "0.png").write_text("from a run killed with SIGKILL")
    sibling = tmp_path / ".out.2.abcdefgh.staging"  # a live run into the folder "out.2"
    sibling.mkdir()
    _run(tmp_path / "out", ["a.png"])
    assert not dead.exists() and sibling.exists()


def test_only_our_records_are_trusted(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("the user's")
    (out / "sub" / "data.csv").write_text("the user's")
    (out / "run.json").write_text(json.dumps({"files": ["notes.txt", "sub/data.csv"]}))
    _run(out, ["a.png"])  # the foreign run.json is replaced, the files it names are kept
    assert (out / "notes.txt").is_file() and (out / "sub" / "data.csv").is_file()
    assert json.loads((out / "run.json").read_text())["writer"] == "gaf-trt"


def test_a_symlinked_folder_is_written_through_its_target(tmp_path):
    real = tmp_path / "elsewhere" / "real"
    real.mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    _run(tmp_path / "link", ["a.png"])
    _run(tmp_path / "link", ["b.png"])
    assert sorted(p.name for p in real.iterdir()) == ["b.png", "run.json"]
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["real"]  # no lock left


def test_the_lock_sits_by_the_real_folder_while_held(tmp_path):
    real = tmp_path / "elsewhere" / "real"
    real.mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    with DirLock(tmp_path / "link") as lock:
        assert lock.path == tmp_path / "elsewhere" / ".real.lock" and lock.path.is_file()
        with pytest.raises(ConfigError, match="another gaf-trt run"):
            DirLock(real).acquire()  # the same folder by another path
    assert not lock.path.exists()


def test_a_lock_file_left_by_a_killed_run_is_taken_and_removed(tmp_path):
    (tmp_path / ".out.lock").write_bytes(b"")  # SIGKILL leaves the empty file, unlocked
    _run(tmp_path / "out", ["a.png"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_lock_whose_file_was_replaced_is_not_held(tmp_path):
    """Check-after-acquire: a rival that locked a file which its last holder removed (and a
    new run re-created) must not believe it holds the lock."""
    import fcntl

    first = DirLock(tmp_path / "out")
    stale_fd = os.open(first.path, os.O_RDWR | os.O_CREAT, 0o644)  # opened before removal
    with first:
        pass  # removes the file it locked, then releases
    with DirLock(tmp_path / "out") as second:  # a new holder with a new file
        fcntl.flock(stale_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the old inode is free...
        assert not second._still_ours(stale_fd)  # ...but it is not the lock any more
        with pytest.raises(ConfigError, match="another gaf-trt run"):
            DirLock(tmp_path / "out").acquire()
    os.close(stale_fd)


@pytest.mark.parametrize("kind", ["dangling", "loop", "folder"])
def test_a_strange_lock_path_is_refused_and_nothing_is_created(tmp_path, kind):
    lock = tmp_path / ".out.lock"
    target = tmp_path / "outside" / "victim"
    (tmp_path / "outside").mkdir()
    if kind == "dangling":
        lock.symlink_to(target)
    elif kind == "loop":
        lock.symlink_to(lock)
    else:
        lock.mkdir()
    with pytest.raises(ConfigError, match="cannot lock --out"):
        _run(tmp_path / "out", ["a.png"])
    assert not target.exists() and not (tmp_path / "out").exists()
    assert lock.is_symlink() or lock.is_dir()  # left as it was


@pytest.mark.parametrize("kind", ["loop", "dangling", "loop_parent"])
def test_out_through_a_bad_link_is_refused(tmp_path, kind):
    out = tmp_path / "out"
    if kind == "loop":
        out.symlink_to(out)
    elif kind == "dangling":
        out.symlink_to(tmp_path / "nowhere" / "x")
    else:
        (tmp_path / "a").symlink_to(tmp_path / "b")
        (tmp_path / "b").symlink_to(tmp_path / "a")
        out = tmp_path / "a" / "out"
    with pytest.raises(ConfigError, match="--out"):
        check_output_dir(out)
    with pytest.raises(ConfigError, match="--out"):
        _run(out, ["a.png"])
    assert not (tmp_path / "nowhere").exists()


def _record(out, name, **data):
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps({"writer": "gaf-trt", "files": [name], **data}))


@pytest.mark.parametrize("record,data,owner", [
    ("transport.json", {"mode": "cycle"}, "gaf-trt transport"),
    ("transport.json", {"mode": "translate"}, "gaf-trt translate"),
    ("manifest.json", {"format": "gaf-trt-engine"}, "gaf-trt export"),
    ("last.pt", None, "python -m gaf_trt.training train"),
])
def test_a_folder_of_another_command_is_refused(tmp_path, record, data, owner):
    out = tmp_path / "out"
    if data is None:
        out.mkdir()
        (out / record).write_bytes(b"checkpoint")
    else:
        _record(out, record, **data)
    before = sorted(p.name for p in out.iterdir())
    for check in (lambda: check_output_dir(out, command="sample"), lambda: _run(out, ["a.png"])):
        with pytest.raises(ConfigError, match=f"holds the output of `{owner}`"):
            check()
    assert sorted(p.name for p in out.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_record_names_its_command_and_a_rerun_of_it_is_fine(tmp_path):
    out = tmp_path / "out"
    _run(out, ["a.png"])
    assert json.loads((out / "run.json").read_text())["command"] == "sample"
    check_output_dir(out, command="sample")
    with pytest.raises(ConfigError, match="holds the output of `gaf-trt sample`"):
        check_output_dir(out, command="export")
    _record(tmp_path / "foreign", "transport.json", writer="someone else")
    check_output_dir(tmp_path / "foreign", command="sample")  # not ours: no owner


def test_a_triton_repository_is_owned_by_triton_repo(tmp_path):
    """Another command's --out into a `gaf-trt triton-repo` output is refused, naming it."""
    from gaf_trt.errors import ConfigError
    from gaf_trt.io.files import write_json
    from gaf_trt.io.owners import check_owner, folder_owners

    write_json(tmp_path / "gaf_repository.json", {"writer": "gaf-trt", "command": "triton-repo",
                                                  "format": "gaf-trt-triton-repository"})
    assert folder_owners(tmp_path) == {"triton-repo": "gaf_repository.json"}
    check_owner(tmp_path, "triton-repo")  # its own rerun replaces it
    with pytest.raises(ConfigError, match=r"holds the output of `gaf-trt triton-repo`"):
        check_owner(tmp_path, "sample")


@pytest.mark.parametrize("root", ["/", "/tmp/.."])
def test_the_filesystem_root_is_no_output_folder(root):
    with pytest.raises(ConfigError, match="is the filesystem root"):
        check_output_dir(root)
