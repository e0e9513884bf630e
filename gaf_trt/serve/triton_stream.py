"""The streaming model ``gaf_stream`` of ``gaf-trt serve`` (wire: :mod:`gaf_trt.serve.stream`).

PyTriton 0.7.0 serves a decoupled model from an inference callable that is a generator; this
one is an asyncio generator, so one PyTriton instance serves many streams at once, each
admitted at once into the same :class:`~gaf_trt.serve.GenerationService` as ``gaf``'s requests
(its rows share their network calls). Waiting for a stream's next preview or its end runs in
a pool of ``max_streams`` threads (:func:`~gaf_trt.serve.stream.stream_responses`); a stream
past ``max_streams`` in flight is refused at once (``UNAVAILABLE``, "server busy"), so
streams never take the service's room for ``gaf``'s requests. A stream whose client cancels
it (a gRPC client's ``stop_stream(cancel_requests=True)`` or a closed channel) is seen by the
patched stub (:func:`~gaf_trt.serve.stub_serving._gaf_watch_stream`), which creates the
request's cancel marker; the stream then cancels its job, whose rows leave the scheduler.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from torch import Tensor

from gaf_trt.errors import GAFError
from gaf_trt.serve.requests import to_images
from gaf_trt.serve.service import GenerationService, Job, Overloaded
from gaf_trt.serve.stream import decode_stream_request, preview_arrays, stream_responses
from gaf_trt.serve.stub_serving import GAF_CANCEL_PARAM

log = logging.getLogger(__name__)


class StreamFrontEnd:
    """``gaf_stream`` on ``service``: ``final(states)`` makes a request's final outputs (as
    ``gaf`` answers), ``decode`` is a latent model's decoder (None: pixels, or latents only),
    ``mark_error(err)`` the exception PyTriton raises for a failed stream, ``on_cancel()``
    counts a client's cancellation."""

    def __init__(self, service: GenerationService, max_streams: int,
                 final: Callable[[list[Tensor]], dict[str, np.ndarray]],
                 decode: Callable[[Tensor], Tensor] | None,
                 mark_error: Callable[[BaseException], Exception],
                 on_cancel: Callable[[], None]) -> None:
        self.service, self.max_streams = service, max_streams
        self._final, self._decode = final, decode
        self._mark_error, self._on_cancel = mark_error, on_cancel
        self._pool = ThreadPoolExecutor(max_streams, thread_name_prefix="gaf-stream")
        self._lock = threading.Lock()
        self.active = 0  # streams admitted and not answered

    def _images(self, state: Tensor) -> np.ndarray:
        """A preview's ``preview`` output ``[B, S, S, C]`` (empty: a latent model served
        without its decoder), made as ``images`` is made of the final state."""
        if self._decode is not None:
            return to_images(self._decode(state))
        if self.service.scheduler.config.mode == "latent":
            return np.zeros((0, 0, 0, 0), np.uint8)
        return to_images(state)

    def _admit(self, request: Any) -> tuple[Job, str | None]:
        """Decode and admit one stream (refused: its error, counted)."""
        params = dict(request.parameters or {})
        marker = params.pop(GAF_CANCEL_PARAM, None)
        try:
            req, every = decode_stream_request(request.data, params)
            with self._lock:
                if self.active >= self.max_streams:
                    raise Overloaded(f"server busy: {self.active} streams in flight (at most "
                                     f"{self.max_streams}); retry later")
                self.active += 1
            try:
                job = self.service.submit_streamed(req, every)
            except BaseException:
                self._release()
                raise
        except GAFError as err:
            self.service.metrics.refused("overloaded" if isinstance(err, Overloaded)
                                         else "invalid", 1)
            raise
        return job, marker

    def _release(self) -> None:
        with self._lock:
            self.active -= 1

    def _responses(self, request: Any, job: Job, marker: str | None):
        names = request.requested_output_names or None

        def wanted(name: str) -> bool:
            return names is None or name in names

        def cancelled() -> bool:
            if marker is not None and os.path.exists(marker):
                self._on_cancel()
                log.info("stream %d cancelled by its client; its rows left the scheduler",
                         job.ticket.id)
                return True
            return False

        return stream_responses(job, lambda p: preview_arrays(p, self._images, wanted),
                                lambda state: self._final([state]), cancelled)

    async def infer(self, requests: Sequence[Any]) -> AsyncIterator[list[dict[str, np.ndarray]]]:
        """PyTriton's decoupled inference callable: for its one request (``gaf_stream``'s
        batch size is 1), a response per preview, then the final one."""
        if len(requests) != 1:
            raise self._mark_error(RuntimeError(f"gaf_stream got {len(requests)} requests in "
                                                "one execute; its batch size is 1"))
        try:
            job, marker = self._admit(requests[0])
        except Exception as err:  # noqa: BLE001 - answered in one line
            raise self._mark_error(err) from None
        loop = asyncio.get_running_loop()
        responses = self._responses(requests[0], job, marker)
        try:
            while True:
                try:
                    item = await loop.run_in_executor(self._pool, next, responses, None)
                except Exception as err:  # noqa: BLE001 - the stream's failure, one line
                    raise self._mark_error(err) from None
                if item is None:
                    return
                yield [item]
        finally:
            if not job.done():  # the client went away or the server stops
                job.cancel()
            self._release()

    def close(self) -> None:
        """Stop the waiting threads (the service's close has ended every job)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
