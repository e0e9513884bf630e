"""The bundled digits model: loadable by name, the CLI default, and still good."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from gaf_trt import load_model
from gaf_trt.cli import app


def test_load_by_name():
    m = load_model("digits")
    c = m.config
    assert (c.num_classes, c.in_channels, c.input_size, c.mode) == (10, 1, 16, "pixel")
    assert c.class_names == tuple(str(i) for i in range(10))


def test_cli_default_model_runs_the_readme_command(tmp_path):
    r = CliRunner().invoke(app, ["sample", "--classes", "3", "8", "--mask-type", "horizontal_2",
                                 "--out", str(tmp_path), "--steps", "4", "-q", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "run.json").read_text())
    assert rec["checkpoint"]["path"].endswith("digits.safetensors")
    assert (tmp_path / "0_mix_3_8.png").is_file()


def test_quality_regression():
    """A small version of the quality gate (README numbers come from 100 per class)."""
    from gaf_trt.metrics.digits import fit_classifier, to_digit_grid
    from gaf_trt.training.evaluate import generate_per_class

    m = load_model("digits")
    clf = fit_classifier(16)
    for solver, steps in (("euler", 20), ("endpoint", 8)):
        images, labels = generate_per_class(m, 20, solver, steps, seed=123)
        assert torch.isfinite(images).all()
        acc = (clf.predict(to_digit_grid(images)) == labels.numpy()).mean()
        assert acc > 0.85, (solver, acc)
