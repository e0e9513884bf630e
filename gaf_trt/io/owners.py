"""Which command owns an output folder (docs/design.md §6, "One folder, one command"): the
records and marks each command registers in :data:`gaf_trt.records.OWNERS`, the check that
refuses a folder holding another command's output, and what a whole-folder replace
(``OutputDir(replace=True)``, ``triton-repo``) may remove."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gaf_trt.errors import ConfigError
from gaf_trt.records import OWNERS, TRAINING

#: The key a record written through :class:`~gaf_trt.io.files.OutputDir` carries; only such
#: records' files are ever removed by a later run.
RECORD_MARK = ("writer", "gaf-trt")
#: Records larger than this are not read (they are not ours).
MAX_RECORD_BYTES = 16 << 20


def read_record(path: Path) -> dict[str, Any] | None:
    """A gaf-trt record (a JSON record of :data:`gaf_trt.records.OWNERS`: ``run.json``,
    ``transport.json``, ``manifest.json``, ``gaf_repository.json``, ``dataset.json``) as a
    dict, or None when the file is absent, too large, not JSON or not written by gaf-trt."""
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
    if isinstance(named, str) and named in OWNERS:
        return named
    if name == "transport.json" and data.get("mode") == "translate":
        return "translate"
    return OWNERS.default_command(name)


def _is_training_folder(folder: Path) -> bool:
    if (folder / TRAINING.record).is_file():
        return True
    try:  # a run stopped before its first checkpoint: only its config.yaml
        text = (folder / "config.yaml").read_text()[:65536]
    except (OSError, UnicodeDecodeError):
        return False
    keys = {ln.split(":", 1)[0] for ln in text.splitlines() if ":" in ln}
    return {"iters", "ckpt_every", "dit_hidden"} <= keys


def _marked(folder: Path, marks: tuple[str, ...]) -> str | None:
    """The first file of ``folder`` matching one of ``marks`` (globs), relative; else None."""
    for pattern in marks:
        try:
            found = next((p for p in sorted(folder.glob(pattern)) if p.is_file()), None)
        except OSError:
            continue
        if found is not None:
            return str(found.relative_to(folder))
    return None


def folder_owners(folder: str | os.PathLike[str]) -> dict[str, str]:
    """``{command: record file}`` of the gaf-trt runs a folder holds (empty: none)."""
    folder = Path(folder)
    owners: dict[str, str] = {}
    if not folder.is_dir():
        return owners
    for name in OWNERS.records():
        data = None if name == TRAINING.record else read_record(folder / name)
        if data is not None:
            owners.setdefault(record_command(name, data), name)
    for owner in OWNERS.owners():  # its files, without its record (deleted)
        mark = None if owner.command in owners else _marked(folder, owner.marks)
        if mark is not None:
            owners[owner.command] = mark
    if _is_training_folder(folder):
        owners.setdefault(TRAINING.command, TRAINING.record
                          if (folder / TRAINING.record).is_file() else "config.yaml")
    return owners


def check_owner(folder: str | os.PathLike[str], command: str, what: str = "--out", *,
                shown: str | os.PathLike[str] | None = None) -> None:
    """One folder holds one command's output. A folder holding another command's record is
    refused with a :class:`~gaf_trt.errors.ConfigError` naming the folder, the record found
    and the command owning it; the same command's previous run is fine (it is replaced)."""
    others = {c: r for c, r in folder_owners(folder).items() if c != command}
    if others:
        cmd, record = next(iter(others.items()))
        raise ConfigError(f"{what} {shown or folder} holds the output of "
                          f"`{OWNERS.shown(cmd)}` ({record}); one folder holds one command's "
                          f"output: choose another folder for `{OWNERS.shown(command)}`")


def check_replaceable(folder: str | os.PathLike[str], command: str, what: str = "--out", *,
                      shown: str | os.PathLike[str] | None = None) -> None:
    """A folder that a writer replaces as a whole (``OutputDir(replace=True)``) is new, empty
    or ``command``'s own previous output holding exactly the files its record lists (some
    may be missing); anything else would be removed with it, so it is refused with a
    :class:`~gaf_trt.errors.ConfigError` naming the folder and the first foreign entry."""
    folder = Path(folder)
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    record = OWNERS.get(command).record
    if command not in folder_owners(folder):
        first = sorted(p.name for p in folder.iterdir())[0]
        raise ConfigError(f"{what} {shown or folder} is a non-empty folder that is not a "
                          f"{OWNERS.shown(command)} output (it holds {first}); give a new or "
                          "empty folder (one folder holds one command's output)")
    data = read_record(folder / record) or {}
    listed = data.get("files") if isinstance(data.get("files"), list) else []
    foreign = foreign_entry(folder, {str(f) for f in listed} | {record})
    if foreign is not None:
        raise ConfigError(f"{what} {shown or folder} holds {foreign}, which its {record} does "
                          f"not list: `{OWNERS.shown(command)}` replaces the folder as a "
                          "whole and would delete it; move it out or give another folder")


def foreign_entry(folder: Path, listed: set[str]) -> str | None:
    """The first entry under ``folder`` (a relative POSIX path, sorted walk) that is not a
    regular file named in ``listed``; real folders are walked, not entries themselves (an
    empty one holds nothing to lose). None when there is none."""
    todo = [""]
    while todo:
        prefix = todo.pop(0)
        try:
            entries = sorted(os.scandir(folder / prefix), key=lambda e: e.name)
        except OSError:
            return prefix or "."
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                todo.append(rel + "/")
            elif not (entry.is_file(follow_symlinks=False) and rel in listed):
                return rel
    return None
