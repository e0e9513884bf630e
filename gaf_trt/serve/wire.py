"""The wire format of the ``gaf`` model (``gaf-trt serve`` and ``gaf-trt triton-repo``): tensor
names, dtypes and shapes, and a request's encoding and decoding.

Each row of the batch dimension is one generation request. Input tensors (one value per row
unless noted; all optional):

- ``classes`` INT32 ``[n]`` (class ids); ``weights`` FP32 ``[n]``; ``alpha``, ``sigma``,
  ``t_eps`` FP32; ``steps``, ``batch`` (images per request) INT32; ``seed`` INT64;
  ``mask_image`` UINT8 ``[H, W]`` (one region per gray level, as ``--mask-type custom
  --mask-img``; at most ``ServeLimits.max_mask_pixels``); ``class_count`` INT32: how many
  of ``classes`` (and ``weights``) are the request's, the rest padding (:func:`pad_request`).

String settings are request parameters (one per request): ``solver``, ``mask_type`` (a
preset), ``output``, ``cache`` (a feature-cache policy: ``off``, ``static:N``, ...; default
the server's ``--cache``), ``class_names`` (a JSON list of class names, instead of the
``classes`` input) and ``regions`` (a JSON list of AFHQ region names, as ``--regions``). No BYTES tensors: the stub crashes decoding them under numpy >= 2 (its
``as_numpy`` builds object arrays with the numpy 1.x ABI, and BYTES have no DLPack form).

Outputs: ``images`` UINT8 ``[B, S, S, C]`` (pixel models) and ``latents`` FP32
``[B, C, S, S]``; a client asks for the one it wants.

Padded requests batch together. Triton's dynamic batcher groups only requests whose inputs
have equal shapes, so requests of 1, 2 and 3 classes never share an execute of
``--batching request``; a client that pads ``classes`` and ``weights`` to the server's class
limit and sends ``class_count`` (:func:`pad_request`) sends the same shapes whatever its
composition (a single class then takes weight 1: the same bits as no weights, tested).

Model ``gaf_stats`` (no inputs): the service's counters :data:`STATS`: ``active`` (requests
admitted and not finished), ``pending_rows`` (rows waiting for the next network call),
``calls``, ``rows`` and ``cancelled`` (requests cancelled by their client), INT64 ``[1]`` each.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gaf_trt.errors import ConfigError, GAFError
from gaf_trt.serve.requests import ServeRequest
from gaf_trt.serve.scheduler import Cancelled
from gaf_trt.serve.service import Overloaded

MODEL_NAME = "gaf"
STRING_FIELDS = ("solver", "mask_type", "output", "cache")
NAMES_PARAM = "class_names"  # JSON list of class names: no BYTES tensors (see above)
REGIONS_PARAM = "regions"  # JSON list of region names (the mask preset's --regions)
LIST_PARAMS = (NAMES_PARAM, REGIONS_PARAM)
INT_FIELDS = ("steps", "seed", "batch")
COUNT_INPUT = "class_count"  # padded requests: how many of classes / weights are real
FLOAT_FIELDS = ("alpha", "sigma", "t_eps")
STATS = ("active", "pending_rows", "calls", "rows", "cancelled")
STATS_MODEL = "gaf_stats"


@dataclass(frozen=True)
class WireTensor:
    """One tensor of the ``gaf`` model: name, numpy dtype name and shape of one row
    (``-1``: any size)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    optional: bool = True


INPUTS = (WireTensor("classes", "int32", (-1,)), WireTensor("weights", "float32", (-1,)),
          WireTensor("mask_image", "uint8", (-1, -1)),
          *(WireTensor(n, "int64" if n == "seed" else "int32", (1,)) for n in INT_FIELDS),
          *(WireTensor(n, "float32", (1,)) for n in FLOAT_FIELDS),
          WireTensor(COUNT_INPUT, "int32", (1,)))
OUTPUTS = (WireTensor("images", "uint8", (-1, -1, -1, -1), optional=False),
           WireTensor("latents", "float32", (-1, -1, -1, -1), optional=False))


def encode_request(req: ServeRequest) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The input tensors (a batch of one row: leading dimension 1) and request parameters
    of ``req``, as a client sends them; :func:`decode_request` of its row gives ``req`` back.
    Class names (not ids) go as the parameter ``class_names``, regions as ``regions``."""
    dtypes = {t.name: np.dtype(t.dtype) for t in INPUTS}
    arrays: dict[str, np.ndarray] = {}
    params: dict[str, str] = {}
    if all(isinstance(c, int) and not isinstance(c, bool) for c in req.classes):
        arrays["classes"] = np.asarray([req.classes], dtypes["classes"])
    else:
        params[NAMES_PARAM] = json.dumps([str(c) for c in req.classes])
    if req.regions is not None:
        params[REGIONS_PARAM] = json.dumps([str(r) for r in req.regions])
    if req.weights is not None:
        arrays["weights"] = np.asarray([req.weights], dtypes["weights"])
    if req.mask_image is not None:
        arrays["mask_image"] = np.asarray(req.mask_image, dtypes["mask_image"])[None]
    for name in (*INT_FIELDS, *FLOAT_FIELDS):
        value = getattr(req, name)
        if value is not None:
            arrays[name] = np.asarray([[value]], dtypes[name])
    for name in STRING_FIELDS:
        value = getattr(req, name)
        if value is not None:
            params[name] = value
    return arrays, params


def pad_request(arrays: Mapping[str, np.ndarray], width: int) -> dict[str, np.ndarray]:
    """The input tensors of :func:`encode_request` (one row: ``classes`` ``[1, n]``, optional
    ``weights`` ``[1, n]``) padded to ``width`` classes: ``classes`` ``[1, width]`` (padding
    class 0), ``weights`` ``[1, width]`` (given, or 1 for a single class; padding 0) and
    ``class_count`` ``[1, 1]`` = n. Every request padded to one width has the same input
    shapes, so Triton's dynamic batcher groups them whatever their class counts.
    :func:`decode_request` gives back the unpadded request (a single class with weight 1)."""
    if "classes" not in arrays:
        raise ConfigError("pad_request pads the classes input; a request by class_names "
                          "has no classes tensor to pad")
    classes = np.asarray(arrays["classes"])
    n = classes.shape[-1]
    if not 1 <= n <= width:
        raise ConfigError(f"cannot pad {n} classes to width {width}; the width must be at "
                          f"least the class count (the server's class limit)")
    weights = arrays.get("weights")
    if weights is None:
        if n != 1:
            raise ConfigError(f"{n} classes without weights is no composition; give weights")
        weights = np.ones((1, 1), np.float32)
    out = dict(arrays)
    out["classes"] = np.zeros((1, width), np.int32)
    out["classes"][:, :n] = classes
    out["weights"] = np.zeros((1, width), np.float32)
    out["weights"][:, :n] = weights
    out[COUNT_INPUT] = np.array([[n]], np.int32)
    return out


def _unpad(row: Mapping[str, np.ndarray], fields: dict[str, object]) -> None:
    """Keep the first ``class_count`` classes and weights of a padded row (in ``fields``)."""
    n = int(_one(COUNT_INPUT, row[COUNT_INPUT]))
    if "classes" not in row:
        raise ConfigError(f"{COUNT_INPUT} counts the padded 'classes' input; it does not go "
                          f"with the parameter '{NAMES_PARAM}'")
    width = int(np.asarray(row["classes"]).size)
    if not 1 <= n <= width:
        raise ConfigError(f"{COUNT_INPUT} must be in 1..{width} (the classes sent), got {n}")
    fields["classes"] = fields["classes"][:n]  # type: ignore[index]
    if "weights" in fields:
        weights = fields["weights"]
        if len(weights) < n:  # type: ignore[arg-type]
            raise ConfigError(f"{COUNT_INPUT} {n} needs at least {n} weights, got "
                              f"{len(weights)}")  # type: ignore[arg-type]
        fields["weights"] = weights[:n]  # type: ignore[index]


def _one(name: str, value: np.ndarray) -> object:
    if value.size != 1:
        raise ConfigError(f"{name} takes one value per request, got {value.size}")
    return value.reshape(-1)[0]



def decode_names(text: object, param: str = NAMES_PARAM) -> list[str]:
    """The names of a JSON-list parameter: ``class_names`` (class names or ids) or
    ``regions`` (region names)."""
    try:
        names = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):  # deep nesting: RecursionError; a number of over
        names = None                      # 4,300 digits: ValueError (not a JSONDecodeError)
    if not isinstance(names, list) or not all(isinstance(n, (str, int)) and not isinstance(
            n, bool) for n in names):
        shown = repr(text) if len(repr(text)) <= 200 else repr(text)[:200] + "..."
        example = '["golden retriever", "3"]' if param == NAMES_PARAM else '["ears", "eyes"]'
        what = "class names" if param == NAMES_PARAM else "region names"
        raise ConfigError(f"parameter {param} must be a JSON list of {what}, e.g. "
                          f"'{example}', got {shown}")
    return [str(n) for n in names]


def decode_request(row: Mapping[str, np.ndarray],
                   parameters: Mapping[str, object] | None = None) -> ServeRequest:
    """A :class:`ServeRequest` from the input tensors of one row (batch dimension removed)
    and the request's string parameters."""
    params = dict(parameters or {})
    names = params.pop(NAMES_PARAM, None)
    if ("classes" in row) == (names is not None):
        raise ConfigError(f"give the classes either as the input 'classes' (ids) or as the "
                          f"parameter '{NAMES_PARAM}' (a JSON list of names or ids), not "
                          f"{'both' if names is not None else 'neither'}")
    fields: dict[str, object] = {"classes": decode_names(names) if names is not None
                                 else [int(c) for c in row["classes"].reshape(-1)]}
    if REGIONS_PARAM in params:
        fields["regions"] = decode_names(params.pop(REGIONS_PARAM), REGIONS_PARAM)
    if "weights" in row:
        fields["weights"] = [float(v) for v in np.asarray(row["weights"]).reshape(-1)]
    if "mask_image" in row:
        fields["mask_image"] = np.asarray(row["mask_image"])
    if COUNT_INPUT in row:
        _unpad(row, fields)
    for name in STRING_FIELDS:
        if name in params:
            value = params.pop(name)
            if not isinstance(value, str):
                raise ConfigError(f"parameter {name} must be a string, got {value!r}")
            fields[name] = value
    if params:
        raise ConfigError(f"unknown request parameter(s) {sorted(params)}; valid: "
                          f"{', '.join((*STRING_FIELDS, *LIST_PARAMS))}")
    for name in INT_FIELDS:
        if name in row:
            fields[name] = int(_one(name, row[name]))
    for name in FLOAT_FIELDS:
        if name in row:
            fields[name] = float(_one(name, row[name]))
    return ServeRequest(**fields)  # type: ignore[arg-type]


def split_rows(request: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """The rows of a Triton request (leading batch dimension) as one mapping each."""
    sizes = {v.shape[0] for v in request.values() if v.ndim}
    if len(sizes) != 1:
        raise ConfigError(f"inputs disagree on the batch size: {sorted(sizes)}")
    n = sizes.pop()
    if n == 0:
        raise ConfigError("a request needs at least one row (its batch dimension is 0)")
    if "batch" in request and len({int(b) for b in np.asarray(request["batch"]).reshape(-1)}) > 1:
        raise ConfigError("all rows of one request must ask for the same batch (images per "
                          f"row), got {np.asarray(request['batch']).reshape(-1).tolist()}; "
                          "send rows of other batches as requests of their own")
    return [{k: v[i] for k, v in request.items()} for i in range(n)]


#: Longest error message a client gets (the one line; the server's log keeps the rest).
MAX_ERROR_CHARS = 1000


def error_answer(err: BaseException) -> tuple[str, str]:
    """How a failed request is answered, by ``gaf-trt serve`` and ``triton-repo`` alike: the
    name of its ``TritonError`` code and its one-line message (no traceback, no path of the
    server's files). A refused request (:class:`~gaf_trt.errors.GAFError`) is the client's
    error, ``INVALID_ARG`` (HTTP 400, gRPC INVALID_ARGUMENT); a full queue or a server
    shutting down ``UNAVAILABLE`` (503); a request its client cancelled ``CANCELLED``; only
    anything else, a real fault, ``INTERNAL`` (500), as ``internal error: Type: message``."""
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, Overloaded):
        code = "UNAVAILABLE"
    elif isinstance(err, GAFError):
        code = "INVALID_ARG"
    elif isinstance(err, Cancelled):
        code = "CANCELLED"
    else:
        code, text = "INTERNAL", f"internal error: {type(err).__name__}: {text}"
    return code, text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "..."
