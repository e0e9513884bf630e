"""``gaf-trt serve`` end to end: a real Triton (PyTriton) in a subprocess on free ports,
queried with tritonclient over HTTP and gRPC, stopped with SIGTERM; nothing may be left
(processes, /dev/shm entries, PyTriton workspaces). Readiness is the server's own
"serving" line, never a sleep (and then the models answer: checked). The server process and
the clients' helpers are :mod:`tests.serve.server_proc`. Skipped (with the reason) where
PyTriton is not installed."""

from __future__ import annotations

import dataclasses
import functools
import queue
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings

from gaf_trt.pipeline.generation import generate
from gaf_trt.pipeline.sample import prepare_sample
from gaf_trt.serve import MinRowsNetwork, ServeLimits, ServeRequest, to_images
from gaf_trt.serve.host import descendants, free_ports, is_running
from gaf_trt.serve.wire import encode_request
from tests.serve import request_space
from tests.serve.request_space import serve_request
from tests.serve import prometheus_text as prom
from tests.serve.refs import min_rows_reference
from tests.serve.server_proc import (
    INSTANCES,
    READY_ENDPOINTS,
    REQUEST_TIMEOUT,
    START_TIMEOUT,
    Server,
    http_client,
    infer_latents,
    make_inputs,
    request_inputs,
    scrape,
    stats,
    wait_for,
)

pytest.importorskip("pytriton.triton", reason="nvidia-pytriton is not installed (README: "
                    "Serving, `pip install --no-deps nvidia-pytriton==0.7.0`)")
th = pytest.importorskip("tritonclient.http", reason="tritonclient is not installed")
tg = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")
from tritonclient.utils import np_to_triton_dtype  # noqa: E402


@functools.lru_cache(maxsize=1)
def digits_network():
    """The bundled digits network on the torch backend (CPU, fp32), as the server loads it."""
    from gaf_trt.engine.base import LoadRequest, load_backend

    return load_backend("torch", LoadRequest(artifact="digits", device="cpu"))


def digits_config():
    return digits_network().config

WORKSPACES = Path.home() / ".cache" / "pytriton"

QUEUE = 4  # --max-queue of the module's server
LONG_STEPS = 10_000  # --max-steps (the pipeline's own bound): see long_request
MASK_PIXELS = 4096  # --max-mask-pixels (64 x 64)

GOOD = ServeRequest(classes=[3, 7], weights=[1.0, 2.0], steps=4, solver="ier", seed=5, batch=2)


def listing(path: Path) -> set[str]:
    return {p.name for p in path.iterdir()} if path.is_dir() else set()


@pytest.fixture(scope="module")
def server():
    srv = Server("--max-queue", str(QUEUE), "--max-steps", str(LONG_STEPS),
                 "--max-mask-pixels", str(MASK_PIXELS))
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.close()  # a failed test left it running: stop it cleanly



def good_http(client):
    r = client.infer("gaf", request_inputs(th, GOOD),
                     outputs=[th.InferRequestedOutput("latents"), th.InferRequestedOutput("images")],
                     parameters={"solver": GOOD.solver}, timeout=REQUEST_TIMEOUT)
    return r.as_numpy("latents")[0], r.as_numpy("images")[0]



@pytest.fixture(scope="module")
def reference(one_thread):
    return min_rows_reference(GOOD)


def test_models_ready_at_the_serving_line(server, reference):
    """Issue 27: the "serving" line comes once the models answer: their ready endpoints
    (the readiness probe) were 200 when it was read, and a request at once succeeds."""
    assert server.ready_status == dict.fromkeys(READY_ENDPOINTS, 200)
    with http_client(server) as client:
        assert torch.equal(torch.from_numpy(good_http(client)[0].copy()), reference)


def test_http_result_is_the_sample_result(server, reference):
    with http_client(server) as client:
        latents, images = good_http(client)
    assert torch.equal(torch.from_numpy(latents.copy()), reference)
    assert np.array_equal(images, to_images(reference))


def test_metrics_count_known_requests(server, reference):
    """Issue 27: two good requests and a bad one move the scraped counters by exactly that;
    the call counters agree with gaf_stats'."""
    from tritonclient.utils import InferenceServerException

    before = scrape(server)
    with http_client(server) as client:
        for _ in range(2):
            assert torch.equal(torch.from_numpy(good_http(client)[0].copy()), reference)
        with pytest.raises(InferenceServerException):
            client.infer("gaf", make_inputs(th, classes=[99], steps=2), timeout=REQUEST_TIMEOUT)
    after, counters = scrape(server), stats(server)

    def delta(name, **labels):
        return prom.value(after, name, **labels) - prom.value(before, name, **labels)

    assert delta("gaf_requests_admitted_total") == 2
    assert delta("gaf_requests_finished_total", outcome="ok") == 2
    assert delta("gaf_requests_finished_total", outcome="failed") == 0
    assert delta("gaf_requests_refused_total", reason="invalid") == 1
    assert delta("gaf_requests_refused_total", reason="overloaded") == 0
    assert delta("gaf_request_queue_seconds_count") == 2
    assert delta("gaf_request_run_seconds_count") == 2
    assert delta("gaf_request_run_seconds_sum") > 0
    calls = prom.value(after, "gaf_network_calls_total")
    assert calls == counters["calls"] and delta("gaf_network_calls_total") >= GOOD.steps
    assert prom.value(after, "gaf_network_call_rows_sum") == counters["rows"]
    assert prom.value(after, "gaf_network_call_rows_count") == calls
    assert prom.value(after, "gaf_network_call_seconds_count") == calls
    assert prom.value(after, "gaf_requests_active") == 0
    assert prom.value(after, "gaf_rows_pending") == 0


@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(req=serve_request(digits_config(), ServeLimits(max_steps=LONG_STEPS)))
def test_requests_drawn_from_the_admitted_space_equal_sample(server, one_thread, req):
    """A sample of the admitted request space (tests/serve/request_space.py), sent as a
    client sends it (``wire.encode_request``): the served latents are the bits of
    ``gaf_trt.sample`` on the padded network, and the images their rounding
    (test_served_equals_sampled.py checks the whole space in-process)."""
    arrays, params = encode_request(req)
    inputs = []
    for name, value in arrays.items():
        i = th.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
        i.set_data_from_numpy(value)
        inputs.append(i)
    if not inputs:  # Triton takes no request without inputs
        inputs = make_inputs(th, steps=req.steps)
    with http_client(server) as client:
        r = client.infer("gaf", inputs, parameters=params, timeout=REQUEST_TIMEOUT,
                         outputs=[th.InferRequestedOutput("latents"),
                                  th.InferRequestedOutput("images")])
    latents = torch.from_numpy(r.as_numpy("latents")[0].copy())
    ref = request_space.reference(req, digits_network())
    assert latents.shape[0] == req.batch
    assert torch.equal(latents, ref.min_rows)
    assert np.array_equal(r.as_numpy("images")[0], to_images(ref.min_rows))


def test_grpc_client(server, reference):
    with tg.InferenceServerClient(f"localhost:{server.grpc}") as client:
        r = client.infer("gaf", request_inputs(tg, GOOD), parameters={"solver": GOOD.solver},
                         outputs=[tg.InferRequestedOutput("latents")],
                         client_timeout=REQUEST_TIMEOUT)
    assert torch.equal(torch.from_numpy(r.as_numpy("latents")[0].copy()), reference)


def test_class_names_parameter(server, reference):
    """Classes by name through the parameter class_names (a JSON list): the same bits."""
    with http_client(server) as client:
        inputs = [i for i in request_inputs(th, GOOD) if i.name() != "classes"]
        r = client.infer("gaf", inputs, outputs=[th.InferRequestedOutput("latents")],
                         parameters={"solver": GOOD.solver, "class_names": '["3", "7"]'},
                         timeout=REQUEST_TIMEOUT)
    assert torch.equal(torch.from_numpy(r.as_numpy("latents")[0].copy()), reference)


def test_mask_image_input(server, tmp_path, one_thread):
    """A mask image (uint8 [H, W], two gray levels) gives the bits of ``gaf-trt sample
    --mask-type custom --mask-img`` with the same image as a PNG file."""
    from PIL import Image

    gray = np.zeros((32, 32), np.uint8)
    gray[:, 12:] = 200
    png = tmp_path / "mask.png"
    Image.fromarray(gray).save(png)
    req = ServeRequest(classes=[3, 7], mask_image=gray, steps=3, solver="heun", seed=2)
    cfg = req.sample_config()
    cfg.mask_img, cfg.model = str(png), dataclasses.replace(cfg.model, device="cpu")
    plan = prepare_sample(cfg)
    plan.network = MinRowsNetwork(plan.network)
    expected = generate(cfg, plan).mixes[plan.composition.classes]
    with http_client(server) as client:
        assert torch.equal(infer_latents(client, req), expected)


BAD = [  # (input values, dtype overrides, request parameters, text the error must contain)
    ({"classes": [12]}, {}, {}, "out of range"),
    ({"classes": [3, 7], "weights": [1.0]}, {}, {}, "give one weight per class"),
    ({"classes": [3], "steps": 0}, {}, {}, f"steps must be an integer in 1..{LONG_STEPS}, got 0"),
    ({"classes": [3], "steps": 10 ** 9}, {}, {}, "got 1000000000"),
    ({"classes": [3], "steps": 4}, {"steps": "FP32"}, {}, "expects 'INT32'"),
    ({"classes": [3]}, {}, {"solver": "nope"}, "unknown solver 'nope'"),
    ({"classes": [3]}, {}, {"colour": "red"}, "unknown request parameter(s) ['colour']"),
    ({"steps": 2}, {}, {"class_names": '["golden retriever"]'},
     "unknown class name 'golden retriever'"),
    ({"steps": 2}, {}, {"class_names": "3, 7"}, "must be a JSON list of class names"),
    ({"classes": [3]}, {}, {"class_names": '["3"]'}, "not both"),
    ({"classes": [3, 7], "mask_image": np.zeros((65, 65), np.uint8)}, {}, {},
     f"the server takes at most {MASK_PIXELS:,}"),
    ({"classes": [3, 7], "mask_image": np.zeros((8, 8), np.uint8)}, {},
     {"mask_type": "quadrant"}, "a mask image goes with mask type 'custom'"),
    # issue 23 item 7: these reached unhandled exceptions (HTTP 500 with a traceback)
    ({"classes": []}, {}, {}, "an input tensor is empty"),  # a tensor [1, 0]
    ({"steps": 2}, {}, {"class_names": '["--3"]'}, "unknown class name '--3'"),
    ({"steps": 2}, {}, {"class_names": "[" + "9" * 5000 + "]"},
     "must be a JSON list of class names"),
    ({"steps": 2}, {}, {"class_names": '["' + "9" * 5000 + '"]'}, "has 5,000 digits"),
]


def assert_client_error(err, message: str, status: str = "400") -> None:
    """A refused request: the client's error (HTTP 400 / gRPC INVALID_ARGUMENT), its one
    line naming the bad value, no traceback and no path of the server's files."""
    text = str(err)
    assert err.status() == status, f"status {err.status()}: {text[:4000]}"
    assert message in text, text[:500]
    assert "Traceback" not in text and ".py" not in text and "\n" not in text.strip(), text[:500]


def bad_id(case):
    return case[-1][:40]


@pytest.mark.parametrize("values,dtypes,params,message", BAD, ids=[bad_id(c) for c in BAD])
def test_malformed_request_gets_an_error_and_serving_goes_on(server, reference, values, dtypes,
                                                              params, message):
    from tritonclient.utils import InferenceServerException

    with http_client(server) as client:
        with pytest.raises(InferenceServerException) as err:
            client.infer("gaf", make_inputs(th, dtypes, **values), parameters=params or None,
                         timeout=REQUEST_TIMEOUT)
        assert_client_error(err.value, message)
        assert torch.equal(torch.from_numpy(good_http(client)[0].copy()), reference)


def test_refused_request_is_invalid_argument_over_grpc(server):
    """Issue 23 item 7: over gRPC a refused request is INVALID_ARGUMENT, in one line."""
    from tritonclient.utils import InferenceServerException

    with tg.InferenceServerClient(f"localhost:{server.grpc}") as client:
        for values, params, message in (({"classes": [12]}, {}, "out of range"),
                                        ({"steps": 2}, {"class_names": '["--3"]'}, "'--3'")):
            with pytest.raises(InferenceServerException) as err:
                client.infer("gaf", make_inputs(tg, **values), parameters=params or None,
                             client_timeout=REQUEST_TIMEOUT)
            assert_client_error(err.value, message, "StatusCode.INVALID_ARGUMENT")


def test_100mb_mask_image_refused_clearly(server, reference):
    """A 100 MB mask image is refused with the bound in the message; the server lives on."""
    from tritonclient.utils import InferenceServerException

    with http_client(server) as client:
        with pytest.raises(InferenceServerException) as err:
            client.infer("gaf", make_inputs(th, classes=[3, 7],
                                            mask_image=np.zeros((10_000, 10_000), np.uint8)),
                         timeout=REQUEST_TIMEOUT)
        assert f"mask_image is 10000x10000 = 100,000,000 pixels; the server takes at most " \
               f"{MASK_PIXELS:,}" in str(err.value)
        assert torch.equal(torch.from_numpy(good_http(client)[0].copy()), reference)


def long_request(client, done: queue.Queue, tag: int):
    """A request that runs until it is cancelled: 10,000 steps of 8 classes x 16 images
    (128 rows per call; tens of minutes on this CPU, the test needs it for seconds); its
    outcome goes to ``done`` as ``(tag, error)``."""
    inputs = make_inputs(tg, classes=list(range(8)), weights=[1.0] * 8, batch=16,
                         steps=LONG_STEPS)
    return client.async_infer("gaf", inputs,
                              callback=lambda result, error: done.put((tag, error)))


def test_client_cancel_frees_its_rows(server, reference):
    """A gRPC client cancels a running request: Triton cancels it, the stub tells the
    server, the scheduler drops its rows; the server goes on serving."""
    before = stats(server)
    done: queue.Queue = queue.Queue()
    with tg.InferenceServerClient(f"localhost:{server.grpc}") as client:
        call = long_request(client, done, 0)
        wait_for(lambda: (s := stats(server))["active"] == 1 and s["calls"] > before["calls"],
                 "the long request to run")
        call.cancel()
        _tag, error = done.get(timeout=REQUEST_TIMEOUT)
        assert error is not None and "CANCELLED" in str(error).upper()
    wait_for(lambda: stats(server)["cancelled"] == before["cancelled"] + 1,
             "the server to see the cancellation")
    wait_for(lambda: (s := stats(server))["active"] == 0 and s["pending_rows"] == 0,
             "the request's rows to leave")
    with http_client(server) as client:
        assert torch.equal(torch.from_numpy(good_http(client)[0].copy()), reference)


def docs_stream_example(grpc_port: int) -> str:
    """The gRPC streaming client of docs/serving.md (marked skip there: it needs a server),
    pointed at ``grpc_port``."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "serving.md").read_text()
    fences = [f.split("```", 1)[0] for f in text.split("```python\n")[1:]]
    (code,) = [f for f in fences if "async_stream_infer" in f]
    assert code.count("localhost:8001") == 1
    return code.replace("localhost:8001", f"localhost:{grpc_port}")


def test_stream_docs_example_previews_then_the_gaf_answer(server, one_thread):
    """Issue 27: the docs' streaming client against the server: previews after 5, 10, 15
    and 20 evaluations, then the images of ``gaf``'s answer to the same request (the
    bits of gaf_trt.sample on the padded network)."""
    namespace: dict = {}
    exec(compile(docs_stream_example(server.grpc), "docs/serving.md", "exec"), namespace)
    req = ServeRequest(classes=[3, 7], weights=[1.0, 2.0], steps=20, solver="ier")
    expected = to_images(min_rows_reference(req))
    assert np.array_equal(namespace["images"], expected)
    with http_client(server) as client:
        r = client.infer("gaf", request_inputs(th, req), parameters={"solver": "ier"},
                         outputs=[th.InferRequestedOutput("images")], timeout=REQUEST_TIMEOUT)
    assert np.array_equal(r.as_numpy("images")[0], expected)
    assert [step for step, _ in namespace["previews"]] == [5, 10, 15, 20]
    assert all(p.shape == (1, 16, 16, 1) and p.dtype == np.uint8
               for _, p in namespace["previews"])


def test_stream_refused_parameter_then_cancel_frees_its_rows(server, reference):
    """A stream with preview_every past its evaluations gets INVALID_ARGUMENT naming it;
    a long stream cancelled by its client after its first preview leaves the server
    (gaf_stats: cancelled + 1, nothing active or pending), which then answers correctly."""
    before = stats(server)
    answers: queue.Queue = queue.Queue()
    client = tg.InferenceServerClient(f"localhost:{server.grpc}")
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    client.async_stream_infer("gaf_stream", make_inputs(tg, classes=[3], steps=4),
                              parameters={"preview_every": 5})
    _result, error = answers.get(timeout=REQUEST_TIMEOUT)
    assert error is not None and "preview_every must be 0 (no previews) or an integer in " \
        "1..4" in str(error) and "Traceback" not in str(error)
    client.async_stream_infer("gaf_stream", make_inputs(tg, classes=list(range(8)),
                                                        weights=[1.0] * 8, batch=16,
                                                        steps=LONG_STEPS),
                              parameters={"preview_every": 1},
                              outputs=[tg.InferRequestedOutput("preview_step")])
    result, error = answers.get(timeout=REQUEST_TIMEOUT)
    assert error is None and result.as_numpy("preview_step").tolist() == [[1]]
    client.stop_stream(cancel_requests=True)
    client.close()
    wait_for(lambda: stats(server)["cancelled"] == before["cancelled"] + 1,
             "the server to see the stream cancelled")
    wait_for(lambda: (s := stats(server))["active"] == 0 and s["pending_rows"] == 0,
             "the stream's rows to leave")
    with http_client(server) as client:
        assert torch.equal(torch.from_numpy(good_http(client)[0].copy()), reference)


def triton_pending(server) -> int:
    """Requests waiting in Triton's queue for ``gaf`` (its metric)."""
    text = urllib.request.urlopen(f"http://localhost:{server.metrics}/metrics",
                                  timeout=REQUEST_TIMEOUT).read().decode()
    for line in text.splitlines():
        if line.startswith("nv_inference_pending_request_count") and 'model="gaf"' in line:
            return int(float(line.rsplit(" ", 1)[1]))
    raise AssertionError("Triton reports no nv_inference_pending_request_count for gaf")


def test_overload_past_max_queue_refused_then_serving_again(server, reference):
    """Both instances busy and --max-queue requests waiting: one more is refused at once
    (the others still run); once they are cancelled the server answers again."""
    from tritonclient.utils import InferenceServerException

    done: queue.Queue = queue.Queue()
    with tg.InferenceServerClient(f"localhost:{server.grpc}") as client:
        calls = [long_request(client, done, i) for i in range(INSTANCES)]
        wait_for(lambda: stats(server)["active"] == INSTANCES, "both instances to be busy")
        calls += [long_request(client, done, INSTANCES + i) for i in range(QUEUE)]
        wait_for(lambda: triton_pending(server) == QUEUE, "the queue to fill")
        with http_client(server) as http, pytest.raises(InferenceServerException) as err:
            http.infer("gaf", make_inputs(th, classes=[3], steps=1), timeout=REQUEST_TIMEOUT)
        assert "Exceeds maximum queue size" in str(err.value)
        assert done.empty()  # the refusal did not wait for any of them
        for call in calls:
            call.cancel()
        errors = [done.get(timeout=REQUEST_TIMEOUT) for _ in calls]
    assert all(e is not None for _, e in errors)
    wait_for(lambda: (s := stats(server))["active"] == 0 and s["pending_rows"] == 0,
             "the cancelled requests to leave")
    with http_client(server) as client:
        assert torch.equal(torch.from_numpy(good_http(client)[0].copy()), reference)


STORM_GOOD = [ServeRequest(classes=[c], steps=st, seed=c + 10 * st, solver="euler")
              for c in range(10) for st in (1, 2)]
STORM_BAD = [(v, d, p, m) for v, d, p, m in BAD if "mask_image" not in v or v["mask_image"].size
             < 10_000]


def test_a_thousand_requests_with_faults_mixed_in(server, one_thread):
    """1,000 tiny requests, every fifth a malformed one, from QUEUE concurrent clients: each
    bad one gets its error, each good one the bits of its reference."""
    refs = [min_rows_reference(r) for r in STORM_GOOD]
    plan = [("bad", i % len(STORM_BAD)) if i % 5 == 4 else ("good", i % len(STORM_GOOD))
            for i in range(1000)]

    def run(client, item) -> bool:
        from tritonclient.utils import InferenceServerException

        kind, k = item
        if kind == "good":
            return torch.equal(infer_latents(client, STORM_GOOD[k]), refs[k])
        values, dtypes, params, message = STORM_BAD[k]
        try:
            client.infer("gaf", make_inputs(th, dtypes, **values), parameters=params or None,
                         timeout=REQUEST_TIMEOUT)
        except InferenceServerException as err:
            return message in str(err)
        return False

    def run_share(share: list) -> list[bool]:
        with http_client(server) as client:  # closed in its own thread
            return [run(client, item) for item in share]

    shares = [plan[i::QUEUE] for i in range(QUEUE)]
    with ThreadPoolExecutor(QUEUE) as pool:
        results = list(pool.map(run_share, shares))
    outcomes = [ok for i in range(len(plan)) for ok in [results[i % QUEUE][i // QUEUE]]]
    wrong = [item for item, ok in zip(plan, outcomes) if not ok]
    assert not wrong, f"{len(wrong)} wrong answers, e.g. {wrong[:5]}"


def test_busy_port_refused_in_one_line(server):
    """A second server on the first one's HTTP port: one error line, exit 2."""
    grpc, metrics = free_ports(2)
    res = subprocess.run([sys.executable, "-m", "gaf_trt.cli", "serve", "--device", "cpu",
                          "--http-port", str(server.http), "--grpc-port", str(grpc),
                          "--metrics-port", str(metrics)],
                         capture_output=True, text=True, timeout=START_TIMEOUT, check=False)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    want = (f"error: --http-port {server.http} is already in use; give a free port with "
            "--http-port")
    assert res.returncode == 2 and errors == [want], res.stderr
    assert "Traceback" not in res.stderr


def shm_mapped_by(pids: set[int]) -> set[str]:
    """/dev/shm entries that processes ``pids`` have mapped (from /proc/PID/maps)."""
    names = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        names |= {ln.split("/dev/shm/", 1)[1].split(" ")[0] for ln in maps.splitlines()
                  if "/dev/shm/" in ln}
    return names


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def model_folders(workspaces: set[str]) -> list[Path]:
    """Triton's folders of the models of these PyTriton workspaces under /tmp."""
    found = []
    for folder in Path("/tmp").glob("folder??????"):
        try:
            text = (folder / "config.pbtxt").read_text(errors="replace")
        except OSError:
            continue
        if any(f"{WORKSPACES}/{ws}\"" in text for ws in workspaces):
            found.append(folder)
    return found


def test_sigterm_stops_cleanly_leaving_nothing(server):
    """Last in this module: SIGTERM ends the server with exit 0 and 'stopped' within
    seconds; its Triton processes, shared memory and PyTriton workspace are gone."""
    children = descendants(server.proc.pid)
    assert children, "Triton should run as a child of the server"
    shm_used = shm_mapped_by(children | {server.proc.pid})
    assert any(n.startswith(f"pytrtion{server.proc.pid}-") for n in shm_used), shm_used
    ws_used = {part.split("/")[0] for pid in children
               for part in cmdline(pid).split(f"{WORKSPACES}/")[1:]}
    assert ws_used, "Triton should run in a PyTriton workspace"
    # issue 23 item 9: a client still connected makes Triton exit at its exit timeout
    # without unloading the models, which left their folders (folderXXXXXX) in /tmp
    idle = socket.create_connection(("localhost", server.http))
    try:
        assert model_folders(ws_used), "Triton should hold its models in /tmp/folderXXXXXX"
        assert server.stop() == 0, server.stderr[-2000:]
    finally:
        idle.close()
    assert not model_folders(ws_used), "model folders of the stopped Triton are left in /tmp"
    assert server.lines[-1] == "stopped"
    # the server's own resource tracker exits (removing what it tracks) once it sees the
    # server gone: wait for that (bounded), not for a time
    deadline = time.monotonic() + START_TIMEOUT
    while {pid for pid in children if is_running(pid)} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not {pid for pid in children if is_running(pid)}, "a Triton process outlived it"
    assert not shm_used & listing(Path("/dev/shm"))
    assert not ws_used & listing(WORKSPACES), server.stderr[-3000:]
