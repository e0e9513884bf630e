"""``export_engine``: checkpoint -> engine directory (ONNX graphs, parity, manifest, plans).

Lifecycle: validate the options -> load the model -> export each graph to ONNX in a staging
folder -> reduce precision -> parity check against PyTorch on ONNX Runtime -> TensorRT plans
where TensorRT and a GPU exist -> hash every file -> manifest last -> commit (atomic: the
folder never holds a manifest that does not match its files).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gaf_trt.enginedir.files import hash_files, verify_files
from gaf_trt.enginedir.compat import trt_refusal
from gaf_trt.enginedir.manifest import read_manifest
from gaf_trt.enginedir.schema import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MAX_PROFILE_BATCH,
    MAX_PROFILE_CLASSES,
    REBUILD_HINT,
)
from gaf_trt.errors import ConfigError
from gaf_trt.export import parity as parity_lib
from gaf_trt.export.graphs import (
    GRAPH_GROUPS,
    GraphSpec,
    Limits,
    parse_groups,
    vae_spec,
)
from gaf_trt.export.onnx_export import (
    CONFIG_KEY,
    EXTERNAL_DATA_THRESHOLD,
    check_by_path,
    check_opset,
    export_onnx,
    save_model,
)
from gaf_trt.export.shared_weights import (
    SHARED_FILE,
    ParamIndex,
    share_graphs,
    untranspose,
)
from gaf_trt.io.files import OutputDir, file_sha256, write_json
from gaf_trt.precision import Precision

log = logging.getLogger(__name__)

#: Bounds of the dynamic axes in the ONNX graphs (the TensorRT profiles are tighter).
ONNX_LIMITS = Limits(max_batch=MAX_PROFILE_BATCH, max_classes=MAX_PROFILE_CLASSES)
WEIGHTS_FILE = SHARED_FILE  # the PyTorch weights and the graphs' shared weights

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ProfileSpec:
    """Batch ``B`` and class-count ``N`` ranges of the TensorRT profiles (``M = N·B``)."""

    min_batch: int = 1
    opt_batch: int = 4
    max_batch: int = 16
    max_classes: int = 4
    opt_classes: int | None = None  # default: min(2, max_classes)
    static_batch: int | None = None  # also build fixed-shape plans (CUDA-graph replay)

    def validate(self) -> None:
        if self.max_classes < 1:
            raise ConfigError(f"--max-classes must be >= 1, got {self.max_classes}")
        for flag, value, top in (("--max-classes", self.max_classes, ONNX_LIMITS.max_classes),
                                 ("--max-batch", self.max_batch, ONNX_LIMITS.max_batch),
                                 ("--static-batch", self.static_batch or 1,
                                  ONNX_LIMITS.max_batch)):
            if value > top:
                raise ConfigError(f"{flag} must be at most {top} (the graphs' bound), got "
                                  f"{value}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ConfigError("batch sizes must satisfy 1 <= --min-batch <= --opt-batch <= "
                              f"--max-batch, got {self.min_batch}, {self.opt_batch}, "
                              f"{self.max_batch}")
        if self.opt_classes is not None and not 1 <= self.opt_classes <= self.max_classes:
            raise ConfigError(f"opt classes {self.opt_classes} must be in 1..{self.max_classes}")
        if self.static_batch is not None and self.static_batch < 1:
            raise ConfigError(f"--static-batch must be >= 1, got {self.static_batch}")

    @property
    def n_opt(self) -> int:
        return self.opt_classes or min(2, self.max_classes)

    def ranges(self) -> dict[str, list[int]]:
        """``{"B": [min, opt, max], "N": [...], "M": [...]}``."""
        b = [self.min_batch, self.opt_batch, self.max_batch]
        n = [1, self.n_opt, self.max_classes]
        return {"B": b, "N": n, "M": [b[0] * n[0], b[1] * n[1], b[2] * n[2]]}

    def static_ranges(self) -> dict[str, list[int]] | None:
        if self.static_batch is None:
            return None
        b, n = self.static_batch, self.n_opt
        return {"B": [b] * 3, "N": [n] * 3, "M": [b * n] * 3}

    def to_dict(self) -> dict[str, Any]:
        return {**self.ranges(), "static": self.static_ranges()}


@dataclass(frozen=True)
class ExportConfig:
    """Arguments of one export (CLI ``gaf-trt export``)."""

    ckpt: str
    out: str
    precision: Precision = Precision.FP32
    graphs: tuple[str, ...] = ("split", "fused")
    opset: int = 18
    profile: ProfileSpec = field(default_factory=ProfileSpec)
    vae: str | None = None
    onnx_only: bool = False
    num_heads: int | None = None
    use_ema: bool = True
    trust_pickle: bool = False
    parity: bool = True
    external_threshold: int = EXTERNAL_DATA_THRESHOLD
    include_weights: bool = True
    trt_options: dict[str, Any] = field(default_factory=dict)
    quant: Any = None  # QuantConfig of int8 / fp8 exports (gaf_trt.export.quantize)

    @property
    def graph_precision(self) -> Precision:
        """Precision the graphs are exported at (quantised ones start from FP32)."""
        return Precision.FP32 if self.precision.quantized else self.precision

    def validate(self) -> None:
        parse_groups(self.graphs)
        if self.precision.quantized:
            from gaf_trt.export.quantize import QuantConfig, check_fp8_device

            (self.quant or QuantConfig()).validate()
            (self.quant or QuantConfig()).check_precision(self.precision)
            if self.precision is Precision.FP8 and not self.onnx_only:
                check_fp8_device()
        check_opset(self.opset)
        self.profile.validate()
        if "vae" in self.graphs and not self.vae:
            raise ConfigError("--graphs vae needs --vae DIR (a diffusers AutoencoderKL folder)")
        if self.external_threshold < 0:
            raise ConfigError("external_threshold must be >= 0")
        if self.parity:
            from gaf_trt.export.compare import require_polygraphy

            require_polygraphy("the export parity check (or give --no-parity)")
        from gaf_trt.export.tensorrt import check_trt_options

        check_trt_options(self.trt_options)


@dataclass
class ExportResult:
    out: Path
    manifest: dict[str, Any]
    parity: list[parity_lib.ParityResult]
    plans_built: list[str]
    note: str = ""


def _versions() -> dict[str, str]:
    import onnx

    from gaf_trt._version import __version__

    v = {"exporter": "torch.onnx.export(dynamo=True)", "torch": torch.__version__,
         "onnx": onnx.__version__, "gaf_trt": __version__}
    for mod in ("onnxscript", "onnxruntime", "onnxconverter_common"):
        try:
            v[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return v


def _specs(model, cfg: ExportConfig) -> list[GraphSpec]:
    specs: list[GraphSpec] = []
    for group in parse_groups(cfg.graphs):
        if group == "vae":
            from gaf_trt.model.vae import load_vae

            dec = load_vae(cfg.vae, scale=model.config.vae_scale)
            c = model.config
            latent_ch = getattr(getattr(dec.vae, "config", None), "latent_channels", None)
            if latent_ch is not None and int(latent_ch) != c.in_channels:
                raise ConfigError(f"the VAE in {cfg.vae} has {latent_ch} latent channels but "
                                  f"the model has {c.in_channels} input channels ({c.mode} "
                                  "model): --graphs vae is for latent models")
            specs.append(vae_spec(dec.vae.float().eval(), dec.scale,
                                  (c.in_channels, c.input_size, c.input_size),
                                  ONNX_LIMITS.max_batch))
        else:
            specs += GRAPH_GROUPS.get(group)(model, ONNX_LIMITS)
    return specs


def _write_graph(spec: GraphSpec, staging: Path, cfg: ExportConfig, model,
                 metadata: dict[str, str], index: ParamIndex | None) -> dict[str, Any]:
    """Export one graph at the requested precision; returns its manifest entry. With an
    ``index`` (the GAF graphs) transposed weights are put back as the parameters first, so
    that :func:`~gaf_trt.export.shared_weights.share_graphs` can store them once."""
    import onnx

    from gaf_trt.export.precision import reduce_precision

    exported = export_onnx(spec, staging, opset=cfg.opset, num_classes=model.config.num_classes,
                           metadata=metadata, external_threshold=cfg.external_threshold)
    report = None
    if cfg.graph_precision is not Precision.FP32 or index is not None:
        path = staging / exported.onnx_file
        proto = onnx.load(str(path))
        if index is not None:
            untranspose(proto, index)
        reduced, report = reduce_precision(proto, cfg.graph_precision)
        if cfg.graph_precision is Precision.FP32:
            report = None
        if exported.data_file:
            (staging / exported.data_file).unlink()
        data = save_model(reduced, path, cfg.external_threshold)
        check_by_path(path)
        exported = type(exported)(exported.name, exported.onnx_file, data, len(reduced.graph.node))
    return {"group": spec.group, "file": exported.onnx_file, "data_file": exported.data_file,
            "nodes": exported.nodes, "precision": cfg.precision.value,
            "inputs": [s.to_dict() for s in spec.inputs],
            "outputs": [s.to_dict() for s in spec.outputs],
            "reduced": report.to_dict() if report else None}


def export_engine(cfg: ExportConfig, progress: Progress | None = None) -> ExportResult:
    """Write the engine directory ``cfg.out``; raises before writing on bad options and
    with :class:`~gaf_trt.export.parity.ParityError` when a graph misses its bound."""
    from gaf_trt.model.checkpoint import model_from_checkpoint, read_checkpoint

    cfg.validate()
    qcfg = _quant_config(cfg)  # before any work: the INT8 scheme resolved on this machine
    say = progress or (lambda msg: log.info("%s", msg))
    ckpt = read_checkpoint(cfg.ckpt, use_ema=cfg.use_ema, trust_pickle=cfg.trust_pickle)
    model = model_from_checkpoint(ckpt, num_heads=cfg.num_heads).float().eval()
    specs = _specs(model, cfg)
    metadata = {CONFIG_KEY: model.config.to_json(), "gaf_trt.precision": cfg.precision.value,
                "gaf_trt.source_sha256": file_sha256(ckpt.path)}
    # quantised graphs get their own int8 / fp8 weights: only float graphs share theirs
    index = None if cfg.precision.quantized else ParamIndex.of(model)
    with OutputDir(cfg.out, record=MANIFEST) as od:
        graphs = {}
        for spec in specs:
            say(f"exporting {spec.name} (opset {cfg.opset}, {cfg.precision.value})")
            graphs[spec.name] = _write_graph(spec, od.staging, cfg, model, metadata,
                                             index if spec.group != "vae" else None)
        weights = (None if cfg.precision.quantized
                   else _store_weights_once(graphs, od.staging, model, cfg, say))
        results = _check_parity(specs, graphs, od.staging, cfg, model, say)
        quantization = None
        if qcfg is not None:  # int8 / fp8: the weights once, in the quantised weights file
            from gaf_trt.export.quantize import quantize_engine

            quantization = quantize_engine(model, specs, od.staging, graphs, cfg.precision,
                                           qcfg, cfg.external_threshold, say)
        man = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "precision": cfg.precision.value, "opset": cfg.opset, "exporter": _versions(),
            "config": model.config.to_dict(),
            "class_names": list(model.config.class_names) if model.config.class_names else None,
            "source": {"path": str(Path(ckpt.path).resolve()),
                       "sha256": metadata["gaf_trt.source_sha256"],
                       "weights": ckpt.source},
            "profiles": cfg.profile.to_dict(), "graphs": graphs, "plans": {},
            "weights": weights, "vae": {"source": cfg.vae} if cfg.vae else None,
        }
        if quantization is not None:
            man["quantization"] = quantization
        built, note = _maybe_build_plans(man, od.staging, cfg, say)
        _finish(man, od.staging)
        od.commit()
    return ExportResult(Path(cfg.out), man, results, built, note)


def _quant_config(cfg: ExportConfig):
    """The quantisation options of an int8 / fp8 export (None otherwise), the INT8 scheme
    resolved for this machine and for TensorRT when this export builds plans."""
    if not cfg.precision.quantized:
        return None
    from gaf_trt.engine.trt_runtime import unavailable
    from gaf_trt.export.quantize import QuantConfig
    from gaf_trt.export.quantize.config import resolved

    plans = not cfg.onnx_only and unavailable() is None
    return resolved(cfg.quant or QuantConfig(), cfg.precision, tensorrt=plans)


def _check_parity(specs: list[GraphSpec], graphs: dict[str, dict[str, Any]], staging: Path,
                  cfg: ExportConfig, model, say: Progress) -> list:
    """With ``cfg.parity``: each written graph against PyTorch on ONNX Runtime (its record
    gets the result); raises :class:`~gaf_trt.export.parity.ParityError` when one misses its
    bound. Returns the results."""
    results = []
    for spec in specs:
        if cfg.parity:
            say(f"parity check {spec.name} on ONNX Runtime")
            res = parity_lib.check_graph(spec, staging / graphs[spec.name]["file"],
                                         cfg.graph_precision, model.config.num_classes,
                                         parity_lib.parity_sizes(spec))
            graphs[spec.name]["parity"] = res.to_dict()
            results.append(res)
    parity_lib.require(results)
    return results


def _store_weights_once(graphs: dict[str, dict[str, Any]], folder: Path, model,
                        cfg: ExportConfig, say: Progress) -> str | None:
    """The GAF graphs' weights once, in ``model.safetensors`` (also the PyTorch weights);
    returns its name for the manifest's ``weights`` (None when nothing was written)."""
    from gaf_trt.model.checkpoint import CONFIG_METADATA_KEY, save_safetensors

    gaf = {n: g["file"] for n, g in graphs.items() if g["group"] != "vae"}
    meta = {CONFIG_METADATA_KEY: model.config.to_json(), "format": "gaf-trt",
            "gaf_trt.weights_of": cfg.precision.value}
    if not gaf:
        if not cfg.include_weights:
            return None
        save_safetensors(model, folder / WEIGHTS_FILE)
        return WEIGHTS_FILE
    say(f"storing the weights once in {WEIGHTS_FILE}")
    report = share_graphs(folder, gaf, model, meta)
    for name, rep in report.items():
        graphs[name]["data_file"] = WEIGHTS_FILE if rep["shared"] else None
    return WEIGHTS_FILE


def _maybe_build_plans(man: dict[str, Any], folder: Path, cfg: ExportConfig,
                       say: Progress) -> tuple[list[str], str]:
    from gaf_trt.engine.trt_runtime import unavailable
    from gaf_trt.export import tensorrt as trt_build

    if cfg.onnx_only:
        return [], "ONNX only (--onnx-only): build the plans later with " \
                   f"`gaf-trt export --from-onnx {cfg.out}`"
    why = unavailable()
    if why is not None:
        return [], (f"TensorRT plans not built ({why}): they need a GPU machine with TensorRT; "
                    f"run `gaf-trt export --from-onnx {cfg.out}` there")
    built = trt_build.build_all(man, folder, cfg.profile, cfg.trt_options, say)
    return built, f"built {len(built)} TensorRT plan(s)"


def _finish(man: dict[str, Any], folder: Path) -> None:
    """List and hash every file of the folder (the manifest excluded), then write it."""
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                   if p.is_file() and p.name != MANIFEST and not p.name.startswith("."))
    man["files"] = names
    man["sha256"] = hash_files(folder, names)
    write_json(folder / MANIFEST, man)


def build_from_onnx(folder: str | os.PathLike[str], profile: ProfileSpec | None = None,
                    trt_options: dict[str, Any] | None = None,
                    progress: Progress | None = None) -> ExportResult:
    """``gaf-trt export --from-onnx DIR``: (re)build the TensorRT plans of an engine directory
    on this machine, from its verified ONNX graphs; the folder is rewritten consistently."""
    from gaf_trt.engine.trt_runtime import unavailable
    from gaf_trt.export import tensorrt as trt_build

    trt_build.check_trt_options(trt_options or {})
    folder = Path(folder)
    man = read_manifest(folder)
    verify_files(folder, man)
    if man.get("precision") == Precision.FP8.value:
        from gaf_trt.export.quantize import check_fp8_device

        check_fp8_device()
    why_not = trt_refusal(man)
    if why_not is not None:
        raise ConfigError(f"cannot build TensorRT plans for {folder}: {why_not}")
    why = unavailable()
    if why is not None:
        raise ConfigError(f"cannot build TensorRT plans here: {why}; run this on a GPU machine "
                          "with TensorRT (pip install 'gaf-trt[tensorrt]')")
    if profile is None:
        p = man.get("profiles") or {}
        static = p.get("static")
        profile = ProfileSpec(*p["B"], max_classes=p["N"][2], opt_classes=p["N"][1],
                              static_batch=static["B"][0] if static else None) \
            if "B" in p else ProfileSpec()
    profile.validate()
    say = progress or (lambda msg: log.info("%s", msg))
    with OutputDir(folder, record=MANIFEST, what="engine directory") as od:
        old_plans = {rec["file"] for rec in (man.get("plans") or {}).values()}
        # ONNX loaders refuse external data with several hard links ("hardlink attack"):
        # the weights the graphs point into are copied, the rest linked.
        external = {g.get("data_file") for g in man["graphs"].values()} - {None}
        for name in man["files"]:
            if name in old_plans:
                continue
            dst = od.staging / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if name in external:
                shutil.copy2(folder / name, dst)
                continue
            try:
                os.link(folder / name, dst)  # same inode: no copy
            except OSError:
                shutil.copy2(folder / name, dst)
        man["plans"] = {}
        man["profiles"] = profile.to_dict()
        built = trt_build.build_all(man, od.staging, profile, trt_options or {}, say)
        _finish(man, od.staging)
        od.commit()
    return ExportResult(folder, man, [], built, f"built {len(built)} TensorRT plan(s)")


__all__ = ["ExportConfig", "ExportResult", "ProfileSpec", "export_engine", "build_from_onnx",
           "REBUILD_HINT", "WEIGHTS_FILE"]
