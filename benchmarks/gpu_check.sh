#!/usr/bin/env bash
# GPU check (one call, < 8 minutes, installs nothing beyond this package itself):
#   CUDA parity against the CPU reference fixtures, CUDA-graph replay == eager loop, the CUDA
#   tests of the suite, and `gaf-trt bench` on DiT-XL/2. Prints a short table last.
# Usage on the device machine:  bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 \
  || echo "note: editable install failed; running from the source tree"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
if python3 -c "import pytest" 2>/dev/null; then
  timeout 120 python3 -m pytest -q tests/compose/test_graph_safety.py -rs || echo "CUDA tests failed"
fi
timeout 420 python3 benchmarks/gpu_check.py
