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
    """An engine directory of the digits model: split graphs, ONNX only, fp32 (one export
    for the whole session: ~13 s on 2 cores)."""
    import torch

    from gaf_trt.export.build import ExportConfig, export_engine

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("serve") / "engine"
        export_engine(ExportConfig(ckpt="digits", out=str(out), graphs=("split",),
                                   onnx_only=True, parity=False))
    finally:
        torch.set_num_threads(before)
    return out
