"""The wire format of the ``gaf`` model and the PyTriton stub patch (issue 22 item 5): the
files inserted into the stub are real source files of the package, the patch applies to
PyTriton's own proxy, and a request survives encoding and decoding unchanged."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import numpy as np
import pytest

from gaf_trt.errors import ConfigError
from gaf_trt.serve import pytriton_patch
from gaf_trt.serve.requests import ServeRequest
from gaf_trt.serve.wire import (
    INPUTS,
    NAMES_PARAM,
    OUTPUTS,
    decode_request,
    encode_request,
    pad_request,
    split_rows,
)

STUB_FILES = (pytriton_patch.PB_TENSORS_FILE, pytriton_patch.STUB_SERVING_FILE)
STUB_PREFIXES = ("gaf_", "_gaf", "_Gaf", "GAF_", "_GAF")


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


@pytest.mark.parametrize("path", STUB_FILES, ids=lambda p: p.name)
def test_stub_files_are_real_source_files_the_stub_can_take(path: Path):
    """Importable modules of the package, and insertable into a foreign file: no
    ``from __future__`` (only valid at a file's top), no gaf_trt import (the stub has none),
    every top-level name of our prefixes (no clash with the proxy's names)."""
    assert path.is_file() and path.parent.name == "serve"
    importlib.import_module(f"gaf_trt.serve.{path.stem}")
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.module != "__future__" and not (node.module or "").startswith("gaf_trt")
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith("gaf_trt") for a in node.names)
    assert all(n.startswith(STUB_PREFIXES) for n in _top_level_names(tree))


def test_the_server_and_the_stub_share_the_cancel_parameter():
    from gaf_trt.serve import stub_serving, triton

    assert triton.CANCEL_PARAM == stub_serving.GAF_CANCEL_PARAM
    assert triton.CANCEL_POLL_S == stub_serving.GAF_CANCEL_POLL_S


def test_patch_applies_to_pytritons_proxy():
    pytriton = pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed")
    proxy = Path(pytriton.__file__).parent / "proxy" / "model.py"
    if not proxy.is_file():
        pytest.skip("this PyTriton has no proxy/model.py")
    patched = pytriton_patch.patched_stub_source(proxy.read_text())
    compile(patched, "model.py", "exec")
    for path in STUB_FILES:  # the files themselves, as they are
        assert path.read_text() in patched
    for call in ("_gaf_output_tensor(name, value)", "_gaf_input_array(input_tensor)",
                 "_gaf_wait(", "_gaf_parameters(triton_request)", "_gaf_register(",
                 "_gaf_shutdown_now(", "timeout_s=60.0"):
        assert call in patched, call


def test_patch_refuses_another_proxy():
    with pytest.raises(ConfigError, match="unsupported nvidia-pytriton version"):
        pytriton_patch.patched_stub_source("import triton_python_backend_utils as pb_utils\n")


# --------------------------------------------------------------------------- wire


REQUESTS = [
    ServeRequest(classes=[3]),
    ServeRequest(classes=[1, 7], weights=[0.25, 2.0], steps=5, seed=123456789012, batch=3,
                 solver="heun", output="latents"),
    ServeRequest(classes=["3", "seven"], alpha=0.75, sigma=0.5, t_eps=0.0078125,
                 mask_type="vertical"),
    ServeRequest(classes=[0, 1, 2], mask_image=np.arange(48, dtype=np.uint8).reshape(6, 8),
                 sigma=0.0),
    ServeRequest(classes=[2], steps=4, cache="taylor:2"),
]


@pytest.mark.parametrize("req", REQUESTS, ids=range(len(REQUESTS)))
def test_a_request_survives_the_wire(req: ServeRequest):
    arrays, params = encode_request(req)
    specs = {t.name: t for t in INPUTS}
    for name, arr in arrays.items():  # what the model declares, batch dimension first
        assert arr.dtype == np.dtype(specs[name].dtype) and arr.shape[0] == 1
        assert arr.ndim - 1 == len(specs[name].shape)
    assert all(isinstance(v, str) for v in params.values())
    (row,) = split_rows(arrays)
    back = decode_request(row, params)
    for field in ServeRequest.__dataclass_fields__:
        want, got = getattr(req, field), getattr(back, field)
        if isinstance(want, np.ndarray):
            assert np.array_equal(want, got) and got.dtype == np.uint8
        elif field == "classes":
            assert [str(c) for c in got] == [str(c) for c in want]
        else:
            assert got == want, field
    assert (NAMES_PARAM in params) == any(isinstance(c, str) for c in req.classes)


def test_regions_travel_as_a_json_list_parameter():
    req = ServeRequest(classes=[1, 2, 3], regions=["ears", "eyes"], steps=2)
    arrays, params = encode_request(req)
    assert params["regions"] == '["ears", "eyes"]'
    back = decode_request({k: v[0] for k, v in arrays.items()}, params)
    assert back.regions == ["ears", "eyes"] and back.classes == [1, 2, 3]
    for bad in ('["ears", 3.5]', "ears", '{"a": 1}'):
        with pytest.raises(ConfigError, match="parameter regions must be a JSON list of region"):
            decode_request({k: v[0] for k, v in arrays.items()}, {**params, "regions": bad})


PADDED = [ServeRequest(classes=[4], steps=3, seed=2),
          ServeRequest(classes=[3, 7], weights=[1.0, 2.0], solver="ier", batch=2),
          ServeRequest(classes=[0, 1, 2], weights=[0.5, 1.0, 1.5], alpha=0.5)]


def test_padded_requests_have_one_shape_and_decode_unpadded():
    """Requests of 1-3 classes padded to the class limit send the same input names and
    shapes (what Triton's batcher needs to group them) and decode to the unpadded request
    (a single class with weight 1)."""
    shapes = set()
    for req in PADDED:
        arrays, params = encode_request(req)
        padded = pad_request(arrays, 8)
        shapes.add(tuple(sorted((k, v.shape) for k, v in padded.items()
                                if k in ("classes", "weights", "class_count"))))
        back = decode_request(split_rows(padded)[0], params)
        assert back.classes == req.classes
        assert back.weights == (req.weights or [1.0])
        assert (back.steps, back.seed, back.batch, back.alpha) == \
            (req.steps, req.seed, req.batch, req.alpha)
    assert len(shapes) == 1


def test_padded_request_errors_name_the_value():
    arrays, params = encode_request(PADDED[1])
    padded = pad_request(arrays, 4)
    row = split_rows(padded)[0]
    for n in (0, 5):
        with pytest.raises(ConfigError, match=f"class_count must be in 1..4 .*got {n}"):
            decode_request({**row, "class_count": np.array([n], np.int32)}, params)
    with pytest.raises(ConfigError, match="class_count 3 needs at least 3 weights, got 2"):
        decode_request({**row, "weights": row["weights"][:2],
                        "class_count": np.array([3], np.int32)}, params)
    names = {k: v for k, v in row.items() if k != "classes"}
    with pytest.raises(ConfigError, match="does not go with the parameter 'class_names'"):
        decode_request(names, {**params, NAMES_PARAM: '["3", "7"]'})
    with pytest.raises(ConfigError, match="cannot pad 3 classes to width 2"):
        pad_request(encode_request(PADDED[2])[0], 2)
    with pytest.raises(ConfigError, match="2 classes without weights"):
        pad_request({"classes": np.array([[1, 2]], np.int32)}, 8)


def test_triton_repo_solver_model_speaks_the_same_wire():
    """The ``gaf`` model of ``triton-repo`` takes the inputs of ``gaf-trt serve`` (but the
    mask image) and gives the same outputs."""
    from gaf_trt.serve.repository import RepoOptions, solver_config

    cfg = solver_config(RepoOptions())
    assert [i["name"] for i in cfg["input"]] == [t.name for t in INPUTS if t.name != "mask_image"]
    assert [o["name"] for o in cfg["output"]] == [t.name for t in OUTPUTS]


# --------------------------------------------------------------------------- errors (issue 23)


def test_error_answer_codes_and_one_line():
    """A refused request is the client's error, a full queue UNAVAILABLE, a cancelled one
    CANCELLED, anything else INTERNAL; always one line."""
    from gaf_trt.serve.scheduler import Cancelled
    from gaf_trt.serve.service import Overloaded
    from gaf_trt.serve.wire import MAX_ERROR_CHARS, error_answer

    assert error_answer(ConfigError("unknown class name '--3'")) == \
        ("INVALID_ARG", "unknown class name '--3'")
    assert error_answer(Overloaded("server busy"))[0] == "UNAVAILABLE"
    assert error_answer(Cancelled("request 3 cancelled"))[0] == "CANCELLED"
    code, line = error_answer(ValueError("boom\n  at /srv/x.py"))
    assert (code, line) == ("INTERNAL", "internal error: ValueError: boom at /srv/x.py")
    assert len(error_answer(ConfigError("x" * 5000))[1]) <= MAX_ERROR_CHARS + 3


def _stub_namespace():
    """stub_serving.py as the stub runs it: appended to a module with ``pb_utils``."""
    from tests.serve import fake_pb_utils

    ns = {"pb_utils": fake_pb_utils, "__name__": "stub"}
    exec(compile(pytriton_patch.STUB_SERVING_FILE.read_text(), "stub", "exec"), ns)
    return ns, fake_pb_utils


def test_stub_answers_a_marked_error_with_its_code_and_line_only():
    """The serving process's error arrives as PyTriton's traceback text; the stub answers
    each request with a TritonError of the marked code and the one line."""
    from gaf_trt.serve import stub_serving

    ns, pb = _stub_namespace()
    trace = ("Traceback (most recent call last):\n  File \"/srv/gaf_trt/serve/triton.py\", "
             "line 170, in _safe_infer\npytriton.exceptions.PyTritonBadParameterError: "
             f"{stub_serving.GAF_ERROR_MARK}INVALID_ARG] unknown class name '--3'\n")
    answers = ns["_gaf_answer"](pb.TritonModelException(trace), [object(), object()])
    assert len(answers) == 2
    for answer in answers:
        assert answer.error().code() == pb.TritonError.INVALID_ARG
        assert answer.error().message() == "unknown class name '--3'"
    unmarked = ns["_gaf_answer"](pb.TritonModelException("Traceback ...\n  File \"/x.py\"\n"
                                                         "RuntimeError: socket closed\n"), [1])
    assert unmarked[0].error().code() == pb.TritonError.INTERNAL
    assert unmarked[0].error().message() == "internal error: RuntimeError: socket closed"
    responses = [object()]
    assert ns["_gaf_answer"](responses, [1]) is responses


def test_remove_model_folders_takes_only_this_workspaces(tmp_path):
    from gaf_trt.serve.host import remove_model_folders

    def folder(name: str, workspace: str) -> Path:
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "config.pbtxt").write_text(
            f'parameters {{\n  key: "workspace-path"\n  value {{\n    string_value: '
            f'"{workspace}"\n  }}\n}}\n')
        return tmp_path / name

    ours = folder("folderAb12Cd", "/ws/workspace_ours")
    other = folder("folderXy34Zw", "/ws/workspace_other")
    unrelated = folder("folders_of_mine", "/ws/workspace_ours")
    assert remove_model_folders("/ws/workspace_ours", root=tmp_path) == [ours]
    assert not ours.exists() and other.is_dir() and unrelated.is_dir()


def test_stub_answers_a_failed_hand_over_in_one_line():
    """PyTriton's shared memory cannot carry a tensor with a 0 dimension: the request is
    answered INVALID_ARG in one line (it was a 500 with the stub's traceback)."""
    import concurrent.futures

    ns, pb = _stub_namespace()
    failed = concurrent.futures.Future()
    failed.set_exception(TypeError("memoryview: cannot cast view with zeros in shape or strides"))
    requests_map = {b"id": ["request"]}
    answer = ns["_gaf_pushed"](failed, requests_map, b"id").result()
    assert requests_map == {}
    (response,) = ns["_gaf_answer"](answer, ["request"])
    assert response.error().code() == pb.TritonError.INVALID_ARG
    assert "an input tensor is empty" in response.error().message()
