"""``--cache POLICY`` on ``gaf-trt sample`` and ``gaf-trt generate``: validated in one line,
recorded in ``run.json`` / the dataset's identity (issue 26)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from gaf_trt.cli import app
from gaf_trt.errors import ConfigError
from gaf_trt.generate import GenerateConfig, run_generate
from gaf_trt.generate import store
from gaf_trt.pipeline.source import ModelSource

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def sample_args(ckpt, out):
    return ["sample", "--ckpt", ckpt, "--out", out, "--steps", 4, "--batch", 2, "-q",
            "--device", "cpu", "--classes", 3]


def test_sample_records_the_policy(ref_ckpt, tmp_path):
    r = invoke(*sample_args(ref_ckpt, tmp_path / "c"), "--cache", "static:2")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "c" / "run.json").read_text())["args"]["cache"] == "static:2"
    r = invoke(*sample_args(ref_ckpt, tmp_path / "o"))
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "o" / "run.json").read_text())["args"]["cache"] == "off"


def test_sample_bad_policy_is_one_line(ref_ckpt, tmp_path):
    r = invoke(*sample_args(ref_ckpt, tmp_path / "b"), "--cache", "static:0")
    assert r.exit_code != 0
    assert "static:0" in r.output and "off, static:N, adaptive:δ" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "b").exists()


def test_generate_identity_carries_the_policy(tmp_path):
    tiny = dict(per_class=1, steps=2, batch=4, shard_size=4, format="npz",
                model=ModelSource(artifact="digits", device="cpu"))
    out = tmp_path / "ds"
    run_generate(GenerateConfig(out=str(out), cache="static:2", **tiny))
    record = json.loads((out / store.RECORD).read_text())
    assert record["job"]["cache"] == "static:2" and record["args"]["cache"] == "static:2"
    with pytest.raises(ConfigError, match=r"other arguments.*cache"):  # not the same dataset
        run_generate(GenerateConfig(out=str(out), **tiny))
    plain = tmp_path / "plain"
    run_generate(GenerateConfig(out=str(plain), **tiny))
    assert "cache" not in json.loads((plain / store.RECORD).read_text())["job"]  # identity kept
    with pytest.raises(ConfigError, match="unknown cache policy 'foo'"):
        run_generate(GenerateConfig(out=str(tmp_path / "bad"), cache="foo", **tiny))


def test_sample_static_with_ier_refused_before_work(ref_ckpt, tmp_path):
    r = invoke(*sample_args(ref_ckpt, tmp_path / "i"), "--cache", "static:2", "--solver", "ier")
    assert r.exit_code != 0 and "Fréchet" in r.output and not (tmp_path / "i").exists()


def transport_args(ref_ckpt, out, *extra):
    return ["transport", "--mode", "cycle", "--classes", 1, 5, "--ckpt", ref_ckpt, "--out", out,
            "--steps", 4, "--solver", "euler", "-q", "--device", "cpu", *extra]


def test_transport_and_translate_record_the_policy_and_the_trunk_calls(ref_ckpt, tmp_path):
    """5 legs of 4 euler evaluations, each leg from an empty cache: 2 trunk runs per leg;
    the snapshots of translate are exact anchors (no cache), translate's legs cached."""
    r = invoke(*transport_args(ref_ckpt, tmp_path / "c", "--cache", "static:2"))
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "c" / "transport.json").read_text())
    assert rec["args"]["cache"] == "static:2" and rec["backend"] == "torch"
    assert rec["cache"] == {"policy": "static:2", "calls": 20, "trunk_calls": 10, "saved": 0.5}
    plain = tmp_path / "p"
    assert invoke(*transport_args(ref_ckpt, plain)).exit_code == 0
    rec = json.loads((plain / "transport.json").read_text())
    assert rec["args"]["cache"] == "off" and "cache" not in rec
    from tests.cli.test_transport import _write_png

    png = _write_png(tmp_path, ref_ckpt)
    r = invoke("translate", "--image", png, "--source", 3, "--target", 4, "--ckpt", ref_ckpt,
               "--steps", 4, "--snapshots", 2, "--out", tmp_path / "t", "-q", "--device",
               "cpu", "--cache", "taylor:2", "--solver", "euler")
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "t" / "transport.json").read_text())
    assert rec["cache"] == {"policy": "taylor:2", "calls": 8, "trunk_calls": 4, "saved": 0.5}


def test_transport_cache_refused_before_work(ref_ckpt, tmp_path):
    r = invoke(*transport_args(ref_ckpt, tmp_path / "b", "--cache", "static:x"))
    assert r.exit_code != 0 and "unknown cache policy 'static:x'" in r.output
    r = invoke(*transport_args(ref_ckpt, tmp_path / "i", "--cache", "taylor:2", "--solver",
                               "ier"))
    assert r.exit_code != 0 and "Fréchet" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "b").exists()
    assert not (tmp_path / "i").exists()
