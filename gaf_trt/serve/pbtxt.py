"""Triton model configs (``config.pbtxt``) as text: dicts written in protobuf text format,
checked against Triton's own schema (``tritonclient.grpc.model_config_pb2``), and the config
of one graph tensor.
"""

from __future__ import annotations

import json
from typing import Any

from gaf_trt.errors import ConfigError

TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16",
                "int64": "TYPE_INT64", "int32": "TYPE_INT32", "int8": "TYPE_INT8",
                "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}


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



def tensor_config(spec: dict[str, Any], where: str) -> dict[str, Any]:
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
