"""Bad input to ``gaf-trt generate`` / ``gaf-trt evaluate`` (issue 16): one ``error:`` line
naming the bad value, exit code 2, no traceback, nothing written. Real subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.reliability.conftest import (
    assert_bad_input,
    assert_nothing_written,
    cli_cmd,
    run_cli,
    run_many,
)

TINY = ["--steps", "1", "--batch", "2", "--shard-size", "2", "--device", "cpu", "-q"]


def compositions(folder: Path) -> dict[str, Path]:
    files = {"bad_json": "[{\"classes\": [1, 2]", "not_list": "{\"classes\": [1]}",
             "unknown_key": json.dumps([{"classes": [1, 2], "colour": "red"}]),
             "weights_count": json.dumps([{"classes": [1, 2], "weights": [1.0]}]),
             "bad_class": json.dumps([{"classes": [1, 99]}])}
    out = {}
    for name, text in files.items():
        (folder / f"{name}.json").write_text(text)
        out[name] = folder / f"{name}.json"
    return out


#: case -> (arguments after `generate`, needles of the error line)
GENERATE_CASES = {
    "unknown_class": (["--classes", "42", "--per-class", "1"], ["42", "0..9"]),
    "unknown_class_name": (["--classes", "cat", "--per-class", "1"], ["'cat'", "known names"]),
    "num_zero": (["--num", "0"], ["--num", "1.."]),
    "per_class_and_num": (["--num", "4", "--per-class", "2"], ["exactly one"]),
    "neither_count": ([], ["--per-class", "--num"]),
    "shard_not_multiple": (["--num", "4", "--shard-size", "3"], ["--shard-size 3", "--batch 2"]),
    "unknown_format": (["--num", "4", "--format", "gif"], ["'gif'", "npz, png, both"]),
    "unknown_runner": (["--num", "4", "--runner", "slurm"], ["'slurm'", "local", "ray"]),
    "torchrun_without_env": (["--num", "4", "--runner", "torchrun"], ["torchrun", "RANK"]),
    "dead_ray_address": (["--num", "4", "--ray", "127.0.0.1:1"], ["127.0.0.1:1", "does not answer"]),
    "bad_ray_address": (["--num", "4", "--ray", "nowhere"], ["'nowhere'", "HOST:PORT"]),
    "ray_workers_zero": (["--num", "4", "--ray", "auto", "--workers", "0"], ["--workers", "1.."]),
}
COMPOSITION_CASES = {
    "bad_json": ["not valid JSON"],
    "not_list": ["JSON list"],
    "unknown_key": ["entry 0", "'colour'"],
    "weights_count": ["entry 0", "one weight per class"],
    "bad_class": ["entry 0", "99"],
}


@pytest.fixture(scope="module")
def generate_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("generate_errors")
    comps = compositions(tmp)
    cases = {name: cli_cmd("generate", *TINY, *args, "--out", tmp / name)
             for name, (args, _) in GENERATE_CASES.items()}
    cases.update({f"comp_{name}": cli_cmd("generate", "--compositions", comps[name],
                                          "--per-class", "1", "--out", tmp / f"comp_{name}",
                                          *TINY) for name in COMPOSITION_CASES})
    return tmp, run_many(cases)


@pytest.mark.parametrize("case", sorted(GENERATE_CASES))
def test_generate_bad_input(generate_results, case):
    tmp, results = generate_results
    assert_bad_input(results[case], *GENERATE_CASES[case][1])
    assert_nothing_written(tmp / case)


@pytest.mark.parametrize("case", sorted(COMPOSITION_CASES))
def test_malformed_compositions_file(generate_results, case):
    tmp, results = generate_results
    assert_bad_input(results[f"comp_{case}"], "compositions file", *COMPOSITION_CASES[case])
    assert_nothing_written(tmp / f"comp_{case}")


def test_rerun_with_other_arguments_refused(tmp_path):
    out = tmp_path / "ds"
    first = run_cli("generate", "--num", "2", "--out", out, *TINY)
    assert first.rc == 0, first.describe()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    res = run_cli("generate", "--num", "2", "--seed", "5", "--out", out, *TINY)
    assert_bad_input(res, "other arguments", "seed")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def _npz(path: Path, size: int) -> Path:
    from gaf_trt.generate.store import save_npz

    rng = np.random.default_rng(0)
    return save_npz(path, arr_0=rng.integers(0, 255, (4, size, size, 3)).astype(np.uint8))


def test_evaluate_bad_input(tmp_path):
    gen, ref = _npz(tmp_path / "gen.npz", 16), _npz(tmp_path / "ref.npz", 32)
    weights = tmp_path / "weights.pth"
    import torch

    torch.save({"fc.weight": torch.zeros(1008, 2048)}, weights)  # not a full Inception
    cases = {
        "other_resolution": cli_cmd("evaluate", gen, "--ref", ref, "--metrics", "digits"),
        "missing_weights": cli_cmd("evaluate", gen, "--ref", ref, "--inception",
                                   tmp_path / "nope.pth"),
        "wrong_weights": cli_cmd("evaluate", gen, "--inception", weights),
        "unknown_metric": cli_cmd("evaluate", gen, "--metrics", "fid,sharpness"),
        "fid_without_ref": cli_cmd("evaluate", gen, "--metrics", "fid", "--inception", weights),
        "no_dataset": cli_cmd("evaluate", "--metrics", "digits"),
        "missing_dataset": cli_cmd("evaluate", tmp_path / "none.npz", "--metrics", "digits"),
        "digits_without_labels": cli_cmd("evaluate", gen, "--metrics", "digits"),
        "compare_bad_precision": cli_cmd("evaluate", "--compare", "digits", "digits:torch:fp8",
                                         "--num", "2", "--out", tmp_path / "cmp"),
    }
    needles = {
        "other_resolution": ["32x32", "16x16", "same resolution"],
        "missing_weights": ["nope.pth", "weights-inception-2015-12-05-6726825d.pth"],
        "wrong_weights": ["weights.pth", "weights-inception-2015-12-05-6726825d.pth"],
        "unknown_metric": ["'sharpness'", "fid"],
        "fid_without_ref": ["--ref"],
        "no_dataset": ["DATASET"],
        "missing_dataset": ["none.npz"],
        "digits_without_labels": ["labels"],
        "compare_bad_precision": ["fp8", "fp32"],
    }
    results = run_many(cases)
    for name, res in results.items():
        assert_bad_input(res, *needles[name])
    assert_nothing_written(tmp_path / "cmp")
