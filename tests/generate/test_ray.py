"""The Ray runner: 2 actors give the in-process bytes; a worker killed by SIGKILL is restarted
and its shard retried; a driver joins a running cluster by its address."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gaf_trt.generate import GenerateConfig, Hooks, RunOptions, run_generate, store
from gaf_trt.pipeline.source import ModelSource

REPO = Path(__file__).resolve().parents[2]
TINY = dict(per_class=2, steps=2, batch=4, shard_size=8, format="both",
            model=ModelSource(device="cpu"))

pytestmark = pytest.mark.usefixtures("one_thread")


def content(out: Path) -> dict[str, str]:
    names = [store.FINAL_NPZ, store.LABELS_TXT] + sorted(
        str(p.relative_to(out)) for p in (out / store.PNG_DIR).rglob("*.png"))
    return {n: hashlib.sha256((out / n).read_bytes()).hexdigest() for n in names}


@pytest.fixture(scope="module")
def local_files(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("local") / "ds"
    run_generate(GenerateConfig(out=str(out), **TINY))
    return content(out)


def test_two_actors_byte_identical(ray_cluster, local_files, tmp_path):
    done: list[int] = []
    result = run_generate(GenerateConfig(out=str(tmp_path / "ds"), **{**TINY, "shard_size": 4}),
                          "ray", RunOptions(workers=2, hooks=Hooks(
                              on_shard=lambda d, t, n: done.append(d))))
    assert (result.runner, result.workers, result.shards) == ("ray", 2, 5)
    assert done == [1, 2, 3, 4, 5]  # progress on the driver, one line per shard
    assert content(tmp_path / "ds") == local_files
    assert ray_cluster.is_initialized()  # a cluster the runner did not start stays up


def test_killed_worker_is_restarted_and_its_shard_retried(ray_cluster, local_files, tmp_path):
    marker = tmp_path / "killed-once"

    def die_once(start: int) -> None:  # runs inside the actor (pickled by value)
        import signal

        if start == 8 and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)

    result = run_generate(GenerateConfig(out=str(tmp_path / "ds"), **TINY), "ray",
                          RunOptions(workers=2, hooks=Hooks(on_files=die_once)))
    assert marker.is_file() and int(marker.read_text()) != os.getpid()
    assert result.generated == 20
    assert content(tmp_path / "ds") == local_files


def test_join_a_running_cluster_by_address(ray_cluster, local_files, tmp_path):
    address = ray_cluster.get_runtime_context().gcs_address
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "gaf_trt.cli", "generate", "--ray", address, "--workers", "1",
           "--per-class", "2", "--steps", "2", "--batch", "4", "--shard-size", "8",
           "--format", "both", "--device", "cpu", "--out", str(tmp_path / "ds"), "-q"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 worker(s), ray" in proc.stdout
    assert content(tmp_path / "ds") == local_files
