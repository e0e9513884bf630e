"""``gaf-trt triton-repo`` and the serving options added with it, as a user runs them
(subprocesses): every bad input is one ``error:`` line, exit 2, no traceback, and nothing
written into the repository folder (or beside it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.reliability.conftest import (
    assert_bad_input,
    assert_nothing_written,
    cli_cmd,
    hashes,
    run_many,
    staging_dirs,
)

pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed "
                    "(triton-repo checks configs against Triton's schema)")

CASES = {  # case: (arguments after `triton-repo ENGINE REPO`, needles of the error line)
    "backend_unknown": (["--network-backend", "tensorflow"],
                        ["'tensorflow'", "auto, onnxruntime, tensorrt, python"]),
    "backend_trt_without_plans": (["--network-backend", "tensorrt"], ["no TensorRT plan"]),
    "device_unknown": (["--device", "tpu"], ["--device", "tpu"]),
    "instances_zero": (["--instances", "0"], ["--instances", "0"]),
    "max_queue_zero": (["--max-queue", "0"], ["--max-queue", "0"]),
    "max_batch_huge": (["--max-batch", "100000000"], ["--max-batch", "100000000"]),
    "min_rows_zero": (["--min-rows", "0"], ["--min-rows", "0"]),
    "queue_delay_negative": (["--queue-delay-us", "-1"], ["--queue-delay-us", "-1"]),
}
SERVE_CASES = {  # `gaf-trt serve` options, refused before anything starts
    "serve_call_rows": (["--call-rows", "-3"], ["--call-rows", "0 (measured at start)", "-3"]),
    "serve_min_rows": (["--min-rows", "0"], ["--min-rows", "1..4096", "0"]),
    "serve_mask_pixels": (["--max-mask-pixels", "0"], ["--max-mask-pixels", "0"]),
}


@pytest.fixture(scope="module")
def runs(ref_engine, tmp_path_factory):
    root = tmp_path_factory.mktemp("triton_repo_errors")
    altered = root / "altered_engine"
    shutil.copytree(ref_engine, altered)
    with open(altered / "k_bank.onnx", "ab") as f:
        f.write(b"\0")
    (root / "a_file").write_text("mine")
    (root / "sampled").mkdir()
    (root / "sampled" / "run.json").write_text(json.dumps({"writer": "gaf-trt",
                                                           "command": "sample"}))
    cmds = {case: cli_cmd("triton-repo", ref_engine, root / case, *args)
            for case, (args, _) in CASES.items()}
    cmds.update({
        "engine_missing": cli_cmd("triton-repo", root / "nowhere", root / "engine_missing"),
        "engine_altered": cli_cmd("triton-repo", altered, root / "engine_altered"),
        "repo_is_a_file": cli_cmd("triton-repo", ref_engine, root / "a_file"),
        "repo_of_sample": cli_cmd("triton-repo", ref_engine, root / "sampled"),
        "repo_is_root": cli_cmd("triton-repo", ref_engine, "/"),
    })
    cmds.update({case: cli_cmd("serve", "--device", "cpu", *args)
                 for case, (args, _) in SERVE_CASES.items()})
    return root, run_many(cmds)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_option_is_one_line_and_writes_nothing(runs, case):
    root, results = runs
    assert_bad_input(results[case], *CASES[case][1])
    assert_nothing_written(root / case)


@pytest.mark.parametrize("case, needles", [
    ("engine_missing", ["engine directory not found", "nowhere"]),
    ("engine_altered", ["altered since export"]),
    ("repo_is_a_file", ["a_file"]),
    ("repo_of_sample", ["gaf-trt sample"]),
    ("repo_is_root", ["filesystem root"]),
])
def test_bad_folders_are_one_line_and_touch_nothing(runs, case, needles):
    root, results = runs
    assert_bad_input(results[case], *needles)
    assert not (root / case).is_dir() or case == "repo_of_sample"
    assert (root / "a_file").read_text() == "mine"
    assert sorted(p.name for p in (root / "sampled").iterdir()) == ["run.json"]
    assert not list(Path("/").glob(".*.staging")), "a staging folder was left at /"


@pytest.mark.parametrize("case", sorted(SERVE_CASES))
def test_serve_option_refused_before_anything_starts(runs, case):
    _, results = runs
    assert_bad_input(results[case], *SERVE_CASES[case][1])


# --------------------------------------------------------------------------- issue 23 item 3

#: case -> (what the user added to a previous triton-repo output, the entry the line names)
FOREIGN = {
    "own_model_added": ("my_model/config.pbtxt", "my_model/config.pbtxt"),
    "file_beside_record": ("notes.txt", "notes.txt"),
    "file_in_version_folder": ("gaf_trunk/1/extra.onnx", "gaf_trunk/1/extra.onnx"),
}


@pytest.fixture(scope="module")
def foreign_runs(ref_engine, tmp_path_factory):
    """A previous triton-repo output, then copies of it with one foreign file each, and an
    untouched copy (the control: replaced)."""
    root = tmp_path_factory.mktemp("triton_repo_foreign")
    first = run_many({"first": cli_cmd("triton-repo", ref_engine, root / "first")})["first"]
    assert first.rc == 0, first.describe()
    before = {}
    for case, (added, _) in {**FOREIGN, "untouched": (None, None)}.items():
        shutil.copytree(root / "first", root / case)
        if added:
            (root / case / added).parent.mkdir(parents=True, exist_ok=True)
            (root / case / added).write_text("the user's own")
        before[case] = hashes(root / case)
    runs = run_many({case: cli_cmd("triton-repo", ref_engine, root / case) for case in before})
    return root, before, runs


@pytest.mark.parametrize("case", sorted(FOREIGN))
def test_a_repository_holding_a_file_it_did_not_write_is_refused(foreign_runs, case):
    root, before, runs = foreign_runs
    assert_bad_input(runs[case], FOREIGN[case][1], "gaf_repository.json does not list")
    assert hashes(root / case) == before[case], "the refused repository was changed"
    assert not staging_dirs(root / case)
    assert not (root / f".{case}.lock").exists()


def test_an_untouched_previous_repository_is_still_replaced(foreign_runs):
    root, _, runs = foreign_runs
    assert runs["untouched"].rc == 0, runs["untouched"].describe()
    assert (root / "untouched" / "gaf_repository.json").is_file()
    assert not staging_dirs(root / "untouched")
