"""Generic file helpers: atomic writes, JSON records, hashes, output folders (their owner
check and the one staging-and-rename, :class:`OutputDir`; their lock is
:class:`~gaf_trt.io.lock.DirLock`).

Every artifact gaf-trt writes (checkpoints, images, engines, manifests, run records) goes
through :func:`atomic_write`: readers never see half a file, and a killed writer leaves only
a temp file of our own naming, which the next write into that folder removes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gaf_trt.errors import ConfigError
from gaf_trt.io.lock import DirLock, resolve_output
from gaf_trt.io.owners import RECORD_MARK, check_owner, check_replaceable, read_record
from gaf_trt.records import OWNERS

#: Temp files of :func:`atomic_write` are named ``.{target}.{random}.gaftmp``.
TMP_SUFFIX = ".gaftmp"
#: A temp file older than this is an orphan of a killed writer (seconds).
STALE_TMP_S = 3600.0


def clean_stale_temps(folder: str | os.PathLike[str], name: str,
                      older_than_s: float = STALE_TMP_S) -> int:
    """Remove orphaned temp files of ``atomic_write(folder / name)``; returns how many."""
    import re

    removed = 0
    now = time.time()
    ours = re.compile(rf"^\.{re.escape(name)}\.[A-Za-z0-9_]+{re.escape(TMP_SUFFIX)}$")
    try:
        entries = [p for p in Path(folder).iterdir() if ours.match(p.name)]
    except OSError:
        return 0
    for p in entries:
        try:
            if now - p.stat().st_mtime > older_than_s:
                p.unlink()
                removed += 1
        except OSError:
            continue
    return removed


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``, so readers never see half a file.

    Errors raised while writing name the target ``path``, never the temp file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        try:
            write(Path(tmp))
        except OSError as err:
            raise type(err)(err.errno, err.strerror or str(err), str(path)) from None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike[str], obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as JSON, atomically (the one JSON writer of the project). NaN and
    infinities are refused (ValueError): JSON has no such values."""
    text = json.dumps(obj, indent=indent, default=_json_default, allow_nan=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "value"):  # enums
        return obj.value
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- output folders


def check_output_dir(out: str | os.PathLike[str], what: str = "--out", *,
                     command: str | None = None, replace: bool = False) -> Path:
    """Validate an output folder before any work: not empty, not a file, no looping or
    dangling link, creatable and writable, and (with ``command``) not holding another
    command's output (see :func:`check_owner`; with ``replace``, also
    :func:`check_replaceable`). Raises
    :class:`~gaf_trt.errors.ConfigError` naming the path."""
    if str(out).strip() == "":
        raise ConfigError(f"{what} is empty; give an output folder")
    p = Path(out)
    real = resolve_output(p, what)
    if real.exists() and not real.is_dir():
        raise ConfigError(f"{what} {p} is an existing file, not a folder")
    if real == Path(real.anchor):
        raise ConfigError(f"{what} {p} is the filesystem root; give a folder of its own "
                          "(a run replaces its files there, and its lock lives beside it)")
    probe = real
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{what} {p} cannot be created: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {p} is not writable (no write permission on {probe})")
    if command is not None:
        check_owner(real, command, what, shown=p)
        if replace:
            check_replaceable(real, command, what, shown=p)
    return p




class OutputDir:
    """A consistent output folder, the one staging-and-rename of every folder writer: files
    are written into a staging folder beside ``out`` (on the same filesystem), then moved in
    at :meth:`commit`, the record (``run.json`` / ``manifest.json`` / ...) last.

    The previous run's record is removed first; the files it listed that the new run does not
    write again go after the new files are in. So an interrupted commit never leaves an old
    record beside new files, and a rerun never leaves files of the old run beside the new
    record. Only records that gaf-trt wrote (they carry ``"writer": "gaf-trt"``) are trusted,
    and only files inside ``out``. A :class:`~gaf_trt.io.lock.DirLock` makes a second
    concurrent run into the same folder fail at once with a clear error; it leaves nothing
    behind.

    With ``replace=True`` (``triton-repo``) the staging folder *becomes* ``out``: the
    previous output is renamed aside, the staging folder renamed into place and the old one
    removed, so nothing of the old output stays (empty folders included). ``out`` must then
    be new, empty or this command's own previous output holding only the files its record
    lists; a folder holding anything else is refused naming it (:func:`check_replaceable`),
    since it would be removed.

    One folder holds one command's output: ``command`` (by default the first command
    :data:`gaf_trt.records.OWNERS` registers for ``record``) is written into the record, and
    a folder that holds another command's record (or a training run) is refused before
    anything is written (:func:`check_owner`). ``record`` must be registered there.

    Usage::

        with OutputDir(out, record="run.json") as od:
            save_png(pic, od.staging / "a.png")
            od.commit()                        # nothing is moved unless commit is reached
    """

    def __init__(self, out: str | os.PathLike[str], *, record: str = "run.json",
                 what: str = "--out", command: str | None = None,
                 replace: bool = False) -> None:
        self.command = command or OWNERS.default_command(record)
        if OWNERS.get(self.command).record != record:
            raise ValueError(f"command {self.command!r} writes "
                             f"{OWNERS.get(self.command).record}, not {record}")
        self.out = check_output_dir(out, what)
        self.real = resolve_output(self.out, what)  # lock, staging, moves use the real folder
        self.record = record
        self.what = what
        self.replace = replace
        self.staging = Path()
        self._dirlock: DirLock | None = None
        self.committed = False

    def _staging_parent(self) -> Path:
        """Beside ``out``, unless ``out`` is a mount point (then inside it): same filesystem.
        A replacing writer always stages beside ``out`` (the staging folder is renamed)."""
        if not self.replace and self.real.is_dir() \
                and self.real.stat().st_dev != self.real.parent.stat().st_dev:
            return self.real
        return self.real.parent

    def __enter__(self) -> OutputDir:
        self.real.parent.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            check_owner(self.real, self.command, self.what, shown=self.out)
            if self.replace:
                check_replaceable(self.real, self.command, self.what, shown=self.out)
            self._remove_dead_staging()
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.real.name}.", suffix=".staging",
                                                 dir=self._staging_parent()))
        except BaseException:
            self._unlock()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        import shutil

        if self.staging != Path() and not (self.replace and self.committed):
            shutil.rmtree(self.staging, ignore_errors=True)
        self._unlock()

    def _remove_dead_staging(self) -> None:
        """Staging folders (and set-aside old outputs) of killed runs into this folder
        (exactly our naming): whoever made them no longer holds the lock."""
        import re
        import shutil

        pattern = re.compile(rf"^\.{re.escape(self.real.name)}\.[A-Za-z0-9_]+\.(staging|old)$")
        for folder in {self.real.parent, self.real}:
            try:
                entries = list(folder.iterdir()) if folder.is_dir() else []
            except OSError:
                continue
            for p in entries:
                if p.is_dir() and pattern.match(p.name):
                    shutil.rmtree(p, ignore_errors=True)

    def _lock(self) -> None:
        self._dirlock = DirLock(self.real, self.what)
        self._dirlock.acquire()

    def _unlock(self) -> None:
        if getattr(self, "_dirlock", None) is not None:
            self._dirlock.release()
            self._dirlock = None

    def _previous_files(self) -> list[Path]:
        """Files the previous record of ours lists, inside ``out`` (nothing else)."""
        old = read_record(self.real / self.record)
        if old is None or old.get(RECORD_MARK[0]) != RECORD_MARK[1]:
            return []
        listed = old.get("files", [])
        out = []
        for name in listed if isinstance(listed, list) else []:
            try:
                p = (self.real / str(name)).resolve()
            except (RuntimeError, OSError, ValueError):
                continue
            if self.real in p.parents and p.is_file():
                out.append(p)
        return out

    def _mark_record(self, record: Path) -> None:
        """Sign the record as ours and name the command that wrote it."""
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            return
        if not isinstance(data, dict):
            return
        mark = {RECORD_MARK[0]: RECORD_MARK[1], "command": self.command}
        if any(data.get(k) != v for k, v in mark.items()):
            data.update(mark)
            record.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")

    def commit(self) -> list[Path]:
        """Move the staged files into ``out`` (record last); returns their final paths."""
        if self.replace:
            return self._swap_in()
        self.real.mkdir(parents=True, exist_ok=True)
        old = self._previous_files()
        (self.real / self.record).unlink(missing_ok=True)  # no record: "in progress"
        staged = sorted(p for p in self.staging.rglob("*") if p.is_file())
        record = self.staging / self.record
        moved = []
        for p in [q for q in staged if q != record]:
            target = self.real / p.relative_to(self.staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, target)
            moved.append(target)
        for p in set(old) - set(moved):
            p.unlink(missing_ok=True)
        if record in staged:
            self._mark_record(record)
            os.replace(record, self.real / self.record)
            moved.append(self.real / self.record)
        self.committed = True
        return [self.out / p.relative_to(self.real) for p in moved]

    def _swap_in(self) -> list[Path]:
        """``replace=True``: rename the staging folder onto ``out``; an existing ``out`` is
        moved aside first and removed once the new one is in (restored if the rename
        fails)."""
        import shutil

        self._mark_record(self.staging / self.record)
        files = sorted(p.relative_to(self.staging) for p in self.staging.rglob("*")
                       if p.is_file())
        old = None
        try:
            if self.real.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{self.real.name}.", suffix=".old",
                                            dir=self.real.parent))
                os.rmdir(old)
                os.rename(self.real, old)
            os.rename(self.staging, self.real)
        except OSError as err:
            if old is not None and old.exists() and not self.real.exists():
                os.rename(old, self.real)
            raise ConfigError(f"cannot move the new output into {self.real} "
                              f"({err.strerror or err}); {self.what} must be a folder that "
                              "can be renamed (not a mount point)") from None
        self.committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return [self.out / f for f in files]
