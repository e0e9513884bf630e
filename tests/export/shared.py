"""Exports shared by the export and engine tests (one export per pytest process)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import shared_dir

REF_CKPT = Path(__file__).resolve().parents[1] / "data" / "gaf_ref_small.pt"


def need_onnx() -> None:
    pytest.importorskip("onnx", reason="onnx is not installed (pip install 'gaf-trt[onnx]')")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    pytest.importorskip("onnxscript", reason="onnxscript is not installed (torch.onnx dynamo)")


def ref_engine_dir(tmp_root: Path) -> Path:
    """The fixture checkpoint exported (split + fused, fp32, opset 18, parity checked), once
    per test run (shared by the pytest-xdist workers: :func:`tests.helpers.shared_dir`;
    ``tmp_root`` is ``tmp_path_factory.getbasetemp()``). Read-only: copy it to change it."""
    need_onnx()

    def build(out: Path) -> None:
        from gaf_trt.export.build import ExportConfig, export_engine

        export_engine(ExportConfig(str(REF_CKPT), str(out)))

    return shared_dir(tmp_root, "ref_engine", build)


def tiny_model(*, in_channels: int = 3, input_size: int = 8, num_classes: int = 4,
               mode: str = "pixel", seed: int = 0):
    """A random GAF small enough to export in seconds (D 32, depth 1), non-zero heads."""
    from gaf_trt.model import GAF, GAFConfig

    torch.manual_seed(seed)
    cfg = GAFConfig(in_channels=in_channels, input_size=input_size, patch_size=2,
                    hidden_size=32, depth=1, num_heads=2, mlp_ratio=2.0,
                    num_classes=num_classes, mode=mode)
    model = GAF(cfg)
    with torch.no_grad():  # random everywhere (published init zeroes J and adaLN outputs)
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model.eval()
