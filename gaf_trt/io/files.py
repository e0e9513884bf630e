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


def resolve_output(out: str | os.PathLike[str], what: str = "--out") -> Path:
    """The real path of an output folder (symbolic links followed), or a
    :class:`~gaf_trt.errors.ConfigError` when a link on the way loops or leads nowhere (a
    dangling link is refused rather than followed to a place outside the path given)."""
    from gaf_trt.errors import ConfigError

    p = Path(out)
    try:
        real = p.resolve()
    except (RuntimeError, OSError) as err:  # "Symlink loop", ELOOP, ENAMETOOLONG
        raise ConfigError(f"{what} {p} cannot be resolved ({_reason(err)}); give a real "
                          "folder") from None
    probe = p
    while True:  # the given path and every parent that is a link must lead somewhere
        if probe.is_symlink() and not probe.exists():
            raise ConfigError(f"{what} {p}: {probe} is a dangling symbolic link (to "
                              f"{os.readlink(probe)}); give a real folder")
        if probe == probe.parent:
            break
        probe = probe.parent
    return real


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    text = str(err).strip()
    return text.splitlines()[0].lower() if text else type(err).__name__


def check_output_dir(out: str | os.PathLike[str], what: str = "--out", *,
                     command: str | None = None) -> Path:
    """Validate an output folder before any work: not empty, not a file, no looping or
    dangling link, creatable and writable, and (with ``command``) not holding another
    command's output (see :func:`check_owner`). Raises
    :class:`~gaf_trt.errors.ConfigError` naming the path."""
    from gaf_trt.errors import ConfigError

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
    return p


class DirLock:
    """An exclusive, non-blocking lock on a folder, held for one run; nothing of it stays
    behind once the run ends (finished or failed).

    Design: ``flock`` on a lock file ``.{name}.lock`` beside the (resolved) folder, which the
    holder *removes before it releases the lock*; whoever takes the lock then checks that the
    file it locked is still the one at that path (same device and inode) and otherwise
    retries with the new file. So a finished run leaves no file, and two runs can never both
    believe they hold the lock: a rival that opened the old file before it was removed finds
    it unlinked after taking the lock, and tries again (then meets the new holder, or nobody).
    Only a run killed with SIGKILL leaves the (empty) file; the next run takes it and removes
    it. The file lives beside the folder, not in a per-user temp directory, so that runs of
    different users (and of machines sharing the filesystem, where ``flock`` works) exclude
    each other too. The lock file is opened with ``O_NOFOLLOW`` and must be a regular file:
    a symbolic link (dangling or looping) or anything else at its path is refused, never
    followed, so no file is ever created outside the folder's parent.

    A second holder fails at once with a :class:`~gaf_trt.errors.ConfigError`; the lock is
    also released when the holder dies. Use as a context manager.
    """

    #: Tries when the locked file was replaced in between (another run came and went).
    ATTEMPTS = 8

    def __init__(self, folder: str | os.PathLike[str], what: str = "--out") -> None:
        self.shown = Path(folder)
        self.folder = resolve_output(folder, what)
        self.what = what
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.folder.parent / f".{self.folder.name}.lock"

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(self.ATTEMPTS):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise self._busy() from None
            if self._still_ours(fd):
                self._fd = fd
                return
            os.close(fd)  # the file was removed / replaced by its last holder: again
        raise self._busy()

    def _open(self) -> int:
        import stat

        from gaf_trt.errors import ConfigError

        flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as err:
            raise ConfigError(f"cannot lock {self.what} {self.shown}: {self.path} "
                              f"({_reason(err)}); remove it if no gaf-trt run uses "
                              "it") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ConfigError(f"cannot lock {self.what} {self.shown}: {self.path} is not a "
                              "regular file; remove it")
        return fd

    def _still_ours(self, fd: int) -> bool:
        try:
            now = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return False
        mine = os.fstat(fd)
        return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)

    def _busy(self) -> Exception:
        from gaf_trt.errors import ConfigError

        return ConfigError(f"another gaf-trt run is writing to {self.what} {self.shown} "
                           f"(lock {self.path}); wait for it or choose another folder")

    def release(self) -> None:
        """Remove the lock file, then release the lock (in this order: see the class)."""
        if self._fd is not None:
            if self._still_ours(self._fd):
                try:
                    os.unlink(self.path)
                except OSError:
                    pass
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def __enter__(self) -> DirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# --------------------------------------------------------------------------- folder owners

#: The key a record written through :class:`OutputDir` carries; only such records' files are
#: ever removed by a later run.
RECORD_MARK = ("writer", "gaf-trt")

#: The record each command writes into its output folder -> the command (the default when
#: the record does not name it). A training run's record is its checkpoint.
RECORD_FILES = {"run.json": "sample", "transport.json": "transport",
                "manifest.json": "export", "gaf_repository.json": "triton-repo"}
TRAINING_RECORD = "last.pt"
#: How commands are named in messages.
COMMAND_NAMES = {"sample": "gaf-trt sample", "transport": "gaf-trt transport",
                 "translate": "gaf-trt translate", "export": "gaf-trt export",
                 "triton-repo": "gaf-trt triton-repo",
                 "training": "python -m gaf_trt.training train"}
#: Records larger than this are not read (they are not ours).
MAX_RECORD_BYTES = 16 << 20


def read_record(path: Path) -> dict[str, Any] | None:
    """A gaf-trt record (``run.json``, ``transport.json``, ``manifest.json``,
    ``gaf_repository.json``) as a dict, or
    None when the file is absent, too large, not JSON or not written by gaf-trt."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_RECORD_BYTES:
            return None
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    if data.get(RECORD_MARK[0]) == RECORD_MARK[1] or data.get("format") == "gaf-trt-engine":
        return data
    return None


def record_command(name: str, data: dict[str, Any]) -> str:
    """The command that wrote record ``name`` holding ``data``."""
    named = data.get("command")
    if isinstance(named, str) and named in COMMAND_NAMES:
        return named
    if name == "transport.json" and data.get("mode") == "translate":
        return "translate"
    return RECORD_FILES[name]


def _is_training_folder(folder: Path) -> bool:
    if (folder / TRAINING_RECORD).is_file():
        return True
    try:  # a run stopped before its first checkpoint: only its config.yaml
        text = (folder / "config.yaml").read_text()[:65536]
    except (OSError, UnicodeDecodeError):
        return False
    keys = {ln.split(":", 1)[0] for ln in text.splitlines() if ":" in ln}
    return {"iters", "ckpt_every", "dit_hidden"} <= keys


def folder_owners(folder: str | os.PathLike[str]) -> dict[str, str]:
    """``{command: record file}`` of the gaf-trt runs a folder holds (empty: none)."""
    folder = Path(folder)
    owners: dict[str, str] = {}
    if not folder.is_dir():
        return owners
    for name in RECORD_FILES:
        data = read_record(folder / name)
        if data is not None:
            owners.setdefault(record_command(name, data), name)
    if _is_training_folder(folder):
        owners.setdefault("training", TRAINING_RECORD if (folder / TRAINING_RECORD).is_file()
                          else "config.yaml")
    return owners


def check_owner(folder: str | os.PathLike[str], command: str, what: str = "--out", *,
                shown: str | os.PathLike[str] | None = None) -> None:
    """One folder holds one command's output. A folder holding another command's record is
    refused with a :class:`~gaf_trt.errors.ConfigError` naming that command; the same
    command's previous run is fine (it is replaced as a whole)."""
    from gaf_trt.errors import ConfigError

    others = {c: r for c, r in folder_owners(folder).items() if c != command}
    if others:
        cmd, record = next(iter(others.items()))
        raise ConfigError(f"{what} {shown or folder} holds the output of `{COMMAND_NAMES[cmd]}` "
                          f"({record}); one folder holds one command's output: choose another "
                          f"folder for `{COMMAND_NAMES.get(command, command)}`")




class OutputDir:
    """A consistent output folder: files are written into a staging folder beside ``out`` (on
    the same filesystem), then moved in at :meth:`commit`, the record (``run.json`` /
    ``manifest.json``) last.

    The previous run's record is removed first; the files it listed that the new run does not
    write again go after the new files are in. So an interrupted commit never leaves an old
    record beside new files, and a rerun never leaves files of the old run beside the new
    record. Only records that gaf-trt wrote (they carry ``"writer": "gaf-trt"``) are trusted,
    and only files inside ``out``. A :class:`DirLock` makes a second concurrent run into the
    same folder fail at once with a clear error; it leaves nothing behind.

    One folder holds one command's output: ``command`` (by default the command whose record
    ``record`` is: ``run.json`` sample, ``transport.json`` transport, ``manifest.json``
    export) is written into the record, and a folder that holds another command's record
    (or a training run) is refused before anything is written (:func:`check_owner`).

    Usage::

        with OutputDir(out, record="run.json") as od:
            save_png(pic, od.staging / "a.png")
            od.commit()                        # nothing is moved unless commit is reached
    """

    def __init__(self, out: str | os.PathLike[str], *, record: str = "run.json",
                 what: str = "--out", command: str | None = None) -> None:
        self.out = check_output_dir(out, what)
        self.real = resolve_output(self.out, what)  # lock, staging, moves use the real folder
        self.record = record
        self.what = what
        self.command = command or RECORD_FILES.get(record, record)
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
            check_owner(self.real, self.command, self.what, shown=self.out)
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
