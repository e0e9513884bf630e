"""``gaf-trt evaluate --compare A B``: generate the same job from two networks (checkpoints,
engine directories, backends or precisions) on the same noise, and report the per-sample
error distribution and each side's metrics."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gaf_trt.engine.base import BACKENDS
from gaf_trt.errors import ConfigError
from gaf_trt.generate import GenerateConfig, run_generate
from gaf_trt.generate.store import FINAL_NPZ
from gaf_trt.precision import Precision

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Side:
    """One side of a comparison: ``ARTIFACT[:BACKEND[:PRECISION]]``."""

    artifact: str
    backend: str | None = None
    precision: Precision | None = None

    @classmethod
    def parse(cls, spec: str) -> Side:
        parts = spec.split(":")
        if not parts[0] or len(parts) > 3:
            raise ConfigError(f"--compare side {spec!r}: give ARTIFACT[:BACKEND[:PRECISION]], "
                              "e.g. digits:torch:bf16")
        backend = parts[1] if len(parts) > 1 and parts[1] else None
        if backend is not None:
            BACKENDS.get(backend)
        precision = None
        if len(parts) > 2 and parts[2]:
            try:
                precision = Precision(parts[2].lower())
            except ValueError:
                raise ConfigError(f"unknown precision {parts[2]!r}; valid: "
                                  f"{', '.join(p.value for p in Precision)}") from None
        return cls(parts[0], backend, precision)

    def config(self, base: GenerateConfig, out: Path) -> GenerateConfig:
        model = dataclasses.replace(base.model, artifact=self.artifact,
                                    backend=self.backend or base.model.backend,
                                    precision=self.precision or base.model.precision)
        return dataclasses.replace(base, out=str(out), format="npz", model=model)


def error_distribution(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Per-sample mean absolute error in grey levels (0..255) of ``[N, H, W, 3]`` uint8
    images: mean, percentiles, max; the largest single-pixel error; identical share."""
    if a.shape != b.shape:
        raise ConfigError(f"the two sides produced different shapes {a.shape} and {b.shape}")
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    per = diff.reshape(len(diff), -1).mean(1)
    out = {"mae_mean": float(per.mean()), "mae_max": float(per.max()),
           "pixel_max": float(diff.max()), "identical_share": float((per == 0).mean())}
    out.update({f"mae_p{q}": float(np.percentile(per, q)) for q in PERCENTILES})
    return out


def run_compare(a: str, b: str, base: GenerateConfig, evaluate_cfg: Any | None) -> dict[str, Any]:
    """Generate both sides into ``base.out``/a and /b (resumable), compare, evaluate each."""
    from gaf_trt.evaluate.run import chosen_metrics, run_evaluate
    from gaf_trt.generate.render import prepare_job

    sides = {"a": Side.parse(a), "b": Side.parse(b)}
    if evaluate_cfg is not None:
        chosen_metrics(evaluate_cfg)  # validate before generating anything
    for key, side in sides.items():  # both sides load (backend, precision) before any work
        prepare_job(side.config(base, Path(base.out) / key))
    arrays = {}
    for key, side in sides.items():
        out = Path(base.out) / key
        run_generate(side.config(base, out))
        with np.load(out / FINAL_NPZ) as z:
            arrays[key] = z["arr_0"]
    report: dict[str, Any] = {"a": a, "b": b, "samples": len(arrays["a"]),
                              "error": error_distribution(arrays["a"], arrays["b"])}
    if evaluate_cfg is not None:
        for key in sides:
            cfg = dataclasses.replace(evaluate_cfg, dataset=str(Path(base.out) / key))
            report[f"metrics_{key}"] = run_evaluate(cfg)["metrics"]
    return report


def format_compare(report: dict[str, Any]) -> str:
    e = report["error"]
    lines = [f"A = {report['a']}  B = {report['b']}  ({report['samples']} samples, same noise)",
             "  per-sample mean |A-B| (grey levels): "
             + "  ".join(f"{k[4:]} {v:.3g}" for k, v in e.items() if k.startswith("mae_"))
             + f"  pixel max {e['pixel_max']:.0f}  identical {100 * e['identical_share']:.1f}%"]
    for key in ("a", "b"):
        if f"metrics_{key}" in report:
            lines.append(f"  {key.upper()}: " + "  ".join(
                f"{k} {v:.4g}" for k, v in report[f"metrics_{key}"].items()
                if not k.startswith("accuracy_")))
    return "\n".join(lines)
