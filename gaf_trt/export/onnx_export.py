"""Export one :class:`~gaf_trt.export.graphs.GraphSpec` to ONNX (dynamo exporter).

``torch.onnx.export(..., dynamo=True)`` at opset 18 (or 23: one ``Attention`` node per
block); opset 17 with the dynamo exporter emits an invalid ``Split`` and the TorchScript
exporter fails on ``unpatchify``'s shape arithmetic (docs/export.md). Dynamic
axes use :class:`torch.export.Dim`. Graphs larger than the external-data threshold (2 GB by
default: protobuf's limit) store their weights in ``<name>.onnx.data`` beside the graph; every
graph is checked and shape-inferred by path, which works for both layouts.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from gaf_trt.errors import ConfigError
from gaf_trt.export.graphs import GraphSpec

log = logging.getLogger(__name__)

SUPPORTED_OPSETS = (18, 23)
#: Protobuf cannot hold a model over 2 GiB; above this the weights go to external data.
EXTERNAL_DATA_THRESHOLD = 2 * 1024**3 - 64 * 1024**2
#: Metadata key of the model config JSON in every graph.
CONFIG_KEY = "gaf_config"


@dataclass(frozen=True)
class ExportedGraph:
    """Files written for one graph (names relative to the output folder)."""

    name: str
    onnx_file: str
    data_file: str | None
    nodes: int


def check_opset(opset: int) -> int:
    if opset not in SUPPORTED_OPSETS:
        raise ConfigError(f"unsupported opset {opset}; valid: "
                          f"{', '.join(map(str, SUPPORTED_OPSETS))} (17 is broken with the "
                          "dynamo exporter)")
    return opset


def _dynamic_shapes(spec: GraphSpec) -> dict[str, dict[int, object]]:
    dims = {sym: torch.export.Dim(sym, min=lo, max=hi) for sym, (lo, hi) in spec.dynamic.items()}
    shapes: dict[str, dict[int, object]] = {}
    for s in spec.inputs:
        shapes[s.name] = {i: dims[d] for i, d in enumerate(s.shape) if isinstance(d, str)}
    return shapes


def example_sizes(spec: GraphSpec) -> dict[str, int]:
    """Sizes for tracing: distinct values >= 2 per symbol (1 would be specialised)."""
    base = {"M": 6, "B": 3, "N": 2}
    return {sym: max(lo, min(hi, base.get(sym, 2))) for sym, (lo, hi) in spec.dynamic.items()}


def export_onnx(spec: GraphSpec, folder: Path, *, opset: int, num_classes: int,
                metadata: dict[str, str],
                external_threshold: int = EXTERNAL_DATA_THRESHOLD) -> ExportedGraph:
    """Trace ``spec.module`` and write ``folder/<name>.onnx`` (+ ``.onnx.data`` if large)."""
    import onnx

    check_opset(opset)
    sizes = example_sizes(spec)
    if min(sizes.values(), default=2) < 2:
        raise ConfigError(f"graph {spec.name}: the maximum batch must allow 2 samples for tracing")
    args = spec.example_inputs(sizes, num_classes, torch.Generator().manual_seed(0))
    module = spec.module.eval()
    with torch.no_grad(), warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, args, dynamo=True, opset_version=opset, input_names=spec.input_names,
            output_names=spec.output_names, dynamic_shapes=_dynamic_shapes(spec),
            optimize=True, verbose=False)
    path = folder / f"{spec.name}.onnx"
    weights = sum(int(v.const_value.nbytes) for v in program.model.graph.initializers.values()
                  if v.const_value is not None)
    external = weights >= external_threshold
    program.save(path, external_data=external)
    data_name = f"{path.name}.data" if external else None
    if data_name is not None and not (folder / data_name).is_file():
        raise RuntimeError(f"external data of {path.name} was not written as {data_name}")
    # Name the axes and store the config: the graph proto alone (weights stay where they are).
    model = onnx.load(str(path), load_external_data=False)
    _rename_dims(model, spec)
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save_model(model, str(path))
    check_by_path(path)
    return ExportedGraph(spec.name, path.name, data_name, len(model.graph.node))


def save_model(model, path: Path, external_threshold: int) -> str | None:
    """Save an in-memory ``model`` to ``path``; weights go to ``<path>.data`` when they
    exceed ``external_threshold`` bytes. Returns the data file name or None."""
    import onnx

    if _weights_bytes(model) < external_threshold:
        onnx.save_model(model, str(path))
        return None
    data_name = f"{path.name}.data"
    (path.parent / data_name).unlink(missing_ok=True)  # external data is appended to
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=1024)
    return data_name


def _weights_bytes(model) -> int:
    import onnx

    return sum(onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
               * math.prod(t.dims) for t in model.graph.initializer)


def check_by_path(path: Path) -> None:
    """``onnx.checker`` and strict shape inference by path (works beyond 2 GB)."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=False)
        onnx.shape_inference.infer_shapes_path(str(path), str(path) + ".inferred", strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ConfigError(f"exported graph {path.name} is invalid: "
                          f"{str(err).splitlines()[0][:300]}") from None
    finally:
        Path(str(path) + ".inferred").unlink(missing_ok=True)


def _rename_dims(model, spec: GraphSpec) -> None:
    """Give dynamic axes their spec names (``M``, ``B``, ``N``) on inputs and outputs."""
    by_name = {s.name: s for s in (*spec.inputs, *spec.outputs)}
    for value in (*model.graph.input, *model.graph.output):
        s = by_name.get(value.name)
        if s is None:
            continue
        for dim, want in zip(value.type.tensor_type.shape.dim, s.shape, strict=True):
            if isinstance(want, str):
                dim.dim_param = want
            elif not dim.HasField("dim_value"):
                dim.dim_value = want


@contextlib.contextmanager
def _quiet():
    """The dynamo exporter prints progress to stdout; library code does not print."""
    buf = io.StringIO()
    noisy = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = noisy.level
    noisy.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping ..." warnings
    try:
        with contextlib.redirect_stdout(buf):
            yield
    finally:
        noisy.setLevel(level)
    if buf.getvalue().strip():
        log.debug("torch.onnx.export: %s", buf.getvalue().strip())
