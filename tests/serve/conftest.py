"""Fixtures of the serving tests: the bundled digits network (one thread)."""

from __future__ import annotations

import pytest

from gaf_trt.engine.base import LoadRequest, load_backend


@pytest.fixture(scope="module")
def digits(one_thread):
    """The bundled digits network on the torch backend (CPU, fp32)."""
    return load_backend("torch", LoadRequest(artifact="digits", device="cpu"))


@pytest.fixture(scope="session")
def digits_engine(tmp_path_factory):
    """An engine directory of the digits model: split (and fused) graphs, ONNX only, fp32
    (one export per test run, shared with the OpenVINO tests: ~13 s on 2 cores). The
    repositories and references here use its split graphs."""
    from tests.export.shared import digits_engine_dir

    return digits_engine_dir(tmp_path_factory.getbasetemp())
