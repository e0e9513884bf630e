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
