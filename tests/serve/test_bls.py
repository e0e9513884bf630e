"""The Python-backend models of a ``gaf-trt triton-repo`` repository, run in-process on a
stand-in ``triton_python_backend_utils`` (tests/serve/fake_pb_utils.py): the ``gaf`` solver
model against ``gaf-trt sample``'s pipeline, its network reached through BLS requests to a
fake ``gaf_anchors`` ensemble of the three ``--network-backend python`` graph models.

Numerics: the reference is ``gaf-trt sample``'s pipeline on the ``ort`` backend over the
same engine directory, padded to the scheduler's minimum rows (``MinRowsNetwork``). The
graph models open ONNX Runtime sessions with the ``ort`` backend's options, and every call
here has exactly 16 rows (all rows of an execute fit in one padded call), so the same calls
are made on the same graphs: results are compared bit for bit.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time

import numpy as np
import pytest
import torch

from gaf_trt.engine.base import LoadRequest, load_backend
from gaf_trt.serve import MinRowsNetwork, ServeRequest
from tests.serve import fake_pb_utils as fake
from tests.serve.refs import sample_reference

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed "
                    "(checking model configs)")

COMPOSED = ServeRequest(classes=[3, 7], weights=[1.0, 2.0], steps=4, solver="ier", seed=5,
                        batch=2)
MASKED = ServeRequest(classes=[1, 8], mask_type="horizontal_2", steps=3, solver="euler", seed=9)


@pytest.fixture(scope="module")
def served(digits_engine, tmp_path_factory, one_thread):
    """The repository's Python models initialised in-process on the fake module."""
    from gaf_trt.serve import bls
    from gaf_trt.serve.repository import RepoOptions, build_repository

    repo = tmp_path_factory.mktemp("bls") / "repo"
    build_repository(digits_engine, repo, RepoOptions(network_backend="python"))
    saved = sys.modules.get("triton_python_backend_utils")
    sys.modules["triton_python_backend_utils"] = fake.as_module()
    graphs = {}
    for g in ("trunk", "j_head", "k_bank"):
        graphs[g] = bls.GraphModel()
        graphs[g].initialize({"model_repository": str(repo / f"gaf_{g}"), "model_version": "1",
                              "model_instance_kind": "CPU", "model_name": f"gaf_{g}"})
        fake.SERVER.models[f"gaf_{g}"] = graphs[g]
    fake.SERVER.models["gaf_anchors"] = fake.ensemble(
        ("gaf_trunk", {"x": "x", "t": "t", "y": "y"}, {"features": "features"}),
        ("gaf_j_head", {"features": "features", "x": "x", "t": "t"}, {"J": "J"}),
        ("gaf_k_bank", {"features": "features", "x": "x", "t": "t", "y": "y"}, {"K": "K"}))
    solver = bls.SolverModel()
    solver.initialize({"model_repository": str(repo / "gaf"), "model_version": "1",
                       "model_instance_kind": "CPU", "model_name": "gaf"})
    solver.repo = repo
    yield solver
    solver.finalize()
    fake.SERVER.models.clear()
    if saved is None:
        sys.modules.pop("triton_python_backend_utils", None)
    else:
        sys.modules["triton_python_backend_utils"] = saved


@pytest.fixture(scope="module")
def reference(digits_engine, one_thread):
    engine = load_backend("ort", LoadRequest(artifact=str(digits_engine), device="cpu",
                                             options={"graphs": "split"}))
    return lambda req: sample_reference(req, lambda _net: MinRowsNetwork(engine))


def request_of(req: ServeRequest, outputs=("latents", "images"), **extra) -> fake.InferenceRequest:
    """A client request for ``gaf`` (one row) with the inputs ``gaf-trt serve`` takes."""
    inputs = {"classes": np.array([req.classes], np.int32),
              "steps": np.array([[req.steps]], np.int32), "seed": np.array([[req.seed]], np.int64),
              "batch": np.array([[req.batch]], np.int32)}
    if req.weights is not None:
        inputs["weights"] = np.array([req.weights], np.float32)
    params = {"solver": req.solver}
    if req.mask_type is not None:
        params["mask_type"] = req.mask_type
    inputs.update(extra.pop("inputs", {}))
    params.update(extra.pop("parameters", {}))
    return fake.InferenceRequest("gaf", list(outputs),
                                 [fake.Tensor(k, v) for k, v in inputs.items()], parameters=params)


def latents(response: fake.InferenceResponse) -> torch.Tensor:
    assert not response.has_error(), response.error().message()
    tensor = fake.get_output_tensor_by_name(response, "latents")
    return torch.from_numpy(np.from_dlpack(fake._Wrapped(tensor.to_dlpack())).copy())


def test_composed_masked_and_bad_requests_in_one_execute(served, reference):
    """One execute: a weighted composition, a mask preset and three bad requests; the bad
    ones get their own error responses, the good ones are bit-identical to the pipeline."""
    bad_class = request_of(ServeRequest(classes=[3, 33], steps=2))
    bad_steps = request_of(ServeRequest(classes=[3], steps=0))
    bad_param = request_of(ServeRequest(classes=[3], steps=2), parameters={"colour": "red"})
    responses = fake.SERVER.execute(served, [request_of(COMPOSED), bad_class,
                                             request_of(MASKED), bad_steps, bad_param])
    got = latents(responses[0])[0]
    assert got.shape == (2, 1, 16, 16) and got.abs().max() > 0.1
    assert torch.equal(got, reference(COMPOSED))
    assert torch.equal(latents(responses[2])[0], reference(MASKED))
    images = fake.get_output_tensor_by_name(responses[0], "images")
    assert images.shape() == [1, 2, 16, 16, 1]
    for response, words in ((responses[1], "33"), (responses[3], "steps"),
                            (responses[4], "colour")):
        assert response.has_error() and words in response.error().message()
        assert response.error().code() == fake.TritonError.INVALID_ARG


def test_requested_outputs_only_and_rows(served, reference):
    """A request of two rows (two generations) asking for latents only."""
    one = ServeRequest(classes=[5], steps=3, solver="heun", seed=2)
    two = ServeRequest(classes=[5], steps=3, solver="heun", seed=4)
    req = fake.InferenceRequest("gaf", ["latents"], [
        fake.Tensor("classes", np.array([[5], [5]], np.int32)),
        fake.Tensor("steps", np.array([[3], [3]], np.int32)),
        fake.Tensor("seed", np.array([[2], [4]], np.int64))], parameters={"solver": "heun"})
    (response,) = fake.SERVER.execute(served, [req])
    assert [t.name() for t in response.output_tensors()] == ["latents"]
    got = latents(response)
    assert got.shape == (2, 1, 1, 16, 16)
    assert torch.equal(got[0], reference(one)) and torch.equal(got[1], reference(two))
    assert not torch.equal(got[0], got[1])


def test_network_error_fails_its_requests_and_the_model_goes_on(served, reference):
    """A BLS error response of the network fails the requests in that call (an error
    response, not a crash); the next execute is answered."""
    def broken(request):
        return fake.InferenceResponse(error=fake.TritonError("engine exploded"))

    healthy = fake.SERVER.models["gaf_anchors"]
    fake.SERVER.models["gaf_anchors"] = broken
    try:
        (response,) = fake.SERVER.execute(served, [request_of(COMPOSED)])
    finally:
        fake.SERVER.models["gaf_anchors"] = healthy
    assert response.has_error() and "engine exploded" in response.error().message()
    assert response.error().code() == fake.TritonError.INTERNAL
    (again,) = fake.SERVER.execute(served, [request_of(COMPOSED)])
    assert torch.equal(latents(again)[0], reference(COMPOSED))


@contextlib.contextmanager
def held_network():
    """Hold every network call (``gaf_anchors``) until the block ends: yields ``(entered,
    gate)``, ``entered`` set once a call is waiting; on exit the calls go on."""
    healthy = fake.SERVER.models["gaf_anchors"]
    entered, gate = threading.Event(), threading.Event()

    def held(request):
        entered.set()
        assert gate.wait(120)
        return healthy(request)

    fake.SERVER.models["gaf_anchors"] = held
    try:
        yield entered, gate
    finally:
        gate.set()
        fake.SERVER.models["gaf_anchors"] = healthy


def test_a_later_request_joins_while_the_first_runs(served, reference):
    """execute returns at once and answers through the response senders, so a request of a
    later execute enters the scheduler while the first one's network call is in flight
    (step-level batching across arrivals); the order is made certain by holding that call."""
    slow = ServeRequest(classes=[2], steps=12, solver="euler", seed=1)
    quick = ServeRequest(classes=[6], steps=2, solver="euler", seed=3)
    first, second = request_of(slow), request_of(quick)
    with held_network() as (entered, gate):
        assert fake.SERVER.execute(served, [first], wait=None) is None
        assert entered.wait(120)  # the first request's call is in the network
        assert fake.SERVER.execute(served, [second], wait=None) is None
        assert served.service.scheduler.wait_pending(1, timeout=120)  # the second waits in line
        assert not first.sender.final.is_set()
    assert first.sender.final.wait(120) and second.sender.final.wait(120)
    assert torch.equal(latents(first.sender.response)[0], reference(slow))
    assert torch.equal(latents(second.sender.response)[0], reference(quick))


def test_a_cancelled_request_is_answered_and_frees_its_rows(served, reference):
    """A request whose client cancels it is answered CANCELLED at once (while its network
    call is still held), and its rows leave the scheduler; the model goes on serving."""
    doomed = request_of(ServeRequest(classes=[4], steps=50, solver="euler", seed=7))
    with held_network() as (entered, gate):
        assert fake.SERVER.execute(served, [doomed], wait=None) is None
        assert entered.wait(120)
        doomed.sender.cancelled = True
        assert doomed.sender.final.wait(120)
        assert not gate.is_set()
    error = doomed.sender.response.error()
    assert error.code() == fake.TritonError.CANCELLED and "cancelled" in error.message()
    deadline = time.monotonic() + 120  # its worker leaves at its next evaluation
    while served.service.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert served.service.active == 0
    (after,) = fake.SERVER.execute(served, [request_of(COMPOSED)])
    assert torch.equal(latents(after)[0], reference(COMPOSED))


def test_past_max_queue_a_request_is_refused_at_once(served, reference):
    """Answering later, the model's own service bounds the requests in flight (Triton's
    queue is unbounded): past ``max_queue`` a request is answered "server busy" at once,
    while the admitted ones are held in the network; then it serves again."""
    from gaf_trt.serve.service import GenerationService, ServeConfig

    busy_service = served.service
    served.service = GenerationService(served.network, ServeConfig(
        max_queue=2, limits=busy_service.config.limits)).start()
    admitted = [request_of(ServeRequest(classes=[c], steps=2, solver="euler", seed=c))
                for c in (2, 5)]
    extra = request_of(ServeRequest(classes=[9], steps=2, solver="euler", seed=9))
    with held_network() as (entered, gate):
        assert fake.SERVER.execute(served, admitted, wait=None) is None
        assert entered.wait(120)
        assert fake.SERVER.execute(served, [extra], wait=None) is None
        assert extra.sender.final.wait(120)
        assert not gate.is_set()  # refused while the two admitted ones are still held
        assert "server busy" in extra.sender.response.error().message()
    for req in admitted:
        assert req.sender.final.wait(120) and not req.sender.response.has_error()
    served.service.close()
    served.service = busy_service
    (after,) = fake.SERVER.execute(served, [request_of(COMPOSED)])
    assert torch.equal(latents(after)[0], reference(COMPOSED))


def test_blocking_execute_answers_before_returning(served, reference):
    """``--blocking-execute`` (Triton before 24.06): execute returns the responses."""
    req = request_of(COMPOSED)
    served.respond_later = False
    try:
        (response,) = fake.SERVER.execute(served, [req])
    finally:
        served.respond_later = True
    assert req.sender is None  # answered by execute's return value
    assert torch.equal(latents(response)[0], reference(COMPOSED))


def test_graph_model_refuses_a_missing_input(served):
    """A graph model asked without one of its inputs answers every request of the run
    with an error."""
    model = fake.SERVER.models["gaf_trunk"]
    req = fake.InferenceRequest("gaf_trunk", ["features"], [
        fake.Tensor("x", np.ones((2, 1, 16, 16), np.float32)),
        fake.Tensor("t", np.full((2, 1), 0.5, np.float32))])
    (response,) = fake.SERVER.execute(model, [req])
    assert response.has_error() and "needs input y" in response.error().message()


def test_fake_refuses_bls_outside_execute(served):
    """The stand-in, like Triton, allows BLS only while a request is being served."""
    req = fake.InferenceRequest("gaf_anchors", ["J"], [])
    with pytest.raises(fake.TritonModelException, match="only allowed while a request"):
        req.exec()


def test_gaf_metrics_are_triton_custom_metrics(served):
    """The solver model's service counters, copied to Triton custom metrics named as
    ``gaf-trt serve``'s: each counter / gauge equals the service's value, summaries are
    ``_sum`` / ``_count`` counters, the rows histogram observed once per call."""
    from gaf_trt.serve.metrics import service_families

    assert served.metrics is not None
    fake.SERVER.execute(served, [request_of(ServeRequest(classes=[2], steps=2, seed=1)),
                                 request_of(ServeRequest(classes=[3, 33], steps=2))])
    served.metrics.update()
    families = service_families(served.service)
    for fam in families:
        for suffix, labels, value in fam.samples:
            if fam.kind == "histogram" or suffix not in ("", "_sum", "_count"):
                continue
            (metric,) = [m for m in fake.FAMILIES[fam.name + suffix].metrics
                         if m.labels == {"instance": "gaf", **labels}]
            assert metric.value() == pytest.approx(value), (fam.name, suffix, labels)
    assert fake.FAMILIES["gaf_requests_refused_total"].kind == fake.MetricFamily.COUNTER
    assert fake.FAMILIES["gaf_requests_active"].kind == fake.MetricFamily.GAUGE
    (rows,) = fake.FAMILIES["gaf_network_call_rows"].metrics
    stats, _ = served.service.scheduler.snapshot()
    assert sorted(rows.observed) == sorted(float(m) for m, n in stats.rows_per_call.items()
                                           for _ in range(n))
    refused = [m for m in fake.FAMILIES["gaf_requests_refused_total"].metrics
               if m.labels["reason"] == "invalid"]
    assert refused[0].value() >= 1

@pytest.fixture(scope="module")
def streamer(served):
    """The repository's ``gaf_stream`` model (decoupled), beside the solver model."""
    from gaf_trt.serve.bls_stream import StreamModel

    model = StreamModel()
    model.initialize({"model_repository": str(served.repo / "gaf_stream"),
                      "model_version": "1", "model_instance_kind": "CPU",
                      "model_name": "gaf_stream"})
    yield model
    model.finalize()


def _array(response, name):
    tensor = fake.get_output_tensor_by_name(response, name)
    return np.from_dlpack(fake._Wrapped(tensor.to_dlpack())).copy()


def test_stream_model_sends_previews_then_the_result(served, streamer, reference):
    """Issue 27: ``gaf_stream`` answers through its response sender: a response per
    preview (step, image), then the result as ``gaf`` answers it (the pipeline's bits), then
    the final flag; a bad preview_every is one error response, final."""
    req = request_of(COMPOSED, outputs=("preview_step", "preview", "latents"),
                     parameters={"preview_every": 2})
    assert fake.SERVER.execute(streamer, [req], decoupled=True) is None
    responses = req.sender.responses
    assert [_array(r, "preview_step").tolist() for r in responses[:-1]] == [[[2]], [[4]]]
    assert _array(responses[0], "preview").shape == (1, 2, 16, 16, 1)
    assert torch.equal(latents(responses[-1])[0], reference(COMPOSED))
    (plain,) = fake.SERVER.execute(served, [request_of(COMPOSED)])
    assert torch.equal(latents(plain), latents(responses[-1]))
    bad = request_of(COMPOSED, parameters={"preview_every": 5})
    fake.SERVER.execute(streamer, [bad], decoupled=True)
    (error,) = bad.sender.responses
    assert error.has_error() and error.error().code() == fake.TritonError.INVALID_ARG
    assert "preview_every must be 0 (no previews) or an integer in 1..4" in \
        error.error().message()


def test_cancelled_stream_is_answered_and_frees_its_rows(streamer):
    """A stream whose client cancels it after its first preview is answered CANCELLED
    (final) and its rows leave the scheduler."""
    req = request_of(ServeRequest(classes=[4], steps=1000, solver="euler", seed=7),
                     outputs=("preview_step",), parameters={"preview_every": 1})
    assert fake.SERVER.execute(streamer, [req], wait=None, decoupled=True) is None
    deadline = time.monotonic() + 120
    while not req.sender.responses and time.monotonic() < deadline:
        time.sleep(0.01)
    req.sender.cancelled = True
    assert req.sender.final.wait(120)
    last = req.sender.responses[-1]
    assert last.has_error() and last.error().code() == fake.TritonError.CANCELLED
    while streamer.service.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert streamer.service.active == 0 and streamer.service.scheduler.pending_rows() == 0
