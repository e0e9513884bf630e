"""Fixtures of the serving tests: the bundled digits network (one thread)."""

from __future__ import annotations

import pytest

from gaf_trt.engine.base import LoadRequest, load_backend


@pytest.fixture(scope="module")
def digits(one_thread):
    """The bundled digits network on the torch backend (CPU, fp32)."""
    return load_backend("torch", LoadRequest(artifact="digits", device="cpu"))
