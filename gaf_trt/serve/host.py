"""The machine side of serving with Triton: ports, shared memory, the Triton child's
environment, and the processes and shared-memory regions it leaves (found and removed).

Triton's Python-backend stub that PyTriton bundles loads ``libpython`` through the dynamic
loader, so the child's ``LD_LIBRARY_PATH`` gets this interpreter's ``lib``
(:func:`prepare_child_environment`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import sysconfig
from pathlib import Path

from gaf_trt.errors import ConfigError

log = logging.getLogger(__name__)

MIN_SHM_BYTES = 256 * 2 ** 20  # PyTriton's tensor store and the Python backend's shm regions


def prepare_child_environment() -> None:
    """The Triton child (and its Python-backend stubs) find this interpreter's libpython
    first: with a pyenv / venv Python the stub would otherwise load the system one."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir:
        return
    current = os.environ.get("LD_LIBRARY_PATH", "")
    if libdir not in current.split(":"):
        os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{current}" if current else libdir


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free now (each bound to port 0 on the loopback, then
    released): for tests and benchmarks that start servers side by side."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def check_port_number(port: int, what: str) -> None:
    """A port number in ``1..65535`` (the value alone; :func:`check_port_free` also binds)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"{what} must be a port number in 1..65535, got {port!r}")


def check_port_free(port: int, what: str) -> None:
    """Refuse at once a port that is taken (Triton would only time out after ~60 s)."""
    check_port_number(port, what)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is free
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            raise ConfigError(f"{what} {port} is already in use; give a free port with "
                              f"{what}") from None


def check_shm(required: int = MIN_SHM_BYTES, path: str = "/dev/shm") -> None:
    """Triton's Python backend and PyTriton exchange tensors through ``/dev/shm``: too small
    a one (Docker's default is 64 MB) kills the server with a bus error on large requests."""
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        raise ConfigError(f"{path} is missing: Triton's Python backend needs shared memory "
                          f"(at least {required // 2 ** 20} MB)") from None
    if free < required:
        raise ConfigError(f"{path} has {free // 2 ** 20} MB free; serving needs at least "
                          f"{required // 2 ** 20} MB (Docker: --shm-size=1g)")



def descendants(pid: int) -> set[int]:
    """Live (non-zombie) processes below ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def is_running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_gone(pids: set[int], timeout: float = 30.0) -> None:
    """Wait until ``pids`` have exited; SIGKILL the ones still there after ``timeout``."""
    import signal
    import time

    deadline = time.monotonic() + timeout
    while any(is_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for p in pids:
        if is_running(p):
            log.warning("process %d outlived Triton's shutdown; killing it", p)
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)



def remove_leftover_regions(shm: Path = Path("/dev/shm")) -> None:
    """Remove the Python backend's shared-memory regions of this process's Triton (named
    ``pytrtion<this pid>-...`` by PyTriton) that outlived it: when Triton's exit timeout
    expires (idle client connections) it exits without unloading the stubs, which then do
    not remove their regions. Call once Triton and its stubs are gone."""
    for region in shm.glob(f"pytrtion{os.getpid()}-*"):
        log.info("removing shared memory %s left by Triton's stubs", region.name)
        with contextlib.suppress(FileNotFoundError):
            region.unlink()


#: Where Triton puts a model loaded with its files in the load request (PyTriton loads every
#: model so): a folder ``folderXXXXXX`` under ``/tmp`` (TMPDIR is not read), removed when
#: the model unloads, left behind when Triton exits at its exit timeout (idle client
#: connections) without unloading.
TRITON_MODEL_FOLDERS = Path("/tmp")
_MODEL_FOLDER = re.compile(r"folder[A-Za-z0-9]{6}")


def remove_model_folders(workspace: str | os.PathLike[str],
                         root: Path = TRITON_MODEL_FOLDERS) -> list[Path]:
    """Remove the model folders Triton left under ``root`` for the models of the PyTriton
    ``workspace`` (their ``config.pbtxt`` names it; another server's folders name its own).
    Call once Triton is gone. Returns the folders removed."""
    needle = f'string_value: "{os.fspath(workspace)}"'
    removed = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not _MODEL_FOLDER.fullmatch(entry.name) or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            with open(entry / "config.pbtxt", errors="replace") as f:
                text = f.read(1 << 20)
        except OSError:
            continue
        if needle in text:
            log.info("removing %s, a model folder Triton left", entry)
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def own_helpers() -> set[int]:
    """This process's own multiprocessing resource tracker: it lives as long as this
    process (started by PyTriton's shared-memory client here), not as long as Triton."""
    from multiprocessing import resource_tracker

    pid = getattr(resource_tracker._resource_tracker, "_pid", None)
    return {pid} if pid else set()
