"""The files of an engine directory: where they lie (never outside it), which ones a
loader needs, their sha256 and the external data their ONNX graphs read."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gaf_trt.enginedir.schema import MANIFEST, EngineDirError, Invalid, RelPath
from gaf_trt.io.files import file_sha256


def inside(folder: Path, name: str) -> Path:
    """``folder / name`` as a real path, refused when a link leads it outside ``folder``."""
    root = folder.resolve()
    try:
        real = (root / name).resolve()
    except (RuntimeError, OSError):
        raise EngineDirError(f"{folder}/{name} cannot be resolved (a symbolic link loop)") \
            from None
    if root not in real.parents:
        raise EngineDirError(f"{folder}/{name} leads outside the engine directory (to "
                             f"{real}); every file it uses must lie inside it")
    return real



def files_of(man: dict[str, Any], *, graphs: list[str] | None = None,
             plans: list[str] | None = None) -> list[str]:
    """The files a loader needs for the named graphs / plans (all files when both None);
    :func:`verify_files` adds the external-data files each ONNX graph references."""
    if graphs is None and plans is None:
        return list(man["files"])
    names: list[str] = []
    for g in graphs or []:
        rec = man["graphs"][g]
        names += [rec["file"]] + ([rec["data_file"]] if rec.get("data_file") else [])
    for p in plans or []:
        names.append(man["plans"][p]["file"])
    return names


def _onnx_tensors(graph: Any) -> Iterable[Any]:
    """Every tensor of an ONNX graph: initializers, sparse initializers, node attributes,
    and those of subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _onnx_tensors(attr.g)
            for sub in attr.graphs:
                yield from _onnx_tensors(sub)


def _load_graph(folder: str | Path, graph_file: str) -> Any:
    """The ONNX model of a graph without its external data; an unreadable graph is an
    :class:`EngineDirError`."""
    try:
        import onnx
    except ImportError:
        raise EngineDirError("checking an engine directory's graphs needs the onnx package "
                             "(pip install 'gaf-trt[onnx]')") from None
    path = Path(folder) / graph_file
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - protobuf / onnx raise several types
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else \
            type(err).__name__
        raise EngineDirError(f"graph {graph_file} in {folder} is not a valid ONNX model "
                             f"({reason}); re-export the engine") from None


def external_data_files(folder: str | Path, graph_file: str, model: Any = None) -> list[str]:
    """The external-data files an ONNX graph reads (its tensors' ``location`` entries, each
    relative to the graph's own folder), read without loading the data. An unreadable graph
    is an :class:`EngineDirError`."""
    import onnx

    model = model if model is not None else _load_graph(folder, graph_file)
    found: list[str] = []
    for tensor in _onnx_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entry = {kv.key: kv.value for kv in tensor.external_data}
        loc = entry.get("location", "")
        try:
            RelPath().check(loc, f"external data of tensor {tensor.name!r}")
        except Invalid as err:
            raise EngineDirError(f"graph {graph_file} in {folder}: {err}") from None
        if loc not in found:
            found.append(loc)
    return found


#: Graphs an engine's precision lowers (the others, e.g. the heads of a quantised engine,
#: may stay fp32).
LOWERED_GRAPHS = ("trunk", "step_velocity", "step_anchors")


#: Integer ops of ONNX Runtime's dynamic quantisation (``--quant dynamic``).
DYNAMIC_INT8_OPS = ("DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul",
                    "MatMulIntegerToFloat")


def _widened(graph: Any) -> set[str]:
    """Initializers only *stored* reduced: every reader is a ``Cast`` to float32 (a
    quantised directory's high-precision weights, :mod:`gaf_trt.export.quantize.store`)."""
    import onnx

    readers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    to_float = onnx.TensorProto.FLOAT
    return {t.name for t in graph.initializer if readers.get(t.name) and all(
        n.op_type == "Cast" and any(a.name == "to" and a.i == to_float for a in n.attribute)
        for n in readers[t.name])}


def graph_precision(model: Any) -> str:
    """The precision a graph really runs at, from what it holds: Q/DQ nodes with float8
    tensors ``fp8``, with integer ones (or dynamic integer MatMuls) ``int8``; else bfloat16 /
    float16 tensors ``bf16`` / ``fp16`` (not counting weights only stored reduced and widened
    to float32); else ``fp32``."""
    import onnx

    T = onnx.TensorProto
    widened = _widened(model.graph)
    types = {t.data_type for t in _onnx_tensors(model.graph) if t.name not in widened}
    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear"}:
        fp8 = {getattr(T, n, -1) for n in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2",
                                            "FLOAT8E5M2FNUZ")}
        return "fp8" if types & fp8 else "int8"
    if ops & set(DYNAMIC_INT8_OPS):
        return "int8"
    return "bf16" if T.BFLOAT16 in types else "fp16" if T.FLOAT16 in types else "fp32"


def check_graph_precision(folder: Path, man: dict[str, Any], graph: str, model: Any) -> None:
    """The manifest's precision is the one the graph runs at (a lowered graph: exactly; any
    other: that or fp32), so what a run records is what ran; else an
    :class:`EngineDirError`."""
    said = man.get("precision")
    real = graph_precision(model)
    if said is None or real == said or (real == "fp32" and graph not in LOWERED_GRAPHS):
        return
    raise EngineDirError(f"graph {graph} ({man['graphs'][graph]['file']}) in {folder} runs at "
                         f"{real}, but {MANIFEST} says precision {said}; a run would record "
                         "a precision that did not run: re-export the engine")


def beside_graph(graph_file: str, location: str) -> str:
    """Where a graph's external-data ``location`` lies, relative to the engine directory:
    beside the graph, as ONNX Runtime, TensorRT's parser and OpenVINO resolve it (a graph
    ``sub/g.onnx`` reading ``w.data`` reads ``sub/w.data``, never the root's ``w.data``)."""
    return posixpath.join(posixpath.dirname(graph_file), location)


def verify_files(folder: str | Path, man: dict[str, Any], names: list[str] | None = None) -> None:
    """Every named file (all listed files when None) lies inside ``folder``, is a regular
    file and has the recorded sha256; each ONNX graph among them is then parsed (without its
    data): it must run at the manifest's precision (:func:`check_graph_precision`), and
    every external-data file it reads -- resolved beside the graph, where the runtimes open
    it (:func:`beside_graph`) -- must be listed, hashed and verified too.
    Anything else is an :class:`EngineDirError`."""
    folder = Path(folder)
    graph_of = {rec["file"]: g for g, rec in man["graphs"].items()}
    todo = list(man["files"] if names is None else names)
    done: set[str] = set()
    while todo:
        name = todo.pop(0)
        if name in done:
            continue
        done.add(name)
        _verify_one(folder, man, name)
        if name in graph_of or name.endswith(".onnx"):
            model = _load_graph(folder, name)
            if name in graph_of:
                check_graph_precision(folder, man, graph_of[name], model)
            for loc in external_data_files(folder, name, model):
                data = beside_graph(name, loc)
                if data not in man["files"]:
                    where = "" if data == loc else f" (its external data {loc!r}, beside it)"
                    raise EngineDirError(f"graph {name} in {folder} reads {data}{where}, which "
                                         "the manifest does not list and hash; re-export the "
                                         "engine")
                todo.append(data)


def _verify_one(folder: Path, man: dict[str, Any], name: str) -> None:
    real = inside(folder, name)
    want = man["sha256"].get(name)
    if not real.is_file():
        raise EngineDirError(f"engine directory {folder} is incomplete: {name} is missing; "
                             "re-export it")
    if want is None:
        raise EngineDirError(f"{folder}/{MANIFEST} has no sha256 for {name}")
    got = file_sha256(real)
    if got != want:
        raise EngineDirError(f"{folder / name} was altered since export (sha256 {got[:12]}… != "
                             f"{want[:12]}… in the manifest); re-export the engine")


def hash_files(folder: Path, names: list[str]) -> dict[str, str]:
    return {n: file_sha256(folder / n) for n in names}

