"""Options added with the one model source and the feature cache, as a user meets them
(subprocesses): every command that takes a model refuses a missing ``--vae`` folder and a bad
``--cache`` policy the same way — one ``error:`` line naming the value, exit 2, before any
work, nothing written."""

from __future__ import annotations

import pytest

from gaf_trt.serve.host import free_ports
from tests.reliability.conftest import assert_bad_input, assert_nothing_written, cli_cmd, run_many

MISSING = "/nonexistent/vae"


@pytest.fixture(scope="module")
def outs(tmp_path_factory):
    return tmp_path_factory.mktemp("model_options")


@pytest.fixture(scope="module")
def runs(outs):
    ports = [str(p) for p in free_ports(4)]
    serve_ports = ["--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2],
                   "--gaf-metrics-port", ports[3]]
    cases = {
        "sample_vae": cli_cmd("sample", "--classes", "3", "--vae", MISSING, "--out",
                              outs / "sample_vae"),
        "generate_vae": cli_cmd("generate", "--classes", "3", "--num", "2", "--vae", MISSING,
                                "--out", outs / "generate_vae"),
        "transport_vae": cli_cmd("transport", "--mode", "cycle", "--classes", "1", "2",
                                 "--vae", MISSING, "--out", outs / "transport_vae"),
        "serve_vae": cli_cmd("serve", "--device", "cpu", "--vae", MISSING, *serve_ports),
        "sample_cache": cli_cmd("sample", "--classes", "3", "--cache", "foo", "--out",
                                outs / "sample_cache"),
        "sample_cache_ier": cli_cmd("sample", "--classes", "3", "--cache", "static:2",
                                    "--solver", "ier", "--out", outs / "sample_cache_ier"),
        "generate_cache": cli_cmd("generate", "--classes", "3", "--num", "2", "--cache",
                                  "adaptive:-1", "--out", outs / "generate_cache"),
    }
    return run_many(cases)


REFUSED = {
    "sample_vae": ["--vae", MISSING],
    "generate_vae": ["--vae", MISSING],
    "transport_vae": ["--vae", MISSING],
    "serve_vae": ["--vae", MISSING],
    "sample_cache": ["cache policy", "'foo'", "static:N"],
    "sample_cache_ier": ["static:2", "ier"],
    "generate_cache": ["'adaptive:-1'", "adaptive:δ"],
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_before_work(runs, outs, case):
    assert_bad_input(runs[case], *REFUSED[case])
    if case != "serve_vae":
        assert_nothing_written(outs / case)
