"""Generate the documentation's pictures from the bundled ``digits`` model.

Run from the repository root: ``python docs/make_pictures.py``. It calls the ``gaf-trt`` command
line of this checkout and writes small palette PNGs into ``docs/img/``:

- ``strip.png`` and ``summary.png``: the README's command (3 on top, 8 at the bottom);
- ``masks/<preset>.png``: one composition strip per mask preset, a class per region;
- ``cycle.png``: a transport cycle 3 -> 8 -> 3 through noise;
- ``bench.png``: a ``gaf-trt bench --plot`` of the bundled model on this machine.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"
LOG = logging.getLogger("make_pictures")

#: preset -> (classes, extra options); one class per region of the preset
MASKS: dict[str, tuple[list[str], list[str]]] = {
    "horizontal_2": (["3", "8"], []),
    "vertical_2": (["3", "8"], []),
    "horizontal": (["1", "4", "7"], []),
    "vertical": (["1", "4", "7"], []),
    "horizontal_4": (["0", "3", "6", "9"], []),
    "vertical_4": (["0", "3", "6", "9"], []),
    "quadrant": (["0", "3", "6", "9"], []),
    "radial_2": (["0", "8"], []),
    "radial": (["0", "1", "8"], []),
    "radial_4": (["0", "1", "6", "8"], []),
    "diagonal_2": (["3", "8"], []),
    "diagonal": (["1", "4", "7"], []),
    "custom": (["0", "3", "6", "9"], ["--mask-img", "{tmp}/ramp.png"]),
    "afhq": (["3", "8"], ["--regions", "eyes"]),
}


def gaf_trt(*args: str) -> None:
    """Run this checkout's ``gaf-trt`` with ``args``; raise on a non-zero exit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "gaf_trt.cli", *args, "--quiet"], check=True, env=env)


def save_small(src: Path, dst: Path, colors: int = 64) -> None:
    """Copy the PNG ``src`` to ``dst`` as an optimised palette image (a few KB)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    img = Image.open(src).convert("RGB").quantize(colors=colors)
    tmp = dst.with_suffix(".tmp.png")
    img.save(tmp, optimize=True)
    os.replace(tmp, dst)
    LOG.info("wrote %s (%d bytes)", dst.relative_to(ROOT), dst.stat().st_size)


def ramp(path: Path, size: int = 64, levels: int = 4) -> None:
    """Write a grayscale diagonal ramp of ``levels`` gray levels: a custom mask of 4 regions."""
    img = Image.new("L", (size, size))
    img.putdata([min(levels - 1, (x + y) * levels // (2 * size)) * (255 // (levels - 1))
                 for y in range(size) for x in range(size)])
    img.save(path)


def masks(tmp: Path) -> None:
    """One composition strip per mask preset (``docs/img/masks/<preset>.png``)."""
    ramp(tmp / "ramp.png")
    for preset, (classes, extra) in MASKS.items():
        out = tmp / preset
        opts = [o.format(tmp=tmp) for o in extra]
        gaf_trt("sample", "--classes", *classes, "--mask-type", preset, *opts,
                "--batch", "1", "--steps", "20", "--seed", "0", "--out", str(out))
        strip = next(out.glob("0_mix_*.png"))
        save_small(strip, IMG / "masks" / f"{preset}.png")


def main() -> None:
    """Generate every picture of the documentation."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        gaf_trt("sample", "--classes", "3", "8", "--mask-type", "horizontal_2", "--batch", "4",
                "--seed", "0", "--out", str(tmp / "samples"))
        save_small(tmp / "samples" / "0_mix_3_8.png", IMG / "strip.png")
        save_small(tmp / "samples" / "summary.png", IMG / "summary.png")
        masks(tmp)
        gaf_trt("transport", "--mode", "cycle", "--classes", "3", "8", "--steps", "20",
                "--solver", "rk4", "--batch", "2", "--out", str(tmp / "cyc"))
        save_small(tmp / "cyc" / "cycle.png", IMG / "cycle.png")
        gaf_trt("bench", "--ckpt", "digits", "--backend", "torch", "--precision", "fp32", "bf16",
                "--batch", "4", "16", "--steps", "8", "--plot", str(tmp / "bench.png"))
        save_small(tmp / "bench.png", IMG / "bench.png", colors=128)
    shutil.rmtree(IMG / "masks" / "__pycache__", ignore_errors=True)


if __name__ == "__main__":
    main()
