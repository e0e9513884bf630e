"""Serving additions to PyTriton's stub-side proxy ``model.py`` (nvidia-pytriton 0.7.0): a
prompt shutdown and request cancellation.

(1) Prompt shutdown: the proxy's requests server notices its shutdown flag only at a 1 s
poll, and Triton unloads the instances one after another, so each instance's finalize would
add that second to the stop. (2) Cancellation: while waiting for the answer the proxy checks
Triton's ``request.is_cancelled()`` (a gRPC client cancelled or went away) every
:data:`GAF_CANCEL_POLL_S` seconds and creates the request's marker file, whose path it passes
to the serving process as the request parameter :data:`GAF_CANCEL_PARAM`; the serving process
(:mod:`gaf_trt.serve.triton`) watches it and cancels the generation (rows freed). (3) Errors:
PyTriton hands a failed request's whole traceback to the stub, which raises it as a
``TritonModelException`` (HTTP 500 / gRPC INTERNAL, the traceback and the server's paths in
the message); the serving process marks its error ``[gaf-error CODE] one line``
(:data:`GAF_ERROR_MARK`) and :func:`_gaf_answer` answers each request with a ``TritonError``
of that code and line only (INVALID_ARG for a refused request: HTTP 400). (4) Decoupled models
(``gaf_stream``): their ``execute`` returns at once, so :func:`_gaf_watch_stream` checks
the requests' cancellation in a thread of its own until their last response is sent, and
:func:`_gaf_stream_error` gives a failed stream's error its code and one line.

This file is appended, as source, to the stub's ``model.py`` by
:mod:`gaf_trt.serve.pytriton_patch`, which also rewrites the proxy's lines to call these
helpers. The stub does not import gaf_trt, so this file imports nothing of gaf_trt, has no
``from __future__`` line, and every top-level name starts with ``gaf_``/``_gaf``/``GAF_``.
"""

import asyncio
import concurrent.futures
import json
import os
import pathlib
import threading
import time

GAF_CANCEL_PARAM = "gaf_cancel_file"
GAF_CANCEL_POLL_S = 0.05
GAF_STREAM_MARKER_S = 10.0  # a cancelled stream's marker outlives an unfinished answer this long
GAF_ERROR_MARK = "[gaf-error "  # "[gaf-error CODE] message", CODE a TritonError code name
_gaf_cancel_files = {}  # id(triton request) -> path of the file marking it cancelled
_gaf_cancel_state = {"dir": None, "next": 0}


def _gaf_shutdown_now(requests_server):
    """Stop the requests server now: its loop would notice the flag only at its next 1 s poll."""
    requests_server.shutdown()
    loop = requests_server._server.server_loop
    if loop is None:
        return

    def cancel_all():
        for task in asyncio.all_tasks(loop):
            task.cancel()

    try:
        loop.call_soon_threadsafe(cancel_all)
    except RuntimeError:  # the loop has just closed
        pass


def _gaf_set_workspace(workspace_path):
    _gaf_cancel_state["dir"] = pathlib.Path(workspace_path) / "gaf-cancel"
    _gaf_cancel_state["dir"].mkdir(exist_ok=True)


def _gaf_register(triton_requests):
    """A cancel-marker path for each request (sent along as a request parameter)."""
    for request in triton_requests:
        _gaf_cancel_state["next"] += 1
        name = f"{os.getpid()}-{_gaf_cancel_state['next']}"
        _gaf_cancel_files[id(request)] = str(_gaf_cancel_state["dir"] / name)


def _gaf_parameters(triton_request):
    params = json.loads(triton_request.parameters())
    params.pop(GAF_CANCEL_PARAM, None)  # never a client's own value
    path = _gaf_cancel_files.get(id(triton_request))
    if path is not None:
        params[GAF_CANCEL_PARAM] = path
    return params


def _gaf_wait(future, triton_requests):
    """future.result(); meanwhile a request that Triton cancelled gets its marker file."""
    waiting = list(triton_requests)
    try:
        while True:
            try:
                return _gaf_answer(future.result(timeout=GAF_CANCEL_POLL_S), triton_requests)
            except TimeoutError:
                for request in list(waiting):
                    if request.is_cancelled():
                        waiting.remove(request)
                        path = _gaf_cancel_files.get(id(request))
                        if path is not None:
                            open(path, "w").close()
    finally:
        for request in triton_requests:
            path = _gaf_cancel_files.pop(id(request), None)
            if path is not None and os.path.exists(path):
                os.unlink(path)


def gaf_error_parts(text):
    """``(code name, one line)`` of an error the serving process sent: the part after the
    last :data:`GAF_ERROR_MARK`, else (an error of PyTriton's own) ``INTERNAL`` and the
    traceback's last line (``Type: message``)."""
    at = text.rfind(GAF_ERROR_MARK)
    if at >= 0:
        code, _, rest = text[at + len(GAF_ERROR_MARK):].partition("]")
        line = rest.strip().splitlines()[0] if rest.strip() else "request failed"
        return code.strip(), line
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return "INTERNAL", "internal error: " + (lines[-1] if lines else "request failed")


def _gaf_pushed(push_future, requests_map, requests_id):
    """The future of the requests' answer; when handing them to the serving process failed
    (PyTriton's shared memory cannot carry an input with a dimension of 0), one holding
    that failure as a marked error, answered by :func:`_gaf_answer` like any other."""
    try:
        return push_future.result()
    except Exception as err:  # noqa: BLE001 - answered to the client in one line
        requests_map.pop(requests_id, None)
        if "zeros in shape" in str(err):
            text = (f"{GAF_ERROR_MARK}INVALID_ARG] an input tensor is empty (a dimension of "
                    "0); send at least one value in every input")
        else:
            text = f"{GAF_ERROR_MARK}INTERNAL] internal error: {type(err).__name__}: {err}"
        done = concurrent.futures.Future()
        done.set_result(pb_utils.TritonModelException(text))  # noqa: F821 - the stub's
        return done


def _gaf_answer(result, triton_requests):
    """The proxy's answer; an error (a ``TritonModelException`` holding the serving
    process's traceback) becomes one error response per request, of the error's code and
    with its one line only."""
    if not isinstance(result, Exception):
        return result
    message = getattr(result, "message", None)
    text = message() if callable(message) else str(result)
    code, line = gaf_error_parts(text)
    errors = pb_utils.TritonError  # noqa: F821 - the stub's module, imported by its model.py
    error = pb_utils.TritonError(line, getattr(errors, code, errors.INTERNAL))  # noqa: F821
    return [pb_utils.InferenceResponse(error=error) for _ in triton_requests]  # noqa: F821


def _gaf_stream_error(text):
    """The ``TritonError`` of a failed decoupled request: code and one line, as
    :func:`_gaf_answer` gives a coupled one."""
    code, line = gaf_error_parts(text)
    errors = pb_utils.TritonError  # noqa: F821 - the stub's module, imported by its model.py
    return pb_utils.TritonError(line, getattr(errors, code, errors.INTERNAL))  # noqa: F821


class _GafSender:
    """A decoupled request's response sender, shared with :func:`_gaf_watch_stream`: Triton
    frees a request's response factory with its final response, after which
    ``request.is_cancelled()`` crashes the server; so both go under one lock, and the watcher
    asks only while the final response has not been sent."""

    def __init__(self, request):
        self._sender = request.get_response_sender()
        self.lock = threading.Lock()
        self.finished = False
        _gaf_senders[id(request)] = self

    def send(self, response=None, flags=0):
        with self.lock:
            self._sender.send(response, flags)
            if flags & pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL:  # noqa: F821 - the stub's
                self.finished = True


_gaf_senders = {}  # id(triton request) -> its _GafSender (decoupled models)


def _gaf_request_cancelled(request):
    """Whether Triton cancelled a decoupled request; False once it is answered."""
    sender = _gaf_senders.get(id(request))
    if sender is None:  # its responses handler has not started yet
        return False
    with sender.lock:
        return not sender.finished and request.is_cancelled()


def _gaf_watch_stream(push_future, triton_requests):
    """A decoupled model's ``execute`` returns before its requests are answered: until their
    last response is sent, a thread checks every :data:`GAF_CANCEL_POLL_S` whether Triton
    cancelled one (the gRPC stream's client cancelled or went away) and creates its marker
    file; then the markers go."""

    def watch():
        waiting = list(triton_requests)
        deadline = None  # all cancelled: their markers stay until the serving process saw them
        try:
            done = push_future.result()  # the future of the requests' last response
            while not done.done() and (deadline is None or time.monotonic() < deadline):
                time.sleep(GAF_CANCEL_POLL_S)
                for request in list(waiting):
                    if _gaf_request_cancelled(request):
                        waiting.remove(request)
                        path = _gaf_cancel_files.get(id(request))
                        if path is not None:
                            open(path, "w").close()
                if not waiting and deadline is None:
                    deadline = time.monotonic() + GAF_STREAM_MARKER_S
        except Exception:  # noqa: BLE001 - the push failed: execute reports it
            pass
        finally:
            for request in triton_requests:
                _gaf_senders.pop(id(request), None)
                path = _gaf_cancel_files.pop(id(request), None)
                if path is not None and os.path.exists(path):
                    os.unlink(path)

    threading.Thread(target=watch, name="gaf-stream-watch", daemon=True).start()
