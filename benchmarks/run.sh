#!/usr/bin/env bash
# CPU benchmark suite (numbers go to benchmarks/RESULTS.md by hand, with date and machine):
#   1. the CPU target grid: DiT-S/2 preset on a 16x16x4 latent, batch 8, 2 classes composed
#      spatially (horizontal_2 soft masks), 20 euler steps; the reference loop, torch and
#      torch-compile at fp32 and bf16 (bf16 only where the CPU runs it natively);
#   2. ONNX Runtime on the same weights (saved as a checkpoint, exported to ONNX) when
#      onnxruntime is installed;
#   3. digits quality (accuracy, Fréchet distance) at fp32 vs bf16.
# Usage: bash benchmarks/run.sh   (OUT=folder to choose where JSON / PNG files go)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/$(date -u +%Y%m%d)}"
mkdir -p "$OUT"
GRID=(--batch 8 --classes 2 --steps 20 --solver euler --device cpu --warmup 1 --repeats 3)
PRECISIONS=(fp32)
if python -c "import sys, torch; sys.exit(0 if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported() else 1)"; then
  PRECISIONS+=(bf16)
fi

python -m gaf_trt.cli bench --preset S/2 --latent 16 --backend torch torch-compile \
  --precision "${PRECISIONS[@]}" "${GRID[@]}" --json "$OUT/cpu_s2_b8.json" --plot "$OUT/cpu_s2_b8.png"

if python -c "import onnxruntime" 2>/dev/null; then
  python benchmarks/preset_ckpt.py --preset S/2 --latent 16 --out "$OUT/s2_l16.safetensors"
  rm -rf "$OUT/s2_l16_engine"
  python -m gaf_trt.cli export --ckpt "$OUT/s2_l16.safetensors" --out "$OUT/s2_l16_engine" \
    --onnx-only --max-batch 8 --max-classes 2
  python -m gaf_trt.cli bench --ckpt "$OUT/s2_l16.safetensors" --engine "$OUT/s2_l16_engine" \
    --backend torch ort --precision fp32 "${GRID[@]}" --json "$OUT/cpu_s2_b8_ort.json"
else
  echo "onnxruntime is not installed: the ort rows are skipped"
fi

python benchmarks/digits_precision.py --json "$OUT/digits_precision.json"
