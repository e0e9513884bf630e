"""The one-line error handler (gaf_trt/console/errors.py) against the installed Typer/Click.

A throw-away Typer app with :class:`OneLineErrorGroup` raises each kind of exception; the
cases where the process matters run as real subprocesses (the handler calls ``sys.exit`` and
writes to the real stderr; the traceback switch), the rest in-process through
``typer.testing.CliRunner``. The real ``gaf-trt`` app gets the same checks
for a usage error and a library (``GAFError``) error.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import typer

from tests.reliability.conftest import (
    REF_CKPT,
    TINY_SAMPLE,
    Result,
    assert_bad_input,
    assert_internal_fault,
    base_env,
    gaf_app,
    invoke,
    run_cli,
    run_cmd,
    run_many,
)

APP_SOURCE = textwrap.dedent('''
    import typer

    from gaf_trt.console.errors import OneLineErrorGroup, run_app
    from gaf_trt.errors import ConfigError

    app = typer.Typer(cls=OneLineErrorGroup, add_completion=False,
                      pretty_exceptions_enable=False)


    @app.command()
    def boom(kind: str = typer.Argument(...), count: int = typer.Option(1, "--count")) -> None:
        """Raise one kind of exception."""
        if kind == "value":
            raise ValueError("value boom 123")
        if kind == "key":
            raise KeyError("missing-key-7")
        if kind == "gaf":
            raise ConfigError("bad option --foo 42; valid: 1..10")
        if kind == "os":
            raise FileNotFoundError(2, "No such file or directory", "/nonexistent/gaf/x.pt")
        if kind == "interrupt":
            raise KeyboardInterrupt
        if kind == "wrapped_interrupt":  # as torch's exporter wraps a Ctrl-C
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as err:
                raise RuntimeError("TorchExportError stand-in") from err
        if kind in ("sigint_swallowed", "sigterm_swallowed"):
            import os, signal, time
            try:  # a library that eats the interrupt, then fails for want of its work
                os.kill(os.getpid(), signal.SIGINT if kind == "sigint_swallowed"
                        else signal.SIGTERM)
                time.sleep(5)
            except BaseException:
                pass
            raise RuntimeError("export failed")
        if kind == "abort":
            raise typer.Abort()
        if kind == "exit3":
            raise typer.Exit(3)
        print(f"ok {kind} {count}")


    @app.command()
    def other() -> None:
        """A second command, so that boom is a sub-command as in gaf-trt."""


    if __name__ == "__main__":
        run_app(app)
''')


@pytest.fixture(scope="module")
def boom_script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("handler") / "boom_app.py"
    path.write_text(APP_SOURCE)
    return path


@pytest.fixture(scope="module")
def boom_runs(boom_script) -> dict[str, Result]:
    """The cases where the real process matters (sys.exit, the real stderr, the traceback
    switch), as subprocesses run in parallel."""
    py = [sys.executable, str(boom_script)]
    results = run_many({
        "value": [*py, "boom", "value"],
        "gaf": [*py, "boom", "gaf"],
        "value_debug_flag": [*py, "boom", "value", "--debug"],
        "usage_bad_int": [*py, "boom", "fine", "--count", "abc"],
        "sigint_swallowed": [*py, "boom", "sigint_swallowed"],
        "sigterm_swallowed": [*py, "boom", "sigterm_swallowed"],
    })
    results["value_debug_env"] = run_cmd([*py, "boom", "value"],
                                         env=base_env(GAF_TRT_DEBUG="1"))
    return results


@pytest.fixture(scope="module")
def boom_app(boom_script) -> typer.Typer:
    namespace: dict[str, object] = {"__name__": "boom_app"}
    exec(compile(APP_SOURCE, str(boom_script), "exec"), namespace)
    return namespace["app"]  # type: ignore[return-value]


def test_foreign_exception_is_one_internal_error_line(boom_runs, boom_app):
    line = assert_internal_fault(boom_runs["value"], "ValueError", "value boom 123")
    assert "--debug" in line, f"the line should say how to get the traceback: {line!r}"
    assert_internal_fault(invoke(boom_app, ["boom", "key"]), "KeyError", "missing-key-7")


def test_debug_flag_and_env_show_the_traceback(boom_runs, boom_app):
    debug_in_process = invoke(boom_app, ["boom", "value"], GAF_TRT_DEBUG="1")
    for case, res in [("value_debug_flag", boom_runs["value_debug_flag"]),
                      ("value_debug_env", boom_runs["value_debug_env"]),
                      ("in-process GAF_TRT_DEBUG=1", debug_in_process)]:
        assert res.rc == 1, f"{case}: exit code{res.describe()}"
        assert "Traceback" in res.stderr, f"{case}: no traceback with debug on{res.describe()}"
        assert "ValueError: value boom 123" in res.stderr, res.describe()


def test_gaf_error_is_bad_input(boom_runs, boom_app):
    for res in (boom_runs["gaf"], invoke(boom_app, ["boom", "gaf"])):
        line = assert_bad_input(res, "--foo 42")
        assert "internal" not in line, line


def test_os_error_is_bad_input_naming_the_path(boom_app):
    assert_bad_input(invoke(boom_app, ["boom", "os"]), "/nonexistent/gaf/x.pt")


def test_usage_errors_are_one_line(boom_runs, boom_app):
    assert_bad_input(boom_runs["usage_bad_int"], "--count", "abc")  # names the bad value
    assert_bad_input(invoke(boom_app, ["boom", "fine", "--nope"]), "--nope")
    assert_bad_input(invoke(boom_app, ["boom"]), "kind")


def test_interrupt_abort_and_exit(boom_app):
    """Ctrl-C: ``aborted``, rc 130; typer.Abort: ``aborted``, rc 1; typer.Exit(3): rc 3;
    never a traceback."""
    for kind, rc in (("interrupt", 130), ("abort", 1), ("exit3", 3)):
        res = invoke(boom_app, ["boom", kind])
        assert res.rc == rc and "Traceback" not in res.output, f"{kind}{res.describe()}"
        assert not res.error_lines or kind == "exit3", f"{kind}{res.describe()}"
    assert "aborted" in invoke(boom_app, ["boom", "interrupt"]).stderr


def test_interrupt_wrapped_by_a_library_is_an_interruption(boom_runs, boom_app):
    """Issue 23 item 8: Ctrl-C that a library turns into an error of its own (torch's
    exporter: "internal error: TorchExportError") is still ``aborted``, exit code 130; a
    swallowed SIGTERM ``aborted (SIGTERM)``, exit code 143."""
    for res, line, rc in ((invoke(boom_app, ["boom", "wrapped_interrupt"]), "aborted", 130),
                          (boom_runs["sigint_swallowed"], "aborted", 130),
                          (boom_runs["sigterm_swallowed"], "aborted (SIGTERM)", 143)):
        assert res.rc == rc, res.describe()
        assert [ln for ln in res.stderr.splitlines() if ln.strip()] == [line], res.describe()


def test_handler_knows_the_installed_typer_exceptions():
    """The handler's exception tuples are resolved against the installed Typer/Click (issue
    10: the old handler named ``click_exceptions.Abort``, absent from typer 0.29)."""
    from gaf_trt.console import errors

    assert errors.CLICK_ERRORS and errors.EXIT_SIGNALS and errors.ABORT_SIGNALS
    assert issubclass(typer.Exit, errors.EXIT_SIGNALS)
    assert issubclass(typer.Abort, errors.ABORT_SIGNALS)
    assert issubclass(typer.BadParameter, errors.CLICK_ERRORS)


def test_success_is_untouched(boom_app):
    res = invoke(boom_app, ["boom", "fine", "--count", "3"])
    assert res.rc == 0 and res.stdout.strip() == "ok fine 3", res.describe()
    assert res.stderr.strip() == "", res.describe()


# --------------------------------------------------------------------------- the real gaf-trt


def test_real_cli_bad_input_subprocess(tmp_path):
    res = run_cli("sample", "--ckpt", REF_CKPT, "--classes", "1", "--solver", "nope",
                  *TINY_SAMPLE, "--out", tmp_path / "out")
    assert_bad_input(res, "nope", "euler")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,needles", [
    (["sample", "--bogus-flag"], ["--bogus-flag"]),
    (["info", "/nonexistent/gaf/ckpt.pt"], ["/nonexistent/gaf/ckpt.pt"]),
    (["frobnicate"], ["frobnicate"]),
    (["sample", "--ckpt", str(REF_CKPT), "--classes", "99", *TINY_SAMPLE], ["99", "10"]),
])
def test_real_cli_bad_input(args, needles, tmp_path):
    out = tmp_path / "out"
    extra = ["--out", str(out)] if args[0] == "sample" and len(args) > 2 else []
    assert_bad_input(invoke(gaf_app(), [*args, *extra]), *needles)
    assert not out.exists()
