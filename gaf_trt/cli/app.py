"""The ``gaf-trt`` command line (Typer). Each command lives in its own module of this package:
it parses, builds a config and calls the library. Errors: see :mod:`gaf_trt.console.errors`."""

from __future__ import annotations

import logging
import sys

import typer

from gaf_trt.cli.multivalue import MultiValueCommand
from gaf_trt.console.command import GafCommand, bare_flags
from gaf_trt.console.errors import OneLineErrorGroup, run_app


class GafGroup(OneLineErrorGroup):
    """The ``gaf-trt`` group: one error line per failure, bare flags in its own help."""

    def get_params(self, ctx):  # type: ignore[no-untyped-def]
        return bare_flags(super().get_params(ctx))


app = typer.Typer(cls=GafGroup, add_completion=False, pretty_exceptions_enable=False,
                  no_args_is_help=True,
                  help="Fast inference for Generative Anchored Fields (GAF). Add --debug "
                       "anywhere for a traceback on errors.")



def package_version() -> str:
    """The installed distribution's version (``gaf_trt.__version__`` in a bare checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gaf-trt")
    except PackageNotFoundError:
        from gaf_trt._version import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"gaf-trt {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Fast inference for Generative Anchored Fields (GAF). Add --debug anywhere for a
    traceback on errors."""


# --- command registration: one block per command module -------------------------------------
from gaf_trt.cli.sample import sample  # noqa: E402

app.command(cls=MultiValueCommand)(sample)

from gaf_trt.cli.info import info  # noqa: E402

app.command(cls=GafCommand)(info)

from gaf_trt.cli.bench import BenchCommand, bench  # noqa: E402

app.command(cls=BenchCommand)(bench)

from gaf_trt.cli.transport import translate, transport  # noqa: E402

app.command(cls=MultiValueCommand)(transport)
app.command(cls=GafCommand)(translate)

from gaf_trt.cli.export import export  # noqa: E402

app.command(cls=GafCommand)(export)

from gaf_trt.cli.serve import serve  # noqa: E402

app.command(cls=GafCommand)(serve)

from gaf_trt.cli.generate import generate  # noqa: E402

app.command(cls=MultiValueCommand)(generate)

from gaf_trt.cli.evaluate import evaluate  # noqa: E402

app.command(cls=MultiValueCommand)(evaluate)

from gaf_trt.cli.triton_repo import triton_repo  # noqa: E402

app.command(name="triton-repo", cls=GafCommand)(triton_repo)
# --- end of command registration --------------------------------------------------------------


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    run_app(app, fast_exit=True)
