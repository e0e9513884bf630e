"""Helpers shared by the training tests (tiny configs, CLI invocation, the one-line-error
check). Imported explicitly; not a conftest, not a test module."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from gaf_trt.training import TrainConfig, build_config

#: A CPU-sized digits network: trains a few steps in well under a second.
TINY = ["dit_hidden=32", "dit_depth=1", "dit_heads=2", "patch_size=4", "batch_size=16",
        "log_every=0", "preview_every=0", "ckpt_every=0", "warmup=2", "device=cpu"]

runner = CliRunner()


def tiny(outdir: Path, *extra: str) -> TrainConfig:
    """The digits preset shrunk by :data:`TINY`, writing into ``outdir``."""
    return build_config("digits", overrides=[*TINY, f"outdir={outdir}", *extra])


def tiny_sets(*extra: str) -> list[str]:
    """``--set`` arguments of :data:`TINY` plus ``extra`` for the CLI."""
    return [x for kv in [*TINY, *extra] for x in ("--set", kv)]


def invoke(*args: object):
    """Run ``python -m gaf_trt.training ARGS`` in-process (Typer's CliRunner)."""
    from gaf_trt.training.cli import app

    return runner.invoke(app, [str(a) for a in args])


def assert_one_error_line(result, *fragments: str, code: int = 2) -> str:
    """Exit ``code``, exactly one non-empty output line, ``error: ...`` containing every
    fragment, and no traceback. Returns the line."""
    assert result.exit_code == code, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.output
    return lines[0]
