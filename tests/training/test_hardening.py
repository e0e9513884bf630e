"""Bad input to ``python -m gaf_trt.training train`` gives one ``error:`` line, exit 2 and
writes nothing; resume refuses architecture changes and applies schedule changes only via
--override; the output folder is locked; orphan temp files of a killed write are swept."""

from __future__ import annotations

import dataclasses
import os
import time

import pytest
import torch

from gaf_trt.errors import ConfigError
from gaf_trt.io.lock import DirLock
from gaf_trt.training import TrainConfig, build_config, train
from gaf_trt.training.config import FREE_ON_RESUME, FROZEN_ON_RESUME, SCHEDULE_FIELDS
from gaf_trt.training.objective import warmup_cosine
from tests.training.helpers import assert_one_error_line, invoke, tiny, tiny_sets


def train_cli(out, *args):
    return invoke("train", "--preset", "digits", "--out", out, "-q", *args)


# --------------------------------------------------------------------------- config values

BAD_SETS = [
    (["lr=nan"], "lr=nan is not allowed; lr must be a finite number"),
    (["lr=-1"], "lr=-1.0 is not allowed; lr must be a finite number > 0"),
    (["lr=0"], "lr=0.0 is not allowed"),
    (["lr=inf"], "lr=inf is not allowed; lr must be a finite number"),
    (["betas=0.9"], "betas=[0.9] is not allowed; betas must be a pair of numbers in [0, 1)"),
    (["betas=0.9,1.0"], "betas=[0.9, 1.0] is not allowed"),
    (["betas=0.9,0.99,0.999"], "betas must be a pair"),
    (["t_eps=0.7"], "t_eps=0.7 is not allowed; t_eps must be in [0, 0.5)"),
    (["t_eps=-0.1"], "t_eps=-0.1 is not allowed"),
    (["mlp_ratio=nan"], "mlp_ratio=nan is not allowed; mlp_ratio must be a finite number"),
    (["ema_decay=1"], "ema_decay=1.0 is not allowed; ema_decay must be in [0, 1)"),
    (["grad_clip=-1"], "grad_clip=-1.0 is not allowed"),
    (["warmup=-5"], "warmup=-5 is not allowed; warmup must be >= 0"),
    (["seed=-1"], "seed=-1 is not allowed; seed must be in [0, 4294967296)"),
    (["seed=99999999999999999999999"], "seed=99999999999999999999999 is not allowed"),
    (["iters=1.5"], "bad value '1.5' for iters (expected an integer)"),
    (["iters=1e400"], "bad value '1e400' for iters (expected an integer)"),
    (["dit_heads=3"], "dit_heads=3 is not allowed; dit_heads must be a divisor of dit_hidden=32"),
    (["patch_size=3"], "patch_size=3 is not allowed; patch_size must be a divisor of the "
                       "network input size 16"),
    (["class_names=a,b"], "class_names must be a list of num_classes=10 names"),
    (["device=banana"], "unknown device 'banana'; use cpu, cuda, cuda:N or auto"),
    (["lr_max=1"], "unknown config key 'lr_max' in --set; valid:"),
    (["lr=fast"], "bad value 'fast' for lr (expected a number)"),
    (["pair_loss=maybe"], "bad value 'maybe' for pair_loss (expected true or false)"),
    (["lr"], "--set 'lr' must look like key=value"),
]


@pytest.mark.parametrize("sets,message", BAD_SETS, ids=[s[0][0] for s in BAD_SETS])
def test_bad_set_values(tmp_path, sets, message):
    out = tmp_path / "run"
    r = train_cli(out, *tiny_sets(), *[x for kv in sets for x in ("--set", kv)])
    assert_one_error_line(r, message)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a lock file


def test_yaml_values_are_checked_with_field_names(tmp_path):
    (tmp_path / "c.yaml").write_text("lr: 1e-4\nbatch_size: many\n")  # YAML 1.1: 1e-4 is a str
    with pytest.raises(ConfigError, match="bad value 'many' for batch_size"):
        build_config("digits", tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_text("lr: 1e-4\ndit_depth: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"dit_depth must be an integer, got \[1, 2\]"):
        build_config("digits", tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_text("lr: 1e-4\n")
    assert build_config("digits", tmp_path / "c.yaml").lr == 1e-4


def test_every_field_has_a_resume_rule():
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    groups = [set(FROZEN_ON_RESUME), set(SCHEDULE_FIELDS), set(FREE_ON_RESUME)]
    assert set.union(*groups) == names
    assert sum(len(g) for g in groups) == len(names)  # each field in exactly one group


def test_sampling_accepts_every_t_eps_training_accepts():
    from gaf_trt.compose.solvers import check_t_eps

    for t_eps in (0.0, 1e-3, 0.499):
        assert check_t_eps(build_config("digits", overrides=[f"t_eps={t_eps}"]).t_eps) == t_eps
    for t_eps in (0.5, 0.7):
        with pytest.raises(ConfigError):
            check_t_eps(t_eps)
        with pytest.raises(ConfigError, match="t_eps"):
            build_config("digits", overrides=[f"t_eps={t_eps}"])


# --------------------------------------------------------------------------- output folder


def test_out_is_an_existing_file(tmp_path):
    (tmp_path / "f").write_text("mine")
    assert_one_error_line(train_cli(tmp_path / "f", *tiny_sets()),
                          f"--out {tmp_path / 'f'} is an existing file, not a folder")
    assert (tmp_path / "f").read_text() == "mine" and len(list(tmp_path.iterdir())) == 1


def test_out_below_a_file_is_not_writable(tmp_path):
    (tmp_path / "f").write_text("mine")
    assert_one_error_line(train_cli(tmp_path / "f" / "run", *tiny_sets()), "is a file, not a folder")
    assert len(list(tmp_path.iterdir())) == 1


def test_out_empty(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_one_error_line(invoke("train", "--out", "", "-q", *tiny_sets()), "outdir=''")
    assert list(tmp_path.iterdir()) == []


def test_second_run_into_a_locked_folder_fails_at_once(tmp_path):
    out = tmp_path / "run"
    with DirLock(out, what="--out"):
        r = train_cli(out, *tiny_sets("iters=2"))
    assert_one_error_line(r, f"another gaf-trt run is writing to --out {out}")
    assert not out.exists()
    # once released, the same command trains
    r = train_cli(out, *tiny_sets("iters=2"))
    assert r.exit_code == 0, r.output
    assert (out / "last.pt").is_file()


def test_stale_temp_file_of_a_killed_checkpoint_write_is_removed(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    orphan = tmp_path / ".last.pt.k1ll3d.gaftmp"  # what a kill -9 during torch.save leaves
    orphan.write_bytes(b"half a checkpoint")
    old = time.time() - 2 * 3600
    os.utime(orphan, (old, old))
    fresh = tmp_path / ".last.pt.writing.gaftmp"  # a live writer's temp file is left alone
    fresh.write_bytes(b"in progress")
    result = train(tiny(tmp_path, "iters=1"))
    assert result.checkpoint == tmp_path / "last.pt" and result.checkpoint.is_file()
    assert not orphan.exists()
    assert fresh.exists()


# --------------------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def half_run(tmp_path_factory):
    """A tiny run of 8 iterations stopped after 4 (lr 1e-3): its checkpoint."""
    out = tmp_path_factory.mktemp("half")
    result = train(tiny(out, "iters=8", "lr=1e-3"), stop_after=4)
    return result.checkpoint


def _resume(out, ckpt, *args):
    return train_cli(out, "--resume", ckpt, *tiny_sets("iters=8", "lr=1e-3"), *args)


def test_resume_refuses_other_architecture_listing_every_field(tmp_path, half_run):
    r = _resume(tmp_path / "b", half_run, "--set", "dit_hidden=64", "--set", "dit_depth=2",
                "--set", "lam_time=0.01")
    assert_one_error_line(r, "cannot resume", "another architecture or objective",
                          "dit_depth 1 -> 2", "dit_hidden 32 -> 64", "lam_time 0.0 -> 0.01")
    assert not (tmp_path / "b").exists()


def test_resume_refuses_schedule_change_without_override(tmp_path, half_run):
    r = _resume(tmp_path / "b", half_run, "--set", "lr=0.005", "--set", "seed=3")
    assert_one_error_line(r, "schedule field(s)", "lr 0.001 -> 0.005", "seed 0 -> 3",
                          "--override lr=0.005 --override seed=3")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("args,message", [
    (["--override", "dit_depth=2"], "--override dit_depth: only schedule fields can change"),
    (["--override", "lr_max=1"], "unknown config key 'lr_max' in --override"),
    (["--override", "lr"], "--override 'lr' must look like key=value"),
    (["--override", "iters=4"], "already at step 4 and iters=4: nothing left to train"),
    (["--stop-after", "3"], "--stop-after 3 is not after the checkpoint's step 4"),
])
def test_resume_bad_overrides(tmp_path, half_run, args, message):
    assert_one_error_line(_resume(tmp_path / "b", half_run, *args), message)
    assert not (tmp_path / "b").exists()


def test_override_without_resume_is_refused(tmp_path):
    r = train_cli(tmp_path / "b", *tiny_sets(), "--override", "lr=0.1")
    assert_one_error_line(r, "--override lr only applies when resuming (--resume)")
    assert list(tmp_path.iterdir()) == []


def test_override_is_applied_and_recorded(tmp_path, half_run):
    out = tmp_path / "b"
    r = _resume(out, half_run, "--override", "lr=0.005", "--override", "iters=10",
                "--override", "betas=0.8,0.9", "--set", "log_every=1", "--stop-after", "6")
    assert r.exit_code == 0, r.output
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["step"] == 6
    assert ck["cfg"]["lr"] == 0.005 and ck["cfg"]["iters"] == 10
    assert ck["cfg"]["betas"] == [0.8, 0.9]
    assert {(o["field"], o["step"]) for o in ck["overrides"]} == {("lr", 4), ("iters", 4),
                                                                  ("betas", 4)}
    group = ck["opt"]["param_groups"][0]
    assert group["initial_lr"] == 0.005 and tuple(group["betas"]) == (0.8, 0.9)
    # the schedule the optimiser followed: warm-up + cosine of the new lr over the new iters
    expect = 0.005 * warmup_cosine(6, warmup=2, total=10, lr=0.005, min_lr=1e-5)
    assert group["lr"] == pytest.approx(expect, rel=1e-12)
    assert ck["sched"]["base_lrs"] == [0.005] and ck["sched"]["last_epoch"] == 6


def test_override_lr_reaches_the_optimizer_step_by_step(tmp_path, half_run):
    cfg = tiny(tmp_path / "b", "iters=8", "lr=0.004")
    result = train(cfg, resume=half_run, override=["lr"])
    assert [s.step for s in result.history] == [5, 6, 7, 8]
    for s in result.history:  # the lr each step used is the new schedule's, not the old one's
        want = 0.004 * warmup_cosine(s.step - 1, warmup=2, total=8, lr=0.004, min_lr=1e-5)
        assert s.lr == pytest.approx(want, rel=1e-12)
    ck = torch.load(result.checkpoint, weights_only=True)
    assert ck["cfg"]["lr"] == 0.004 and ck["opt"]["param_groups"][0]["initial_lr"] == 0.004


def test_diverging_loss_stops_with_one_line_and_no_checkpoint(tmp_path):
    out = tmp_path / "run"
    r = train_cli(out, *tiny_sets("iters=6", "lr=1e10", "grad_clip=0"))
    line = assert_one_error_line(r, "the loss became", "lower lr")
    assert "nan" in line or "inf" in line
    assert not (out / "last.pt").exists()


def test_resume_from_a_broken_file(tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    torch.save({"model": {}, "opt": {}, "step": "four"}, tmp_path / "badstep.pt")
    torch.save({"weights": {}}, tmp_path / "other.pt")
    cases = [("garbage.pt", "is unreadable"), ("badstep.pt", "step must be a non-negative integer"),
             ("other.pt", "is not a training checkpoint (needs model, opt, step)"),
             ("missing.pt", "resume checkpoint not found")]
    for name, message in cases:
        r = train_cli(tmp_path / "b", "--resume", tmp_path / name, *tiny_sets())
        assert_one_error_line(r, message)
        assert not (tmp_path / "b").exists()


def test_resume_without_cfg_still_checks_the_weights(tmp_path, half_run):
    ck = torch.load(half_run, weights_only=True)
    del ck["cfg"]  # a foreign checkpoint whose cfg names nothing we compare
    torch.save(ck, tmp_path / "nocfg.pt")
    r = train_cli(tmp_path / "b", "--resume", tmp_path / "nocfg.pt",
                  *tiny_sets("iters=8", "lr=1e-3", "dit_hidden=64"))
    assert_one_error_line(r, "holds another architecture than this config", "shape")
    assert not (tmp_path / "b").exists()


def test_module_entry_point_bad_device_one_line(tmp_path):
    """``python -m gaf_trt.training`` as a user runs it: rc 2, one stderr line."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "gaf_trt.training", "train", "--out",
                           str(tmp_path / "run"), "--set", "device=banana"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: unknown device 'banana'; use cpu, cuda, cuda:N or auto"]
    assert proc.stdout == "" and list(tmp_path.iterdir()) == []
