"""SmoothQuant (Xiao et al. 2023): the calibrated per-channel activation ranges of the
quantised linears, and the exact graph rewrite that moves their outliers into the weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gaf_trt.export.precision import node_scopes
from gaf_trt.export.quantize.graphs import QUANT_SCOPES, linear_key


def channel_max(model, calib) -> dict[str, torch.Tensor]:
    """Per-input-channel ``max |x|`` of every quantised linear over the calibration rows
    (``{"blocks.i.attn.qkv": [D_in]}``), from forward pre-hooks on the FP32 model."""
    stats: dict[str, torch.Tensor] = {}
    hooks = []
    for name, mod in model.named_modules():
        key = linear_key(name)
        if key is None or not isinstance(mod, torch.nn.Linear):
            continue

        def hook(_m, inp, key=key):
            cur = inp[0].detach().abs().flatten(0, -2).amax(0).float()
            stats[key] = cur if key not in stats else torch.maximum(stats[key], cur)

        hooks.append(mod.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            for item in calib.split_items(256):
                model(item["x"], item["t"], item["y"])
    finally:
        for h in hooks:
            h.remove()
    return stats


def smooth_graph(src: Path, dst: Path, act_max: dict[str, torch.Tensor], alpha: float) -> int:
    """SmoothQuant (Xiao et al. 2023) as an exact graph rewrite before quantisation: for each
    quantised MatMul ``x @ W`` (``W [K, N]``), ``s_k = max|x_k|^α / max_n |W_kn|^(1-α)``,
    a per-channel ``Mul(x, 1/s)`` (kept FP32) is inserted and ``W`` becomes ``diag(s) W``;
    the product is unchanged, the activation's outlier channels move into the weights (which
    are quantised per channel). Returns the number of MatMuls smoothed."""
    import onnx
    from onnx import helper, numpy_helper

    from gaf_trt.export.onnx_export import EXTERNAL_DATA_THRESHOLD, save_model

    model = onnx.load(str(src))
    inits = {t.name: t for t in model.graph.initializer}
    new_nodes, done = [], 0
    for node in model.graph.node:
        key = next((k for k in map(linear_key, node_scopes(node)) if k), None)
        if (node.op_type == "MatMul" and key in act_max and node.input[1] in inits
                and QUANT_SCOPES.search(key)):
            w_t = inits[node.input[1]]
            w = numpy_helper.to_array(w_t).astype(np.float32)
            x = act_max[key].numpy().astype(np.float64)
            if w.ndim == 2 and w.shape[0] == x.shape[0]:
                wmax = np.abs(w).max(axis=1).astype(np.float64)
                s = np.power(np.maximum(x, 1e-5), alpha) / np.power(np.maximum(wmax, 1e-5),
                                                                     1 - alpha)
                s = np.clip(s, 1e-5, 1e5)
                w_t.CopyFrom(numpy_helper.from_array((w * s[:, None]).astype(np.float32),
                                                     w_t.name))
                inv = numpy_helper.from_array((1.0 / s).astype(np.float32),
                                              f"{node.name}_smooth_scale")
                model.graph.initializer.append(inv)
                out = f"{node.input[0]}__smooth_{node.name}"
                mul = helper.make_node("Mul", [node.input[0], inv.name], [out],
                                       name=f"{node.name}_smooth")
                new_nodes.append(mul)
                node.input[0] = out
                done += 1
        new_nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    save_model(model, dst, EXTERNAL_DATA_THRESHOLD)
    return done

