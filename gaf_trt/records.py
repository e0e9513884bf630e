"""Which command owns which output folder: the record each command writes into its folder.

One folder holds one command's output. Every command that writes a folder registers here
the record it leaves there (``sample`` -> ``run.json``, ...); :mod:`gaf_trt.io.files` reads
this table to refuse a folder that holds another command's record, and the writers take
their record names from it (``RECORD = OWNERS.get("generate").record``), so a record the
table does not know cannot be written (``tests/io/test_owners.py`` ties every record-name
constant of the package to it).

Commands that write a single file at a path the user gives (``bench --json``, ``evaluate
--json``) own no folder and are not listed.
"""

from __future__ import annotations

from dataclasses import dataclass

from gaf_trt.errors import unknown_key


@dataclass(frozen=True)
class Owner:
    """A command that writes an output folder: its name (``command``), the record file it
    leaves in the folder (``record``), how messages name it (``shown``) and the globs of the
    files that mark its output even when the record is gone (``marks``: a dataset's shards)."""

    command: str
    record: str
    shown: str
    marks: tuple[str, ...] = ()


class Owners:
    """The table of :class:`Owner` entries, one per command (several commands may share a
    record file: ``transport`` and ``translate`` both write ``transport.json``)."""

    def __init__(self) -> None:
        self._by_command: dict[str, Owner] = {}

    def register(self, command: str, record: str, shown: str | None = None,
                 marks: tuple[str, ...] = ()) -> Owner:
        """Register ``command`` as the writer of ``record`` (``marks``: globs, relative to the
        folder, of files that only this command writes); returns its :class:`Owner`."""
        if command in self._by_command:
            raise ValueError(f"command {command!r} registered twice")
        owner = Owner(command, record, shown or f"gaf-trt {command}", tuple(marks))
        self._by_command[command] = owner
        return owner

    def get(self, command: str) -> Owner:
        """The owner entry of ``command`` (a :class:`~gaf_trt.errors.ConfigError` if none)."""
        try:
            return self._by_command[command]
        except (KeyError, TypeError):
            raise unknown_key("command", command, self._by_command) from None

    def __contains__(self, command: object) -> bool:
        return command in self._by_command

    def owners(self) -> list[Owner]:
        return list(self._by_command.values())

    def commands(self) -> list[str]:
        return list(self._by_command)

    def records(self) -> list[str]:
        """Every registered record file name, once each, in registration order."""
        return list(dict.fromkeys(o.record for o in self._by_command.values()))

    def default_command(self, record: str) -> str:
        """The command a record means when it does not name one (the first registered)."""
        for owner in self._by_command.values():
            if owner.record == record:
                return owner.command
        raise unknown_key("record", record, self.records())

    def shown(self, command: str) -> str:
        """How messages name ``command`` (``gaf-trt sample``); an unknown one as given."""
        owner = self._by_command.get(command)
        return owner.shown if owner is not None else command


#: The one table of folder owners.
OWNERS = Owners()
SAMPLE = OWNERS.register("sample", "run.json")
TRANSPORT = OWNERS.register("transport", "transport.json")
TRANSLATE = OWNERS.register("translate", "transport.json")
EXPORT = OWNERS.register("export", "manifest.json")  # an engine directory
TRITON_REPO = OWNERS.register("triton-repo", "gaf_repository.json")
#: A dataset folder is marked by its shards and their seals even without its dataset.json.
GENERATE = OWNERS.register("generate", "dataset.json",
                           marks=("shards/[0-9]*-[0-9]*.json", "shards/[0-9]*-[0-9]*.npz"))
#: A training run's record is its checkpoint (or, before the first one, its config.yaml).
TRAINING = OWNERS.register("training", "last.pt", "python -m gaf_trt.training train")

__all__ = ["EXPORT", "GENERATE", "OWNERS", "Owner", "Owners", "SAMPLE", "TRAINING", "TRANSLATE",
           "TRANSPORT", "TRITON_REPO"]
