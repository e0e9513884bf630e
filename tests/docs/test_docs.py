"""The documentation is tested: the site builds with ``mkdocs build --strict`` and every shell or
Python example of ``docs/*.md`` and ``README.md`` that runs on the CPU in seconds is run.

Each ```bash / ```python fence is preceded by a marker line (an HTML comment, invisible on the
site and on GitHub): ``<!-- docs-test: run -->``, or ``<!-- docs-test: skip KIND: reason -->``
with KIND one of gpu, server, long, data.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
MARKER = re.compile(r"^<!-- docs-test: (run|skip (gpu|server|long|data): \S.*) -->$")
FENCE = re.compile(r"^```(bash|python)\s*$")
SKIP_KINDS = {"gpu", "server", "long", "data"}
#: A hang guard, not a speed bound: on a loaded machine (three suites at once, load ~9) an
#: 8-step example took over 60 s.
TIMEOUT_S = 300


@dataclass(frozen=True)
class Example:
    page: str
    line: int
    lang: str
    marker: str | None
    code: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def _examples(path: Path) -> list[Example]:
    lines = path.read_text(encoding="utf-8").split("\n")
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        prev = next((s for s in reversed(lines[:i]) if s.strip()), "")
        end = lines.index("```", i + 1)
        marker = prev if prev.startswith("<!-- docs-test") else None
        out.append(Example(str(path.relative_to(ROOT)), i + 1, m.group(1), marker,
                           "\n".join(lines[i + 1:end])))
        i = end + 1
    return out


EXAMPLES = [e for p in PAGES for e in _examples(p)]
RUN = [e for e in EXAMPLES if e.marker == "<!-- docs-test: run -->"]


def test_every_example_is_marked() -> None:
    bad = [e.id for e in EXAMPLES if e.marker is None or not MARKER.match(e.marker)]
    assert not bad, f"fences without a valid docs-test marker: {bad}"
    assert len(RUN) >= 8


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs / mkdocs-material not installed (pip install -e '.[docs]')")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "index.html").is_file()


def test_readme_command_examples_are_documented() -> None:
    """Every example of the README's command table is a documented (run or marked) example."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = [r for r in readme.split("\n") if r.startswith("| `")]
    table = [re.findall(r"`([^`]+)`", r)[-1] for r in rows if r.count("|") == 4]
    assert len(table) == 11, table
    docs_code = "\n".join(e.code for e in EXAMPLES if e.page.startswith("docs/"))
    missing = [c for c in table if c not in docs_code]
    assert not missing, f"README examples found in no docs fence: {missing}"


@pytest.mark.parametrize("example", RUN, ids=[e.id for e in RUN])
def test_example_runs(example: Example, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    if example.lang == "python":
        cmd = [sys.executable, "-c", example.code]
    else:
        # `gaf-trt` is this checkout's CLI, whatever the installed entry point points at
        prelude = f'set -euo pipefail\ngaf-trt() {{ "{sys.executable}" -m gaf_trt.cli "$@"; }}\n'
        cmd = ["bash", "-c", prelude + example.code]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"{example.id} failed:\n{proc.stdout}\n{proc.stderr}"
