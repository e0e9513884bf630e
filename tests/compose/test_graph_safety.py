"""The solver loop is CUDA-graph safe: no host sync, no data-dependent shapes.

On the CPU this is checked by recording every ATen op the loop dispatches; on a CUDA
machine the loop is captured and replayed and must equal the uncaptured loop.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from gaf_trt import ComposedField, Composition, integrate, masks

#: ops that read a device value on the host or allocate by data
HOST_SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "item",
                 "_unique2", "repeat_interleave"}


class OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("solver", ["euler", "heun", "rk4", "endpoint"])
def test_solver_loop_has_no_host_sync(ref_model, solver):
    comp = Composition.build([3, 8], masks=masks.build("horizontal_2", 8, 8))
    field = ComposedField(ref_model, comp)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        integrate(field, x, steps=2, solver=solver)  # warm-up fills the label cache
        with OpRecorder() as rec:
            integrate(field, x, steps=3, solver=solver)
    assert rec.ops, "the recorder saw no ops"
    assert not HOST_SYNC_OPS & set(rec.ops), sorted(HOST_SYNC_OPS & set(rec.ops))


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")


@cuda
@pytest.mark.parametrize("solver", ["euler", "heun", "rk4", "endpoint"])
def test_cuda_graph_replay_equals_eager(ref_ckpt, solver):
    from gaf_trt import load_model
    from gaf_trt.compose.capture import CapturedLoop

    model = load_model(ref_ckpt, device="cuda")
    comp = Composition.build([1, 4, 7], weights=[0.5, 0.3, 0.2])
    field = ComposedField(model, comp)
    x = torch.randn(4, 3, 8, 8, device="cuda")
    loop = CapturedLoop(field, x, steps=5, solver=solver)
    fresh = torch.randn_like(x)
    with torch.no_grad():
        eager = integrate(field, fresh, steps=5, solver=solver)
    assert torch.equal(loop(fresh), eager)


def test_recorder_catches_a_host_sync():
    """The check above can fail: a field that calls .item() is caught."""

    def syncing_field(x, t):
        return x * float(t.item())

    with OpRecorder() as rec:
        integrate(syncing_field, torch.randn(2, 3), steps=2)
    assert "_local_scalar_dense" in rec.ops


def test_capture_refuses_cpu_tensors(ref_model):
    from gaf_trt import ConfigError
    from gaf_trt.compose.capture import CapturedLoop

    field = ComposedField(ref_model, Composition.pure(1))
    with pytest.raises(ConfigError, match="needs a CUDA tensor"):
        CapturedLoop(field, torch.randn(1, 3, 8, 8), steps=2)
