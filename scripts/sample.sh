#!/usr/bin/env bash
# Set up and run the main job on a fresh machine: compose digits 3 (top) and 8 (bottom) with
# the bundled model, writing PNGs to ./samples (the README's first command).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check torch==2.13.0
python3 -m pip install -q --disable-pip-version-check -e .
gaf-trt sample --classes 3 8 --mask-type horizontal_2 --out samples "$@"
