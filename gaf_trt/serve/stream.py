"""The streaming model ``gaf_stream`` (Triton's decoupled mode), shared by ``gaf-trt serve``
(:mod:`gaf_trt.serve.triton_stream`) and ``gaf-trt triton-repo`` (:mod:`gaf_trt.serve.bls_stream`).

It takes ``gaf``'s inputs (:data:`gaf_trt.serve.wire.INPUTS`, one generation per request: a
batch dimension of 1) and parameters, plus the request parameter ``preview_every``
(:data:`~gaf_trt.serve.previews.PREVIEW_PARAM`: 0 or absent, no previews; else 1 .. the
request's network evaluations). It answers with one response per preview -- outputs
``preview`` UINT8 ``[1, B, S, S, C]`` (the composed data anchor as ``images`` rounds the final
state; a latent model's decoded), ``preview_latents`` FP32 ``[1, B, C, S, S]`` and
``preview_step`` INT32 ``[1, 1]`` (network evaluations done) -- and then the final response,
``images`` / ``latents`` as ``gaf`` answers them (the same bits).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

import numpy as np
from torch import Tensor

from gaf_trt.errors import ConfigError
from gaf_trt.serve.previews import PREVIEW_PARAM, Preview
from gaf_trt.serve.requests import ServeRequest
from gaf_trt.serve.scheduler import Cancelled
from gaf_trt.serve.service import Job
from gaf_trt.serve.wire import OUTPUTS, WireTensor, decode_request, split_rows

STREAM_MODEL = "gaf_stream"
PREVIEW_OUTPUTS = (WireTensor("preview", "uint8", (-1, -1, -1, -1), optional=False),
                   WireTensor("preview_latents", "float32", (-1, -1, -1, -1), optional=False),
                   WireTensor("preview_step", "int32", (1,), optional=False))
STREAM_OUTPUTS = (*PREVIEW_OUTPUTS, *OUTPUTS)
#: How often a stream waiting for its next preview checks whether its client cancelled it.
STREAM_POLL_S = 0.05


def decode_stream_request(data: Mapping[str, np.ndarray], parameters: Mapping[str, object] | None
                          ) -> tuple[ServeRequest, object]:
    """The request of a ``gaf_stream`` call (input tensors with their batch dimension, which
    must be 1) and its raw ``preview_every`` (``None`` when absent; checked on admission,
    against the request's evaluations)."""
    params = dict(parameters or {})
    every = params.pop(PREVIEW_PARAM, None)
    rows = split_rows(data)
    if len(rows) != 1:
        raise ConfigError(f"model {STREAM_MODEL} streams one generation per request (a batch "
                          f"dimension of 1), got {len(rows)}; send the others as requests of "
                          "their own")
    return decode_request(rows[0], params), every


def preview_arrays(preview: Preview, images: Callable[[Tensor], np.ndarray],
                   wanted: Callable[[str], bool]) -> dict[str, np.ndarray]:
    """The output arrays of one preview response (those ``wanted``): ``images(state)`` is
    how the final state becomes ``images`` (``[B, S, S, C]`` uint8)."""
    makers = {"preview": lambda: images(preview.state)[None],
              "preview_latents": lambda: preview.state.numpy()[None].astype(np.float32),
              "preview_step": lambda: np.array([[preview.step]], np.int32)}
    return {name: make() for name, make in makers.items() if wanted(name)}


R = TypeVar("R")


def stream_responses(job: Job, preview: Callable[[Preview], R], final: Callable[[Tensor], R],
                     cancelled: Callable[[], bool] | None = None,
                     poll: float = STREAM_POLL_S) -> Iterator[R]:
    """The responses of a streamed job (output dicts, or tensors): ``preview(p)`` for each preview as
    it comes, then ``final(state)`` of its final state ``[B, C, S, S]``. A job that fails
    raises its error. ``cancelled()`` (checked every ``poll`` s while waiting) true: the job is
    cancelled -- its rows leave the scheduler -- and :class:`Cancelled` is raised."""
    check = _CancelCheck(job, cancelled, poll)
    while job.previews is not None:
        try:
            item = job.previews.get(poll)
        except TimeoutError:
            check(force=True)
            continue
        if item is None:
            break
        check()  # previews coming faster than poll do not hide a cancellation
        yield preview(item)
    while True:
        try:
            state = job.result(poll)
            break
        except TimeoutError:
            check(force=True)
    yield final(state)


class _CancelCheck:
    """Calls ``cancelled()`` at most every ``poll`` s (or when forced: a wait timed out);
    when true, cancels the job and raises :class:`Cancelled`."""

    def __init__(self, job: Job, cancelled: Callable[[], bool] | None, poll: float) -> None:
        self.job, self.cancelled, self.poll = job, cancelled, poll
        self.last = time.monotonic()

    def __call__(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.cancelled is None or (not force and now - self.last < self.poll):
            return
        self.last = now
        if self.cancelled():
            self.job.cancel()
            raise Cancelled(f"request {self.job.ticket.id}: the client cancelled the stream")
