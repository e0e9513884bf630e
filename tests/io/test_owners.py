"""One output-folder rule (issue 22 item 3): every command that writes a folder registers its
record in :data:`gaf_trt.records.OWNERS`; a folder holding another command's record is
refused by every command (``generate``'s dataset folder included), naming the folder, the
record and its command; ``triton-repo`` writes through the one staging-and-rename
(:class:`~gaf_trt.io.files.OutputDir` with ``replace=True``)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import gaf_trt
from gaf_trt.errors import ConfigError
from gaf_trt.io.files import OutputDir, check_output_dir, write_json
from gaf_trt.io.owners import check_replaceable, folder_owners
from gaf_trt.records import OWNERS

PACKAGE = Path(gaf_trt.__file__).parent
#: ``*.json`` names of the package that are not the record of an output folder.
NOT_FOLDER_RECORDS = {
    "gaf_model.json",  # inside a triton-repo's gaf/1/: the solver model's own record
    "graph.json",  # inside a triton-repo's network model folder: the graph's I/O record
}


def write_record_of(folder: Path, command: str) -> None:
    """Leave in ``folder`` the record that ``command`` writes (as it writes it)."""
    folder.mkdir(parents=True, exist_ok=True)
    record = OWNERS.get(command).record
    if command == "training":
        (folder / record).write_bytes(b"a checkpoint")
    elif command == "generate":
        from gaf_trt.generate import store

        store.write_record(folder, {"num": 1}, {}, {}, {"complete": False})
    elif command == "export":
        write_json(folder / record, {"format": "gaf-trt-engine", "files": []})
    else:
        data = {"writer": "gaf-trt", "files": [record], "command": command}
        if command in ("transport", "translate"):
            data["mode"] = "translate" if command == "translate" else "cycle"
        write_json(folder / record, data)


# --------------------------------------------------------------------------- the registry


def _string_constants(path: Path) -> dict[str, str]:
    """Module-level ``NAME = "literal"`` assignments of a source file."""
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = node.value.value
    return out


def test_every_record_name_of_the_package_is_registered():
    """A new writer that names its record in a constant must register it (or say here why
    the file is no folder record): no module names a ``.json`` file the table does not know,
    and the constants of today's writers are the table's."""
    registered = set(OWNERS.records())
    unknown = {}
    for path in PACKAGE.rglob("*.py"):
        for name, value in _string_constants(path).items():
            if value.endswith(".json") and value not in registered | NOT_FOLDER_RECORDS:
                unknown[f"{path.relative_to(PACKAGE)}:{name}"] = value
    assert not unknown, f"record names not in gaf_trt.records.OWNERS: {unknown}"

    from gaf_trt.enginedir import schema as manifest
    from gaf_trt.generate import store
    from gaf_trt.pipeline import transport
    from gaf_trt.serve import repository

    assert store.RECORD == OWNERS.get("generate").record == "dataset.json"
    assert transport.RECORD == OWNERS.get("transport").record == OWNERS.get("translate").record
    assert manifest.MANIFEST == OWNERS.get("export").record == "manifest.json"
    assert (repository.COMMAND, repository.RECORD) == ("triton-repo", "gaf_repository.json")
    assert repository.RECORD == OWNERS.get(repository.COMMAND).record
    assert {"sample", "transport", "translate", "export", "triton-repo", "generate",
            "training"} <= set(OWNERS.commands())


def test_output_dir_writes_only_registered_records(tmp_path):
    with pytest.raises(ConfigError, match="unknown record 'mine.json'"):
        OutputDir(tmp_path / "out", record="mine.json")
    with pytest.raises(ValueError, match="writes run.json"):
        OutputDir(tmp_path / "out", record="transport.json", command="sample")
    with pytest.raises(ValueError, match="registered twice"):
        OWNERS.register("sample", "run.json")


# --------------------------------------------------------------------------- one folder, one command


PAIRS = [(owner, other) for owner in OWNERS.commands() for other in OWNERS.commands()
         if owner != other and OWNERS.get(owner).record != OWNERS.get(other).record]


@pytest.mark.parametrize("owner,other", PAIRS, ids=[f"{a}-into-{b}" for a, b in PAIRS])
def test_every_command_refuses_another_commands_folder(tmp_path, owner, other):
    out = tmp_path / "out"
    write_record_of(out, owner)
    assert owner in folder_owners(out)
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(ConfigError) as err:
        check_output_dir(out, command=other)
    text = str(err.value)
    assert str(out) in text and OWNERS.get(owner).record in text
    assert f"`{OWNERS.get(owner).shown}`" in text and OWNERS.get(other).shown in text
    check_output_dir(out, command=owner)  # its own rerun is fine
    assert sorted(p.name for p in out.iterdir()) == before


def test_generate_refuses_a_sample_folder_before_loading_anything(tmp_path):
    from gaf_trt.generate import GenerateConfig, run_generate
    from gaf_trt.pipeline.source import ModelSource

    out = tmp_path / "pictures"
    write_record_of(out, "sample")
    with pytest.raises(ConfigError, match=r"holds the output of `gaf-trt sample` \(run.json\)"):
        run_generate(GenerateConfig(out=str(out), num=2, batch=2, shard_size=2,
                                    model=ModelSource(device="cpu")))
    assert sorted(p.name for p in out.iterdir()) == ["run.json"]


def test_a_generate_dataset_is_refused_by_sample_and_triton_repo(tmp_path):
    out = tmp_path / "dataset"
    write_record_of(out, "generate")
    assert folder_owners(out) == {"generate": "dataset.json"}
    for command in ("sample", "export", "triton-repo"):
        with pytest.raises(ConfigError, match=r"`gaf-trt generate` \(dataset.json\)"):
            check_output_dir(out, command=command, replace=command == "triton-repo")
    with pytest.raises(ConfigError, match="gaf-trt generate"):
        with OutputDir(out, record="run.json"):
            pass
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json"]


# --------------------------------------------------------------------------- one staging


def _repo(od: OutputDir, *extra: str) -> None:
    (od.staging / "gaf" / "1").mkdir(parents=True)
    (od.staging / "gaf_anchors" / "1").mkdir(parents=True)  # an empty version folder stays
    (od.staging / "gaf" / "config.pbtxt").write_text("name: 'gaf'\n")
    for name in extra:
        (od.staging / name).write_text("old")
    write_json(od.staging / "gaf_repository.json", {"writer": "gaf-trt",
                                                     "command": "triton-repo",
                                                     "files": ["gaf/config.pbtxt", *extra]})


def test_replace_swaps_the_whole_folder_in(tmp_path):
    out = tmp_path / "repo"
    with OutputDir(out, record="gaf_repository.json", what="REPO", replace=True) as od:
        _repo(od, "gaf/1/model.onnx")
        od.commit()
    assert (out / "gaf_anchors" / "1").is_dir() and (out / "gaf" / "1" / "model.onnx").is_file()
    with OutputDir(out, record="gaf_repository.json", what="REPO", replace=True) as od:
        _repo(od)
        files = od.commit()
    assert not (out / "gaf" / "1" / "model.onnx").exists()  # the old output's file is gone
    assert sorted(str(f.relative_to(out)) for f in files) == ["gaf/config.pbtxt",
                                                              "gaf_repository.json"]
    assert json.loads((out / "gaf_repository.json").read_text())["command"] == "triton-repo"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]  # no staging, old copy, lock


def test_replace_refuses_an_own_output_holding_a_file_it_does_not_list(tmp_path):
    """Issue 23 item 3: a file (or link) added to a previous output is refused, named, and
    nothing is touched."""
    out = tmp_path / "repo"
    with OutputDir(out, record="gaf_repository.json", what="REPO", replace=True) as od:
        _repo(od)
        od.commit()
    (out / "gaf" / "1" / "stray.txt").write_text("mine")
    with pytest.raises(ConfigError, match="gaf/1/stray.txt, which its gaf_repository.json"):
        with OutputDir(out, record="gaf_repository.json", what="REPO", replace=True):
            pass
    (out / "gaf" / "1" / "stray.txt").unlink()
    (out / "gaf_anchors" / "1" / "link").symlink_to(out / "gaf" / "config.pbtxt")
    with pytest.raises(ConfigError, match="gaf_anchors/1/link"):
        check_replaceable(out, "triton-repo", "REPO")
    assert (out / "gaf_anchors" / "1" / "link").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


def test_replace_refuses_a_folder_of_other_files(tmp_path):
    out = tmp_path / "mixed"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"not a gaf-trt triton-repo output \(it holds "
                       "notes.txt\\)"):
        with OutputDir(out, record="gaf_repository.json", what="REPO", replace=True):
            pass
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed"]


def test_triton_repo_writes_through_the_one_staging(tmp_path, monkeypatch):
    """``write_repository`` has no staging of its own: it commits an ``OutputDir`` with
    ``replace=True`` (spied on here), and its module renames nothing itself."""
    pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")
    from gaf_trt.serve import repository
    from gaf_trt.serve.network_models import ModelFolder
    from gaf_trt.serve.pbtxt import Enum

    source = Path(repository.__file__).read_text()
    assert "mkdtemp" not in source and "os.rename" not in source and "DirLock" not in source
    commits = []
    real_commit = OutputDir.commit

    def spy(self):
        commits.append((self.command, self.record, self.replace))
        return real_commit(self)

    monkeypatch.setattr(OutputDir, "commit", spy)
    model = ModelFolder("m", {"name": "m", "backend": "python", "max_batch_size": 4,
                              "input": [{"name": "t", "data_type": Enum("TYPE_FP32"),
                                         "dims": [1]}]}, texts={"model.py": "# shim\n"})
    plan = repository.RepositoryPlan(Path("engine"), {}, "python", "cpu", [model],
                                     {"writer": "gaf-trt", "command": "triton-repo"})
    repository.write_repository(plan, tmp_path / "repo")
    assert commits == [("triton-repo", "gaf_repository.json", True)]
    listed = json.loads((tmp_path / "repo" / "gaf_repository.json").read_text())["files"]
    assert listed == ["m/1/model.py", "m/config.pbtxt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]
