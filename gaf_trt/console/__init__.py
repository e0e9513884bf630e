"""What both command lines (``gaf-trt`` and ``python -m gaf_trt.training``) share, below
both: the Typer command class (:mod:`~gaf_trt.console.command`), one ``error:`` line per
failure and its exit code (:mod:`~gaf_trt.console.errors`), and the progress bars on stderr
(:mod:`~gaf_trt.console.progress`). Imports only :mod:`gaf_trt.errors` and :mod:`gaf_trt.io`.
"""
