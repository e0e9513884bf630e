"""The lock of an output folder (:class:`DirLock`) and the real path it guards
(:func:`resolve_output`): one run at a time writes into a folder.

Used by every writer of an output folder: :class:`~gaf_trt.io.files.OutputDir` (sample,
transport, export, triton-repo), ``generate``'s driver and training runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from gaf_trt.errors import ConfigError


def resolve_output(out: str | os.PathLike[str], what: str = "--out") -> Path:
    """The real path of an output folder (symbolic links followed), or a
    :class:`~gaf_trt.errors.ConfigError` when a link on the way loops or leads nowhere (a
    dangling link is refused rather than followed to a place outside the path given)."""
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
    """One short lower-case line saying why ``err`` happened."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    text = str(err).strip()
    return text.splitlines()[0].lower() if text else type(err).__name__


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
