"""Defective checkpoints (issue 10, items 1, 2, 6): wrong tensor shape, malformed cfg fields,
NaN weights, ``--heads`` against a recorded head count -- through ``sample``, ``info`` and
``bench`` (``sample`` as real subprocesses run in parallel, ``info`` / ``bench`` in-process;
each case is its own test).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.conftest import (
    NAN_KEY,
    REF_CKPT,
    TINY_SAMPLE,
    WRONG_SHAPE_KEY,
    Result,
    assert_bad_input,
    assert_nothing_written,
    cli_cmd,
    gaf_app,
    invoke,
    run_many,
)

#: cfg defects and the words the error line must use to name the field.
CFG_FIELDS = {
    "cfg_class_names": ("class_names", "class names"),
    "cfg_t_eps": ("t_eps",),
    "cfg_dit_heads": ("dit_heads", "heads"),
}
NON_FINITE = ("nan", "non-finite", "not finite", "nonfinite", "inf")


def _sample(ckpt: Path, out: Path, *extra: str) -> list[str]:
    return cli_cmd("sample", "--ckpt", ckpt, "--classes", "1", *TINY_SAMPLE, "--out", out,
                   *extra)


def _bench(ckpt: Path) -> list[str]:
    return cli_cmd("bench", "--ckpt", ckpt, "--classes", "2", "--batch", "1", "--steps", "2",
                   "--repeats", "1", "--warmup", "0", "--device", "cpu")


@pytest.fixture(scope="module")
def outs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ckpt_outs")


@pytest.fixture(scope="module")
def runs(bad_ckpt, outs) -> dict[str, Result]:
    """Every checkpoint case at once: ``{case: Result}``; outputs under ``outs/<case>``."""
    cases: dict[str, list[str]] = {}
    shape, nan = bad_ckpt("wrong_shape"), bad_ckpt("nan")
    cases["shape_sample"] = _sample(shape, outs / "shape_sample")
    for kind in CFG_FIELDS:
        cases[f"{kind}_sample"] = _sample(bad_ckpt(kind), outs / f"{kind}_sample")
    cases["nan_sample"] = _sample(nan, outs / "nan_sample")
    cases["heads_sample"] = _sample(bad_ckpt("good"), outs / "heads_sample", "--heads", "8")
    results = run_many(cases)
    # pure validation, no work to hang in: in-process (CliRunner)
    results["shape_bench"] = invoke(gaf_app(), _bench(shape)[3:])
    results["shape_info"] = invoke(gaf_app(), ["info", shape])
    results["nan_info"] = invoke(gaf_app(), ["info", nan])
    for kind in CFG_FIELDS:
        results[f"{kind}_info"] = invoke(gaf_app(), ["info", bad_ckpt(kind)])
    return results


# --------------------------------------------------------------------------- wrong shape


@pytest.mark.parametrize("command", ["sample", "info", "bench"])
def test_wrong_tensor_shape(runs, outs, command):
    """One error line naming the tensor (and its shapes), rc 2; sample writes nothing."""
    # the architecture is read from the shapes, so the message may name fc1's weight or its
    # bias (whichever disagrees); prefixes like ``trunk.`` may be stripped
    layer = WRONG_SHAPE_KEY.split("trunk.", 1)[1].rsplit(".", 1)[0]
    assert_bad_input(runs[f"shape_{command}"], layer)
    if command == "sample":
        assert_nothing_written(outs / "shape_sample")


# --------------------------------------------------------------------------- malformed cfg


@pytest.mark.parametrize("kind", list(CFG_FIELDS))
@pytest.mark.parametrize("command", ["sample", "info"])
def test_malformed_cfg_field(runs, outs, kind, command):
    """``class_names=5``, ``t_eps="abc"``, ``dit_heads="abc"``: one line naming the field."""
    assert_bad_input(runs[f"{kind}_{command}"], CFG_FIELDS[kind])
    if command == "sample":
        assert_nothing_written(outs / f"{kind}_sample")


# --------------------------------------------------------------------------- NaN weights


def test_nan_weights_sample_writes_nothing(runs, outs):
    """NaN never reaches a PNG: rc 2, the line names the tensor or the non-finite result;
    no PNG and no run.json."""
    assert_bad_input(runs["nan_sample"], (NAN_KEY.split("trunk.", 1)[1], *NON_FINITE))
    out = outs / "nan_sample"
    assert not list(out.glob("**/*.png")), f"PNG written from NaN weights: {list(out.iterdir())}"
    assert not (out / "run.json").exists(), "run.json claims success for NaN weights"
    assert_nothing_written(out)


def test_nan_weights_info_reports_the_tensor(runs):
    """``info`` must not call the checkpoint fine: it names the non-finite tensor, either as
    its one error line (rc 2) or in its report (rc 0, with the word NaN / non-finite)."""
    res = runs["nan_info"]
    tensor = NAN_KEY.split("trunk.", 1)[1]
    assert not res.timed_out and "Traceback" not in res.output, res.describe()
    if res.rc == 0:
        text = res.output.lower()
        assert tensor in text and any(w in text for w in NON_FINITE), (
            f"info reports the NaN checkpoint without naming {tensor}{res.describe()}")
    else:
        assert_bad_input(res, tensor)


# --------------------------------------------------------------------------- --heads


def test_heads_against_recorded_heads(runs, outs):
    """``--heads 8`` on a checkpoint whose cfg records 4 heads: refused (rc 2, the line names
    both counts) or a loud warning on stderr naming both counts (rc 0). Documented choice:
    either is accepted; silence is not."""
    res = runs["heads_sample"]
    assert not res.timed_out and "Traceback" not in res.output, res.describe()
    if res.rc == 0:
        warn = [ln for ln in res.stderr.splitlines() if "warn" in ln.lower()]
        assert any("8" in ln and "4" in ln and "head" in ln.lower() for ln in warn), (
            f"--heads 8 silently overrode the checkpoint's 4 heads{res.describe()}")
    else:
        assert_bad_input(res, "head", "8", "4")
        assert_nothing_written(outs / "heads_sample")


@pytest.mark.parametrize("command", ["info", "transport", "export"])
def test_heads_rule_is_the_same_for_every_command(command, tmp_path, cli_commands, runs):
    """Every command that loads a checkpoint applies the rule ``sample`` applies to
    ``--heads 8`` against 4 recorded heads (in-process; the load fails before any work)."""
    if command not in cli_commands:
        pytest.skip(f"`gaf-trt {command}` does not exist yet")
    out = tmp_path / "out"
    args = {
        "info": ["info", REF_CKPT, "--heads", "8"],
        "transport": ["transport", "--ckpt", REF_CKPT, "--mode", "cycle", "--classes", "1",
                      "2", "--heads", "8", "--steps", "2", "--device", "cpu", "-q", "--out",
                      out],
        "export": ["export", "--ckpt", REF_CKPT, "--heads", "8", "--graphs", "split",
                   "--no-parity", "--out", out],
    }[command]
    sample_res = runs["heads_sample"]
    res = invoke(gaf_app(), args)
    if sample_res.rc == 2:
        assert_bad_input(res, "head", "8", "4")
        assert_nothing_written(out)
    else:
        assert res.rc == 0 and "8" in res.stderr and "4" in res.stderr, res.describe()
