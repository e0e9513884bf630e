"""The patch of PyTriton's stub-side proxy ``model.py`` (nvidia-pytriton 0.5-0.7) that
``gaf-trt serve`` ships to Triton's Python-backend stub.

The stub is compiled against the numpy 1.x ABI: with numpy >= 2, ``pb_utils.Tensor(name,
array)`` reads the array's element size at the numpy 1.x offset and sends empty outputs, and
``Tensor.as_numpy()`` builds arrays whose elements all read as the first one; so outputs and
inputs go through DLPack (:mod:`gaf_trt.serve.pb_tensors`, inserted as source). The stub
waits only 1 s for PyTriton's handshake socket, which fails the model load on a busy machine,
so it waits up to a minute. And the serving additions of :mod:`gaf_trt.serve.stub_serving`
(prompt shutdown, request cancellation, decoupled streams) are appended, their call sites rewritten here.

Both inserted files are real source files of this package (they import nothing of gaf_trt:
the stub cannot); :func:`patched_stub_source` reads them and checks that every line it
replaces occurs exactly once, refusing other PyTriton versions.
"""

from __future__ import annotations

from pathlib import Path

from gaf_trt.errors import ConfigError

#: The source files inserted into the stub's model.py.
PB_TENSORS_FILE = Path(__file__).with_name("pb_tensors.py")
STUB_SERVING_FILE = Path(__file__).with_name("stub_serving.py")

# The one line of the proxy that builds output tensors, and what replaces it.
_STUB_LINE = "                pb_utils.Tensor(name, value)\n"
_STUB_FIX = "                _gaf_output_tensor(name, value)\n"
_STUB_ANCHOR = "import triton_python_backend_utils as pb_utils"
_STUB_INPUT = "request[input_name] = input_tensor.as_numpy()"
_STUB_INPUT_FIX = "request[input_name] = _gaf_input_array(input_tensor)"
_HANDSHAKE = "get_config_from_handshake_server(handshake_socket)"
_HANDSHAKE_FIX = "get_config_from_handshake_server(handshake_socket, timeout_s=60.0)"

_WORKSPACE_LINE = ('            workspace_path = pathlib.Path(model_config["parameters"]'
                   '["workspace-path"]["string_value"])\n')
_STUB_SERVING_EDITS = (  # (original line(s), replacement) in the stub's model.py
    (_WORKSPACE_LINE, _WORKSPACE_LINE + "            _gaf_set_workspace(workspace_path)\n"),
    ("            handle_responses_task_async_future = self._requests_server.push(",
     ("            _gaf_register(triton_requests)\n"
      "            handle_responses_task_async_future = self._requests_server.push(")),
    ("                handle_responses_concurrent_future = handle_responses_task_async_future"
     ".result()\n",
     ("                handle_responses_concurrent_future = _gaf_pushed("
      "handle_responses_task_async_future, self._requests, requests_id)\n")),
    ("                triton_responses_or_error = handle_responses_concurrent_future.result()\n",
     ("                triton_responses_or_error = _gaf_wait(handle_responses_concurrent_future, "
      "triton_requests)\n")),
    ("            parameters=json.loads(triton_request.parameters()),\n",
     "            parameters=_gaf_parameters(triton_request),\n"),
    ("        self._requests_server.shutdown()\n",
     "        _gaf_shutdown_now(self._requests_server)\n"),
    ("            else:\n                triton_responses_or_error = None\n",
     ("            else:\n                _gaf_watch_stream(handle_responses_task_async_future, "
      "triton_requests)\n                triton_responses_or_error = None\n")),
    ("        triton_senders = [request.get_response_sender() for request in triton_requests]\n",
     "        triton_senders = [_GafSender(request) for request in triton_requests]\n"),
    ('                            error=pb_utils.TritonError(responses_payload.decode("utf-8"))',
     '                            error=_gaf_stream_error(responses_payload.decode("utf-8"))'),
)


def pb_tensors_source() -> str:
    """:mod:`gaf_trt.serve.pb_tensors` as inserted after the proxy's ``pb_utils`` import
    (the proxy calls its helpers under its own names)."""
    return ("\n\n" + PB_TENSORS_FILE.read_text()
            + "\n_gaf_output_tensor = gaf_output_tensor\n"
            "_gaf_input_array = gaf_input_array\n")


def patch_stub_serving(source: str) -> str:
    """The stub's ``model.py`` with the prompt shutdown and the cancellation check
    (:mod:`gaf_trt.serve.stub_serving` appended, its call sites rewritten)."""
    for old, new in _STUB_SERVING_EDITS:
        if source.count(old) != 1:
            raise ConfigError("unsupported nvidia-pytriton version: its proxy model.py differs "
                              "from 0.7.0's; install nvidia-pytriton==0.7.0")
        source = source.replace(old, new)
    return source + "\n\n# -- gaf-trt serving additions (gaf_trt/serve/stub_serving.py) --\n" \
        + STUB_SERVING_FILE.read_text()


def patched_stub_source(source: str) -> str:
    """PyTriton's stub-side ``model.py`` with tensors through DLPack, a longer handshake
    wait and the serving additions."""
    if source.count(_STUB_LINE) != 1 or _STUB_ANCHOR not in source \
            or source.count(_HANDSHAKE) != 1 or source.count(_STUB_INPUT) != 1:
        raise ConfigError("unsupported nvidia-pytriton version: its proxy model.py does not "
                          "build outputs the way 0.5-0.7 do; install nvidia-pytriton==0.7.0")
    head, tail = source.split(_STUB_ANCHOR, 1)
    first_line_end = tail.index("\n") + 1
    source = (head + _STUB_ANCHOR + tail[:first_line_end] + pb_tensors_source()
              + tail[first_line_end:])
    source = (source.replace(_STUB_LINE, _STUB_FIX).replace(_HANDSHAKE, _HANDSHAKE_FIX)
              .replace(_STUB_INPUT, _STUB_INPUT_FIX))
    return patch_stub_serving(source)


def pytriton_missing() -> str | None:
    """None when PyTriton is importable here, else why not (one line)."""
    try:
        import pytriton.triton  # noqa: F401
    except ImportError as err:
        return (f"nvidia-pytriton is not installed ({err}); install it with "
                "`pip install --no-deps nvidia-pytriton==0.7.0` after `pip install "
                "'gaf-trt[serve]'` (README, Serving)")
    return None


def install_stub_fix() -> None:
    """Make PyTriton ship the patched stub-side ``model.py`` (idempotent)."""
    from pytriton.models import model as pt_model

    original = pt_model.Model.get_proxy_model_files
    if getattr(original, "_gaf_patched", False):
        return

    def get_proxy_model_files(self):  # type: ignore[no-untyped-def]
        files = original(self)
        for key in files:
            if key.endswith("/model.py"):
                files[key] = patched_stub_source(files[key].decode("utf-8")).encode("utf-8")
        return files

    get_proxy_model_files._gaf_patched = True  # type: ignore[attr-defined]
    pt_model.Model.get_proxy_model_files = get_proxy_model_files
