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
    removed = 0
    now = time.time()
    try:
        entries = list(Path(folder).glob(f".{name}.*{TMP_SUFFIX}"))
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
    """Write ``obj`` as JSON, atomically (the one JSON writer of the project)."""
    text = json.dumps(obj, indent=indent, default=_json_default) + "\n"
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


class OutputDir:
    """A consistent output folder: files are written into a staging folder beside ``out``,
    then moved in at :meth:`commit`, the record (``run.json`` / ``manifest.json``) last.

    The previous run's record is removed first, with the files it listed, so an interrupted
    commit never leaves an old record beside new files, and a rerun never leaves files of
    the old run beside the new record. A lock beside ``out`` makes a second concurrent run
    into the same folder fail at once with a clear error. Files in ``out`` that no record of
    ours lists are left alone.

    Usage::

        with OutputDir(out, record="run.json") as od:
            save_png(pic, od.staging / "a.png")
            od.commit()                        # nothing is moved unless commit is reached
    """

    def __init__(self, out: str | os.PathLike[str], *, record: str = "run.json",
                 what: str = "--out") -> None:
        self.out = check_output_dir(out, what)
        self.record = record
        self.what = what
        self.staging = Path()
        self._dirlock: DirLock | None = None
        self.committed = False

    def __enter__(self) -> OutputDir:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._lock()
        self._remove_dead_staging()
        try:
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".staging",
                                                 dir=self.out.parent))
        except BaseException:
            self._unlock()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        import shutil

        shutil.rmtree(self.staging, ignore_errors=True)
        self._unlock()

    def _remove_dead_staging(self) -> None:
        """Staging folders of killed runs: whoever made them no longer holds the lock."""
        import shutil

        for p in self.out.parent.glob(f".{self.out.name}.*.staging"):
            shutil.rmtree(p, ignore_errors=True)

    def _lock(self) -> None:
        self._dirlock = DirLock(self.out, self.what)
        self._dirlock.acquire()

    def _unlock(self) -> None:
        if getattr(self, "_dirlock", None) is not None:
            self._dirlock.release()
            self._dirlock = None

    def _previous_files(self) -> list[Path]:
        rec = self.out / self.record
        try:
            listed = json.loads(rec.read_text()).get("files", [])
        except (OSError, ValueError, AttributeError):
            return []
        out = []
        for name in listed if isinstance(listed, list) else []:
            p = (self.out / str(name)).resolve()
            if p.parent == self.out.resolve() or self.out.resolve() in p.parents:
                out.append(p)
        return out

    def commit(self) -> list[Path]:
        """Move the staged files into ``out`` (record last); returns their final paths."""
        self.out.mkdir(parents=True, exist_ok=True)
        old = self._previous_files()
        (self.out / self.record).unlink(missing_ok=True)  # no record: the folder is "in progress"
        for p in old:
            if p.is_file():
                p.unlink(missing_ok=True)
        staged = sorted(p for p in self.staging.rglob("*") if p.is_file())
        record = self.staging / self.record
        moved = []
        for p in [q for q in staged if q != record] + ([record] if record in staged else []):
            target = self.out / p.relative_to(self.staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, target)
            moved.append(target)
        self.committed = True
        return moved
