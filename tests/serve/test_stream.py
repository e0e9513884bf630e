"""Live previews (issue 27), in-process: ``GenerationService.submit_streamed`` and the
``gaf_stream`` front end of ``gaf-trt serve`` driven without Triton. The previews are the
composed data anchor the solver received (recorded on the reference network), the final
result is bit-identical to the non-streamed one, only the rows that asked are wrapped, and a
cancelled stream frees its rows. (Through a real server: test_triton_server.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import numpy as np
import pytest
import torch

from gaf_trt.errors import ConfigError
from gaf_trt.serve import Cancelled, GenerationService, MinRowsNetwork, ServeRequest, to_images
from gaf_trt.serve.previews import PreviewNetwork, check_preview_every
from gaf_trt.serve.stream import stream_responses
from gaf_trt.serve.triton_stream import StreamFrontEnd
from tests.serve.refs import sample_reference

TIMEOUT = 120
COMPOSED = ServeRequest(classes=[3, 7], weights=[1.0, 2.0], steps=6, solver="heun", seed=5,
                        batch=2)  # 12 evaluations of 4 rows
PURE = ServeRequest(classes=[4], steps=5, solver="ier", seed=2)  # 5 evaluations of 1 row


class _Recording:
    """A network recording the data anchors ``K`` of every call."""

    def __init__(self, network):
        self.network, self.config, self.k = network, network.config, []

    def __call__(self, x, t, y):
        j, k = self.network(x, t, y)
        self.k.append(k.float().clone())
        return j, k


def reference(req: ServeRequest):
    """The final state on the padded network and the composed K of every evaluation."""
    rec: list[_Recording] = []

    def wrap(net):
        rec.append(_Recording(MinRowsNetwork(net)))
        return rec[0]

    final = sample_reference(req, wrap)
    n = len(req.classes)
    if n == 1 and req.weights is None:
        return final, rec[0].k
    w = torch.tensor(req.weights) / sum(req.weights)
    return final, [sum(w[i] * k.view(n, req.batch, *k.shape[1:])[i] for i in range(n))
                   for k in rec[0].k]


@pytest.fixture(scope="module")
def service(digits):
    svc = GenerationService(digits).start()
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def refs(digits):
    return {id(r): reference(r) for r in (COMPOSED, PURE)}


def wait_idle(service) -> None:
    """A cancelled job's worker leaves at its next evaluation: wait (bounded) for it."""
    deadline = time.monotonic() + TIMEOUT
    while service.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert service.active == 0 and service.scheduler.pending_rows() == 0


def collect(job):
    previews = list(iter(lambda: job.previews.get(TIMEOUT), None))
    return previews, job.result(TIMEOUT)


@pytest.mark.parametrize("req,every", [(COMPOSED, 4), (PURE, 1)], ids=["composed", "pure"])
def test_previews_are_the_data_anchor_and_the_result_is_unchanged(service, refs, req, every):
    """Alongside a request without previews: the streamed one's previews are the composed
    K of evaluations every, 2*every, ...; its final state is the bits of the same request
    not streamed; the companion is not wrapped and gets its own bits."""
    final, anchors = refs[id(req)]
    other = PURE if req is COMPOSED else COMPOSED
    companion = service.submit(other)
    job = service.submit_streamed(req, every)
    previews, state = collect(job)
    assert companion.previews is None
    assert torch.equal(state, final)
    assert torch.equal(companion.result(TIMEOUT), refs[id(other)][0])
    assert [p.step for p in previews] == list(range(every, len(anchors) + 1, every))
    assert {p.total for p in previews} == {len(anchors)}
    for p in previews:
        assert p.state.shape == (req.batch, 1, 16, 16)
        assert torch.allclose(p.state, anchors[p.step - 1], rtol=0, atol=1e-6)


def test_a_cached_request_streams_the_bits_of_its_unstreamed_answer(service):
    """A request with a feature cache (``cache`` parameter) streams too: the scheduler's
    cached call goes through the preview wrapper; the final state is the bits of the same
    request not streamed."""
    req = dataclasses.replace(COMPOSED, cache="taylor:2", solver="euler", steps=6)
    plain = service.submit(req).result(TIMEOUT)
    previews, state = collect(service.submit_streamed(req, 3))
    assert torch.equal(state, plain)
    assert [p.step for p in previews] == [3, 6]


@pytest.mark.parametrize("value", [-1, 13, 2.5, "x", True, "1e3", [2]])
def test_preview_every_refused_naming_value_and_range(service, value):
    with pytest.raises(ConfigError, match=r"preview_every must be 0 \(no previews\) or an "
                                          r"integer in 1\.\.12 .*got"):
        service.submit_streamed(COMPOSED, value)
    assert service.active == 0


def test_preview_every_zero_absent_or_text(service, refs):
    assert check_preview_every(None, 5) == 0 and check_preview_every("3", 5) == 3
    assert check_preview_every(np.int64(5), 5) == 5
    job = service.submit_streamed(PURE, 0)
    assert job.previews is None
    responses = list(stream_responses(job, lambda p: {"p": p}, lambda s: {"final": s}))
    assert len(responses) == 1 and torch.equal(responses[0]["final"], refs[id(PURE)][0])


def test_cancelled_stream_frees_its_rows(service):
    """The client cancels after the first preview: Cancelled, the job leaves, nothing
    pending; the service then serves again."""
    long = dataclasses.replace(COMPOSED, steps=1000)
    job = service.submit_streamed(long, 1)
    gone = {"now": False}
    stream = stream_responses(job, lambda p: {"step": p.step}, lambda s: {"final": s},
                              lambda: gone["now"])
    assert next(stream) == {"step": 1}
    gone["now"] = True
    with pytest.raises(Cancelled):
        list(stream)
    with pytest.raises(Cancelled):
        job.result(TIMEOUT)
    assert service.active == 0 and service.scheduler.pending_rows() == 0


@dataclasses.dataclass
class _Request:
    """What PyTriton hands the inference callable."""

    data: dict
    parameters: dict
    requested_output_names: list | None = None


def _drive(front: StreamFrontEnd, request: _Request, stop_after: int | None = None):
    async def run():
        out = []
        async for item in front.infer([request]):
            out.append(item[0])
            if stop_after is not None and len(out) == stop_after:
                break
        return out

    return asyncio.run(run())


def test_front_end_streams_previews_then_gafs_answer(service, refs, tmp_path):
    """``gaf_stream``'s callable: preview responses (images, latents, step) then the
    final outputs; a bad preview_every is one marked line; a cancel marker ends a stream
    and frees its rows."""
    final, anchors = refs[id(PURE)]
    cancels = []
    front = StreamFrontEnd(service, 2, lambda s: {"latents": np.stack([x.numpy() for x in s])},
                           None, lambda err: RuntimeError(f"marked: {err}"),
                           lambda: cancels.append(1))
    data = {"classes": np.array([[4]], np.int32), "steps": np.array([[5]], np.int32),
            "seed": np.array([[2]], np.int64)}
    out = _drive(front, _Request(data, {"solver": "ier", "preview_every": 2}))
    assert [o["preview_step"].tolist() for o in out[:-1]] == [[[2]], [[4]]]
    assert np.array_equal(out[0]["preview"][0], to_images(torch.from_numpy(out[0]["preview_latents"][0])))
    assert torch.allclose(torch.from_numpy(out[1]["preview_latents"][0]), anchors[3], atol=1e-6)
    assert torch.equal(torch.from_numpy(out[-1]["latents"][0]), final)
    with pytest.raises(RuntimeError, match="marked: parameter preview_every must be"):
        _drive(front, _Request(data, {"solver": "ier", "preview_every": 9}))
    long = {**data, "steps": np.array([[1000]], np.int32)}
    req = _Request(long, {"preview_every": 1}, ["preview_step"])
    first = _drive(front, req, stop_after=1)  # the client read one preview and went away
    assert first == [{"preview_step": np.array([[1]], np.int32)}]
    assert front.active == 0
    wait_idle(service)
    marker = tmp_path / "cancelled"  # the stub saw Triton cancel the request
    marker.touch()
    req = _Request(long, {"preview_every": 1000, "gaf_cancel_file": str(marker)})
    with pytest.raises(RuntimeError, match="marked: request .* cancelled the stream"):
        _drive(front, req)
    assert cancels == [1]
    assert front.active == 0
    wait_idle(service)
    front.close()


def test_preview_network_passes_anchors_through(digits):
    """The wrapper returns the network's (J, K) unchanged (same tensors)."""
    from gaf_trt.serve.previews import PreviewChannel

    channel = PreviewChannel(1, 1, None)
    net = PreviewNetwork(MinRowsNetwork(digits), channel)
    x, t, y = torch.zeros(2, 1, 16, 16), torch.full((2,), 0.5), torch.tensor([1, 2])
    j, k = net(x, t, y)
    j0, k0 = MinRowsNetwork(digits)(x, t, y)
    assert torch.equal(j, j0) and torch.equal(k, k0)
    assert torch.equal(channel.get(0).state, k0)
