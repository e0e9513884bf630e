"""Reliability suite (issue 10): every bad input and every interruption, run as a user would.

Helpers shared by the modules of this folder:

- :func:`run_cli` / :func:`run_training`: one real subprocess (``python -m gaf_trt.cli ...``,
  ``python -m gaf_trt.training ...``) with a timeout, so a hang fails one test, not the suite.
- :func:`run_many`: several such subprocesses at once (each case is still its own test; the
  suite stays within its time budget on 2 cores because the torch imports overlap).
- :func:`assert_bad_input` / :func:`assert_internal_fault`: the contract of
  ``gaf_trt/console/errors.py`` -- exit code, exactly one ``error:`` line, no traceback.
- :func:`assert_consistent`: the output-folder contract of ``gaf_trt/io/files.OutputDir`` --
  run.json (when present) lists exactly the files in the folder, no staging folder left.
- ``bad_ckpt``: checkpoints in the published format with one defect each, built from
  ``tests/data/gaf_ref_small.pt`` (loaded with ``weights_only=True``).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import shared_dir

DATA = Path(__file__).resolve().parent.parent / "data"
REF_CKPT = DATA / "gaf_ref_small.pt"
REPO = Path(__file__).resolve().parents[2]

#: A hang fails the test after this many seconds, instead of blocking the suite (a hang
#: guard, not a speed bound: a loaded machine must not fail a case that is only slow).
TIMEOUT_S = 300.0
#: Subprocesses run at once by :func:`run_many` (2 cores; torch imports dominate).
PARALLEL = 4

#: Tiny sampling arguments for the reference checkpoint (8x8x3, 10 classes, 4 heads).
TINY_SAMPLE = ["--steps", "2", "--batch", "1", "--device", "cpu", "-q"]


# --------------------------------------------------------------------------- subprocesses


@dataclass
class Result:
    """One finished (or timed-out) command: exit code, output, wall seconds."""

    args: list[str]
    rc: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.startswith("error:")]

    @property
    def first_stderr(self) -> str:
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        return lines[0] if lines else ""

    def describe(self) -> str:
        """A short account for assertion messages (the lead reads these)."""
        tail = self.stderr.strip()[-1500:]
        return (f"\n  command: {' '.join(self.args)}\n  rc={self.rc} timed_out={self.timed_out} "
                f"({self.seconds:.1f} s)\n  stdout: {self.stdout.strip()[-400:]!r}\n"
                f"  stderr: {tail!r}")


def base_env(**extra: str) -> dict[str, str]:
    """The environment of every subprocess: no debug, wide lines, one torch thread each."""
    env = {k: v for k, v in os.environ.items() if k != "GAF_TRT_DEBUG"}
    env.update({"PYTHONUNBUFFERED": "1", "COLUMNS": "200", "NO_COLOR": "1",
                "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    env.update(extra)
    return env


def training_module() -> str:
    """``gaf_trt.training`` once the package has moved there, ``training`` until then."""
    if importlib.util.find_spec("gaf_trt.training") is not None:
        return "gaf_trt.training"
    return "training"


def cli_cmd(*args: str | os.PathLike[str], module: str = "gaf_trt.cli") -> list[str]:
    return [sys.executable, "-m", module, *map(str, args)]


def run_cmd(cmd: Sequence[str], *, timeout: float = TIMEOUT_S, cwd: str | os.PathLike[str]
            | None = None, env: dict[str, str] | None = None) -> Result:
    """Run one command to completion (killed after ``timeout`` seconds)."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                              cwd=cwd or REPO, env=env or base_env())
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        errs = err.stderr.decode() if isinstance(err.stderr, bytes) else (err.stderr or "")
        return Result(list(cmd), None, out, errs, time.perf_counter() - start, timed_out=True)
    return Result(list(cmd), proc.returncode, proc.stdout, proc.stderr,
                  time.perf_counter() - start)


def run_cli(*args: str | os.PathLike[str], **kw: Any) -> Result:
    """``python -m gaf_trt.cli ARGS`` as a user runs it."""
    return run_cmd(cli_cmd(*args), **kw)


def run_training(*args: str | os.PathLike[str], **kw: Any) -> Result:
    """``python -m gaf_trt.training ARGS`` (or ``python -m training`` before the move)."""
    return run_cmd(cli_cmd(*args, module=training_module()), **kw)


def invoke(app: Any, args: Sequence[str | os.PathLike[str]], **env: str) -> Result:
    """Run a Typer app in-process (``typer.testing.CliRunner``), for pure validation cases
    where a subprocess adds nothing; the same :class:`Result` as a subprocess."""
    from typer.testing import CliRunner

    argv = [str(a) for a in args]
    start = time.perf_counter()
    res = CliRunner().invoke(app, argv, env={"GAF_TRT_DEBUG": "", **env})
    return Result(["<in-process>", *argv], res.exit_code, res.stdout, res.stderr,
                  time.perf_counter() - start)


def gaf_app() -> Any:
    """The ``gaf-trt`` Typer app (for :func:`invoke`)."""
    from gaf_trt.cli.app import app

    return app


def training_app() -> Any:
    """The training Typer app (for :func:`invoke`)."""
    import importlib

    return importlib.import_module(f"{training_module()}.cli").app


def run_many(cases: dict[str, Sequence[str]], *, timeout: float = TIMEOUT_S,
             cwd: str | os.PathLike[str] | None = None) -> dict[str, Result]:
    """Run several full command lines at once; returns ``{case id: Result}``."""
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        futures = {k: pool.submit(run_cmd, cmd, timeout=timeout, cwd=cwd) for k, cmd in
                   cases.items()}
        return {k: f.result() for k, f in futures.items()}


# --------------------------------------------------------------------------- the error contract


def _lower(text: str) -> str:
    return text.lower()


def assert_one_error_line(res: Result, rc: int, *needles: str | Iterable[str]) -> str:
    """Exit code ``rc``, exactly one ``error:`` line, no traceback anywhere; each needle (a
    string, or a tuple of alternatives) appears in the error line (case-insensitive)."""
    assert not res.timed_out, f"did not finish within {TIMEOUT_S:.0f} s (hang){res.describe()}"
    assert "Traceback" not in res.output, f"traceback printed{res.describe()}"
    assert res.rc == rc, f"expected exit code {rc}{res.describe()}"
    lines = res.error_lines
    assert len(lines) == 1, f"expected exactly one 'error:' line, got {len(lines)}{res.describe()}"
    line = lines[0]
    for needle in needles:
        alts = (needle,) if isinstance(needle, str) else tuple(needle)
        assert any(_lower(a) in _lower(line) for a in alts), (
            f"the error line should mention {' or '.join(map(repr, alts))}{res.describe()}")
    return line


def assert_bad_input(res: Result, *needles: str | Iterable[str]) -> str:
    """Bad input: exit code 2, one ``error:`` line naming the problem, no traceback."""
    return assert_one_error_line(res, 2, *needles)


def assert_internal_fault(res: Result, *needles: str | Iterable[str]) -> str:
    """A genuine internal fault: exit code 1, one ``error: internal error: ...`` line."""
    line = assert_one_error_line(res, 1, *needles)
    assert line.startswith("error: internal error:"), res.describe()
    return line


# --------------------------------------------------------------------------- output folders


RECORD = "run.json"


def staging_dirs(out: Path) -> list[Path]:
    """Staging folders of :class:`gaf_trt.io.files.OutputDir` beside ``out``."""
    return sorted(p for p in out.parent.glob(f".{out.name}.*") if p.name.endswith(".staging"))


def temp_files(folder: Path) -> list[Path]:
    """Temp files of :func:`gaf_trt.io.files.atomic_write` (``.NAME.*.gaftmp``) in ``folder``."""
    return sorted(folder.rglob("*.gaftmp")) if folder.is_dir() else []


def present_files(out: Path) -> set[str]:
    """Relative paths of the regular files under ``out``, temp files of ours excluded."""
    if not out.is_dir():
        return set()
    return {str(p.relative_to(out)) for p in out.rglob("*")
            if p.is_file() and not p.name.endswith(".gaftmp")}


def hashes(out: Path) -> dict[str, str]:
    return {name: hashlib.sha256((out / name).read_bytes()).hexdigest()
            for name in present_files(out)}


def read_record(out: Path) -> dict[str, Any] | None:
    p = out / RECORD
    if not p.exists():
        return None
    return json.loads(p.read_text())


def listed_files(record: dict[str, Any]) -> set[str]:
    return {str(f) for f in record.get("files", [])} - {RECORD}


def assert_consistent(out: Path, *, allow_staging: bool = False, allow_temps: bool = False) -> \
        dict[str, Any] | None:
    """run.json, when present, lists exactly the files in ``out``; no staging folder or temp
    file of ours is left behind (unless allowed: only a run killed with SIGKILL leaves them).
    Returns the record (None when there is none)."""
    record = read_record(out)
    present = present_files(out)
    if record is not None:
        listed = listed_files(record)
        assert listed == present - {RECORD}, (
            f"run.json does not describe the folder {out}:\n  listed but missing: "
            f"{sorted(listed - present)}\n  present but not listed: "
            f"{sorted(present - listed - {RECORD})}")
    if not allow_staging:
        assert not staging_dirs(out), f"staging folders left behind: {staging_dirs(out)}"
    if not allow_temps:
        assert not temp_files(out), f"temp files left behind: {temp_files(out)}"
    return record


def assert_nothing_written(out: Path, before: set[str] | None = None) -> None:
    """Bad input wrote nothing: ``out`` does not exist (or holds exactly what it held)."""
    if before is None:
        assert not out.exists() or not any(out.iterdir()), (
            f"bad input wrote into {out}: {sorted(present_files(out))}")
    else:
        assert present_files(out) == before, (
            f"bad input changed {out}: {sorted(present_files(out) ^ before)}")
    assert not staging_dirs(out), f"staging folders left behind: {staging_dirs(out)}"
    assert not temp_files(out), f"temp files left behind: {temp_files(out)}"


# --------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="session")
def ref_raw_ckpt() -> dict[str, Any]:
    """The published-format reference checkpoint as plain tensors and dicts."""
    return torch.load(REF_CKPT, map_location="cpu", weights_only=True)


def _state_dicts(ck: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
    return [sd for sd in (ck.get("model"), ck.get("ema")) if isinstance(sd, dict)]


#: The tensor the shape / NaN defects are put into (present in model and ema).
WRONG_SHAPE_KEY = "trunk.blocks.0.mlp.fc1.weight"
NAN_KEY = "trunk.x_embedder.proj.weight"
OVERFLOW_KEY = "twins.K.weight"


@pytest.fixture(scope="session")
def bad_ckpt(ref_raw_ckpt, tmp_path_factory) -> Callable[[str], Path]:
    """``bad_ckpt(kind) -> path`` of a checkpoint with one defect (built once per session).

    kinds: ``wrong_shape`` (one tensor loses a row), ``nan`` (one tensor all NaN),
    ``cfg_class_names`` (``class_names=5``), ``cfg_t_eps`` (``t_eps="abc"``),
    ``cfg_dit_heads`` (``dit_heads="abc"``), ``good`` (an unchanged copy).
    """
    folder = tmp_path_factory.mktemp("bad_ckpts")
    made: dict[str, Path] = {}

    def mutate(kind: str, ck: dict[str, Any]) -> None:
        if kind == "wrong_shape":
            for sd in _state_dicts(ck):
                sd[WRONG_SHAPE_KEY] = sd[WRONG_SHAPE_KEY][:-1].clone()
        elif kind == "nan":
            for sd in _state_dicts(ck):
                sd[NAN_KEY] = torch.full_like(sd[NAN_KEY], float("nan"))
        elif kind == "overflow":  # finite weights whose outputs overflow float32
            for sd in _state_dicts(ck):
                sd[OVERFLOW_KEY] = sd[OVERFLOW_KEY] * 3e38
        elif kind == "cfg_class_names":
            ck["cfg"]["class_names"] = 5
        elif kind == "cfg_t_eps":
            ck["cfg"]["t_eps"] = "abc"
        elif kind == "cfg_dit_heads":
            ck["cfg"]["dit_heads"] = "abc"
        elif kind != "good":
            raise KeyError(kind)

    def make(kind: str) -> Path:
        if kind not in made:
            ck = copy.deepcopy(ref_raw_ckpt)
            mutate(kind, ck)
            path = folder / f"{kind}.pt"
            torch.save(ck, path)
            made[kind] = path
        return made[kind]

    return make


# --------------------------------------------------------------------------- CLI discovery


@pytest.fixture(scope="session")
def cli_commands() -> set[str]:
    """The commands of ``gaf-trt`` (export / transport arrive later)."""
    import typer

    from gaf_trt.cli.app import app

    return set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- engine directories


def need_onnx() -> None:
    """Skip unless the export stack is installed (extras ``[onnx]``)."""
    pytest.importorskip("onnx", reason="onnx is not installed (pip install 'gaf-trt[onnx]')")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    pytest.importorskip("onnxscript", reason="onnxscript is not installed (torch.onnx dynamo)")


@pytest.fixture(scope="session")
def ref_engine(tmp_path_factory) -> Path:
    """The reference checkpoint exported through the CLI (split graphs, no parity run: ~13 s
    on CPU), once per test run (the pytest-xdist workers share it:
    :func:`tests.helpers.shared_dir`). Tests copy it before changing anything."""
    need_onnx()

    def build(out: Path) -> None:
        res = run_cli("export", "--ckpt", REF_CKPT, "--out", out, "--graphs", "split",
                      "--no-parity", timeout=240)
        assert res.rc == 0, res.describe()
        assert (out / "manifest.json").is_file() and (out / "trunk.onnx").is_file(), \
            res.describe()

    return shared_dir(tmp_path_factory.getbasetemp(), "ref_engine_cli_split", build)


def unwritable_folder(tmp_path: Path) -> Path | None:
    """A folder this process cannot write into: a tmp folder chmod 0500, or -- as root, where
    chmod does not bind -- /proc/1 (a folder of the kernel's that refuses new entries)."""
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    if not os.access(parent, os.W_OK):
        return parent
    parent.chmod(0o700)
    proc1 = Path("/proc/1")
    if proc1.is_dir() and not os.access(proc1, os.W_OK):
        return proc1
    return None
