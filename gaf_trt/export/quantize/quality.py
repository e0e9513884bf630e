"""The quantised engine's quality, measured before anything is written: each graph's outputs
against PyTorch FP32 on held-out trajectories, the velocity, and the final state of short
solver runs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from gaf_trt.export.quantize.config import QUALITY_ITEMS, QuantConfig
from gaf_trt.precision import Precision


def describe_quality(section: dict[str, Any]) -> str:
    """One line for the CLI: velocity error per graph and final-state error vs FP32."""
    q, b = section["quality"], section["bounds"]
    graphs = ", ".join(f"{g} {max(e['rel'] for e in v.values()):.2g}"
                       for g, v in q["graphs"].items())
    over = " (over the bound, kept by --accept-error)" if section["accepted_over_bound"] else ""
    return (f"{section['precision']} vs fp32 (relative error): velocity {q['velocity']:.2g} "
            f"(bound {b['velocity']:g}; {graphs}), final state {q['final_state']:.2g} "
            f"(bound {b['final_state']:g}){over}")



def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` in float64 (inf when not finite)."""
    a, b = a.double(), b.double()
    d = float((a - b).norm())
    n = float(b.norm())
    r = d / n if n > 0 else (0.0 if d == 0 else math.inf)
    return r if math.isfinite(r) else math.inf


def _spread(items: list, k: int = QUALITY_ITEMS) -> list:
    """``k`` items evenly spread over the list (the captured runs come one after another, so
    every solver and composition is represented)."""
    if len(items) <= k:
        return items
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)]


class _ErrorSum:
    """Relative error over many items: ``sqrt(Σ||a-b||² / Σ||b||²)`` (the set's error,
    ``rel``) and the worst single item's (``worst_item``)."""

    def __init__(self) -> None:
        self.num = self.den = self.worst = 0.0

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:
        d = float((a.double() - b.double()).norm()) ** 2
        n = float(b.double().norm()) ** 2
        self.num, self.den = self.num + d, self.den + n
        self.worst = max(self.worst, rel_err(a, b))

    @property
    def rel(self) -> float:
        r = math.sqrt(self.num / self.den) if self.den > 0 else math.inf
        return r if math.isfinite(r) else math.inf

    def to_dict(self) -> dict[str, float]:
        return {"rel": self.rel, "worst_item": self.worst}


def final_state_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Worst image's relative error of ``out [B,...]`` against ``ref``."""
    if not bool(torch.isfinite(out).all()):
        return math.inf
    d = (out.double() - ref.double()).flatten(1).norm(dim=1)
    return float((d / ref.double().flatten(1).norm(dim=1).clamp_min(1e-30)).max())


def open_staged(staging: Path, graphs: dict[str, dict[str, Any]], config, precision: Precision,
                mode: str):
    """An ORT engine over the graphs written so far (``mode``: split | fused)."""
    from gaf_trt.engine.graph_engine import FUSED, SPLIT
    from gaf_trt.engine.ort_backend import OrtFusedEngine, OrtSplitEngine

    man = {"graphs": graphs, "config": config.to_dict(), "precision": precision.value}
    names = list(SPLIT if mode == "split" else FUSED)
    cls = OrtFusedEngine if mode == "fused" else OrtSplitEngine
    engine = cls(staging, man, names, "cpu")
    engine._open_sessions({"fp8_note": False})  # no run of the user's: no note (one line)
    return engine


def measure_quality(model, specs: list, staging: Path, graphs: dict[str, dict[str, Any]],
                    precision: Precision, qcfg: QuantConfig) -> dict[str, Any]:
    """Errors of the staged quantised graphs against PyTorch FP32 on held-out trajectories
    (seed ``qcfg.seed + 1000``): per graph output, velocity (worst of ``v`` and split
    ``K - J``) and the final state of short euler runs."""
    from gaf_trt.export.calibration import capture

    held = capture(model, max(4, min(qcfg.samples, 12)), qcfg.steps, qcfg.seed + 1000)
    per_graph, velocity = _graph_errors(model, specs, staging, graphs, held, qcfg)
    final = _final_states(model, staging, graphs, held, precision, qcfg, per_graph, velocity)
    return {"graphs": per_graph, "velocity": max(velocity, default=math.inf),
            "final_state": max(final.values(), default=math.inf), "final_runs": final}


def _graph_errors(model, specs: list, staging: Path, graphs: dict[str, dict[str, Any]], held,
                  qcfg: QuantConfig) -> tuple[dict[str, Any], list[float]]:
    """Each output's error of the ``trunk`` and fused graphs against their PyTorch module on
    held-out items; and the fused graph's velocity error."""
    from gaf_trt.export.parity import cpu_session

    per_graph: dict[str, dict[str, dict[str, float]]] = {}
    velocity: list[float] = []
    for spec in specs:
        if spec.name not in ("trunk", "step_velocity", "step_anchors"):
            continue
        items = _spread(held.items_for(spec.input_names, qcfg.rows, model.config.input_size))
        session = cpu_session(staging / graphs[spec.name]["file"])
        errs = {name: _ErrorSum() for name in spec.output_names}
        for item in items:
            got = session.run(spec.output_names, {k: v.numpy() for k, v in item.items()})
            with torch.no_grad():
                want = spec.module(*[item[k] for k in spec.input_names])
            want = want if isinstance(want, tuple) else (want,)
            for name, g, w in zip(spec.output_names, got, want, strict=True):
                errs[name].add(torch.from_numpy(g), w)
        per_graph[spec.name] = {k: e.to_dict() for k, e in errs.items()}
        if spec.name == "step_velocity":
            velocity.append(errs["v"].rel)
    return per_graph, velocity


def _final_states(model, staging: Path, graphs: dict[str, dict[str, Any]], held,
                  precision: Precision, qcfg: QuantConfig, per_graph: dict[str, Any],
                  velocity: list[float]) -> dict[str, float]:
    """Final-state errors of short euler runs (pure and masked) of the staged engine in each
    mode against FP32; the split mode's ``K - J`` error is added to ``per_graph`` and
    ``velocity``."""
    from gaf_trt.compose import masks as mask_lib
    from gaf_trt.compose.composition import ComposedField, Composition
    from gaf_trt.compose.solvers import integrate

    cfg = model.config
    modes = [m for m, names in (("split", ("trunk", "j_head", "k_bank")),
                                ("fused", ("step_velocity", "step_anchors")))
             if all(n in graphs for n in names)]
    final: dict[str, float] = {}
    gen = torch.Generator().manual_seed(qcfg.seed + 2000)
    noise = torch.randn(4, *cfg.sample_shape, generator=gen)
    comps = {"pure": Composition.pure(0)}
    if cfg.num_classes >= 2:
        comps["masked"] = Composition.build(
            [0, 1], masks=mask_lib.build("horizontal_2", cfg.input_size, cfg.input_size))
    for mode in modes:
        engine = open_staged(staging, graphs, cfg, precision, mode)
        if mode == "split":
            err = _ErrorSum()
            for item in _spread(held.split_items(qcfg.rows)):
                with torch.no_grad():
                    j, k = engine(item["x"], item["t"], item["y"])
                    jr, kr = model(item["x"], item["t"], item["y"])
                err.add(k - j, kr - jr)
            per_graph["split_velocity"] = {"K-J": err.to_dict()}
            velocity.append(err.rel)
        for cname, comp in comps.items():
            with torch.no_grad():
                out = integrate(ComposedField(engine, comp), noise, steps=qcfg.steps,
                                solver="euler", t_eps=cfg.t_eps)
                ref = integrate(ComposedField(model, comp), noise, steps=qcfg.steps,
                                solver="euler", t_eps=cfg.t_eps)
            final[f"{mode} {cname} euler-{qcfg.steps}"] = final_state_err(out, ref)
    return final
