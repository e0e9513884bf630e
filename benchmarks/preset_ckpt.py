"""Save a DiT preset's random bench weights (exactly those ``gaf-trt bench --preset`` uses for
the same seed) as a gaf-trt safetensors checkpoint, so ``gaf-trt export`` can build an engine
directory of them for the ort / trt rows.

    python benchmarks/preset_ckpt.py --preset S/2 --latent 16 --out /tmp/s2_l16.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gaf_trt.model.checkpoint import save_safetensors  # noqa: E402
from gaf_trt.model.presets import preset_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", required=True)
    ap.add_argument("--latent", type=int, default=32)
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    model = preset_model(a.preset, a.latent, a.channels, a.num_classes, a.seed, "cpu")
    save_safetensors(model, a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
