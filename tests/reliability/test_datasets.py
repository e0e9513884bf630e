"""Dataset folders and what ``evaluate`` reads, as a user meets them (issue 23 items 4 and 5):
dataset folders are owned like every other output (even with ``dataset.json`` deleted); a
folder of shards without its record is refused; ``evaluate`` refuses an incomplete dataset
naming the missing shards unless ``--allow-incomplete``, scores verified shards only (never
a stale ``samples.npz``) and checks labels against the job, as a resume does; broken
reference statistics, labels and sample counts are one ``error:`` line and exit 2 before any
work, ``--json`` included, and nothing is written. Real subprocesses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.reliability.conftest import (
    assert_bad_input,
    cli_cmd,
    hashes,
    run_cli,
    run_many,
)

TINY = ["--steps", "1", "--batch", "2", "--shard-size", "2", "--device", "cpu", "-q"]
#: Four samples in two shards: 0..1 and 2..3.
JOB = ["--num", "4", "--seed", "3", *TINY]
SECOND_SEAL = "shards/00000002-00000004.json"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A finished tiny dataset (tests copy it before changing anything)."""
    out = tmp_path_factory.mktemp("datasets") / "ds"
    res = run_cli("generate", *JOB, "--out", out)
    assert res.rc == 0, res.describe()
    return out


def copy_of(dataset: Path, tmp_path: Path, name: str = "ds") -> Path:
    return Path(shutil.copytree(dataset, tmp_path / name))


# --------------------------------------------------------------------------- item 4: folders


def test_folders_of_other_commands_and_a_dataset_without_record(dataset, tmp_path):
    """generate into a sample folder / an engine directory, sample into a dataset folder (with
    and without its dataset.json), generate into shards without a record: all refused, all
    left as they were."""
    picture = tmp_path / "pictures"
    picture.mkdir()
    (picture / "run.json").write_text(json.dumps({"writer": "gaf-trt", "command": "sample",
                                                  "files": []}))
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "manifest.json").write_text(json.dumps({"format": "gaf-trt-engine", "files": []}))
    kept = copy_of(dataset, tmp_path, "kept")
    orphan = copy_of(dataset, tmp_path, "orphan")
    (orphan / "dataset.json").unlink()
    folders = [picture, engine, kept, orphan]
    before = {f: hashes(f) for f in folders}
    sample = ["sample", "--classes", "1", "--steps", "1", "--device", "cpu", "-q", "--out"]
    results = run_many({
        "generate_into_sample": cli_cmd("generate", *JOB, "--out", picture),
        "generate_into_engine": cli_cmd("generate", *JOB, "--out", engine),
        "sample_into_dataset": cli_cmd(*sample, kept),
        "sample_into_orphan_shards": cli_cmd(*sample, orphan),
        "generate_other_job_into_orphan": cli_cmd("generate", "--num", "2", *TINY, "--out",
                                                  orphan),
    })
    assert_bad_input(results["generate_into_sample"], "gaf-trt sample", "run.json")
    assert_bad_input(results["generate_into_engine"], "gaf-trt export", "manifest.json")
    assert_bad_input(results["sample_into_dataset"], "gaf-trt generate", "dataset.json")
    assert_bad_input(results["sample_into_orphan_shards"], "gaf-trt generate", "shards/")
    assert_bad_input(results["generate_other_job_into_orphan"], str(orphan), "no dataset.json")
    for f in folders:
        assert hashes(f) == before[f], f"{f} changed"
        assert not list(f.parent.glob(f".{f.name}*")), "lock or staging left beside it"


def test_resume_redoes_a_shard_whose_labels_were_edited(dataset, tmp_path):
    ds = copy_of(dataset, tmp_path)
    seal = json.loads((ds / SECOND_SEAL).read_text())
    good = seal["labels"]
    seal["labels"] = [(y + 1) % 10 for y in good]
    (ds / SECOND_SEAL).write_text(json.dumps(seal))
    res = run_cli("generate", *JOB, "--out", ds)
    assert res.rc == 0, res.describe()
    assert json.loads((ds / SECOND_SEAL).read_text())["labels"] == good
    same = {k: v for k, v in hashes(dataset).items() if k != "dataset.json"}
    assert {k: v for k, v in hashes(ds).items() if k != "dataset.json"} == same


# --------------------------------------------------------------------------- item 4: evaluate


def test_evaluate_incomplete_stale_and_edited_datasets(dataset, tmp_path):
    killed = copy_of(dataset, tmp_path, "killed")  # as a kill before the second seal leaves it
    (killed / SECOND_SEAL).unlink()
    (killed / "samples.npz").unlink()
    edited = copy_of(dataset, tmp_path, "edited")
    seal = json.loads((edited / SECOND_SEAL).read_text())
    seal["labels"] = [(y + 1) % 10 for y in seal["labels"]]
    (edited / SECOND_SEAL).write_text(json.dumps(seal))
    stale = copy_of(dataset, tmp_path, "stale")  # samples.npz from somewhere else
    from gaf_trt.generate.store import save_npz

    save_npz(stale / "samples.npz", arr_0=np.zeros((9, 8, 8, 3), np.uint8),
             labels=np.zeros(9, np.int64))
    orphan = copy_of(dataset, tmp_path, "orphan")
    (orphan / "dataset.json").unlink()
    digits = ["--metrics", "digits"]
    results = run_many({
        "killed": cli_cmd("evaluate", killed, *digits, "--json", tmp_path / "k.json"),
        "killed_allowed": cli_cmd("evaluate", killed, *digits, "--allow-incomplete"),
        "edited": cli_cmd("evaluate", edited, *digits),
        "stale": cli_cmd("evaluate", stale, *digits, "--json", tmp_path / "s.json"),
        "orphan": cli_cmd("evaluate", orphan, *digits),
    })
    assert_bad_input(results["killed"], "incomplete", "1 of 2 shards", "2..3",
                     "--allow-incomplete")
    assert not (tmp_path / "k.json").exists()
    allowed = results["killed_allowed"]
    assert allowed.rc == 0, allowed.describe()
    assert "2 samples" in allowed.stdout and "1 of 2 shards left out" in allowed.stdout
    assert_bad_input(results["edited"], "incomplete", "2..3")
    assert results["stale"].rc == 0, results["stale"].describe()
    assert json.loads((tmp_path / "s.json").read_text())["samples"] == 4
    assert_bad_input(results["orphan"], "no readable dataset.json")


# --------------------------------------------------------------------------- item 5: inputs


def fake_inception(path: Path) -> Path:
    """A file with the Inception's identifying shapes: enough for the checks that run before
    the network is built (every case below is refused before)."""
    torch.save({"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008),
                "Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, path)
    return path


def stats(path: Path, mu: np.ndarray, sigma: np.ndarray) -> Path:
    np.savez(path, mu=mu, sigma=sigma)
    return path


def test_evaluate_refuses_broken_statistics_labels_and_counts(tmp_path):
    weights = fake_inception(tmp_path / "inception.pth")
    d = 2048
    eye = np.eye(d)
    rng = np.random.default_rng(0)
    refs = {"not_psd": stats(tmp_path / "not_psd.npz", np.zeros(d), -eye),
            "nan_mu": stats(tmp_path / "nan_mu.npz", np.full(d, np.nan), eye),
            "inf_sigma": stats(tmp_path / "inf_sigma.npz", np.zeros(d), np.where(eye > 0, np.inf, 0.0)),
            "asymmetric": stats(tmp_path / "asym.npz", np.zeros(d), np.triu(np.ones((d, d)))),
            "small_dim": stats(tmp_path / "small.npz", np.zeros(10), np.eye(10))}
    imgs = rng.integers(0, 255, (4, 8, 8, 3)).astype(np.uint8)
    gen = tmp_path / "gen.npz"
    np.savez(gen, arr_0=imgs)
    one = tmp_path / "one.npz"
    np.savez(one, arr_0=imgs[:1], labels=np.array([1]))
    labels = {"nan": np.array([1.0, np.nan, 2.0, 3.0]), "fraction": np.array([1.0, 1.5, 2, 3]),
              "negative": np.array([1, -3, 2, 3]), "short": np.array([1, 2])}
    for name, y in labels.items():
        np.savez(tmp_path / f"labels_{name}.npz", arr_0=imgs, labels=y)
    folder = tmp_path / "pngs"
    folder.mkdir()
    from PIL import Image

    for k in range(4):
        Image.fromarray(imgs[k]).save(folder / f"{k}.png")
    (folder / "labels.txt").write_text("1\n2\n٣\n4\n")  # an Arabic-Indic three
    fid = ["--metrics", "fid", "--inception", weights]
    cases = {f"ref_{name}": cli_cmd("evaluate", gen, "--ref", ref, *fid, "--json",
                                    tmp_path / f"{name}.json") for name, ref in refs.items()}
    cases.update({f"labels_{name}": cli_cmd("evaluate", tmp_path / f"labels_{name}.npz",
                                            "--metrics", "digits") for name in labels})
    cases["labels_txt"] = cli_cmd("evaluate", folder, "--metrics", "digits")
    cases["one_sample"] = cli_cmd("evaluate", one, "--metrics", "digits", "--json",
                                  tmp_path / "one.json")
    cases["one_sample_fid"] = cli_cmd("evaluate", one, "--ref", refs["small_dim"], *fid)
    needles = {
        "ref_not_psd": ["not positive semi-definite"], "ref_nan_mu": ["mu", "NaN"],
        "ref_inf_sigma": ["sigma", "infinite"], "ref_asymmetric": ["not symmetric"],
        "ref_small_dim": ["dimension 10", "2048"],
        "labels_nan": ["integers", "label 1"], "labels_fraction": ["integers", "1.5"],
        "labels_negative": ["label 1 is -3"], "labels_short": ["one label per image"],
        "labels_txt": ["labels.txt", "line 3"],
        "one_sample": ["at least 2 samples", "holds 1"],
        "one_sample_fid": ["at least 2 samples"],
    }
    results = run_many(cases)
    for name, res in results.items():
        assert_bad_input(res, *needles[name])
    assert not list(tmp_path.glob("*.json")), "a refused evaluation wrote its --json report"
