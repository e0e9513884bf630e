"""Generic file helpers: atomic writes, JSON records, hashes, output-directory locks.

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


def check_output_dir(out: str | os.PathLike[str], what: str = "--out") -> Path:
    """Validate an output folder before any work: not empty, not a file, creatable and
    writable. Raises :class:`~gaf_trt.errors.ConfigError` naming the path."""
    from gaf_trt.errors import ConfigError

    if str(out).strip() == "":
        raise ConfigError(f"{what} is empty; give an output folder")
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{what} {p} is an existing file, not a folder")
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {p} is not writable (no write permission on {probe})")
    return p


class DirLock:
    """An exclusive, non-blocking lock on a folder (a lock file ``.{name}.lock`` beside it).

    A second holder fails at once with a :class:`~gaf_trt.errors.ConfigError`; the lock is
    released when the holder closes it or dies (``flock``). Use as a context manager.
    """

    def __init__(self, folder: str | os.PathLike[str], what: str = "--out") -> None:
        self.folder = Path(folder)
        self.what = what
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.folder.parent / f".{self.folder.name}.lock"

    def acquire(self) -> None:
        from gaf_trt.errors import ConfigError

        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(f"another gaf-trt run is writing to {self.what} {self.folder} "
                              f"(lock {self.path}); wait for it or choose another "
                              "folder") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def __enter__(self) -> DirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


#: The key a record written through :class:`OutputDir` carries; only such records' files are
#: ever removed by a later run.
RECORD_MARK = ("writer", "gaf-trt")


class OutputDir:
    """A consistent output folder: files are written into a staging folder beside ``out`` (on
    the same filesystem), then moved in at :meth:`commit`, the record (``run.json`` /
    ``manifest.json``) last.

    The previous run's record is removed first; the files it listed that the new run does not
    write again go after the new files are in. So an interrupted commit never leaves an old
    record beside new files, and a rerun never leaves files of the old run beside the new
    record. Only records that gaf-trt wrote (they carry ``"writer": "gaf-trt"``) are trusted,
    and only files inside ``out``. A lock beside ``out`` makes a second concurrent run into
    the same folder fail at once with a clear error.

    Usage::

        with OutputDir(out, record="run.json") as od:
            save_png(pic, od.staging / "a.png")
            od.commit()                        # nothing is moved unless commit is reached
    """

    def __init__(self, out: str | os.PathLike[str], *, record: str = "run.json",
                 what: str = "--out") -> None:
        self.out = check_output_dir(out, what)
        self.real = self.out.resolve()  # lock, staging and moves use the real folder
        self.record = record
        self.what = what
        self.staging = Path()
        self._dirlock: DirLock | None = None
        self.committed = False

    def _staging_parent(self) -> Path:
        """Beside ``out``, unless ``out`` is a mount point (then inside it): same filesystem."""
        if self.real.is_dir() and self.real.stat().st_dev != self.real.parent.stat().st_dev:
            return self.real
        return self.real.parent

    def __enter__(self) -> OutputDir:
        self.real.parent.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self._remove_dead_staging()
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.real.name}.", suffix=".staging",
                                                 dir=self._staging_parent()))
        except BaseException:
            self._unlock()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        import shutil

        if self.staging != Path():
            shutil.rmtree(self.staging, ignore_errors=True)
        self._unlock()

    def _remove_dead_staging(self) -> None:
        """Staging folders of killed runs into this folder (exactly our naming): whoever made
        them no longer holds the lock."""
        import re
        import shutil

        pattern = re.compile(rf"^\.{re.escape(self.real.name)}\.[A-Za-z0-9_]+\.staging$")
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
        try:
            old = json.loads((self.real / self.record).read_text())
        except (OSError, ValueError):
            return []
        if not isinstance(old, dict) or old.get(RECORD_MARK[0]) != RECORD_MARK[1]:
            return []
        listed = old.get("files", [])
        out = []
        for name in listed if isinstance(listed, list) else []:
            p = (self.real / str(name)).resolve()
            if self.real in p.parents and p.is_file():
                out.append(p)
        return out

    def _mark_record(self, record: Path) -> None:
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            return
        if isinstance(data, dict) and data.get(RECORD_MARK[0]) != RECORD_MARK[1]:
            data[RECORD_MARK[0]] = RECORD_MARK[1]
            record.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")

    def commit(self) -> list[Path]:
        """Move the staged files into ``out`` (record last); returns their final paths."""
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
