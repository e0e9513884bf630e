"""One error line, one exit code: the error handling of every gaf-trt command line.

- Bad input (a :class:`~gaf_trt.errors.GAFError`, a usage error, a file that cannot be
  read or written, memory that does not suffice for the request): ``error: ...`` on stderr,
  exit code 2.
- Anything else is an internal fault: still one ``error: internal error: ...`` line, exit
  code 1; ``--debug`` (anywhere on the command line) or ``GAF_TRT_DEBUG=1`` prints the
  traceback instead.
- Ctrl-C: ``aborted``, exit code 130; SIGTERM and SIGHUP alike (``aborted (SIGTERM)``, exit
  code 128 + the signal's number): the handlers :func:`install_signal_handlers` puts in place
  raise :class:`Terminated` (a ``KeyboardInterrupt``) in the command, so every ``with`` and
  ``finally`` that cleans up after Ctrl-C (the lock file, the staging folder beside
  ``--out``) runs for them too. An exception a library raises after such a signal (torch's
  exporter wraps the interrupt in its own error) is reported as the interruption.

The handler lives in :class:`OneLineErrorGroup`, the group class of both Typer apps
(``gaf-trt`` and ``python -m gaf_trt.training``). It works with Typer releases that vendor
Click (0.16+) and with those that use the ``click`` package.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from typer.core import TyperGroup

from gaf_trt.errors import GAFError

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130
DEBUG_FLAG = "--debug"
DEBUG_ENV = "GAF_TRT_DEBUG"

F = TypeVar("F", bound=Callable[..., Any])


def _types(*candidates: tuple[str, str]) -> tuple[type[BaseException], ...]:
    """Exception classes ``module.attr`` that exist in the installed Typer / Click."""
    import importlib

    found: list[type[BaseException]] = []
    for module, attr in candidates:
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
        if isinstance(obj, type) and issubclass(obj, BaseException) and obj not in found:
            found.append(obj)
    return tuple(found)


#: Usage errors (bad option value, unknown option, missing argument).
CLICK_ERRORS = _types(("typer._click.exceptions", "ClickException"),
                      ("click.exceptions", "ClickException"))
#: "Exit with this code" signals.
EXIT_SIGNALS = _types(("typer.exceptions", "Exit"), ("click.exceptions", "Exit"))
#: "Abort" signals (EOF at a prompt).
ABORT_SIGNALS = _types(("typer.exceptions", "Abort"), ("click.exceptions", "Abort"))


def debug_requested(args: list[str] | None = None) -> bool:
    return (os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
            or DEBUG_FLAG in (args if args is not None else sys.argv[1:]))


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def describe(err: BaseException) -> tuple[str, int]:
    """The one line and exit code for an exception raised by a command."""
    if isinstance(err, GAFError):
        return " ".join(str(err).split("\n")).strip() or type(err).__name__, EXIT_BAD_INPUT
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return (f"out of memory ({_first_line(err)}); lower --batch or the step count, or "
                "sample in chunks (--chunk)", EXIT_BAD_INPUT)
    if isinstance(err, OSError):
        where = f": {err.filename}" if getattr(err, "filename", None) else ""
        reason = err.strerror or _first_line(err)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            reason = "no space left on the device"
        return f"{reason}{where}", EXIT_BAD_INPUT
    if isinstance(err, RuntimeError) and "DefaultCPUAllocator" in str(err):
        return (f"out of memory ({_first_line(err)}); lower --batch or sample in chunks "
                "(--chunk)", EXIT_BAD_INPUT)
    return (f"internal error: {type(err).__name__}: {_first_line(err)} (run with --debug for "
            "the traceback)", EXIT_INTERNAL)


def usage_message(err: BaseException) -> str:
    """A usage error's message, with the rejected value when Click / Typer kept it apart
    (Typer 0.29 parses values with pydantic and leaves them in the error's cause)."""
    message = err.format_message()  # type: ignore[attr-defined]
    cause = err.__cause__
    errors = getattr(cause, "errors", None)
    if callable(errors):
        try:
            value = errors()[0].get("input")
        except (TypeError, IndexError, KeyError, AttributeError, ValueError):
            value = None
        if value is not None and repr(value) not in message and str(value) not in message:
            message = f"{message.rstrip('.')} (got {value!r})"
    return message


def user_errors(fn: F) -> F:
    """Decorator for command functions called outside the group (e.g. directly in tests):
    library errors become one stderr line and their exit code. The group does the same for
    every command, so this is only a convenience."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GAFError as err:
            raise fail(str(err)) from None

    return wrapper  # type: ignore[return-value]


#: The signals that end a command as Ctrl-C does (SIGHUP where the platform has it).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))


class Terminated(KeyboardInterrupt):
    """A stop signal (SIGINT, SIGTERM, SIGHUP) raised in the command as Ctrl-C is."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signum)
        self.signum = int(signum)


class _Stop:
    """The last stop signal received while the command ran (None before any)."""

    signum: int | None = None


def _raise_stop(signum: int, _frame: object) -> None:
    _Stop.signum = signum
    raise Terminated(signum)


def install_signal_handlers() -> None:
    """SIGINT, SIGTERM and SIGHUP raise :class:`Terminated` in the main thread (nothing
    elsewhere: Python takes signal handlers in the main thread only)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stop)


def interrupted_line(signum: int | None) -> tuple[str, int]:
    """The one line and exit code of a command stopped by ``signum`` (Ctrl-C when None)."""
    if signum is None or signum == signal.SIGINT:
        return "aborted", EXIT_INTERRUPTED
    return f"aborted ({signal.Signals(signum).name})", 128 + signum


def _late_interrupt(_signum: int, _frame: object) -> None:
    """Ctrl-C after the command finished: say so and exit 130 at once (no traceback from
    interpreter shutdown)."""
    sys.stderr.write("aborted\n")
    _flush_streams()
    os._exit(EXIT_INTERRUPTED)


def run_app(app: Callable[[], Any], *, fast_exit: bool = False) -> None:
    """Run a Typer app as the process's entry point: Ctrl-C before the group's handler is in
    place, or while the process winds down after the command, also ends with ``aborted`` and
    exit code 130 (never a traceback, never a silent death by SIGINT).

    With ``fast_exit`` the process ends right after the command (streams flushed, no
    interpreter teardown): Python restores the default SIGINT action while it finalises, so a
    Ctrl-C during a slow teardown (torch's) would otherwise kill it with signal 2."""
    install_signal_handlers()
    try:
        app()
    except KeyboardInterrupt as err:
        line, code = interrupted_line(getattr(err, "signum", None))
        sys.stderr.write(f"{line}\n")
    except SystemExit as done:
        code = done.code
    for sig in STOP_SIGNALS:
        signal.signal(sig, _late_interrupt)
    if not fast_exit:
        sys.exit(code)
    if code is not None and not isinstance(code, int):
        sys.stderr.write(f"{code}\n")
        code = 1
    _flush_streams()
    os._exit(code or 0)


def _flush_streams() -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _interrupt_in_chain(err: BaseException) -> bool:
    """Whether ``err`` was raised while handling (or from) a ``KeyboardInterrupt``."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM, SIGHUP) inside a command, carried past Typer (which would turn it
    into a silent exit); ``signum`` the signal."""

    def __init__(self, signum: int | None = None) -> None:
        super().__init__(signum)
        self.signum = signum


class OneLineErrorGroup(TyperGroup):
    """The command group: every error becomes one line on stderr and a documented exit code
    (see the module docstring); usage errors too, instead of a usage box."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as err:
            raise Interrupted(getattr(err, "signum", None)) from None

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        debug = debug_requested(argv)
        argv = [a for a in argv if a != DEBUG_FLAG]
        if not standalone_mode:
            return super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        _Stop.signum = None
        try:
            code = self._run(argv, prog_name, complete_var, debug, **extra)
        except KeyboardInterrupt as err:  # Ctrl-C in the handler's own gaps
            line, code = interrupted_line(getattr(err, "signum", None))
            sys.stderr.write(f"{line}\n")
        sys.exit(code)

    def _run(self, argv: list[str], prog_name: str | None, complete_var: str | None,
             debug: bool, **extra: Any) -> int:
        try:
            rv = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except EXIT_SIGNALS as sig:
            return int(getattr(sig, "exit_code", 0) or 0)
        except CLICK_ERRORS as err:
            if type(err).__name__ == "NoArgsIsHelpError":
                err.show()  # type: ignore[attr-defined]
            else:
                sys.stderr.write(f"error: {usage_message(err)}\n")
            return int(getattr(err, "exit_code", EXIT_BAD_INPUT))
        except ABORT_SIGNALS:
            sys.stderr.write("aborted\n")
            return EXIT_INTERNAL
        except (KeyboardInterrupt, Interrupted) as err:
            line, code = interrupted_line(getattr(err, "signum", None))
            sys.stderr.write(f"{line}\n")
            return code
        except Exception as err:  # noqa: BLE001 - the one place that turns faults into a line
            if debug:
                traceback.print_exc()
            if _Stop.signum is not None or _interrupt_in_chain(err):
                # a library wrapped the interrupt in an error of its own (torch's exporter)
                line, code = interrupted_line(_Stop.signum)
                sys.stderr.write(f"{line}\n")
                return code
            message, code = describe(err)
            sys.stderr.write(f"error: {message}\n")
            return code
        return rv if isinstance(rv, int) else 0
