"""Every checkpoint form (docs/design.md §2), and the bad ones."""

from __future__ import annotations

import io
import pickle

import pytest
import torch

from gaf_trt import CheckpointError, load_model, save_safetensors
from gaf_trt.model.checkpoint import read_checkpoint, strip_prefixes
from tests.helpers import rel_err


def _forward(model, expected):
    with torch.no_grad():
        return model(expected["forward.x"], expected["forward.t"], expected["forward.y"])[1]


def test_ema_preferred_and_model_on_request(ref_ckpt, expected, ref_raw):
    ema = load_model(ref_ckpt)
    raw = load_model(ref_ckpt, use_ema=False)
    k_ema, k_raw = _forward(ema, expected), _forward(raw, expected)
    assert rel_err(k_ema, expected["forward.K"]) < 1e-4
    assert rel_err(k_raw, expected["forward.K"]) > 1e-3  # the fixture's model != ema
    w = ref_raw["model"]["twins.K.weight"]
    assert torch.equal(raw.twins.K.weight, w)


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod.",
                                    "_orig_mod.module.", "module.module."])
def test_prefixes_are_stripped(tmp_path, ref_raw, expected, prefix):
    ck = dict(ref_raw)
    ck["ema"] = {prefix + k: v for k, v in ref_raw["ema"].items()}
    ck["model"] = {prefix + k: v for k, v in ref_raw["model"].items()}
    path = tmp_path / "p.pt"
    torch.save(ck, path)
    assert rel_err(_forward(load_model(path), expected), expected["forward.K"]) < 1e-4


def test_strip_prefixes_leaves_inner_names():
    assert strip_prefixes({"module._orig_mod.trunk.module.x": 1}) == {"trunk.module.x": 1}


def test_ema_none_falls_back_to_model(tmp_path, ref_raw):
    ck = dict(ref_raw, ema=None)
    torch.save(ck, tmp_path / "c.pt")
    m = load_model(tmp_path / "c.pt")
    assert torch.equal(m.twins.K.bias, ref_raw["model"]["twins.K.bias"])


def test_bare_state_dict(tmp_path, ref_raw, expected):
    torch.save(ref_raw["ema"], tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="head count unknown"):
        load_model(tmp_path / "bare.pt")  # no cfg, and D=64 has no DiT convention
    m = load_model(tmp_path / "bare.pt", num_heads=4)
    assert (m.config.num_heads, m.config.heads_source) == (4, "argument")
    assert rel_err(_forward(m, expected), expected["forward.K"]) < 1e-4


def test_heads_sources(tmp_path, ref_raw):
    ck = dict(ref_raw, cfg={k: v for k, v in ref_raw["cfg"].items() if k != "dit_heads"})
    torch.save(ck, tmp_path / "noheads.pt")
    with pytest.raises(CheckpointError, match="head count unknown"):
        load_model(tmp_path / "noheads.pt")  # D=64 has no DiT convention
    m = load_model(tmp_path / "noheads.pt", num_heads=4)
    assert (m.config.num_heads, m.config.heads_source) == (4, "argument")
    with pytest.raises(CheckpointError, match="not divisible"):
        load_model(tmp_path / "noheads.pt", num_heads=5)


def test_heads_argument_may_not_contradict_the_checkpoint(ref_ckpt):
    assert load_model(ref_ckpt, num_heads=4).config.num_heads == 4  # agrees: fine
    with pytest.raises(CheckpointError, match="records 4 attention heads; --heads 8 contradicts"):
        load_model(ref_ckpt, num_heads=8)


@pytest.mark.parametrize("field,value,message", [
    ("class_names", 5, "cfg['class_names'] = 5 is not a list of names"),
    ("t_eps", "abc", "cfg['t_eps'] = 'abc' is not a valid float"),
    ("t_eps", 0.7, "cfg['t_eps'] = 0.7 is outside [0, 0.5)"),
    ("dit_heads", "abc", "cfg['dit_heads'] = 'abc' is not a valid int"),
    ("dit_depth", 2.5, "cfg['dit_depth'] = 2.5 is not a valid int"),
])
def test_malformed_cfg_fields_name_the_field(tmp_path, ref_raw, field, value, message):
    torch.save(dict(ref_raw, cfg=dict(ref_raw["cfg"], **{field: value})), tmp_path / "c.pt")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "c.pt")
    assert message in str(info.value)


def test_wrong_shape_and_non_finite_tensors_are_named(tmp_path, ref_raw):
    ema = dict(ref_raw["ema"])
    ema["trunk.blocks.1.mlp.fc2.bias"] = torch.zeros(7)
    torch.save(dict(ref_raw, ema=ema), tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"tensor trunk.blocks.1.mlp.fc2.bias has shape \[7\], "
                                              r"the architecture needs \[64\]"):
        load_model(tmp_path / "shape.pt")
    ema = dict(ref_raw["ema"])
    w = ema["twins.K.bias"].clone()
    w[3, 1] = float("nan")
    ema["twins.K.bias"] = w
    torch.save(dict(ref_raw, ema=ema), tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="tensor twins.K.bias has 1 NaN or infinite value"):
        load_model(tmp_path / "nan.pt")


def test_dit_convention_for_standard_width():
    from gaf_trt.model.checkpoint import infer_config

    sd = {
        "trunk.x_embedder.proj.weight": torch.zeros(384, 4, 2, 2),
        "trunk.pos_embed": torch.zeros(1, 16, 384),
        "trunk.blocks.0.mlp.fc1.weight": torch.zeros(1536, 384),
        "twins.K.weight": torch.zeros(3, 384, 16),
        "trunk.y_embedder.embedding_table.weight": torch.zeros(4, 384),
    }
    cfg = infer_config(sd, {})
    assert (cfg.num_heads, cfg.heads_source, cfg.label_rows, cfg.num_classes) == (
        6, "DiT convention", 4, 3)


def test_safetensors_round_trip(tmp_path, ref_model, expected):
    path = save_safetensors(ref_model, tmp_path / "m.safetensors")
    m = load_model(path)
    assert m.config == ref_model.config.__class__(**{**ref_model.config.to_dict(),
                                                      "class_names": None})
    assert torch.equal(_forward(m, expected), _forward(ref_model, expected))
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temp file


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.pt")


def test_truncated_file(tmp_path, ref_ckpt):
    data = ref_ckpt.read_bytes()
    (tmp_path / "t.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(tmp_path / "t.pt")


def test_truncated_safetensors(tmp_path, ref_model):
    p = save_safetensors(ref_model, tmp_path / "m.safetensors")
    p.write_bytes(p.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(p)


def test_not_a_gaf_checkpoint_names_missing_keys(tmp_path, ref_raw):
    sd = {k: v for k, v in ref_raw["ema"].items() if not k.startswith("twins.")}
    torch.save({"model": sd}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match=r"missing keys .*twins\.J\.linear\.weight"):
        load_model(tmp_path / "x.pt")


def test_dit_checkpoint_gets_a_hint(tmp_path):
    torch.save({"x_embedder.proj.weight": torch.zeros(8, 4, 2, 2),
                "final_layer.linear.weight": torch.zeros(32, 8)}, tmp_path / "dit.pt")
    with pytest.raises(CheckpointError, match="retrunk"):
        load_model(tmp_path / "dit.pt")


class _Custom:
    pass


def test_arbitrary_pickle_refused_unless_opted_in(tmp_path, ref_raw):
    ck = dict(ref_raw, extra=_Custom())
    path = tmp_path / "pickled.pt"
    torch.save(ck, path)
    with pytest.raises(CheckpointError, match="trust_pickle"):
        read_checkpoint(path)
    assert read_checkpoint(path, trust_pickle=True).source == "ema"


def test_non_dict_file(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="not a GAF checkpoint"):
        load_model(tmp_path / "tensor.pt")


def test_plain_pickle_garbage(tmp_path):
    buf = io.BytesIO()
    pickle.dump([1, 2, 3], buf)
    (tmp_path / "g.pt").write_bytes(b"garbage" + buf.getvalue())
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "g.pt")
