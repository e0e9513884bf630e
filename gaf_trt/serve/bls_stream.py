"""The streaming model ``gaf_stream`` of a ``gaf-trt triton-repo`` repository (Triton's
decoupled mode; wire: :mod:`gaf_trt.serve.stream`).

:class:`StreamModel` is the solver model (:class:`~gaf_trt.serve.bls.SolverModel`: its own
:class:`~gaf_trt.serve.GenerationService` over the ``gaf_anchors`` network model) answering
each request through its response sender, from a thread of its own: a response per preview,
then the final ``images`` / ``latents`` (as ``gaf`` answers), then the final flag. A request
its client cancels (``sender.is_cancelled()``) leaves the scheduler and is answered
``CANCELLED``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor

from gaf_trt.errors import ConfigError, GAFError
from gaf_trt.serve.bls import SolverModel, _error_response, _outputs, pb
from gaf_trt.serve.pb_tensors import gaf_input_array, gaf_output_tensor
from gaf_trt.serve.requests import to_images
from gaf_trt.serve.service import GenerationService, Job
from gaf_trt.serve.stream import (
    STREAM_OUTPUTS,
    decode_stream_request,
    preview_arrays,
    stream_responses,
)

log = logging.getLogger(__name__)


def _admit(service: GenerationService, request: Any) -> Job:
    """Decode and admit one streamed request (raises its refusal)."""
    data = {t.name(): gaf_input_array(t) for t in request.inputs()}
    raw = request.parameters()
    params = json.loads(raw) if raw else {}
    if not isinstance(params, dict):
        raise ConfigError(f"request parameters must be a mapping, got {params!r}")
    req, every = decode_stream_request(data, params)
    return service.submit_streamed(req, every)


def stream_one(service: GenerationService, request: Any, sender: Any) -> None:
    """Answer one ``gaf_stream`` request through ``sender``: its previews, its result, the
    final flag; a refused, failed or cancelled request: its error response, final."""
    utils = pb()
    latent = service.scheduler.config.mode == "latent"
    names = [n for n in request.requested_output_names() if n in {t.name for t in
                                                                 STREAM_OUTPUTS}]
    wanted = (lambda n: n in names) if names else (lambda n: True)

    def images(state: Tensor) -> np.ndarray:
        return np.zeros((0, 0, 0, 0), np.uint8) if latent else to_images(state)

    def preview(p: Any) -> Any:
        arrays = preview_arrays(p, images, wanted)
        return utils.InferenceResponse(output_tensors=[gaf_output_tensor(n, a)
                                                       for n, a in arrays.items()])

    def final(state: Tensor) -> Any:
        kept = [n for n in ("images", "latents") if wanted(n)]
        return utils.InferenceResponse(output_tensors=_outputs([state], latent, kept))

    job = None
    try:
        job = _admit(service, request)
        for response in stream_responses(job, preview, final, sender.is_cancelled):
            sender.send(response)
        sender.send(flags=utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    except Exception as err:  # noqa: BLE001 - the request's own failure: answered
        if not isinstance(err, GAFError):
            log.info("stream failed: %s", err)
        if job is not None and not job.done():
            job.cancel()
        try:
            sender.send(_error_response(err), flags=utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception:  # noqa: BLE001 - the client is gone (cancelled): nothing to answer
            log.info("stream's error could not be sent (its client is gone)")


class StreamModel(SolverModel):
    """Triton Python model ``gaf_stream`` (decoupled): ``execute`` hands each request to a
    thread of its own and returns None at once (a decoupled model answers only through its
    response senders)."""

    def execute(self, requests: Sequence[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            threading.Thread(target=stream_one, args=(self.service, request, sender),
                             name="gaf-stream", daemon=True).start()
        return None
