"""A Triton model repository from an engine directory (``gaf-trt triton-repo``).

The solver needs the anchors ``(J, K)`` of rows ``(x [M,C,S,S], t [M], y [M])`` -- the
:class:`~gaf_trt.engine.base.AnchorNetwork` contract -- which the engine directory's split
graphs give together: ``trunk (x, t, y) -> features``, then ``j_head (features, x, t) -> J``
and ``k_bank (features, x, t, y) -> K``. (The fused step graphs take whole compositions, not
rows with their own ``t`` and class, so step-level batching cannot use them.) The
repository holds::

    REPO/gaf_repository.json          the record: writer, engine, models, files
    REPO/gaf/config.pbtxt             Python backend: the solver, gaf_trt.serve.bls
    REPO/gaf/1/model.py               shim importing gaf_trt.serve.bls
    REPO/gaf/1/gaf_model.json         model config, network model name, limits
    REPO/gaf_stream/...               the same solver, decoupled: live previews, then the result
    REPO/gaf_anchors/config.pbtxt     ensemble (x, t, y) -> (J, K): trunk, then both heads
    REPO/gaf_anchors/1/               (ensembles have an empty version folder)
    REPO/gaf_trunk/config.pbtxt       one network model per graph: onnxruntime_onnx with
    REPO/gaf_trunk/1/model.onnx       model.onnx + its external-data weights beside it,
    REPO/gaf_trunk/1/model.safetensors  tensorrt_plan with model.plan, or a Python-backend
    REPO/gaf_j_head/..., REPO/gaf_k_bank/...  model running model.onnx with ONNX Runtime

Every ``config.pbtxt`` is parsed with Triton's own schema (``model_config_pb2``) before
anything is written; the repository is staged beside ``REPO`` and renamed into place.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gaf_trt.checks import choice, int_in, positive_int
from gaf_trt.errors import ConfigError
from gaf_trt.io.files import OutputDir, check_output_dir, write_json
from gaf_trt.records import TRITON_REPO
from gaf_trt.serve.network_models import (
    GRAPH_PREFIX,
    MODEL_PY,
    MODEL_RECORD,
    NETWORK_BACKENDS,
    SPLIT_GRAPHS,
    ModelFolder,
    check_split,
    choose_backend,
    network_models,
    plan_for,
    row_capacity,
)
from gaf_trt.serve.pbtxt import (
    TRITON_TYPES,
    Enum,
    tensor_config,
    to_pbtxt,
    validate_pbtxt,
)
from gaf_trt.serve.stream import STREAM_MODEL, STREAM_OUTPUTS
from gaf_trt.serve.wire import INPUTS, OUTPUTS

log = logging.getLogger(__name__)

SOLVER_MODEL = "gaf"
ANCHORS_MODEL = "gaf_anchors"
RECORD = TRITON_REPO.record
FORMAT = "gaf-trt-triton-repository"
COMMAND = TRITON_REPO.command
VERSION = "1"
ANCHOR_OUTPUTS = ("J", "K")
DEVICES = ("auto", "cpu", "cuda")

SOLVER_SHIM = '''"""Triton Python-backend model ``gaf``: the GAF solver (written by gaf-trt triton-repo).
gaf_trt must be installed in the Python that runs Triton's Python-backend stub."""

from gaf_trt.serve.bls import SolverModel as TritonPythonModel  # noqa: F401
'''
STREAM_SHIM = '''"""Triton Python-backend model ``gaf_stream`` (decoupled): the GAF solver streaming live
previews, then the result (written by gaf-trt triton-repo). gaf_trt must be installed in the
Python that runs Triton's Python-backend stub."""

from gaf_trt.serve.bls_stream import StreamModel as TritonPythonModel  # noqa: F401
'''


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class RepoOptions:
    """What ``gaf-trt triton-repo`` writes: network backend and device, solver-model
    instances, requests per execute, queue bound and request limits."""

    network_backend: str = "auto"
    device: str = "auto"  # instance kind of the network models: auto = cuda with plans
    instances: int = 1  # solver-model instances (one Python process each)
    network_instances: int = 1
    max_batch: int = 8  # requests (rows of the gaf batch) per execute; they share calls
    max_queue: int = 64
    queue_delay_us: int = 0  # network models' dynamic batcher: wait for more calls
    max_steps: int = 1000
    max_images: int = 16
    max_classes: int = 8
    max_rows: int | None = None  # default: the engine profile's largest M
    min_rows: int = 16
    respond_later: bool = True  # answer through response senders (Triton >= 24.06)

    def validate(self) -> RepoOptions:
        choice("--network-backend", self.network_backend, ["auto", *NETWORK_BACKENDS.names()])
        choice("--device", self.device, DEVICES)
        for name, value, hi in (("--instances", self.instances, 64),
                                ("--network-instances", self.network_instances, 64),
                                ("--max-batch", self.max_batch, 1024),
                                ("--max-queue", self.max_queue, 100_000),
                                ("--max-steps", self.max_steps, 100_000),
                                ("--max-images", self.max_images, 4096),
                                ("--max-classes", self.max_classes, 256),
                                ("--min-rows", self.min_rows, 4096)):
            positive_int(name, value, hi)
        if self.max_rows is not None:
            positive_int("--max-rows", self.max_rows, 1 << 16)
        int_in("--queue-delay-us", self.queue_delay_us, 0, 10_000_000)
        return self


# --------------------------------------------------------------------------- the plan


@dataclass
class RepositoryPlan:
    """Everything the repository will hold, checked; :func:`write_repository` writes it."""

    engine: Path
    manifest: dict[str, Any]
    backend: str
    kind: str  # cpu | gpu (network models)
    models: list[ModelFolder]
    record: dict[str, Any]

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.models]


def _solver_inputs() -> list[dict[str, Any]]:
    """The ``gaf`` model's inputs: those of ``gaf-trt serve`` (:data:`gaf_trt.serve.wire.INPUTS`)
    but ``mask_image``, which the solver model does not take; ``classes`` is required."""
    return [{"name": t.name, "data_type": Enum(TRITON_TYPES[t.dtype]), "dims": list(t.shape),
             **({"optional": True} if t.name != "classes" else {})}
            for t in INPUTS if t.name != "mask_image"]


def _solver_outputs(outputs: tuple = OUTPUTS) -> list[dict[str, Any]]:
    return [{"name": t.name, "data_type": Enum(TRITON_TYPES[t.dtype]), "dims": list(t.shape)}
            for t in outputs]


def stream_config(opts: RepoOptions) -> dict[str, Any]:
    """``gaf_stream``: ``gaf``'s inputs, one generation per request, decoupled (a response
    per preview, then the result); its own service bounds the streams in flight."""
    return {
        "name": STREAM_MODEL, "backend": "python", "max_batch_size": 1,
        "input": _solver_inputs(),
        "output": _solver_outputs(STREAM_OUTPUTS),
        "model_transaction_policy": {"decoupled": True},
        "dynamic_batching": {},
        "instance_group": [{"count": opts.instances, "kind": Enum("KIND_CPU")}],
    }


def _solver_batching(opts: RepoOptions) -> dict[str, Any]:
    """The solver model's dynamic batching. Answering later (the default), ``execute``
    returns at once and the model's own service refuses past ``--max-queue`` requests in
    flight, so Triton's queue stays unbounded: a bounded one (``max_queue_size``) turns off
    Triton's prefetching, and its batcher then waits up to 500 ms for an instance to be back
    before it hands over a queued request (triton core: ``PriorityQueue``,
    ``PayloadSlotAvailable``, ``WaitForPayloadSlotAvailable``). With ``--blocking-execute``
    requests wait in Triton's queue, so its bound is what refuses them at once."""
    if opts.respond_later:
        return {}
    return {"default_queue_policy": {"max_queue_size": opts.max_queue}}


def solver_config(opts: RepoOptions) -> dict[str, Any]:
    return {
        "name": SOLVER_MODEL, "backend": "python", "max_batch_size": opts.max_batch,
        "input": _solver_inputs(),
        "output": _solver_outputs(),
        "dynamic_batching": _solver_batching(opts),
        "instance_group": [{"count": opts.instances, "kind": Enum("KIND_CPU")}],
    }


def anchors_config(man: dict[str, Any], batch: int) -> dict[str, Any]:
    """The ensemble ``(x, t, y) -> (J, K)``: trunk, then the J and K heads."""
    trunk = man["graphs"]["trunk"]
    ins = [tensor_config(s, "trunk") for s in trunk["inputs"]]
    for spec in ins:
        spec.pop("reshape", None)  # the ensemble passes [M, 1]; the graph models reshape
    outs = [tensor_config(next(o for o in man["graphs"][g]["outputs"] if o["name"] == name), g)
            for g, name in (("j_head", "J"), ("k_bank", "K"))]
    for spec in outs:
        spec.pop("reshape", None)
    steps = []
    for graph in SPLIT_GRAPHS:
        rec = man["graphs"][graph]
        steps.append({"model_name": GRAPH_PREFIX + graph, "model_version": -1,
                      "input_map": [{"key": s["name"], "value": s["name"]} for s in rec["inputs"]],
                      "output_map": [{"key": s["name"], "value": s["name"]}
                                     for s in rec["outputs"]]})
    return {"name": ANCHORS_MODEL, "platform": "ensemble", "max_batch_size": batch,
            "input": ins, "output": outs, "ensemble_scheduling": {"step": steps}}



def _solver_model(man: dict[str, Any], opts: RepoOptions, rows: int) -> ModelFolder:
    """The ``gaf`` model: its config, shim and record (model config, network, limits)."""
    from gaf_trt.model.config import GAFConfig

    limits = {"max_steps": opts.max_steps, "max_batch": opts.max_images,
              "max_classes": opts.max_classes, "max_rows": rows}
    record = {"format": "gaf-trt-triton-model",
              "config": GAFConfig.from_dict(man["config"]).to_dict(),
              "network_model": ANCHORS_MODEL, "network_outputs": list(ANCHOR_OUTPUTS),
              "limits": limits, "min_rows": min(opts.min_rows, rows),
              "max_queue": opts.max_queue if opts.respond_later else opts.max_batch,
              "respond_later": opts.respond_later}
    solver = ModelFolder(SOLVER_MODEL, solver_config(opts))
    solver.texts[MODEL_PY] = SOLVER_SHIM
    solver.texts[MODEL_RECORD] = json.dumps(record, indent=2) + "\n"
    return solver


def _stream_model(solver: ModelFolder, opts: RepoOptions) -> ModelFolder:
    """The ``gaf_stream`` model: the solver's record (its own service, bounded by
    ``--max-queue`` streams in flight) and the streaming shim."""
    record = {**json.loads(solver.texts[MODEL_RECORD]), "max_queue": opts.max_queue}
    stream = ModelFolder(STREAM_MODEL, stream_config(opts))
    stream.texts[MODEL_PY] = STREAM_SHIM
    stream.texts[MODEL_RECORD] = json.dumps(record, indent=2) + "\n"
    return stream


def plan_repository(engine_dir: str | Path, options: RepoOptions) -> RepositoryPlan:
    """Read and verify the engine directory (manifest, sha256 of every file used) and build
    every model config, each validated against Triton's schema."""
    from gaf_trt.enginedir import files_of, read_manifest, verify_files

    opts = options.validate()
    engine = Path(engine_dir)
    man = read_manifest(engine)
    check_split(engine, man)
    backend = choose_backend(man, opts.network_backend)
    kind = ("gpu" if backend == "tensorrt" else "cpu") if opts.device == "auto" else \
        ("gpu" if opts.device == "cuda" else "cpu")
    capacity = row_capacity(man)
    max_rows = capacity if opts.max_rows is None else opts.max_rows
    if max_rows > capacity:
        raise ConfigError(f"--max-rows {max_rows} exceeds the engine's profile: its graphs take "
                          f"at most {capacity} rows per call (export --max-batch/--max-classes)")
    needed = files_of(man, graphs=list(SPLIT_GRAPHS))
    if backend == "tensorrt":
        needed += [p["file"] for p in (plan_for(man, g) for g in SPLIT_GRAPHS) if p]
    verify_files(engine, man, needed)  # sha256 of every file used, before reading any
    network = network_models(engine, man, backend, kind, max_rows,
                             queue_delay_us=opts.queue_delay_us,
                             instances=opts.network_instances)
    rows = network[0].config["max_batch_size"]
    solver = _solver_model(man, opts, rows)
    models = [solver, ModelFolder(ANCHORS_MODEL, anchors_config(man, rows)), *network,
              _stream_model(solver, opts)]
    for m in models:
        validate_pbtxt(to_pbtxt(m.config), m.name)
    record = {"writer": "gaf-trt", "command": COMMAND, "format": FORMAT, "format_version": 1,
              "engine": {"path": str(engine.resolve()), "precision": man.get("precision"),
                         "created": man.get("created"), "source": man.get("source")},
              "network_backend": backend, "device": kind, "options": asdict(opts),
              "models": [m.name for m in models],
              "limits": json.loads(solver.texts[MODEL_RECORD])["limits"]}
    return RepositoryPlan(engine, man, backend, kind, models, record)


# --------------------------------------------------------------------------- writing


def _place(src: Path, dst: Path) -> None:
    """Hard-link ``src`` at ``dst`` (same filesystem), else copy it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def check_external_data(version_dir: Path) -> None:
    """Every external-data location of ``version_dir/model.onnx`` resolves to a file inside
    ``version_dir`` (what ONNX Runtime requires)."""
    from gaf_trt.enginedir import external_data_files

    root = version_dir.resolve()
    for loc in external_data_files(version_dir, "model.onnx"):
        p = (root / loc).resolve()
        if root not in p.parents or not p.is_file():
            raise ConfigError(f"{version_dir}/model.onnx reads external data {loc!r}, which "
                              "is not a file of its version folder")


def _write_model(root: Path, model: ModelFolder) -> list[str]:
    folder = root / model.name
    version = folder / VERSION
    version.mkdir(parents=True)
    text = to_pbtxt(model.config)
    validate_pbtxt(text, model.name)
    (folder / "config.pbtxt").write_text(text)
    for target, src in model.files.items():
        _place(src, version / target)
    for target, body in model.texts.items():
        (version / target).write_text(body)
    if "model.onnx" in model.files:
        check_external_data(version)
    return [str(p.relative_to(root)) for p in sorted(folder.rglob("*")) if p.is_file()]


def check_repo_target(repo: str | Path) -> Path:
    """``REPO`` may be new, empty, or a previous triton-repo output; anything else (another
    command's output, unrelated files) is refused (checked again under the lock when
    written). Returns ``repo``."""
    return check_output_dir(repo, "REPO", command=COMMAND, replace=True)


def write_repository(plan: RepositoryPlan, repo: str | Path) -> Path:
    """Write the repository into a staging folder beside ``repo`` and rename it into place
    (:class:`~gaf_trt.io.files.OutputDir` with ``replace=True``: a previous triton-repo
    output there is replaced as a whole). Returns ``repo``."""
    with OutputDir(repo, record=RECORD, what="REPO", command=COMMAND, replace=True) as od:
        files: list[str] = []
        for model in plan.models:
            files += _write_model(od.staging, model)
        write_json(od.staging / RECORD, {**plan.record, "files": files})
        od.commit()
    return Path(repo)


def build_repository(engine_dir: str | Path, repo: str | Path,
                     options: RepoOptions | None = None) -> RepositoryPlan:
    """``gaf-trt triton-repo``: check ``repo``, plan from ``engine_dir``, write."""
    check_repo_target(repo)
    plan = plan_repository(engine_dir, options or RepoOptions())
    write_repository(plan, repo)
    return plan
