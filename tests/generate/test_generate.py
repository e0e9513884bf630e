"""``gaf-trt generate`` on the digits model (few samples, 2 steps): deterministic shards,
byte-identical across shard sizes and runners, resumable after kill -9, dataset.json."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gaf_trt.errors import ConfigError
from gaf_trt.generate import GenerateConfig, Hooks, RunOptions, run_generate, store
from gaf_trt.generate.job import (
    condition_index,
    micro_batches,
    plan_shards,
    sample_noise,
)
from gaf_trt.pipeline.source import ModelSource

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]
#: 20 samples, 2 per class; shards of 8 = 2 micro-batches of 4.
TINY = dict(per_class=2, steps=2, batch=4, shard_size=8, format="both",
            model=ModelSource(device="cpu"))


def tiny(out: Path, **kw) -> GenerateConfig:
    return GenerateConfig(out=str(out), **{**TINY, **kw})


def content(out: Path) -> dict[str, str]:
    """sha256 of every file that is the dataset (not shards, not dataset.json)."""
    names = [store.FINAL_NPZ, store.LABELS_TXT] + sorted(
        str(p.relative_to(out)) for p in (out / store.PNG_DIR).rglob("*.png"))
    return {n: hashlib.sha256((out / n).read_bytes()).hexdigest() for n in names
            if (out / n).is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    out = tmp_path_factory.mktemp("ref") / "ds"
    result = run_generate(tiny(out))
    assert (result.num_samples, result.shards, result.resumed, result.generated) == (20, 3, 0, 20)
    return out, content(out)


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    e.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"})
    return e


def test_dataset_files(reference):
    out, files = reference
    assert len([n for n in files if n.endswith(".png")]) == 20
    with np.load(out / store.FINAL_NPZ) as z:
        arr, labels = z["arr_0"], z["labels"]
    assert arr.shape == (20, 16, 16, 3) and arr.dtype == np.uint8
    assert labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert arr.std() > 10  # real pictures, not a constant
    assert (out / store.LABELS_TXT).read_text().split() == [str(c) for c in labels]
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(out / store.png_name(13))), arr[13])
    rec = json.loads((out / store.RECORD).read_text())
    assert rec["complete"] is True and rec["job"]["num_samples"] == 20
    assert rec["job"]["checkpoint"]["sha256"]
    assert [(s["start"], s["stop"]) for s in rec["shards"]] == [(0, 8), (8, 16), (16, 20)]
    assert rec["files"][store.FINAL_NPZ] == files[store.FINAL_NPZ]
    assert rec["last_run"]["images_per_s"] > 0


def test_images_match_an_independent_sample(reference):
    """Sample 13 (class 6) equals gaf_trt.sample from noise (seed, 13), up to one grey level
    (the batch differs, so the last float bits may)."""
    import gaf_trt
    from gaf_trt.io.images import to_uint8_hwc

    out, _ = reference
    model = gaf_trt.load_model("digits")
    noise = sample_noise(0, range(13, 14), model.config.sample_shape)
    z = gaf_trt.sample(model, [6], noise, steps=2, solver="euler", t_eps=model.config.t_eps)
    want = to_uint8_hwc(z.clamp(-1, 1))[0].astype(int)
    with np.load(out / store.FINAL_NPZ) as f:
        got = f["arr_0"][13].astype(int)
    assert np.abs(got - want).max() <= 1 and want.std() > 10


def test_other_shard_size_is_byte_identical(reference, tmp_path):
    _, files = reference
    result = run_generate(tiny(tmp_path / "ds", shard_size=4))
    assert result.shards == 5
    assert content(tmp_path / "ds") == files


def test_torchrun_two_ranks_byte_identical(reference, tmp_path):
    _, files = reference
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "gaf_trt.cli", "generate", "--runner", "torchrun", "--per-class", "2",
           "--steps", "2", "--batch", "4", "--shard-size", "4", "--format", "both",
           "--device", "cpu", "--out", str(out), "-q"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env(), cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "20 samples" in proc.stdout and "2 worker(s), torchrun" in proc.stdout
    assert content(out) == files


KILL_SCRIPT = """
import os, signal, sys
from gaf_trt.generate import GenerateConfig, Hooks, RunOptions, run_generate
from gaf_trt.pipeline.source import ModelSource

def on_files(start):
    if start == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 between a shard's files and its seal

cfg = GenerateConfig(out=sys.argv[1], per_class=2, steps=2, batch=4, shard_size=8,
                     format="both", model=ModelSource(device="cpu"))
run_generate(cfg, "local", RunOptions(hooks=Hooks(on_files=on_files)))
"""


def test_kill9_then_rerun_completes_identically(reference, tmp_path):
    """The driver dies by SIGKILL at a fixed point (shard 8..15 written, not sealed): the
    rerun keeps the verified shard 0..7, redoes the partial one, and the bytes match."""
    _, files = reference
    out = tmp_path / "ds"
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(out), "8"], env=env(),
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    rec = json.loads((out / store.RECORD).read_text())
    assert rec["complete"] is False and [s["start"] for s in rec["shards"]] == [0]
    assert (out / store.png_name(15)).is_file()  # the partial shard's files are there...
    assert not (out / f"{store.shard_stem(8, 16)}.json").exists()  # ...without a seal
    assert not (out / store.FINAL_NPZ).exists()
    done = []
    result = run_generate(tiny(out), "local", RunOptions(hooks=Hooks(
        on_shard=lambda d, t, n: done.append(d))))
    assert (result.resumed, result.generated) == (1, 12) and done == [2, 3]
    assert content(out) == files
    assert not list(out.rglob("*.gaftmp"))


def test_corrupted_shard_is_redone(reference, tmp_path):
    _, files = reference
    out = tmp_path / "ds"
    run_generate(tiny(out))
    victim = out / store.png_name(17)
    victim.write_bytes(b"not a png")
    result = run_generate(tiny(out))
    assert (result.resumed, result.generated) == (2, 4)
    assert content(out) == files


def test_complete_dataset_rerun_generates_nothing(reference, tmp_path):
    out = tmp_path / "ds"
    run_generate(tiny(out))
    result = run_generate(tiny(out))
    assert (result.resumed, result.generated) == (3, 0)


def test_other_arguments_refused(tmp_path):
    out = tmp_path / "ds"
    run_generate(tiny(out, per_class=1, shard_size=4))
    before = (out / store.RECORD).read_text()
    with pytest.raises(ConfigError, match=r"other arguments.*seed"):
        run_generate(tiny(out, per_class=1, shard_size=4, seed=1))
    assert (out / store.RECORD).read_text() == before


def test_concurrent_run_refused(tmp_path):
    from gaf_trt.io.lock import DirLock

    out = tmp_path / "ds"
    with DirLock(out), pytest.raises(ConfigError, match="another gaf-trt run"):
        run_generate(tiny(out, per_class=1))


def test_num_draws_classes_from_seed_and_index(tmp_path):
    out = tmp_path / "ds"
    run_generate(tiny(out, per_class=None, num=12, format="npz", classes=["3", "7", "8"]))
    with np.load(out / store.FINAL_NPZ) as z:
        labels = z["labels"].tolist()
    want = [[3, 7, 8][condition_index(0, i, 3, None)] for i in range(12)]
    assert labels == want and len(set(labels)) > 1
    assert not (out / store.PNG_DIR).exists()


def test_compositions_file(tmp_path):
    comps = tmp_path / "comps.json"
    comps.write_text(json.dumps([{"classes": [1, 7], "alpha": 0.5},
                                 {"classes": ["3", "8"], "mask_type": "horizontal_2"},
                                 {"classes": [2]}]))
    out = tmp_path / "ds"
    result = run_generate(tiny(out, compositions=str(comps), classes=[], per_class=2,
                               format="npz"))
    assert result.num_samples == 6
    with np.load(out / store.FINAL_NPZ) as z:
        assert z["labels"].tolist() == [1, 1, 3, 3, 2, 2] and z["arr_0"].std() > 10
    rec = json.loads((out / store.RECORD).read_text())
    assert rec["job"]["conditions"][1]["mask_type"] == "horizontal_2"


def test_compositions_file_regions_and_mask_image(tmp_path):
    """A compositions file takes what sample and serve take: AFHQ regions and a custom mask
    image (a path relative to the file, recorded with its sha256)."""
    from PIL import Image

    (tmp_path / "masks").mkdir()
    gray = np.zeros((16, 16), np.uint8)
    gray[:, 8:] = 255
    Image.fromarray(gray).save(tmp_path / "masks" / "halves.png")
    comps = tmp_path / "comps.json"
    comps.write_text(json.dumps([{"classes": [4, 9], "mask_image": "masks/halves.png"},
                                 {"classes": [1, 2, 3], "regions": ["eyes", "nose"],
                                  "sigma": 0}]))
    out = tmp_path / "ds"
    run_generate(tiny(out, compositions=str(comps), classes=[], per_class=1, format="npz"))
    with np.load(out / store.FINAL_NPZ) as z:
        assert z["labels"].tolist() == [4, 1] and z["arr_0"].std() > 10
    conditions = json.loads((out / store.RECORD).read_text())["job"]["conditions"]
    sha = hashlib.sha256((tmp_path / "masks" / "halves.png").read_bytes()).hexdigest()
    assert conditions[0]["mask_type"] == "custom" and conditions[0]["mask_sha256"] == sha
    assert conditions[0]["mask_image"] == "masks/halves.png"
    assert conditions[1]["mask_type"] == "afhq" and conditions[1]["regions"] == ["eyes", "nose"]
    gray[:, 4:] = 255  # another mask under the same name: another dataset
    Image.fromarray(gray).save(tmp_path / "masks" / "halves.png")
    with pytest.raises(ConfigError, match="other arguments"):
        run_generate(tiny(out, compositions=str(comps), classes=[], per_class=1, format="npz"))


def test_noise_depends_only_on_seed_and_index():
    shape = (1, 4, 4)
    whole = sample_noise(3, range(10), shape)
    assert torch.equal(sample_noise(3, range(5, 8), shape), whole[5:8])
    assert not torch.equal(sample_noise(4, range(5, 8), shape), whole[5:8])
    assert whole.std() > 0.5


def test_micro_batches_are_aligned_to_global_indices():
    for start, stop in plan_shards(21, 8):
        for mb in micro_batches(start, stop, 4):
            assert mb.start % 4 == 0 and len(mb) <= 4
    assert [list(m) for m in micro_batches(16, 21, 4)] == [[16, 17, 18, 19], [20]]


def test_npz_bytes_depend_on_arrays_only(tmp_path):
    """Fixed member times (np.savez stamps the clock): equal arrays, equal bytes."""
    import zipfile

    a = np.arange(24, dtype=np.uint8).reshape(2, 2, 2, 3)
    store.save_npz(tmp_path / "a.npz", arr_0=a)
    with zipfile.ZipFile(tmp_path / "a.npz") as zf:
        assert [i.date_time for i in zf.infolist()] == [store.ZIP_TIME]
    store.write_npz(tmp_path / "b.npz", {"arr_0": [a[:1], a[1:]]},
                    {"arr_0": (a.shape, a.dtype)})  # streamed in two chunks
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz") as z:
        assert np.array_equal(z["arr_0"], a)


def test_latent_model_decodes_through_the_vae(latent_ckpt, tiny_vae_dir, tmp_path):
    """A latent checkpoint: states decoded by the VAE (4x4 latents -> 32x32 RGB images),
    still the same bytes with another shard size."""
    outs = []
    for shard in (2, 4):
        out = tmp_path / f"ds{shard}"
        run_generate(GenerateConfig(out=str(out), classes=["cat", "wild"], per_class=2,
                                    steps=2, batch=2, shard_size=shard,
                                    model=ModelSource(str(latent_ckpt), device="cpu",
                                                      vae=str(tiny_vae_dir))))
        with np.load(out / store.FINAL_NPZ) as z:
            outs.append((z["arr_0"], z["labels"]))
        outs[-1] = (*outs[-1], (out / store.FINAL_NPZ).read_bytes())
    (arr, labels, raw), (_, _, raw4) = outs
    assert arr.shape == (4, 32, 32, 3) and labels.tolist() == [0, 0, 2, 2]
    assert arr.std() > 0 and raw == raw4
    rec = json.loads((tmp_path / "ds2" / store.RECORD).read_text())
    assert rec["job"]["vae"] == str(Path(tiny_vae_dir).resolve())
