#!/usr/bin/env bash
# Issue 26's speed target, to rerun on a quiet machine: euler-20 on the S/2 preset (16x16x4
# latent, batch 8, 2 classes composed with soft horizontal_2 masks), every feature-cache policy
# against the uncached row of the same backend ("x off" in the table, speedup_vs_uncached in
# the JSON; target >= 1.7x), torch fp32 and -- when onnxruntime is installed -- ort fp32 on an
# engine directory of the same weights. The table's title says "quiet" only when the load
# average allowed it (docs/bench.md, "Load"); then the quality bounds come from
# benchmarks/digits_cache.py.
# Usage: bash benchmarks/cache_speed.sh   (OUT=folder for the JSON files)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/$(date -u +%Y%m%d)}"
mkdir -p "$OUT"
GRID=(--batch 8 --classes 2 --steps 20 --solver euler --device cpu --warmup 1 --repeats 3
      --cache off static:2 taylor:2 adaptive:0.1)

python -m gaf_trt.cli bench --preset S/2 --latent 16 --backend torch --precision fp32 \
  "${GRID[@]}" --json "$OUT/cpu_s2_b8_cache.json"

if python -c "import onnxruntime" 2>/dev/null; then
  python benchmarks/preset_ckpt.py --preset S/2 --latent 16 --out "$OUT/s2_l16.safetensors"
  rm -rf "$OUT/s2_l16_engine"
  python -m gaf_trt.cli export --ckpt "$OUT/s2_l16.safetensors" --out "$OUT/s2_l16_engine" \
    --onnx-only --max-batch 8 --max-classes 2
  python -m gaf_trt.cli bench --ckpt "$OUT/s2_l16.safetensors" --engine "$OUT/s2_l16_engine" \
    --backend torch ort --precision fp32 "${GRID[@]}" --json "$OUT/cpu_s2_b8_cache_ort.json"
else
  echo "onnxruntime is not installed: the ort rows are skipped"
fi
