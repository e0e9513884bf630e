#!/usr/bin/env bash
# Set up and run the main job on a fresh machine: compose digits 3 (top) and 8 (bottom) with
# the bundled model, writing PNGs to ./samples (the README's first command). Each step says
# what it does; pip shows its own progress (downloads and builds take most of the time).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "[1/3] installing torch 2.13.0 (CPU wheel; skipped when already installed)" >&2
python3 -m pip install --disable-pip-version-check --progress-bar on torch==2.13.0
echo "[2/3] installing gaf-trt (editable) and its dependencies" >&2
python3 -m pip install --disable-pip-version-check --progress-bar on -e .
echo "[3/3] gaf-trt sample --classes 3 8 --mask-type horizontal_2 --out samples" >&2
gaf-trt sample --classes 3 8 --mask-type horizontal_2 --out samples "$@"
