"""The ``gaf-trt`` command line (Typer). Each command lives in its own module of this package:
it parses, builds a config and calls the library. Errors: see :mod:`gaf_trt.cli.errors`."""

from __future__ import annotations

import logging
import sys

import typer

from gaf_trt.cli.errors import OneLineErrorGroup, run_app
from gaf_trt.cli.multivalue import MultiValueCommand

app = typer.Typer(cls=OneLineErrorGroup, add_completion=False, pretty_exceptions_enable=False,
                  no_args_is_help=True,
                  help="Fast inference for Generative Anchored Fields (GAF). Add --debug "
                       "anywhere for a traceback on errors.")

# --- command registration: one block per command module -------------------------------------
from gaf_trt.cli.sample import sample  # noqa: E402

app.command(cls=MultiValueCommand)(sample)

from gaf_trt.cli.info import info  # noqa: E402

app.command()(info)

from gaf_trt.cli.bench import BenchCommand, bench  # noqa: E402

app.command(cls=BenchCommand)(bench)

from gaf_trt.cli.transport import transport, translate  # noqa: E402

app.command(cls=MultiValueCommand)(transport)
app.command()(translate)

from gaf_trt.cli.export import export  # noqa: E402

app.command()(export)

from gaf_trt.cli.generate import generate  # noqa: E402

app.command(cls=MultiValueCommand)(generate)

from gaf_trt.cli.evaluate import evaluate  # noqa: E402

app.command(cls=MultiValueCommand)(evaluate)
# --- end of command registration --------------------------------------------------------------


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    run_app(app, fast_exit=True)
