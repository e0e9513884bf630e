"""``python -m gaf_trt.cli`` (same as the ``gaf-trt`` console script)."""

from gaf_trt.cli.app import main

main()
