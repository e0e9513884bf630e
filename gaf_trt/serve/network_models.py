"""The network models of a Triton repository: one model per split graph of an engine
directory (``trunk``, ``j_head``, ``k_bank``), made by a registered network backend
(:data:`NETWORK_BACKENDS`: Triton's ``onnxruntime`` or ``tensorrt`` backend, or a
Python-backend model running the graph with ONNX Runtime).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gaf_trt.errors import ConfigError
from gaf_trt.registry import Registry
from gaf_trt.serve.pbtxt import Enum, tensor_config

GRAPH_PREFIX = "gaf_"
SPLIT_GRAPHS = ("trunk", "j_head", "k_bank")
#: Files a model's version folder holds besides the graph: the ``gaf`` solver model's record,
#: a Python-backend network model's graph I/O record, and the Python models' shim.
MODEL_RECORD = "gaf_model.json"
GRAPH_RECORD = "graph.json"
MODEL_PY = "model.py"

GRAPH_SHIM = '''"""Triton Python-backend model: one exported graph run with ONNX Runtime (written by
gaf-trt triton-repo). gaf_trt must be installed in the Python that runs the stub."""

from gaf_trt.serve.bls import GraphModel as TritonPythonModel  # noqa: F401
'''


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



def _graph_config(name: str, record: dict[str, Any], batch: int, kind: str,
                  head: dict[str, Any]) -> dict[str, Any]:
    where = f"graph {record['file']}"
    return {"name": name, **head, "max_batch_size": batch,
            "input": [tensor_config(s, where) for s in record["inputs"]],
            "output": [tensor_config(s, where) for s in record["outputs"]],
            "dynamic_batching": {},
            "instance_group": [{"count": 1, "kind": Enum(f"KIND_{kind.upper()}")}]}


def onnx_files(engine: Path, man: dict[str, Any], graph: str) -> dict[str, Path]:
    """``model.onnx`` and the external-data files it reads, as version-folder names ->
    engine files. The graph records each location relative to its own folder (ONNX
    external data); the same relative path inside the version folder keeps it valid there."""
    from gaf_trt.enginedir.files import beside_graph, external_data_files

    record = man["graphs"][graph]
    files = {"model.onnx": engine / record["file"]}
    for loc in external_data_files(engine, record["file"]):
        if loc in files or loc in (MODEL_PY, MODEL_RECORD, GRAPH_RECORD):
            raise ConfigError(f"graph {record['file']} keeps its weights in {loc!r}, a name "
                              "the model folder needs for itself; re-export the engine")
        files[loc] = engine / beside_graph(record["file"], loc)
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
    model.texts[MODEL_PY] = GRAPH_SHIM
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



def check_split(engine: Path, man: dict[str, Any]) -> None:
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


def network_models(engine: Path, man: dict[str, Any], backend: str, kind: str, max_rows: int,
                   *, queue_delay_us: int = 0, instances: int = 1) -> list[ModelFolder]:
    """One network model per split graph, all with the same row capacity (the smallest:
    TensorRT plans may take fewer rows than the profile)."""
    models = [NETWORK_BACKENDS.get(backend).make(engine, man, g, max_rows, kind)
              for g in SPLIT_GRAPHS]
    rows = min(m.config["max_batch_size"] for m in models)
    for m in models:
        m.config["max_batch_size"] = rows
        m.config["dynamic_batching"] = ({"max_queue_delay_microseconds": queue_delay_us}
                                        if queue_delay_us else {})
        m.config["instance_group"][0]["count"] = instances
    return models
