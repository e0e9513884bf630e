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
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gaf_trt.errors import ConfigError
from gaf_trt.registry import Registry

log = logging.getLogger(__name__)

SOLVER_MODEL = "gaf"
ANCHORS_MODEL = "gaf_anchors"
GRAPH_PREFIX = "gaf_"
SPLIT_GRAPHS = ("trunk", "j_head", "k_bank")
RECORD = "gaf_repository.json"
MODEL_RECORD = "gaf_model.json"
GRAPH_RECORD = "graph.json"  # Python-backend network models: the graph's I/O record
FORMAT = "gaf-trt-triton-repository"
COMMAND = "triton-repo"
VERSION = "1"
ANCHOR_OUTPUTS = ("J", "K")
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16",
                "int64": "TYPE_INT64", "int32": "TYPE_INT32", "int8": "TYPE_INT8",
                "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}
DEVICES = ("auto", "cpu", "cuda")

SOLVER_SHIM = '''"""Triton Python-backend model ``gaf``: the GAF solver (written by gaf-trt triton-repo).
gaf_trt must be installed in the Python that runs Triton's Python-backend stub."""

from gaf_trt.serve.bls import SolverModel as TritonPythonModel  # noqa: F401
'''
GRAPH_SHIM = '''"""Triton Python-backend model: one exported graph run with ONNX Runtime (written by
gaf-trt triton-repo). gaf_trt must be installed in the Python that runs the stub."""

from gaf_trt.serve.bls import GraphModel as TritonPythonModel  # noqa: F401
'''


# --------------------------------------------------------------------------- pbtxt


class Enum(str):
    """An enum value of a model config: written bare (``TYPE_FP32``), not quoted."""


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a protobuf text string: JSON escapes are valid there


def to_pbtxt(message: dict[str, Any], indent: int = 0) -> str:
    """Protobuf text format of a message given as a dict: nested dicts are messages, a list
    of dicts a repeated message, a list of scalars a repeated scalar, :class:`Enum` values
    are written bare."""
    pad = "  " * indent
    lines: list[str] = []
    for key, value in message.items():
        if isinstance(value, list) and not any(isinstance(v, dict) for v in value):
            lines.append(f"{pad}{key}: [{', '.join(_scalar(v) for v in value)}]")
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                body = to_pbtxt(item, indent + 1)
                lines.append(f"{pad}{key} {{\n{body}{pad}}}" if body else f"{pad}{key} {{\n{pad}}}")
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
    return "".join(line + "\n" for line in lines)


def validate_pbtxt(text: str, model: str) -> Any:
    """Parse ``text`` as Triton's ``ModelConfig`` (``tritonclient.grpc.model_config_pb2``):
    misspelled fields and enum values are refused. Returns the parsed message."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as err:
        raise ConfigError(f"checking Triton model configs needs tritonclient[grpc] ({err}); "
                          "pip install 'gaf-trt[serve]'") from None
    try:
        parsed = text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as err:
        raise ConfigError(f"config.pbtxt of model {model!r} does not follow Triton's model "
                          f"config schema: {err}") from None
    if parsed.name != model:
        raise ConfigError(f"config.pbtxt of model {model!r} names model {parsed.name!r}")
    return parsed


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
        from gaf_trt.serve.scheduler import check_positive

        if self.network_backend != "auto" and self.network_backend not in NETWORK_BACKENDS:
            raise ConfigError(f"unknown --network-backend {self.network_backend!r}; valid: auto, "
                              f"{', '.join(NETWORK_BACKENDS.names())}")
        if self.device not in DEVICES:
            raise ConfigError(f"unknown --device {self.device!r}; valid: {', '.join(DEVICES)}")
        for name, value, hi in (("--instances", self.instances, 64),
                                ("--network-instances", self.network_instances, 64),
                                ("--max-batch", self.max_batch, 1024),
                                ("--max-queue", self.max_queue, 100_000),
                                ("--max-steps", self.max_steps, 100_000),
                                ("--max-images", self.max_images, 4096),
                                ("--max-classes", self.max_classes, 256),
                                ("--min-rows", self.min_rows, 4096)):
            check_positive(name, value, hi)
        if self.max_rows is not None:
            check_positive("--max-rows", self.max_rows, 1 << 16)
        if isinstance(self.queue_delay_us, bool) or not isinstance(self.queue_delay_us, int) \
                or not 0 <= self.queue_delay_us <= 10_000_000:
            raise ConfigError(f"--queue-delay-us must be an integer in 0..10000000, got "
                              f"{self.queue_delay_us!r}")
        return self


# --------------------------------------------------------------------------- network models


@dataclass
class ModelFolder:
    """One network model of the repository: its config and the files of its version folder
    (``target name -> source path``)."""

    name: str
    config: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NetworkBackend:
    """How a graph becomes a Triton model: ``make(engine, man, graph, batch, kind)``."""

    name: str
    description: str
    make: Callable[[Path, dict[str, Any], str, int, str], ModelFolder]


NETWORK_BACKENDS: Registry[NetworkBackend] = Registry("network backend")


def _tensor(spec: dict[str, Any], where: str) -> dict[str, Any]:
    """A config input/output for a graph tensor whose first axis is the batch (rows)."""
    shape = spec["shape"]
    if not shape or not isinstance(shape[0], str) or any(isinstance(d, str) for d in shape[1:]):
        raise ConfigError(f"{where}: tensor {spec['name']} has shape {shape}; a network model "
                          "needs a dynamic first (row) axis and fixed other axes")
    if spec["dtype"] not in TRITON_TYPES:
        raise ConfigError(f"{where}: tensor {spec['name']} has dtype {spec['dtype']}, which "
                          f"Triton has no type for; valid: {', '.join(TRITON_TYPES)}")
    out: dict[str, Any] = {"name": spec["name"], "data_type": Enum(TRITON_TYPES[spec["dtype"]])}
    if len(shape) == 1:  # [M]: Triton needs a non-empty shape; the graph sees [M]
        out["dims"] = [1]
        out["reshape"] = {"shape": []}
    else:
        out["dims"] = [int(d) for d in shape[1:]]
    return out


def _graph_config(name: str, record: dict[str, Any], batch: int, kind: str,
                  head: dict[str, Any]) -> dict[str, Any]:
    where = f"graph {record['file']}"
    return {"name": name, **head, "max_batch_size": batch,
            "input": [_tensor(s, where) for s in record["inputs"]],
            "output": [_tensor(s, where) for s in record["outputs"]],
            "dynamic_batching": {},
            "instance_group": [{"count": 1, "kind": Enum(f"KIND_{kind.upper()}")}]}


def onnx_files(engine: Path, man: dict[str, Any], graph: str) -> dict[str, Path]:
    """``model.onnx`` and the external-data files it reads, as version-folder names ->
    engine files. The graph records each location relative to its own folder (ONNX
    external data); the same relative path inside the version folder keeps it valid there."""
    from gaf_trt.enginedir import external_data_files

    record = man["graphs"][graph]
    graph_dir = Path(record["file"]).parent
    files = {"model.onnx": engine / record["file"]}
    for loc in external_data_files(engine, record["file"]):
        if loc in files or loc in ("model.py", MODEL_RECORD, GRAPH_RECORD):
            raise ConfigError(f"graph {record['file']} keeps its weights in {loc!r}, a name "
                              "the model folder needs for itself; re-export the engine")
        files[loc] = engine / graph_dir / loc
    return files


def _onnxruntime(engine: Path, man: dict[str, Any], graph: str, batch: int,
                 kind: str) -> ModelFolder:
    name = GRAPH_PREFIX + graph
    head = {"platform": "onnxruntime_onnx", "default_model_filename": "model.onnx"}
    return ModelFolder(name, _graph_config(name, man["graphs"][graph], batch, kind, head),
                      onnx_files(engine, man, graph))


def _python_graph(engine: Path, man: dict[str, Any], graph: str, batch: int,
                  kind: str) -> ModelFolder:
    name = GRAPH_PREFIX + graph
    model = ModelFolder(name, _graph_config(name, man["graphs"][graph], batch, kind,
                                           {"backend": "python"}),
                       onnx_files(engine, man, graph))
    model.texts["model.py"] = GRAPH_SHIM
    record = man["graphs"][graph]
    model.texts[GRAPH_RECORD] = json.dumps(
        {"graph": graph, "file": "model.onnx", "inputs": record["inputs"],
         "outputs": record["outputs"], "precision": man.get("precision")}, indent=2) + "\n"
    return model


def plan_for(man: dict[str, Any], graph: str) -> dict[str, Any] | None:
    """The dynamic-shape TensorRT plan record of ``graph`` (None when there is none)."""
    for rec in (man.get("plans") or {}).values():
        if rec.get("graph") == graph and not rec.get("static"):
            return rec
    return None


def _tensorrt(engine: Path, man: dict[str, Any], graph: str, batch: int,
              kind: str) -> ModelFolder:
    plan = plan_for(man, graph)
    if plan is None:
        raise ConfigError(f"engine directory {engine} has no TensorRT plan for graph {graph}; "
                          f"build them with `gaf-trt export --from-onnx {engine}` on the GPU "
                          "machine, or use --network-backend onnxruntime")
    if plan.get("weights_stripped"):
        raise ConfigError(f"the plan of graph {graph} in {engine} is weight-stripped (export "
                          "--strip-plan); Triton cannot refit it: rebuild the plans without "
                          "--strip-plan, or use --network-backend onnxruntime")
    if kind != "gpu":
        raise ConfigError("TensorRT plans run on the GPU; --device cpu needs "
                          "--network-backend onnxruntime or python")
    plan_rows = min(int(s[2][0]) for s in plan["shapes"].values())
    batch = min(batch, plan_rows)
    name = GRAPH_PREFIX + graph
    head = {"platform": "tensorrt_plan", "default_model_filename": "model.plan"}
    return ModelFolder(name, _graph_config(name, man["graphs"][graph], batch, kind, head),
                      {"model.plan": engine / plan["file"]})


NETWORK_BACKENDS.add("onnxruntime", NetworkBackend(
    "onnxruntime", "Triton's onnxruntime backend runs the ONNX graphs", _onnxruntime))
NETWORK_BACKENDS.add("tensorrt", NetworkBackend(
    "tensorrt", "Triton's tensorrt backend runs the engine's TensorRT plans", _tensorrt))
NETWORK_BACKENDS.add("python", NetworkBackend(
    "python", "Python-backend models run the ONNX graphs with ONNX Runtime (for Triton "
              "builds without the onnxruntime backend)", _python_graph))


def choose_backend(man: dict[str, Any], requested: str) -> str:
    """``auto``: TensorRT when the engine has (unstripped) dynamic plans for every split
    graph, else onnxruntime."""
    if requested != "auto":
        return NETWORK_BACKENDS.canonical(requested)
    plans = [plan_for(man, g) for g in SPLIT_GRAPHS]
    if all(p is not None and not p.get("weights_stripped") for p in plans):
        return "tensorrt"
    return "onnxruntime"


def row_capacity(man: dict[str, Any]) -> int:
    """The largest rows per network call the exported profile allows (``M`` max)."""
    profiles = man.get("profiles") or {}
    if "M" in profiles:
        return int(profiles["M"][2])
    b, n = profiles.get("B"), profiles.get("N")
    if b and n:
        return int(b[2]) * int(n[2])
    raise ConfigError("the engine manifest records no row profile (M); re-export the engine")


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
    """The ``gaf`` model's inputs: those of ``gaf-trt serve`` (gaf_trt.serve.triton)."""
    from gaf_trt.serve.triton import FLOAT_FIELDS, INT_FIELDS

    ins: list[dict[str, Any]] = [
        {"name": "classes", "data_type": Enum("TYPE_INT32"), "dims": [-1]},
        {"name": "weights", "data_type": Enum("TYPE_FP32"), "dims": [-1], "optional": True}]
    ins += [{"name": n, "data_type": Enum("TYPE_INT64" if n == "seed" else "TYPE_INT32"),
             "dims": [1], "optional": True} for n in INT_FIELDS]
    ins += [{"name": n, "data_type": Enum("TYPE_FP32"), "dims": [1], "optional": True}
            for n in FLOAT_FIELDS]
    return ins


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
        "output": [{"name": "images", "data_type": Enum("TYPE_UINT8"), "dims": [-1, -1, -1, -1]},
                   {"name": "latents", "data_type": Enum("TYPE_FP32"), "dims": [-1, -1, -1, -1]}],
        "dynamic_batching": _solver_batching(opts),
        "instance_group": [{"count": opts.instances, "kind": Enum("KIND_CPU")}],
    }


def anchors_config(man: dict[str, Any], batch: int) -> dict[str, Any]:
    """The ensemble ``(x, t, y) -> (J, K)``: trunk, then the J and K heads."""
    trunk = man["graphs"]["trunk"]
    ins = [_tensor(s, "trunk") for s in trunk["inputs"]]
    for spec in ins:
        spec.pop("reshape", None)  # the ensemble passes [M, 1]; the graph models reshape
    outs = [_tensor(next(o for o in man["graphs"][g]["outputs"] if o["name"] == name), g)
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


def _check_split(engine: Path, man: dict[str, Any]) -> None:
    from gaf_trt.enginedir import EngineDirError

    missing = [g for g in SPLIT_GRAPHS if g not in man["graphs"]]
    if missing:
        raise EngineDirError(f"{engine} lacks the split graph(s) {', '.join(missing)}: the "
                             "solver model needs the anchors (J, K) of rows (x, t, y), which "
                             "the split graphs give; export with --graphs split")
    want = {"trunk": ["x", "t", "y"], "j_head": ["features", "x", "t"],
            "k_bank": ["features", "x", "t", "y"]}
    for g, names in want.items():
        have = [s["name"] for s in man["graphs"][g]["inputs"]]
        if have != names:
            raise EngineDirError(f"graph {g} of {engine} takes {have}, not {names}; re-export "
                                 "the engine with this gaf-trt")


def _network_models(engine: Path, man: dict[str, Any], backend: str, kind: str,
                    opts: RepoOptions, max_rows: int) -> list[ModelFolder]:
    """One network model per split graph, all with the same row capacity (the smallest:
    TensorRT plans may take fewer rows than the profile)."""
    models = [NETWORK_BACKENDS.get(backend).make(engine, man, g, max_rows, kind)
              for g in SPLIT_GRAPHS]
    rows = min(m.config["max_batch_size"] for m in models)
    for m in models:
        m.config["max_batch_size"] = rows
        m.config["dynamic_batching"] = ({"max_queue_delay_microseconds": opts.queue_delay_us}
                                        if opts.queue_delay_us else {})
        m.config["instance_group"][0]["count"] = opts.network_instances
    return models


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
    solver.texts["model.py"] = SOLVER_SHIM
    solver.texts[MODEL_RECORD] = json.dumps(record, indent=2) + "\n"
    return solver


def plan_repository(engine_dir: str | Path, options: RepoOptions) -> RepositoryPlan:
    """Read and verify the engine directory (manifest, sha256 of every file used) and build
    every model config, each validated against Triton's schema."""
    from gaf_trt.enginedir import files_of, read_manifest, verify_files

    opts = options.validate()
    engine = Path(engine_dir)
    man = read_manifest(engine)
    _check_split(engine, man)
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
    network = _network_models(engine, man, backend, kind, opts, max_rows)
    rows = network[0].config["max_batch_size"]
    solver = _solver_model(man, opts, rows)
    models = [solver, ModelFolder(ANCHORS_MODEL, anchors_config(man, rows)), *network]
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


def is_repository(folder: Path) -> bool:
    """Whether ``folder`` holds a previous ``gaf-trt triton-repo`` output (its record)."""
    from gaf_trt.io.files import read_record

    data = read_record(folder / RECORD)
    return data is not None and data.get("command") == COMMAND and data.get("format") == FORMAT


def check_repo_target(repo: str | Path) -> Path:
    """``REPO`` may be new, empty, or a previous triton-repo output; anything else (another
    command's output, unrelated files) is refused. Returns the resolved folder."""
    from gaf_trt.io.files import check_output_dir, check_owner, resolve_output

    check_output_dir(repo, "REPO")
    real = resolve_output(repo, "REPO")
    if real.is_dir() and any(real.iterdir()) and not is_repository(real):
        check_owner(real, COMMAND, "REPO", shown=repo)
        raise ConfigError(f"REPO {repo} is a non-empty folder that is not a gaf-trt triton-repo "
                          "output; give a new or empty folder (one folder holds one command's "
                          "output)")
    return real


def write_repository(plan: RepositoryPlan, repo: str | Path) -> Path:
    """Write the repository into a staging folder beside ``repo`` and rename it into place
    (a previous triton-repo output there is replaced as a whole). Returns ``repo``."""
    from gaf_trt.io.files import DirLock, write_json

    real = check_repo_target(repo)
    real.parent.mkdir(parents=True, exist_ok=True)
    with DirLock(real, "REPO"):
        check_repo_target(repo)  # again, under the lock
        staging = Path(tempfile.mkdtemp(prefix=f".{real.name}.", suffix=".staging",
                                        dir=real.parent))
        try:
            files: list[str] = []
            for model in plan.models:
                files += _write_model(staging, model)
            write_json(staging / RECORD, {**plan.record, "files": files})
            _swap_in(staging, real)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return Path(repo)


def _swap_in(staging: Path, real: Path) -> None:
    """Rename ``staging`` onto ``real``; an existing ``real`` is moved aside first and
    removed once the new one is in (restored if the rename fails)."""
    old = None
    try:
        if real.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{real.name}.", suffix=".old",
                                        dir=real.parent))
            os.rmdir(old)
            os.rename(real, old)
        os.rename(staging, real)
    except OSError as err:
        if old is not None and old.exists() and not real.exists():
            os.rename(old, real)
        raise ConfigError(f"cannot move the repository into {real} ({err.strerror or err}); "
                          "REPO must be a folder that can be renamed (not a mount point)") \
            from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_repository(engine_dir: str | Path, repo: str | Path,
                     options: RepoOptions | None = None) -> RepositoryPlan:
    """``gaf-trt triton-repo``: check ``repo``, plan from ``engine_dir``, write."""
    check_repo_target(repo)
    plan = plan_repository(engine_dir, options or RepoOptions())
    write_repository(plan, repo)
    return plan
