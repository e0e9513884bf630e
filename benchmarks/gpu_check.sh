#!/usr/bin/env bash
# GPU check (one call, < 12 minutes: 8 for the engine checks, 4 for serving, installs nothing beyond this package itself):
#   CUDA parity against the CPU reference fixtures, CUDA-graph replay vs the uncaptured loop
#   (measured, per solver and engine), the CUDA tests of the suite, `gaf-trt bench` on
#   DiT-XL/2 with the reference row, and benchmarks/gpu_trt_check.py when present.
#   Prints a short table last. Outputs (bench JSON / PNG) go to $OUT (or /tmp/gaf_gpu_check).
# Usage on the device machine:  bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 \
  || echo "note: editable install failed; running from the source tree"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
if python3 -c "import pytest" 2>/dev/null; then
  timeout 90 python3 -m pytest -q -p no:cacheprovider -rs tests/compose/test_graph_safety.py \
    tests/compose/test_capture.py || echo "CUDA tests failed"
fi
timeout 380 python3 benchmarks/gpu_check.py "$@"
timeout 240 python3 benchmarks/gpu_serve_check.py --budget 220 \
  || echo "serving check failed or timed out (exit $?)"
# gaf-trt generate, multi-process (one torchrun rank per GPU) against in-process: same bytes?
GEN="${OUT:-/tmp/gaf_gpu_check}/generate"; rm -rf "$GEN"
JOB=(generate --per-class 20 --steps 8 --batch 20 --shard-size 40 --format npz -q)
NGPU=$(nvidia-smi -L 2>/dev/null | wc -l); [ "$NGPU" -ge 1 ] || NGPU=1
if timeout 90 python3 -m gaf_trt.cli "${JOB[@]}" --out "$GEN/local" \
   && timeout 120 python3 -m torch.distributed.run --standalone --nproc_per_node "$NGPU" \
        -m gaf_trt.cli -- "${JOB[@]}" --runner torchrun --out "$GEN/torchrun"; then
  cmp -s "$GEN/local/samples.npz" "$GEN/torchrun/samples.npz" \
    && echo "generate: torchrun x$NGPU == in-process (samples.npz bytes)" \
    || echo "generate: torchrun x$NGPU differs from in-process"
else
  echo "generate: multi-process check failed"
fi
