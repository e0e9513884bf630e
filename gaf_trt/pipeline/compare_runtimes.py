"""``gaf-trt info ENGINE_DIR --compare``: every runtime on one engine directory, the same
seeded inputs, one comparison through Polygraphy (:mod:`gaf_trt.export.compare`).

For each graph of the directory (split and fused; the VAE decoder has no PyTorch module in
the directory and is left out, named), each runtime asked for runs it through a Polygraphy
runner (``export.runners``): ``torch`` (the directory's PyTorch weights, fp32: the reference),
``ort`` (Polygraphy's ``OnnxrtRunner`` over our session), ``openvino`` (our OpenVINO backend)
and ``trt`` (Polygraphy's ``TrtRunner`` over our checked plans). Each runtime is compared
with the reference (torch, else the first that runs) against the precision's relative bound:
the parity bounds (fp32 1e-4, fp16 2e-2, bf16 6e-2), for int8 / fp8 the quantised export's
graph bound. A runtime that is not installed or cannot run the directory is named with the
reason, not compared.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gaf_trt.errors import ConfigError, GAFError
from gaf_trt.precision import Precision

log = logging.getLogger(__name__)

#: The runtimes ``info --compare`` knows, in the order they are compared.
RUNTIMES = ("torch", "ort", "openvino", "trt")


def parse_runtimes(text: str | None) -> tuple[str, ...]:
    """``"torch,ort"`` -> ``("torch", "ort")`` (None: all of :data:`RUNTIMES`); an unknown
    name or fewer than two raise one :class:`~gaf_trt.errors.ConfigError`."""
    if text is None:
        return RUNTIMES
    names = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    bad = [n for n in names if n not in RUNTIMES]
    if bad:
        raise ConfigError(f"--backends: unknown runtime {bad[0]!r}; valid: {', '.join(RUNTIMES)}")
    if len(names) < 2:
        raise ConfigError(f"--backends needs at least two runtimes to compare, got {text!r}; "
                          f"valid: {', '.join(RUNTIMES)}")
    return names


def compare_bound(precision: Precision) -> float:
    """The relative bound of a graph at ``precision`` against PyTorch FP32."""
    from gaf_trt.export.parity import PARITY_BOUNDS

    if precision in PARITY_BOUNDS:
        return PARITY_BOUNDS[precision]
    from gaf_trt.export.quantize.config import ERROR_BOUNDS

    return ERROR_BOUNDS[precision]["velocity"]


@dataclass
class RuntimeComparison:
    """The result: per graph x runtime pair the errors and verdict (``pairs``), the
    runtimes not run and why (``not_run``), graphs left out and why (``skipped``)."""

    folder: str
    precision: str
    bound: float
    seed: int
    pairs: list[Any] = field(default_factory=list)
    not_run: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.pairs) and all(p.passed for p in self.pairs)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.folder, "precision": self.precision, "bound": self.bound,
                "seed": self.seed, "ok": self.ok, "pairs": [p.to_dict() for p in self.pairs],
                "not_run": dict(self.not_run), "skipped": dict(self.skipped)}

    def lines(self) -> list[str]:
        """The table: one line per runtime not run, per graph left out, per pair, a verdict."""
        ran = sorted({p.runtime for p in self.pairs} | {p.reference for p in self.pairs})
        out = [f"compare     {self.folder} ({self.precision}, seed {self.seed}, bound "
               f"{self.bound:g} relative L2; ran: {', '.join(ran) or 'none'})"]
        out += [f"{name:<12}not run: {why}" for name, why in self.not_run.items()]
        out += [f"{name:<12}not compared: {why}" for name, why in self.skipped.items()]
        out += [p.line() for p in self.pairs]
        bad = [p for p in self.pairs if not p.passed]
        if not self.pairs:
            out.append("result      nothing compared: fewer than two runtimes ran")
        elif bad:
            out.append(f"result      FAIL: {len(bad)} of {len(self.pairs)} pair(s) over the bound")
        else:
            out.append(f"result      pass ({len(self.pairs)} pair(s))")
        return out


def compare_engine(folder: str | Path, runtimes: tuple[str, ...] = RUNTIMES, *,
                   seed: int = 0, ckpt: str | None = None) -> RuntimeComparison:
    """Verify ``folder`` (every file's sha256), open each runtime of ``runtimes`` on it and
    compare them graph by graph on the same seeded inputs (shapes: the parity sizes, the
    smallest and one larger within the graphs' bounds). ``ckpt``: the directory's source
    checkpoint (its sha256 must be the manifest's), the torch reference of a directory that
    holds no PyTorch weights (int8 / fp8)."""
    from gaf_trt.checks import int_in
    from gaf_trt.enginedir import describe, read_manifest
    from gaf_trt.export.compare import compare_runners, require_polygraphy, seeded_feeds
    from gaf_trt.pipeline.generation import MAX_SEED
    from gaf_trt.export.parity import parity_sizes

    int_in("--seed", seed, 0, MAX_SEED)
    require_polygraphy("gaf-trt info --compare")
    describe(str(folder), verify=True)
    man = read_manifest(folder)
    precision = Precision(man["precision"])
    res = RuntimeComparison(str(folder), precision.value, compare_bound(precision), seed)
    model, why = _reference_model(folder, man, ckpt)
    if "torch" in runtimes and why is not None:
        res.not_run["torch"] = why
    engines = {}
    for name in runtimes:
        if name != "torch":
            engines[name] = _open(name, folder, res.not_run)
    for spec in _graph_specs(model, man, res.skipped):
        runners = _runners(spec, engines, "torch" in runtimes and why is None)
        if len(runners) < 2:
            res.skipped.setdefault(spec.name, "fewer than two runtimes run it")
            continue
        feeds = seeded_feeds(spec, parity_sizes(spec), model.config.num_classes, seed)
        res.pairs += compare_runners(spec.name, runners, feeds, res.bound)
    return res


def _reference_model(folder: str | Path, man: dict[str, Any],
                     ckpt: str | None = None) -> tuple[Any, str | None]:
    """The PyTorch reference as an fp32 GAF and None: ``ckpt`` when given (checked against
    the manifest's source), else the directory's weights; without either a GAF of the
    directory's config (its graphs' I/O only) and why torch cannot run."""
    from gaf_trt.engine.loader import engine_weights
    from gaf_trt.model.checkpoint import load_model

    if ckpt is not None:
        return _source_model(ckpt, man), None
    try:
        path = engine_weights(folder, verify=False)
    except GAFError as err:
        from gaf_trt.model import GAF, GAFConfig

        why = str(err).split(";")[0] + " (give its source checkpoint with --ckpt)"
        return GAF(GAFConfig.from_dict(man["config"])).eval(), why
    return load_model(str(path), device="cpu").float().eval(), None


def _source_model(ckpt: str, man: dict[str, Any]) -> Any:
    """The directory's source checkpoint ``ckpt`` as an fp32 GAF, refused (one line) when its
    sha256 is not the one the manifest recorded."""
    from gaf_trt.errors import ConfigError
    from gaf_trt.io.files import file_sha256
    from gaf_trt.model.checkpoint import model_from_checkpoint, read_checkpoint, resolve_path

    path = resolve_path(ckpt)
    if not path.is_file():
        raise ConfigError(f"--ckpt: checkpoint not found: {ckpt!r}")
    source = man.get("source") or {}
    want = source.get("sha256")
    if want and file_sha256(path) != want:
        raise ConfigError(f"--ckpt {ckpt!r} is not the checkpoint this engine directory was "
                          f"exported from (sha256 {want[:12]}…, file {source.get('path')})")
    read = read_checkpoint(path, use_ema=source.get("weights") != "model")
    heads = int(man["config"].get("num_heads") or 0) or None
    return model_from_checkpoint(read, num_heads=heads, device="cpu").float().eval()


def _graph_specs(model: Any, man: dict[str, Any], skipped: dict[str, str]) -> list[Any]:
    """The graph specs (module, I/O, bounds) of the directory's split and fused graphs."""
    from gaf_trt.export.graphs import GRAPH_GROUPS, Limits

    prof = man.get("profiles") or {}
    lim = Limits(int((prof.get("B") or [1, 1, 4])[2]), int((prof.get("N") or [1, 1, 4])[2]))
    groups = {g.get("group") for g in man["graphs"].values()}
    specs = [s for group in ("split", "fused") if group in groups
             for s in GRAPH_GROUPS.get(group)(model, lim) if s.name in man["graphs"]]
    for name, g in man["graphs"].items():
        if g.get("group") not in ("split", "fused"):
            skipped[name] = "its PyTorch module (the VAE) is not in the engine directory"
    return specs


def _open(name: str, folder: str | Path, not_run: dict[str, str]) -> Any:
    """An opened engine of runtime ``name`` on ``folder`` (already verified), or None with
    the reason in ``not_run`` (not installed, no plans, cannot run this precision)."""
    from gaf_trt.engine import BACKENDS
    from gaf_trt.engine.loader import load_engine

    why = BACKENDS.get(name).available() if name in BACKENDS.names() else "not registered"
    if why is None and name == "trt":
        from gaf_trt.enginedir import read_manifest

        if not read_manifest(folder).get("plans"):
            why = "the directory has no TensorRT plans (exported with --onnx-only)"
    if why is None:
        options = {"verify": False, **({"fp8_note": False} if name == "ort" else {})}
        try:
            return load_engine(folder, backend=name,
                               device="cuda" if name == "trt" else "cpu", **options)
        except GAFError as err:
            why = f"cannot run this directory: {str(err).splitlines()[0][:200]}"
    if "not installed" in why and "pip install" not in why and name == "trt":
        why += " (pip install 'gaf-trt[tensorrt]')"
    not_run[name] = why
    log.info("info --compare: %s not run: %s", name, why)
    return None


def _runners(spec: Any, engines: dict[str, Any], with_torch: bool) -> list[Any]:
    """The Polygraphy runners of one graph: torch first (the reference), then each opened
    runtime that has the graph."""
    from gaf_trt.export.runners import EngineGraphRunner, TorchRunner, ort_runner, trt_runner

    runners = [TorchRunner(spec.module, spec.inputs, spec.output_names)] if with_torch else []
    for name, engine in engines.items():
        if engine is None or spec.name not in engine.graphs:
            continue
        if name == "ort":
            runners.append(ort_runner(engine.sessions[spec.name]))
        elif name == "trt":
            runners.append(trt_runner(engine.plans[spec.name]))
        else:
            runners.append(EngineGraphRunner(engine, spec.name, name))
    return runners
