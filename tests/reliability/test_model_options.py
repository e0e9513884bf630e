"""Options added with the one model source and the feature cache, as a user meets them
(subprocesses): every command that takes a model refuses a missing ``--vae`` folder and a bad
``--cache`` policy the same way — one ``error:`` line naming the value, exit 2, before any
work, nothing written. The options added with the x86 INT8 recipe, the runtime comparison and
``--threads`` alike."""

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
        "transport_cache": cli_cmd("transport", "--mode", "cycle", "--classes", "1", "2",
                                   "--cache", "foo", "--out", outs / "transport_cache"),
        "serve_cache": cli_cmd("serve", "--device", "cpu", "--cache", "static:0", *serve_ports),
        "serve_max_classes": cli_cmd("serve", "--device", "cpu", "--max-classes", "0",
                                     *serve_ports),
        "sample_threads": cli_cmd("sample", "--classes", "3", "--threads", "-3", "--out",
                                  outs / "sample_threads"),
        "transport_threads": cli_cmd("transport", "--mode", "cycle", "--classes", "1", "2",
                                     "--threads", "5000", "--out", outs / "transport_threads"),
        "generate_threads": cli_cmd("generate", "--classes", "3", "--num", "2", "--threads",
                                    "-2", "--out", outs / "generate_threads"),
        "serve_threads": cli_cmd("serve", "--device", "cpu", "--threads", "-1", *serve_ports),
        "export_scheme": cli_cmd("export", "--ckpt", "digits", "--precision", "int8",
                                 "--int8-scheme", "u9", "--onnx-only", "--out",
                                 outs / "export_scheme"),
        "export_quant": cli_cmd("export", "--ckpt", "digits", "--precision", "int8", "--quant",
                                "sometimes", "--onnx-only", "--out", outs / "export_quant"),
        "export_scheme_fp32": cli_cmd("export", "--ckpt", "digits", "--int8-scheme", "u8s8",
                                      "--onnx-only", "--out", outs / "export_scheme_fp32"),
        "info_compare_ckpt": cli_cmd("info", "digits", "--compare"),
        "info_ckpt_alone": cli_cmd("info", "digits", "--ckpt", "digits"),
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
    "transport_cache": ["cache policy", "'foo'", "taylor:N"],
    "serve_cache": ["'static:0'", "1..1000"],
    "serve_max_classes": ["--max-classes"],
    "sample_threads": ["--threads", "-3", "up to 1024"],
    "transport_threads": ["--threads", "5000"],
    "generate_threads": ["--threads", "-2"],
    "serve_threads": ["--threads", "-1"],
    "export_scheme": ["--int8-scheme", "auto, u8s8, s8s8", "'u9'"],
    "export_quant": ["--quant", "static, dynamic", "'sometimes'"],
    "export_scheme_fp32": ["--int8-scheme", "--precision int8", "fp32"],
    "info_compare_ckpt": ["--compare needs an engine directory", "'digits'"],
    "info_ckpt_alone": ["--ckpt", "--compare"],
}
NO_OUTPUT = {"serve_vae", "serve_cache", "serve_max_classes", "serve_threads",
             "info_compare_ckpt", "info_ckpt_alone"}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_before_work(runs, outs, case):
    assert_bad_input(runs[case], *REFUSED[case])
    if case not in NO_OUTPUT:
        assert_nothing_written(outs / case)
