"""Training: loss goes down, exact resume, checkpoints in the published format, bad input."""

from __future__ import annotations

import pytest
import torch

from gaf_trt import load_model
from gaf_trt.errors import ConfigError
from gaf_trt.training import build_config, train
from tests.training.helpers import TINY, assert_one_error_line, invoke, tiny


def test_loss_decreases(tmp_path):
    cfg = tiny(tmp_path, "iters=40", "lr=3e-3")
    result = train(cfg)
    losses = [s.loss for s in result.history]
    assert len(losses) == 40 and all(l == l for l in losses)  # no NaN
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.7 * first, (first, last)
    assert result.history[-1].velocity_cos > result.history[0].velocity_cos


def test_yaml_config_round_trip(tmp_path):
    cfg = tiny(tmp_path, "iters=3", "lr=0.002")
    train(cfg)
    again = build_config(None, tmp_path / "config.yaml")  # written beside the checkpoints
    assert again == cfg
    (tmp_path / "bad.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        build_config(None, tmp_path / "bad.yaml")


def test_checkpoint_is_published_format(tmp_path):
    result = train(tiny(tmp_path, "iters=3", "lam_time=0.002"))
    ck = torch.load(result.checkpoint, weights_only=True)
    assert {"model", "ema", "opt", "sched", "step", "cfg"} <= set(ck)
    assert ck["step"] == 3
    cfg = ck["cfg"]
    for key in ("latent_ch", "dit_hidden", "dit_depth", "dit_heads", "patch_size", "mlp_ratio",
                "num_classes", "image_size", "t_eps", "mode"):
        assert key in cfg
    model = load_model(result.checkpoint)
    assert model.config.heads_source == "checkpoint cfg" and model.config.num_heads == 2
    assert model.config.class_names == tuple(str(i) for i in range(10))
    assert torch.equal(model.twins.K.bias, ck["ema"]["twins.K.bias"])


def test_resume_continues_identical_curve(tmp_path):
    full = train(tiny(tmp_path / "full", "iters=8", "lam_time=0.002"))
    part = train(tiny(tmp_path / "part", "iters=8", "lam_time=0.002"), stop_after=4)
    assert part.history[-1].step == 4
    rest = train(tiny(tmp_path / "part", "iters=8", "lam_time=0.002"), resume=part.checkpoint)
    assert [s.step for s in rest.history] == [5, 6, 7, 8]
    resumed = [s.loss for s in part.history + rest.history]
    assert resumed == [s.loss for s in full.history]
    a = torch.load(full.checkpoint, weights_only=True)
    b = torch.load(rest.checkpoint, weights_only=True)
    for key in a["ema"]:
        assert torch.equal(a["ema"][key], b["ema"][key]), key


def test_grad_accumulation_and_options(tmp_path):
    result = train(tiny(tmp_path, "iters=2", "grad_accum=2", "pair_loss=false", "res_reg=0.1"))
    assert len(result.history) == 2 and result.history[0].pair == 0.0
    assert result.history[0].residual > 0


def test_preview_images_written(tmp_path):
    train(tiny(tmp_path, "iters=2", "preview_every=2", "preview_steps=2"))
    assert (tmp_path / "previews" / "step_0000002.png").is_file()


def test_retrunk_from_dit_state_dict(tmp_path):
    from gaf_trt.model import GAF
    from gaf_trt.training.retrunk import retrunk_from_dit

    src = GAF(tiny(tmp_path).model_config())
    for p in src.parameters():
        torch.nn.init.normal_(p)
    dit = {k[len("trunk."):]: v for k, v in src.state_dict().items()
           if k.startswith("trunk.") and not k.startswith("trunk.ada_ln")}
    dit["final_layer.linear.weight"] = torch.randn(16, 32)
    dit["final_layer.adaLN_modulation.1.weight"] = torch.randn(64, 32)
    dit["y_embedder.embedding_table.weight"] = torch.randn(12, 32)  # 11 classes + null row
    torch.save(dit, tmp_path / "dit.pt")
    dst = GAF(tiny(tmp_path).model_config())
    before_ada = dst.trunk.ada_ln.adaLN_modulation[1].weight.clone()
    counts = retrunk_from_dit(dst, tmp_path / "dit.pt")
    assert counts["skipped"] == 2 and counts["partial"] == 1
    assert torch.equal(dst.trunk.blocks[0].attn.qkv.weight, src.trunk.blocks[0].attn.qkv.weight)
    assert torch.equal(dst.trunk.x_embedder.proj.weight, src.trunk.x_embedder.proj.weight)
    assert torch.equal(dst.trunk.y_embedder.embedding_table.weight,
                       dit["y_embedder.embedding_table.weight"][:10])
    assert torch.equal(dst.trunk.ada_ln.adaLN_modulation[1].weight, before_ada)  # not from final_layer
    # and through the training entry point
    result = train(tiny(tmp_path / "rt", "iters=1"), retrunk=tmp_path / "dit.pt")
    assert result.checkpoint.is_file()


def test_cli_train_and_bundle(tmp_path):
    r = invoke("train", "--preset", "digits", "--out", tmp_path, "-q", "--set", "iters=2",
               *[x for kv in TINY for x in ("--set", kv)])
    assert r.exit_code == 0, r.output
    r = invoke("bundle", "--ckpt", tmp_path / "last.pt", "--out", tmp_path / "m.safetensors")
    assert r.exit_code == 0, r.output
    m = load_model(tmp_path / "m.safetensors")
    assert m.config.class_names == tuple(str(i) for i in range(10))


def test_bad_dataset_folders(tmp_path):
    from PIL import Image

    common = ["train", "--preset", "digits", "--out", tmp_path / "run", "-q", "--set", "data=folder",
              *[x for kv in TINY for x in ("--set", kv)]]
    assert_one_error_line(invoke(*common, "--data", tmp_path / "nope"), "dataset folder not found")
    (tmp_path / "empty").mkdir()
    assert_one_error_line(invoke(*common, "--data", tmp_path / "empty"), "is empty")
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    Image.new("L", (16, 16), 200).save(root / "a" / "x.png")
    assert_one_error_line(invoke(*common, "--data", root), "has no images")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_corrupt_images_are_skipped_with_a_count(tmp_path, caplog):
    from PIL import Image

    from gaf_trt.training.data import folder_dataset

    root = tmp_path / "imgs"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("L", (20, 20), 50 + 100 * i).save(root / cls / f"{i}.png")
    (root / "b" / "broken.png").write_bytes(b"\x89PNG broken")
    ds = folder_dataset(root, 16, 1)
    assert len(ds) == 4 and ds.skipped == 1 and ds.class_names == ["a", "b"]
    assert "skipped 1 unreadable" in caplog.text
    cfg = tiny(tmp_path / "run", "data=folder", f"data_path={root}", "num_classes=2", "iters=2",
               "class_names=none")
    assert train(cfg).checkpoint.is_file()


def test_bad_config_values():
    with pytest.raises(ConfigError, match="unknown config key 'lr_max'"):
        build_config("digits", overrides=["lr_max=1"])
    with pytest.raises(ConfigError, match="unknown preset 'mnist'"):
        build_config("mnist")
    with pytest.raises(ConfigError, match="bad value 'fast' for lr"):
        build_config("digits", overrides=["lr=fast"])
    assert build_config("imagenet").input_size == 32


def test_a_decompression_bomb_is_skipped_not_raised(tmp_path, caplog, recwarn):
    """An image over Pillow's bomb limit (200 M pixels) in a class folder is skipped and
    counted like any unreadable file, with no warning line of Pillow's."""
    from PIL import Image

    from gaf_trt.training.data import folder_dataset
    from tests.reliability.test_bounds import png_bomb

    root = tmp_path / "imgs"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        Image.new("L", (20, 20), 50).save(root / cls / "0.png")
    png_bomb(root / "a" / "bomb.png")
    ds = folder_dataset(root, 16, 1)
    assert len(ds) == 2 and ds.skipped == 1
    assert "skipped 1 unreadable" in caplog.text
    assert not [w for w in recwarn if "DecompressionBomb" in type(w.message).__name__]
