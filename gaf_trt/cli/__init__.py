"""The ``gaf-trt`` console script."""

from gaf_trt.cli.app import app, main

__all__ = ["app", "main"]
